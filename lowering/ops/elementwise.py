"""Elementwise ops -> UNARY / BINARY kernels over strided, broadcast views (no copies for views)."""
from __future__ import annotations

import math

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..plan import TensorRef
from ..registry import Unsupported, register

aten = torch.ops.aten


def broadcast_strides(ref: TensorRef, shape: tuple[int, ...]) -> list[int]:
    """ref's element strides when broadcast to `shape` (0 on broadcast dims)."""
    pad = len(shape) - len(ref.shape)
    if pad < 0:
        raise Unsupported(f"cannot broadcast {ref.shape} to {shape}")
    strides = [0] * pad
    for size, stride, want in zip(ref.shape, ref.strides, shape[pad:]):
        if size == want:
            strides.append(stride if want != 1 else 0)
        elif size == 1:
            strides.append(0)
        else:
            raise Unsupported(f"cannot broadcast {ref.shape} to {shape}")
    return strides


def collapse(shape, *stride_lists) -> tuple[list[int], list[list[int]]]:
    """Drops size-1 dims and merges adjacent dims that are contiguous in every operand, then pads
    to MAX_DIMS (outermost first). Raises Unsupported if more than MAX_DIMS dims remain."""
    dims = [(s, [st[i] for st in stride_lists]) for i, s in enumerate(shape) if s != 1]
    merged: list[tuple[int, list[int]]] = []
    for size, strides in dims:
        if merged:
            psize, pstrides = merged[-1]
            if all(ps == s * size for ps, s in zip(pstrides, strides)):
                merged[-1] = (psize * size, strides)
                continue
        merged.append((size, strides))
    if len(merged) > ABI.max_dims:
        raise Unsupported(f"elementwise over {len(merged)} non-mergeable dims (max {ABI.max_dims})")
    pad = ABI.max_dims - len(merged)
    sizes = [1] * pad + [m[0] for m in merged]
    out_strides = [[0] * pad + [m[1][k] for m in merged] for k in range(len(stride_lists))]
    return sizes, out_strides


def emit_unary(ctx: LoweringContext, op: str, src: TensorRef, out: TensorRef, p0=0.0, p1=0.0) -> TensorRef:
    if out.numel == 0:
        return out
    sizes, (so, si) = collapse(out.shape, list(out.strides), broadcast_strides(src, out.shape))
    ctx.emit("UNARY", flops=out.numel, op=ABI.unary[op], size=sizes, out_stride=so, in_stride=si,
             out=addr(out), **{"in": addr(src)}, p0=p0, p1=p1)
    return out


def emit_binary(ctx: LoweringContext, op: str, a: TensorRef, b: TensorRef, out: TensorRef) -> TensorRef:
    if out.numel == 0:
        return out
    sizes, (so, sa, sb) = collapse(out.shape, list(out.strides), broadcast_strides(a, out.shape),
                                   broadcast_strides(b, out.shape))
    ctx.emit("BINARY", flops=out.numel, op=ABI.binary[op], size=sizes, out_stride=so, a_stride=sa,
             b_stride=sb, out=addr(out), a=addr(a), b=addr(b))
    return out


def as_tensor_ref(ctx: LoweringContext, value) -> TensorRef:
    if isinstance(value, TensorRef):
        return value
    if isinstance(value, (int, float, bool)):
        return ctx.scalar(value)
    raise Unsupported(f"unsupported operand {value!r}")


def _binary(op: str):
    def lower(ctx: LoweringContext, node):
        a = as_tensor_ref(ctx, ctx.value(node.args[0]))
        b = as_tensor_ref(ctx, ctx.value(node.args[1]))
        alpha = node.kwargs.get("alpha", node.args[2] if len(node.args) > 2 else 1)
        if alpha != 1:
            scaled = ctx.new_buffer(b.shape, name=node.name + "_alpha")
            b = emit_unary(ctx, "AFFINE", b, scaled, float(alpha), 0.0)
        return emit_binary(ctx, op, a, b, ctx.out_for(node))
    return lower


def _no_rounding_mode(node):
    if node.kwargs.get("rounding_mode") is not None:
        return f"div with rounding_mode={node.kwargs['rounding_mode']!r}"
    return None


register(aten.add.Tensor, aten.add.Scalar, kernels=["BINARY"])(_binary("ADD"))
register(aten.sub.Tensor, aten.sub.Scalar, kernels=["BINARY"])(_binary("SUB"))
register(aten.mul.Tensor, aten.mul.Scalar, kernels=["BINARY"])(_binary("MUL"))
register(aten.div.Tensor, aten.div.Scalar, kernels=["BINARY"])(_binary("DIV"))
register(aten.div.Tensor_mode, kernels=["BINARY"], check=_no_rounding_mode)(_binary("DIV"))
register(aten.maximum.default, kernels=["BINARY"])(_binary("MAXIMUM"))
register(aten.minimum.default, kernels=["BINARY"])(_binary("MINIMUM"))


@register(aten.rsub.Scalar, aten.rsub.Tensor, kernels=["BINARY"])
def _rsub(ctx, node):
    a = as_tensor_ref(ctx, ctx.value(node.args[0]))
    b = as_tensor_ref(ctx, ctx.value(node.args[1]))
    alpha = node.kwargs.get("alpha", node.args[2] if len(node.args) > 2 else 1)
    if alpha != 1:
        a = emit_unary(ctx, "AFFINE", a, ctx.new_buffer(a.shape), float(alpha), 0.0)
    return emit_binary(ctx, "SUB", b, a, ctx.out_for(node))


# Activations the GEMM / CONV2D / CHANNEL_AFFINE epilogues apply (kernels_cpp/elementwise.h
# FOR_EACH_UNARY); an op outside this list is never fused.
EPILOGUE_OPS = {"RELU", "GELU_ERF", "GELU_TANH", "SILU", "SIGMOID", "TANH", "CLAMP"}


def emit_activation(ctx: LoweringContext, node, op: str, p0=0.0, p1=0.0) -> TensorRef:
    """act(x): fused into the epilogue of the kernel that produced x when possible (conv+relu,
    linear+gelu...: one pass over memory less), else a UNARY kernel."""
    src = ctx.value(node.args[0])
    if op in EPILOGUE_OPS:
        fused = ctx.fuse_activation(node.args[0], op, p0, p1)
        if fused is not None:
            return fused
    return emit_unary(ctx, op, src, ctx.out_for(node), p0, p1)


def _unary(op: str, p0=0.0, p1=0.0):
    def lower(ctx: LoweringContext, node):
        return emit_activation(ctx, node, op, p0, p1)
    return lower


register(aten.relu.default, kernels=["UNARY"])(_unary("RELU"))
register(aten.silu.default, kernels=["UNARY"])(_unary("SILU"))
register(aten.sigmoid.default, kernels=["UNARY"])(_unary("SIGMOID"))
register(aten.tanh.default, kernels=["UNARY"])(_unary("TANH"))
register(aten.exp.default, kernels=["UNARY"])(_unary("EXP"))
register(aten.neg.default, kernels=["UNARY"])(_unary("NEG"))
register(aten.sqrt.default, kernels=["UNARY"])(_unary("SQRT"))
register(aten.rsqrt.default, kernels=["UNARY"])(_unary("RSQRT"))


@register(aten.gelu.default, kernels=["UNARY"])
def _gelu(ctx, node):
    approximate = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
    return emit_activation(ctx, node, "GELU_TANH" if approximate == "tanh" else "GELU_ERF")


def _clamp_bounds(lo, hi):
    return (-math.inf if lo is None else float(lo)), (math.inf if hi is None else float(hi))


def _clamp_check(node):
    if any(isinstance(a, torch.fx.Node) for a in node.args[1:]):
        return "clamp with tensor bounds"
    return None


@register(aten.clamp.default, kernels=["UNARY"], check=_clamp_check)
def _clamp(ctx, node):
    args = list(node.args) + [None] * (3 - len(node.args))
    lo, hi = _clamp_bounds(node.kwargs.get("min", args[1]), node.kwargs.get("max", args[2]))
    return emit_activation(ctx, node, "CLAMP", lo, hi)


@register(aten.hardtanh.default, kernels=["UNARY"])
def _hardtanh(ctx, node):
    args = list(node.args) + [-1.0, 1.0][len(node.args) - 1:]
    return emit_activation(ctx, node, "CLAMP", float(args[1]), float(args[2]))


def _same_dtype_copy(node):
    dtype = node.kwargs.get("dtype")
    if dtype is not None and dtype != torch.float32:
        return f"_to_copy to {dtype}"
    layout = node.kwargs.get("layout")
    if layout not in (None, torch.strided):
        return f"_to_copy to layout {layout}"
    return None


@register(aten.clone.default, aten._to_copy.default, kernels=["UNARY"], check=_same_dtype_copy)
def _copy(ctx, node):
    return emit_unary(ctx, "IDENTITY", ctx.value(node.args[0]), ctx.out_for(node))
