"""Elementwise ops -> UNARY / BINARY kernels over strided, broadcast views (no copies for views)."""
from __future__ import annotations

import math

import torch

from ..abi import ABI
from ..context import LoweringContext
from ..fusion import fuse_activation, fuse_into_chain, start_chain
from ..plan import TensorRef
from ..registry import ALL_DTYPES, Unsupported, bind, register
from ..strided import strided_args

aten = torch.ops.aten

# torch dtype -> the ABI's DTYPE code (the dtype-generic kernels: CAST, COMPARE, INDEX_SELECT)
DTYPE_CODE = {torch.float32: ABI.dtype["F32"], torch.float64: ABI.dtype["F64"], torch.int64: ABI.dtype["I64"],
              torch.int32: ABI.dtype["I32"], torch.int16: ABI.dtype["I16"], torch.int8: ABI.dtype["I8"],
              torch.uint8: ABI.dtype["U8"], torch.bool: ABI.dtype["BOOL"]}


def emit_unary(ctx: LoweringContext, op: str, src: TensorRef, out: TensorRef, p0=0.0, p1=0.0) -> TensorRef:
    if out.numel == 0:
        return out
    ctx.emit("UNARY", flops=out.numel, op=ABI.unary[op], p0=p0, p1=p1, **strided_args(out, **{"in": src}))
    start_chain(ctx, out, [src], ABI.unary[op], binary=False, p0=p0, p1=p1)
    return out


def emit_binary(ctx: LoweringContext, op: str, a: TensorRef, b: TensorRef, out: TensorRef) -> TensorRef:
    if out.numel == 0:
        return out
    ctx.emit("BINARY", flops=out.numel, op=ABI.binary[op], **strided_args(out, a=a, b=b))
    start_chain(ctx, out, [a] if b is a else [a, b], ABI.binary[op], binary=True)
    return out


def emit_copy(ctx: LoweringContext, src: TensorRef, out: TensorRef) -> TensorRef:
    """out = src (any strides, broadcasting src), converting the element type if they differ."""
    if src.dtype == out.dtype == torch.float32:
        return emit_unary(ctx, "IDENTITY", src, out)
    if out.numel == 0:
        return out
    ctx.emit("CAST", flops=out.numel, out_dtype=DTYPE_CODE[out.dtype], in_dtype=DTYPE_CODE[src.dtype],
             **strided_args(out, **{"in": src}))
    return out


def contiguous(ctx: LoweringContext, ref: TensorRef) -> TensorRef:
    """ref itself if contiguous, else a contiguous copy (one strided-copy kernel)."""
    if ref.is_contiguous():
        return ref
    return emit_copy(ctx, ref, ctx.new_buffer(ref.shape, ref.dtype, ref.buffer.name + "_contig"))


def as_tensor_ref(ctx: LoweringContext, value, dtype: torch.dtype = torch.float32) -> TensorRef:
    """value as a float32 (or `dtype`) operand: tensors of another dtype are converted (type
    promotion: eager converts them the same way before computing), scalars become constants."""
    if isinstance(value, TensorRef):
        if value.dtype != dtype:
            return emit_copy(ctx, value, ctx.new_buffer(value.shape, dtype, value.buffer.name + "_cast"))
        return value
    if isinstance(value, (int, float, bool)):
        return ctx.scalar(value, dtype)
    raise Unsupported(f"unsupported operand {value!r}")


INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def emit_int_binary(ctx: LoweringContext, op: str, a: TensorRef, b: TensorRef, out: TensorRef) -> TensorRef:
    if out.numel == 0:
        return out
    ctx.emit("INT_BINARY", flops=out.numel, op=ABI.binary[op], dtype=DTYPE_CODE[out.dtype],
             **strided_args(out, a=a, b=b))
    return out


def _binary(op: str):
    def lower(ctx: LoweringContext, node):
        out = ctx.out_for(node)
        x, y = ctx.value(node.args[0]), ctx.value(node.args[1])
        alpha = ctx.args(node).get("alpha", 1)  # (maximum, minimum, div... have none)
        if out.dtype == torch.float32 and alpha == 1:
            # Join the chain that produced one operand (a Python number other operand becomes an
            # immediate; a tensor of another dtype would need a cast first, so no fusion).
            fused = (fuse_into_chain(ctx, node, node.args[0], op, y)
                     or fuse_into_chain(ctx, node, node.args[1], op, x, arg_first=False))
            if fused is not None:
                return fused
        a, b = as_tensor_ref(ctx, x, out.dtype), as_tensor_ref(ctx, y, out.dtype)
        if out.dtype in INT_DTYPES:  # integer results: wrap-around integer kernels
            if alpha != 1:
                b = emit_int_binary(ctx, "MUL", b, as_tensor_ref(ctx, int(alpha), out.dtype),
                                    ctx.new_buffer(b.shape, out.dtype, node.name + "_alpha"))
            return emit_int_binary(ctx, op, a, b, out)
        if alpha != 1:
            scaled = ctx.new_buffer(b.shape, name=node.name + "_alpha")
            b = emit_unary(ctx, "AFFINE", b, scaled, float(alpha), 0.0)
        return emit_binary(ctx, op, a, b, out)
    return lower


_ARITH_DTYPES = (torch.float32,) + INT_DTYPES


def _rounding_mode(node):
    mode = bind(node)["rounding_mode"]
    if mode not in (None, "trunc", "floor"):
        return f"div with rounding_mode={mode!r}"
    return None


def _div_mode(ctx: LoweringContext, node):
    """trunc: eager computes trunc(a / b), so DIV then TRUNC is bit-equal; floor: eager's fmod-based
    div_floor_floating, which the FLOOR_DIVIDE kernel reproduces step for step."""
    a = as_tensor_ref(ctx, ctx.value(node.args[0]))
    b = as_tensor_ref(ctx, ctx.value(node.args[1]))
    mode = ctx.args(node)["rounding_mode"]
    out = ctx.out_for(node)
    if mode == "floor":
        return emit_binary(ctx, "FLOOR_DIVIDE", a, b, out)
    emit_binary(ctx, "DIV", a, b, out)
    return emit_unary(ctx, "TRUNC", out, out) if mode == "trunc" else out


register(aten.add.Tensor, aten.add.Scalar, kernels=["BINARY", "INT_BINARY"], dtypes=_ARITH_DTYPES,
         promotes=True)(_binary("ADD"))
register(aten.sub.Tensor, aten.sub.Scalar, kernels=["BINARY", "INT_BINARY"], dtypes=_ARITH_DTYPES,
         promotes=True)(_binary("SUB"))
register(aten.mul.Tensor, aten.mul.Scalar, kernels=["BINARY", "INT_BINARY"], dtypes=_ARITH_DTYPES,
         promotes=True)(_binary("MUL"))
register(aten.div.Tensor, aten.div.Scalar, kernels=["BINARY"], promotes=True)(_binary("DIV"))
register(aten.div.Tensor_mode, aten.div.Scalar_mode, kernels=["BINARY", "UNARY"], check=_rounding_mode,
         promotes=True)(_div_mode)
# Tensor exponents: exp(b log|a|) lane by lane (C pow's special cases exact); eager's std::pow is
# correctly rounded, ours within ~2 ulp per unit of |b log a| (the kernel tests state the bound).
register(aten.pow.Tensor_Tensor, aten.pow.Scalar, kernels=["BINARY"], promotes=True)(_binary("POW"))
register(aten.floor_divide.default, aten.floor_divide.Scalar, kernels=["BINARY"], promotes=True)(_binary("FLOOR_DIVIDE"))
register(aten.maximum.default, kernels=["BINARY", "INT_BINARY"], dtypes=_ARITH_DTYPES, promotes=True)(_binary("MAXIMUM"))
# tensor bounds: NaN-propagating maximum / minimum, as eager's vectorized clamp_min / clamp_max
register(aten.clamp_min.Tensor, kernels=["BINARY"], promotes=True)(_binary("MAXIMUM"))
register(aten.clamp_max.Tensor, kernels=["BINARY"], promotes=True)(_binary("MINIMUM"))
register(aten.minimum.default, kernels=["BINARY", "INT_BINARY"], dtypes=_ARITH_DTYPES, promotes=True)(_binary("MINIMUM"))


@register(aten.rsub.Scalar, aten.rsub.Tensor, kernels=["BINARY"], promotes=True)
def _rsub(ctx, node):
    x, y = ctx.value(node.args[0]), ctx.value(node.args[1])
    alpha = ctx.args(node)["alpha"]
    if alpha == 1:  # y - x, joining the chain that produced x
        fused = fuse_into_chain(ctx, node, node.args[0], "SUB", y, arg_first=False)
        if fused is not None:
            return fused
    a, b = as_tensor_ref(ctx, x), as_tensor_ref(ctx, y)
    if alpha != 1:
        a = emit_unary(ctx, "AFFINE", a, ctx.new_buffer(a.shape), float(alpha), 0.0)
    return emit_binary(ctx, "SUB", b, a, ctx.out_for(node))


def emit_activation(ctx: LoweringContext, node, op: str, p0=0.0, p1=0.0) -> TensorRef:
    """act(x): fused into the epilogue of the kernel that produced x when possible (conv+relu,
    linear+gelu...: one pass over memory less), else a UNARY kernel."""
    src = as_tensor_ref(ctx, ctx.value(node.args[0]))
    fused = fuse_activation(ctx, node.args[0], op, p0, p1)
    if fused is None:
        fused = fuse_into_chain(ctx, node, node.args[0], op, p0=p0, p1=p1)
    if fused is not None:
        return fused
    return emit_unary(ctx, op, src, ctx.out_for(node), p0, p1)


def _unary(op: str, p0=0.0, p1=0.0):
    def lower(ctx: LoweringContext, node):
        return emit_activation(ctx, node, op, p0, p1)
    return lower


register(aten.relu.default, kernels=["UNARY"], promotes=True)(_unary("RELU"))
register(aten.silu.default, kernels=["UNARY"], promotes=True)(_unary("SILU"))
register(aten.sigmoid.default, kernels=["UNARY"], promotes=True)(_unary("SIGMOID"))
register(aten.tanh.default, kernels=["UNARY"], promotes=True)(_unary("TANH"))
register(aten.exp.default, kernels=["UNARY"], promotes=True)(_unary("EXP"))
register(aten.neg.default, kernels=["UNARY"], promotes=True)(_unary("NEG"))
register(aten.sqrt.default, kernels=["UNARY"], promotes=True)(_unary("SQRT"))
register(aten.rsqrt.default, kernels=["UNARY"], promotes=True)(_unary("RSQRT"))
register(aten.hardswish.default, kernels=["UNARY"], promotes=True)(_unary("HARDSWISH"))
register(aten.hardsigmoid.default, kernels=["UNARY"], promotes=True)(_unary("HARDSIGMOID"))
register(aten.abs.default, kernels=["UNARY"], promotes=True)(_unary("ABS"))
register(aten.log.default, kernels=["UNARY"], promotes=True)(_unary("LOG"))
register(aten.reciprocal.default, kernels=["UNARY"], promotes=True)(_unary("RECIPROCAL"))
register(aten.erf.default, kernels=["UNARY"], promotes=True)(_unary("ERF"))
register(aten.floor.default, kernels=["UNARY"], promotes=True)(_unary("FLOOR"))
register(aten.ceil.default, kernels=["UNARY"], promotes=True)(_unary("CEIL"))
register(aten.trunc.default, kernels=["UNARY"], promotes=True)(_unary("TRUNC"))
register(aten.round.default, kernels=["UNARY"], promotes=True)(_unary("ROUND"))
# sin/cos (rotary embeddings): <= 1.52 ulp from the true value (kernel tests), eager's SLEEF ~1 ulp.
register(aten.sin.default, kernels=["UNARY"], promotes=True)(_unary("SIN"))
register(aten.cos.default, kernels=["UNARY"], promotes=True)(_unary("COS"))


@register(aten.round.decimals, kernels=["UNARY", "BINARY"], promotes=True)
def _round_decimals(ctx, node):
    """Eager: nearbyint(x * 10^d) / 10^d, or nearbyint(x / 10^-d) * 10^-d for d < 0, in float32."""
    decimals = int(ctx.args(node)["decimals"])
    x = as_tensor_ref(ctx, ctx.value(node.args[0]))
    out = ctx.out_for(node)
    if decimals == 0:
        return emit_unary(ctx, "ROUND", x, out)
    scale = ctx.scalar(float(torch.tensor(10.0 ** abs(decimals), dtype=torch.float32)))
    emit_binary(ctx, "MUL" if decimals > 0 else "DIV", x, scale, out)
    emit_unary(ctx, "ROUND", out, out)
    return emit_binary(ctx, "DIV" if decimals > 0 else "MUL", out, scale, out)


@register(aten.leaky_relu.default, kernels=["UNARY"])
def _leaky_relu(ctx, node):
    slope = ctx.args(node)["negative_slope"]
    return emit_unary(ctx, "LEAKY_RELU", ctx.value(node.args[0]), ctx.out_for(node), float(slope))


def _pow_check(node):
    if isinstance(node.args[1], torch.fx.Node):
        return "pow with a tensor exponent"
    if not math.isfinite(float(node.args[1])) or isinstance(node.args[1], complex):
        return "pow with a non-finite exponent"
    return None


@register(aten.pow.Tensor_Scalar, kernels=["UNARY", "BINARY"], check=_pow_check)
def _pow(ctx, node):
    """Eager's CPU pow special-cases these exponents with exact arithmetic; so do we (bit-equal),
    and every other exponent goes to the POW kernel (exp(p log|x|), a few ulp)."""
    x, p = ctx.value(node.args[0]), float(node.args[1])
    out = ctx.out_for(node)
    if p == 0.0:
        return emit_copy(ctx, ctx.scalar(1.0), out)  # eager: 1 for every x, NaN included
    if p == 1.0:
        return emit_unary(ctx, "IDENTITY", x, out)
    if p == 0.5:
        return emit_unary(ctx, "SQRT", x, out)
    if p == -0.5:
        return emit_unary(ctx, "RSQRT", x, out)
    if p == -1.0:
        return emit_unary(ctx, "RECIPROCAL", x, out)
    if p in (2.0, -2.0, 3.0):
        sq = emit_binary(ctx, "MUL", x, x, ctx.new_buffer(out.shape, name=node.name + "_sq") if p != 2.0 else out)
        if p == 2.0:
            return out
        if p == 3.0:
            return emit_binary(ctx, "MUL", sq, x, out)
        return emit_unary(ctx, "RECIPROCAL", sq, out)
    return emit_unary(ctx, "POW", x, out, p)


@register(aten.gelu.default, kernels=["UNARY"])
def _gelu(ctx, node):
    approximate = ctx.args(node)["approximate"]
    return emit_activation(ctx, node, "GELU_TANH" if approximate == "tanh" else "GELU_ERF")


def _clamp_bounds(lo, hi):
    return (-math.inf if lo is None else float(lo)), (math.inf if hi is None else float(hi))


@register(aten.clamp.Tensor, kernels=["BINARY"], promotes=True)
def _clamp_tensor(ctx, node):
    """clamp(x, lo, hi) with tensor bounds = minimum(maximum(x, lo), hi), NaN-propagating like
    eager's vectorized clamp."""
    args = ctx.args(node)
    lo, hi = args["min"], args["max"]
    out = ctx.out_for(node)
    x = as_tensor_ref(ctx, ctx.value(node.args[0]))
    if lo is None and hi is None:
        raise Unsupported("clamp without bounds")
    if lo is not None:
        x = emit_binary(ctx, "MAXIMUM", x, as_tensor_ref(ctx, ctx.value(lo)), out)
    if hi is not None:
        x = emit_binary(ctx, "MINIMUM", x, as_tensor_ref(ctx, ctx.value(hi)), out)
    return out


@register(aten.clamp.default, kernels=["UNARY"])
def _clamp(ctx, node):
    args = ctx.args(node)
    lo, hi = _clamp_bounds(args["min"], args["max"])
    return emit_activation(ctx, node, "CLAMP", lo, hi)


@register(aten.hardtanh.default, kernels=["UNARY"])
def _hardtanh(ctx, node):
    args = ctx.args(node)
    return emit_activation(ctx, node, "CLAMP", float(args["min_val"]), float(args["max_val"]))


def _copy_check(node):
    layout = bind(node).get("layout")  # (clone has none)
    if layout not in (None, torch.strided):
        return f"_to_copy to layout {layout}"
    return None


@register(aten.clone.default, aten._to_copy.default, aten.lift_fresh_copy.default, kernels=["UNARY", "CAST"],
          check=_copy_check, dtypes=ALL_DTYPES)
def _copy(ctx, node):
    return emit_copy(ctx, ctx.value(node.args[0]), ctx.out_for(node))
