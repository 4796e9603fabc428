"""Comparisons and logical ops (-> bool, the COMPARE kernel), where / masked_fill (WHERE), and
tril / triu (WHERE with a mask built at compile time). Operands are first converted to the dtype
eager's type promotion picks, so the comparison itself is exact in that dtype."""
from __future__ import annotations

import torch
from torch.fx import Node

from ..abi import ABI
from ..context import LoweringContext
from ..plan import TensorRef
from ..registry import ALL_DTYPES, Unsupported, register
from ..strided import strided_args
from .elementwise import DTYPE_CODE, emit_copy

aten = torch.ops.aten


def _meta(ctx: LoweringContext, arg):
    """A stand-in for type promotion: a meta tensor with arg's dtype and dimensionality (0-dim
    tensors promote differently), or the Python scalar itself."""
    if isinstance(arg, Node):
        v = ctx.val(arg)
        if hasattr(v, "dtype"):
            return torch.empty((1,) * v.dim(), dtype=v.dtype, device="meta")
        return v
    return arg


def common_dtype(ctx: LoweringContext, a, b) -> torch.dtype:
    """The dtype eager computes a (op) b in (torch.result_type's rules)."""
    return torch.result_type(_meta(ctx, a), _meta(ctx, b))


def operand(ctx: LoweringContext, arg, dtype: torch.dtype, name: str) -> TensorRef:
    """arg as a TensorRef of `dtype`: a converting copy for tensors of another dtype, a 0-d
    constant for Python scalars."""
    value = ctx.value(arg)
    if isinstance(value, TensorRef):
        if value.dtype == dtype:
            return value
        return emit_copy(ctx, value, ctx.new_buffer(value.shape, dtype, name))
    if isinstance(value, (bool, int, float)):
        return ctx.constant(lambda ins, v=value: torch.tensor(v, dtype=dtype), (), dtype, f"scalar_{value!r}")
    raise Unsupported(f"unsupported operand {value!r}")


def emit_compare(ctx: LoweringContext, op: str, a: TensorRef, b: TensorRef, out: TensorRef) -> TensorRef:
    if out.numel == 0:
        return out
    ctx.emit("COMPARE", flops=out.numel, op=ABI.compare[op], dtype=DTYPE_CODE[a.dtype],
             **strided_args(out, a=a, b=b))
    return out


def emit_where(ctx: LoweringContext, cond: TensorRef, a: TensorRef, b: TensorRef, out: TensorRef) -> TensorRef:
    if out.numel == 0:
        return out
    if cond.dtype != torch.bool:
        cond = emit_copy(ctx, cond, ctx.new_buffer(cond.shape, torch.bool, "cond"))
    ctx.emit("WHERE", flops=out.numel, elem_size=out.itemsize, **strided_args(out, cond=cond, a=a, b=b))
    return out


def _compare(op: str, logical: bool = False):
    def lower(ctx: LoweringContext, node):
        a_arg, b_arg = node.args[0], node.args[1]
        # logical ops look at truthiness only: compare in the promoted dtype (x != 0 is exact there)
        dtype = common_dtype(ctx, a_arg, b_arg)
        a = operand(ctx, a_arg, dtype, node.name + "_a")
        b = operand(ctx, b_arg, dtype, node.name + "_b")
        return emit_compare(ctx, op, a, b, ctx.out_for(node))
    return lower


def _complex_check(node):
    for a in node.args[:2]:
        v = a.meta.get("val") if isinstance(a, Node) else None
        if isinstance(a, complex) or (v is not None and v.is_complex()):
            return "complex operands"
    return None


for _name, _op in (("eq", "EQ"), ("ne", "NE"), ("lt", "LT"), ("le", "LE"), ("gt", "GT"), ("ge", "GE")):
    register(getattr(aten, _name).Tensor, getattr(aten, _name).Scalar, kernels=["COMPARE", "CAST"],
             dtypes=ALL_DTYPES, check=_complex_check)(_compare(_op))
for _name, _op in (("logical_and", "AND"), ("logical_or", "OR"), ("logical_xor", "XOR")):
    register(getattr(aten, _name).default, kernels=["COMPARE", "CAST"], dtypes=ALL_DTYPES,
             check=_complex_check)(_compare(_op))


def _bool_only(node):
    for a in node.args[:2]:
        if isinstance(a, Node) and a.meta["val"].dtype != torch.bool:
            return f"bitwise op on {a.meta['val'].dtype} (wasm runs it on bool only)"
        if not isinstance(a, Node) and not isinstance(a, bool):
            return "bitwise op with a non-bool scalar"
    return None


for _name, _op in (("bitwise_and", "AND"), ("bitwise_or", "OR"), ("bitwise_xor", "XOR")):
    register(getattr(aten, _name).Tensor, kernels=["COMPARE"], dtypes=(torch.bool,), check=_bool_only)(_compare(_op))


@register(aten.logical_not.default, kernels=["COMPARE"], dtypes=ALL_DTYPES, check=_complex_check)
def _logical_not(ctx, node):
    x = ctx.value(node.args[0])
    zero = operand(ctx, 0, x.dtype, node.name + "_zero")
    return emit_compare(ctx, "EQ", x, zero, ctx.out_for(node))


@register(aten.bitwise_not.default, kernels=["COMPARE"], dtypes=(torch.bool,), check=_bool_only)
def _bitwise_not(ctx, node):
    return _logical_not(ctx, node)


def _where_check(node):
    cond = node.args[0]
    if isinstance(cond, Node) and cond.meta["val"].dtype not in (torch.bool, torch.uint8):
        return f"where with a {cond.meta['val'].dtype} condition"
    return None


@register(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar,
          kernels=["WHERE", "CAST"], dtypes=ALL_DTYPES, check=_where_check)
def _where(ctx, node):
    out = ctx.out_for(node)
    cond = ctx.value(node.args[0])
    a = operand(ctx, node.args[1], out.dtype, node.name + "_a")
    b = operand(ctx, node.args[2], out.dtype, node.name + "_b")
    return emit_where(ctx, cond, a, b, out)


def _masked_fill_check(node):
    mask = node.args[1]
    if mask.meta["val"].dtype != torch.bool:
        return f"masked_fill with a {mask.meta['val'].dtype} mask"
    return None


@register(aten.masked_fill.Scalar, aten.masked_fill.Tensor, kernels=["WHERE", "CAST"], dtypes=ALL_DTYPES,
          check=_masked_fill_check)
def _masked_fill(ctx, node):
    out = ctx.out_for(node)
    x = ctx.value(node.args[0])
    value = operand(ctx, node.args[2], out.dtype, node.name + "_value")
    return emit_where(ctx, ctx.value(node.args[1]), value, x, out)


def _triangle(upper: bool):
    def lower(ctx: LoweringContext, node):
        x = ctx.value(node.args[0])
        diagonal = ctx.args(node)["diagonal"]
        rows, cols = x.shape[-2:]
        fn = torch.triu if upper else torch.tril
        # the kept cells as a [rows, cols] bool constant, broadcast over the batch dims
        mask = ctx.constant(lambda ins: fn(torch.ones(rows, cols, dtype=torch.bool), diagonal), (rows, cols),
                            torch.bool, f"{node.name}_mask")
        zero = operand(ctx, 0, x.dtype, node.name + "_zero")
        return emit_where(ctx, mask, x, zero, ctx.out_for(node))
    return lower


register(aten.tril.default, kernels=["WHERE"], dtypes=ALL_DTYPES)(_triangle(False))
register(aten.triu.default, kernels=["WHERE"], dtypes=ALL_DTYPES)(_triangle(True))
