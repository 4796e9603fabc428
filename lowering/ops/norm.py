"""Normalizations and softmax: inference batch norm (scale/shift folded at compile time into a
CHANNEL_AFFINE), layer norm, (log_)softmax on any dim."""
from __future__ import annotations

import operator

from math import prod

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..registry import Unsupported, bind, register
from ..tracked import holds_tracked
from ..fusion import producing_record
from .conv import refold_weight
from .elementwise import as_tensor_ref, contiguous, emit_binary, emit_unary

aten = torch.ops.aten


def _used_outputs(node) -> set[int]:
    return {u.args[1] for u in node.users if u.target is operator.getitem}


def emit_channel_affine(ctx: LoweringContext, node, x_arg, weight, bias, mean, var, eps):
    fns = [ctx.const_fn(a) if a is not None else (lambda ins: None) for a in (weight, bias, mean, var)]
    channels = ctx.val(x_arg).shape[1]
    if any(f is None for f in fns):
        scale, shift = _runtime_scale_shift(ctx, node, weight, bias, mean, var, eps, channels)
        return _emit_affine(ctx, node, x_arg, scale, shift, channels)

    def scale_shift(ins):
        w, b, m, v = (f(ins) for f in fns)
        scale = torch.rsqrt(v.double() + eps)
        if w is not None:
            scale = scale * w.double()
        shift = -m.double() * scale
        if b is not None:
            shift = shift + b.double()
        return scale.float(), shift.float()

    folded = _fold_into_conv(ctx, node, x_arg, scale_shift)
    if folded is not None:
        return folded
    scale = ctx.constant(lambda ins: scale_shift(ins)[0], (channels,), name=node.name + "_scale")
    shift = ctx.constant(lambda ins: scale_shift(ins)[1], (channels,), name=node.name + "_shift")
    return _emit_affine(ctx, node, x_arg, scale, shift, channels)


def _runtime_scale_shift(ctx: LoweringContext, node, weight, bias, mean, var, eps, channels):
    """Statistics or affine parameters computed at run time (not constants): scale = w / sqrt(var +
    eps), shift = b - mean * scale, as [channels] vectors by BINARY/UNARY kernels (eager's order)."""
    if mean is None or var is None:
        raise Unsupported("batch norm without running statistics")
    vec = lambda tag: ctx.new_buffer((channels,), name=f"{node.name}_{tag}")
    scale = emit_binary(ctx, "ADD", as_tensor_ref(ctx, ctx.value(var)), ctx.scalar(float(eps)), vec("scale"))
    emit_unary(ctx, "SQRT", scale, scale)
    emit_unary(ctx, "RECIPROCAL", scale, scale)
    if weight is not None:
        emit_binary(ctx, "MUL", scale, as_tensor_ref(ctx, ctx.value(weight)), scale)
    shift = emit_binary(ctx, "MUL", as_tensor_ref(ctx, ctx.value(mean)), scale, vec("shift"))
    if bias is not None:
        emit_binary(ctx, "SUB", as_tensor_ref(ctx, ctx.value(bias)), shift, shift)
    else:
        emit_unary(ctx, "NEG", shift, shift)
    return scale, shift


def _emit_affine(ctx: LoweringContext, node, x_arg, scale, shift, channels):
    x = contiguous(ctx, ctx.value(x_arg))
    out = ctx.new_buffer(x.shape, name=node.name)
    if out.numel:
        ctx.emit("CHANNEL_AFFINE", flops=2 * out.numel, outer=x.shape[0], channels=channels,
                 inner=prod(x.shape[2:]), **{"in": addr(x)}, out=addr(out), scale=addr(scale),
                 shift=addr(shift), act=ABI.unary["IDENTITY"], p0=0.0, p1=0.0)
    return out


def _fold_into_conv(ctx: LoweringContext, node, x_arg, scale_shift):
    """conv -> batch norm with constant weights: rewrite the conv record to use weight * scale and
    bias * scale + shift (folded at compile time), so the batch norm costs nothing at run time."""
    if not (isinstance(x_arg, torch.fx.Node) and x_arg.target is aten.convolution.default):
        return None
    ctx.value(x_arg)  # lower the conv first: it must be the record just emitted
    found = producing_record(ctx, x_arg)
    if found is None or found[0] not in ("CONV2D", "CONV2D_WINOGRAD", "CONV3D"):
        return None
    w_fn, b_fn = ctx.const_fn(x_arg.args[1]), ctx.const_fn(x_arg.args[2])
    if w_fn is None or b_fn is None:
        return None
    record = found[1]
    weight_shape = tuple(ctx.val(x_arg.args[1]).shape)
    c_out = weight_shape[0]

    def weight(ins):
        scale = scale_shift(ins)[0]
        return w_fn(ins).float() * scale.reshape(-1, *([1] * (len(weight_shape) - 1)))

    def bias(ins):
        scale, shift = scale_shift(ins)
        b = b_fn(ins)
        return shift if b is None else b.float() * scale + shift

    refold_weight(ctx, found[0], record, weight, weight_shape, node.name + "_folded_weight")
    record["bias"] = ctx.constant(bias, (c_out,), name=node.name + "_folded_bias").addr()
    ctx.drop_constant(x_arg.args[1])
    ctx.drop_constant(x_arg.args[2])
    return ctx.value(x_arg)


def _bn_check(node):
    vals = node.meta.get("val")
    if any(vals[i].numel() for i in _used_outputs(node) - {0}):
        return "batch norm's saved mean/invstd outputs are used"
    if node.args[0].meta["val"].dim() < 2:
        return "batch norm input with < 2 dims"
    return None


_BN_KERNELS = ["CHANNEL_AFFINE", "CONV2D", "CONV2D_WINOGRAD", "CONV3D"]


@register(aten._native_batch_norm_legit_no_training.default, kernels=_BN_KERNELS, check=_bn_check,
          notes="folded into a preceding conv, else a per-channel scale+shift")
def _batch_norm(ctx, node):
    x, w, b, mean, var, _momentum, eps = node.args
    return emit_channel_affine(ctx, node, x, w, b, mean, var, eps), *_empty_stats(ctx, node)


def _native_bn_check(node):
    if node.args[5]:
        return "batch norm in training mode"
    return _bn_check(node)


@register(aten.native_batch_norm.default, kernels=_BN_KERNELS, check=_native_bn_check,
          notes="folded into a preceding conv, else a per-channel scale+shift")
def _native_batch_norm(ctx, node):
    x, w, b, mean, var, _training, _momentum, eps = node.args
    return emit_channel_affine(ctx, node, x, w, b, mean, var, eps), *_empty_stats(ctx, node)


def _empty_stats(ctx, node):
    """In inference the saved mean/invstd outputs are empty tensors (the check rejects others)."""
    return tuple(ctx.new_buffer(tuple(ctx.vals[node][i].shape), name=f"{node.name}_stat{i}")
                 if i in _used_outputs(node) else None for i in (1, 2))


@register(aten.native_layer_norm.default, kernels=["LAYERNORM"])
def _layer_norm(ctx, node):
    x_arg, normalized_shape, w_arg, b_arg, eps = node.args
    x = contiguous(ctx, ctx.value(x_arg))
    cols = prod(normalized_shape)
    rows = x.numel // cols if cols else 0
    used = _used_outputs(node)
    out = ctx.new_buffer(x.shape, name=node.name)
    stat_shape = tuple(ctx.vals[node][1].shape)
    mean = ctx.new_buffer(stat_shape, name=node.name + "_mean") if 1 in used else None
    rstd = ctx.new_buffer(stat_shape, name=node.name + "_rstd") if 2 in used else None
    w = contiguous(ctx, ctx.value(w_arg)) if w_arg is not None else None
    b = contiguous(ctx, ctx.value(b_arg)) if b_arg is not None else None
    if x.numel:
        ctx.emit("LAYERNORM", flops=8 * x.numel, rows=rows, cols=cols, eps=float(eps), **{"in": addr(x)},
                 weight=addr(w), bias=addr(b), out=addr(out), mean=addr(mean), rstd=addr(rstd))
    return out, mean, rstd


def _softmax_check(node):
    if bind(node)["half_to_float"]:
        return "softmax with half_to_float"
    return None


def _softmax(mode: int):
    def lower(ctx, node):
        x = contiguous(ctx, ctx.value(node.args[0]))
        out = ctx.new_buffer(x.shape, name=node.name)
        if not x.shape:
            shape, dim = (1,), 0
        else:
            shape, dim = x.shape, ctx.args(node)["dim"] % len(x.shape)
        if out.numel:
            ctx.emit("SOFTMAX", flops=5 * out.numel, outer=prod(shape[:dim]), dim=shape[dim],
                     inner=prod(shape[dim + 1:]), mode=mode, **{"in": addr(x)}, out=addr(out))
        return out
    return lower


register(aten._softmax.default, kernels=["SOFTMAX"], check=_softmax_check)(_softmax(0))
register(aten._log_softmax.default, kernels=["SOFTMAX"], check=_softmax_check)(_softmax(1))
def _safe_softmax_check(node):
    dtype = bind(node)["dtype"]
    return None if dtype in (None, torch.float32) else f"_safe_softmax to dtype {dtype}"


register(aten._safe_softmax.default, kernels=["SOFTMAX"], check=_safe_softmax_check)(_softmax(2))


def _affine_params(ctx: LoweringContext, node, w_arg, b_arg, channels):
    """weight/bias as contiguous [channels] refs (ones/zeros constants where absent)."""
    channels_at = ctx.at_call_sizes(channels)  # (channels may be a dynamic size)

    def vec(arg, fill, tag):
        if arg is not None:
            return contiguous(ctx, ctx.value(arg))
        return ctx.constant(lambda ins: torch.full((channels_at(ins),), fill), (channels,),
                            name=f"{node.name}_{tag}", per_shape=holds_tracked(channels), replayable=True)
    return vec(w_arg, 1.0, "ones"), vec(b_arg, 0.0, "zeros")


def _normalize_rows(ctx: LoweringContext, node, x, rows: int, cols: int, eps: float, stats_shape):
    """LAYERNORM without affine over [rows, cols]: normalized buffer, mean and rstd ([rows])."""
    out = ctx.new_buffer(x.shape, name=node.name + "_norm")
    mean = ctx.new_buffer(stats_shape, name=node.name + "_mean")
    rstd = ctx.new_buffer(stats_shape, name=node.name + "_rstd")
    if x.numel:
        ctx.emit("LAYERNORM", flops=8 * x.numel, rows=rows, cols=cols, eps=float(eps), **{"in": addr(x)},
                 weight=0, bias=0, out=addr(out), mean=addr(mean), rstd=addr(rstd))
    return out, mean, rstd


def _channel_affine(ctx: LoweringContext, x, out, outer, channels, inner, scale, shift):
    if out.numel:
        ctx.emit("CHANNEL_AFFINE", flops=2 * out.numel, outer=outer, channels=channels, inner=inner,
                 **{"in": addr(x)}, out=addr(out), scale=addr(scale), shift=addr(shift),
                 act=ABI.unary["IDENTITY"], p0=0.0, p1=0.0)
    return out


@register(aten.native_group_norm.default, kernels=["LAYERNORM", "CHANNEL_AFFINE"])
def _group_norm(ctx, node):
    """Each (sample, group) is one LAYERNORM row of (C/G) * HxW values (biased variance, as eager),
    then the per-channel weight and bias as a CHANNEL_AFFINE."""
    x_arg, w_arg, b_arg, n, c, hw, groups, eps = node.args
    n, c, hw, groups = (ctx.value(v) for v in (n, c, hw, groups))  # ints (tracked ones stay tracked)
    x = contiguous(ctx, ctx.value(x_arg))
    normed, mean, rstd = _normalize_rows(ctx, node, x, n * groups, (c // groups) * hw, eps, (n, groups))
    scale, shift = _affine_params(ctx, node, w_arg, b_arg, c)
    out = _channel_affine(ctx, normed, ctx.new_buffer(x.shape, name=node.name), n, c, hw, scale, shift)
    return out, mean, rstd


@register(aten._native_batch_norm_legit.no_stats, kernels=["LAYERNORM", "CHANNEL_AFFINE", "UNARY"])
def _batch_norm_batch_stats(ctx, node):
    """Batch norm with the batch's own statistics (InstanceNorm, or BatchNorm without running stats):
    per channel over (N, spatial). N = 1 (InstanceNorm's [1, N*C, ...] view) is one LAYERNORM row
    per channel; a larger batch is first permuted to [C, N, spatial] (and back)."""
    a = ctx.args(node)
    x_arg, w_arg, b_arg, eps = a["input"], a["weight"], a["bias"], a["eps"]
    x = ctx.value(x_arg)
    n, c = x.shape[0], x.shape[1]
    inner = prod(x.shape[2:])
    if n == 1:
        src = contiguous(ctx, x)
    else:
        from ..plan import TensorRef
        from .elementwise import emit_copy
        x = contiguous(ctx, x)
        view = TensorRef(x.buffer, (c, n, inner), (inner, c * inner, 1), x.offset, x.dtype)
        src = emit_copy(ctx, view, ctx.new_buffer((c, n, inner), name=node.name + "_cfirst"))
    normed, mean, rstd = _normalize_rows(ctx, node, src, c, n * inner, eps, (c,))
    scale, shift = _affine_params(ctx, node, w_arg, b_arg, c)
    out = ctx.new_buffer(x.shape, name=node.name)
    if n == 1:
        _channel_affine(ctx, normed, out, 1, c, inner, scale, shift)
    else:
        from ..plan import TensorRef
        from .elementwise import emit_copy
        affine = _channel_affine(ctx, normed, ctx.new_buffer((c, n, inner), name=node.name + "_aff"), 1, c,
                                 n * inner, scale, shift)
        dst = TensorRef(out.buffer, (c, n, inner), (inner, c * inner, 1), 0, out.dtype)
        emit_copy(ctx, affine, dst)
    return out, mean, rstd
