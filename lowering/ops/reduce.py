"""sum / mean / amax / amin over dims -> REDUCE over a contiguous [outer, red, inner] view (a
permuting copy first when the reduced dims are not adjacent)."""
from __future__ import annotations

from math import prod

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..plan import TensorRef, contiguous_strides
from ..registry import bind, register, register_decomposition
from .elementwise import DTYPE_CODE, contiguous, emit_copy

aten = torch.ops.aten


def _dims(args: dict, rank):
    dims = args.get("dim")  # (sum.default and mean.default have none)
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return sorted({d % max(rank, 1) for d in dims})


def _dtype_check(node):
    out = node.meta["val"].dtype
    dtype = bind(node).get("dtype")  # (amax and amin have none)
    if dtype not in (None, torch.float32, torch.int64):
        return f"reduction to dtype {dtype}"
    src = node.args[0].meta["val"].dtype
    if out == torch.float32 and src != torch.float32:
        return f"float reduction of a {src} tensor"
    return None


def _empty_max_check(node):
    v = node.args[0].meta.get("val")
    if v is not None and v.numel() == 0:
        return "amax/amin of an empty tensor (eager raises)"
    return None


def reduction_layout(ctx: LoweringContext, node, x: TensorRef, dims, dtype):
    """x (converted to dtype) as a contiguous [outer, red, inner] with the reduced dims in the
    middle: a view when they already are adjacent and x is contiguous, else a permuting copy."""
    rank = len(x.shape)
    kept = [d for d in range(rank) if d not in dims]
    if dims != list(range(dims[0], dims[-1] + 1)) or not x.is_contiguous() or x.dtype != dtype:
        order = kept + dims  # reduced dims last, then reduce with inner = 1
        permuted = TensorRef(x.buffer, tuple(x.shape[d] for d in order),
                             tuple(x.strides[d] for d in order), x.offset, x.dtype)
        x = emit_copy(ctx, permuted, ctx.new_buffer(permuted.shape, dtype, node.name + "_perm"))
        return x, prod(x.shape[:len(kept)]), prod(x.shape[len(kept):]), 1
    return x, prod(x.shape[:dims[0]]), prod(x.shape[dims[0]:dims[-1] + 1]), prod(x.shape[dims[-1] + 1:])


def _reduce(op: str):
    def lower(ctx: LoweringContext, node):
        x = ctx.value(node.args[0])
        rank = len(x.shape)
        out = ctx.out_for(node)
        if rank == 0:
            return emit_copy(ctx, x, out)
        x, outer, red, inner = reduction_layout(ctx, node, x, _dims(ctx.args(node), rank), out.dtype)
        if out.numel and out.dtype == torch.int64:  # integer sums / extremes (bool sums promote)
            ctx.emit("INT_REDUCE", flops=x.numel, op=ABI.reduce[op], cumulative=0, outer=outer, red=red,
                     inner=inner, **{"in": addr(x)}, out=addr(out))
        elif out.numel:
            ctx.emit("REDUCE", flops=x.numel, op=ABI.reduce[op], outer=outer, red=red, inner=inner,
                     **{"in": addr(x)}, out=addr(out))
        return out
    return lower


_INT_INPUTS = (torch.float32, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)


def _int_inputs_check(check):
    def wrapped(node):
        src = node.args[0].meta["val"].dtype
        if src not in _INT_INPUTS:
            return f"dtype {src} input"
        return check(node)
    return wrapped


register(aten.sum.dim_IntList, aten.sum.default, kernels=["REDUCE", "INT_REDUCE"], dtypes=(torch.float32, torch.int64),
         promotes=True, check=_int_inputs_check(_dtype_check))(_reduce("SUM"))
register(aten.mean.dim, aten.mean.default, kernels=["REDUCE"], check=_dtype_check)(_reduce("MEAN"))
register(aten.amax.default, kernels=["REDUCE", "INT_REDUCE"], dtypes=(torch.float32, torch.int64),
         check=_empty_max_check)(_reduce("AMAX"))
register(aten.amin.default, kernels=["REDUCE", "INT_REDUCE"], dtypes=(torch.float32, torch.int64),
         check=_empty_max_check)(_reduce("AMIN"))


def _arg_check(node):
    src = node.args[0].meta["val"]
    if src.dtype not in _INT_INPUTS:
        return f"dtype {src.dtype} input"
    if src.numel() == 0:
        return "argmax/argmin of an empty tensor (eager raises)"
    return None


def _arg_reduce(op: str):
    def lower(ctx: LoweringContext, node):
        x = ctx.value(node.args[0])
        dim = ctx.args(node)["dim"]
        out = ctx.out_for(node)
        dtype = torch.float32 if x.dtype == torch.float32 else torch.int64
        if dim is None or not x.shape:  # over the flattened tensor
            x = contiguous(ctx, x) if x.dtype == dtype else emit_copy(ctx, x, ctx.new_buffer(x.shape, dtype, node.name + "_cast"))
            outer, red, inner = 1, x.numel, 1
        else:
            x, outer, red, inner = reduction_layout(ctx, node, x, [dim % len(x.shape)], dtype)
        ctx.emit("ARG_REDUCE", flops=x.numel, op=ABI.reduce[op], dtype=DTYPE_CODE[dtype], outer=outer, red=red,
                 inner=inner, **{"in": addr(x)}, out=addr(out))
        return out
    return lower


register(aten.argmax.default, kernels=["ARG_REDUCE"], dtypes=(torch.int64,), promotes=True, check=_arg_check)(_arg_reduce("AMAX"))
register(aten.argmin.default, kernels=["ARG_REDUCE"], dtypes=(torch.int64,), promotes=True, check=_arg_check)(_arg_reduce("AMIN"))

__all__ = ["contiguous_strides"]


def _var_parts(x, dim, correction, keepdim):
    dims = list(range(x.dim())) if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0) else dim
    correction = 1 if correction is None else correction
    n = 1
    for d in ([dims] if isinstance(dims, int) else dims):
        n *= x.shape[d]
    mean = torch.mean(x, dims, keepdim=True)
    diff = x - mean
    var = torch.sum(diff * diff, dims, keepdim=keepdim) / max(n - correction, 0)
    return var, (mean if keepdim else mean.squeeze(dims) if x.dim() else mean)


# Variance / standard deviation as two passes (mean, then the sum of squared deviations), the way
# eager computes them, on the kernels above. (PyTorch's own decomposition ends in prims.var.)
@register_decomposition(aten.var.correction, notes="mean, sub, mul, sum, div")
def _var(x, dim=None, *, correction=None, keepdim=False):
    return _var_parts(x, dim, correction, keepdim)[0]


@register_decomposition(aten.var_mean.correction, notes="mean, sub, mul, sum, div")
def _var_mean(x, dim=None, *, correction=None, keepdim=False):
    return _var_parts(x, dim, correction, keepdim)


@register_decomposition(aten.std.correction, notes="var, then sqrt")
def _std(x, dim=None, *, correction=None, keepdim=False):
    return torch.sqrt(_var_parts(x, dim, correction, keepdim)[0])


@register_decomposition(aten.std_mean.correction, notes="var, then sqrt")
def _std_mean(x, dim=None, *, correction=None, keepdim=False):
    var, mean = _var_parts(x, dim, correction, keepdim)
    return torch.sqrt(var), mean


def _max_dim(op: str):
    def lower(ctx: LoweringContext, node):
        """(values, indices): REDUCE for the values (NaN propagates), ARG_REDUCE for the indices
        (the first extreme, a NaN's index if any), each only when used."""
        from .norm import _used_outputs
        used = _used_outputs(node)
        x = ctx.value(node.args[0])
        dim = node.args[1] % max(len(x.shape), 1)
        values = indices = None
        vals = ctx.vals[node]
        if 0 in used:
            values = ctx.new_buffer(tuple(vals[0].shape), vals[0].dtype, node.name + "_values")
            if not x.shape:
                emit_copy(ctx, x, values)
            else:
                src, outer, red, inner = reduction_layout(ctx, node, x, [dim], x.dtype)
                kernel = "INT_REDUCE" if x.dtype == torch.int64 else "REDUCE"
                extra = {"cumulative": 0} if kernel == "INT_REDUCE" else {}
                ctx.emit(kernel, flops=x.numel, op=ABI.reduce[op], outer=outer, red=red, inner=inner,
                         **extra, **{"in": addr(src)}, out=addr(values))
        if 1 in used:
            indices = ctx.new_buffer(tuple(vals[1].shape), torch.int64, node.name + "_indices")
            src = x if x.shape else TensorRef(x.buffer, (1,), (1,), x.offset, x.dtype)
            src, outer, red, inner = reduction_layout(ctx, node, src, [dim if x.shape else 0], x.dtype)
            ctx.emit("ARG_REDUCE", flops=x.numel, op=ABI.reduce[op], dtype=DTYPE_CODE[x.dtype], outer=outer,
                     red=red, inner=inner, **{"in": addr(src)}, out=addr(indices))
        return values, indices
    return lower


register(aten.max.dim, kernels=["REDUCE", "ARG_REDUCE"], dtypes=(torch.float32, torch.int64),
         check=_arg_check)(_max_dim("AMAX"))
register(aten.min.dim, kernels=["REDUCE", "ARG_REDUCE"], dtypes=(torch.float32, torch.int64),
         check=_arg_check)(_max_dim("AMIN"))
