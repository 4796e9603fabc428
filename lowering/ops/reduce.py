"""sum / mean / amax / amin over dims -> REDUCE over a contiguous [outer, red, inner] view (a
permuting copy first when the reduced dims are not adjacent)."""
from __future__ import annotations

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..plan import TensorRef, contiguous_strides
from ..registry import register, register_decomposition
from .elementwise import emit_unary

aten = torch.ops.aten


def _prod(xs):
    n = 1
    for x in xs:
        n *= x
    return n


def _dims(node, rank):
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return sorted({d % max(rank, 1) for d in dims})


def _dtype_check(node):
    if node.kwargs.get("dtype") not in (None, torch.float32):
        return f"reduction to dtype {node.kwargs['dtype']}"
    return None


def _empty_max_check(node):
    v = node.args[0].meta.get("val")
    if v is not None and v.numel() == 0:
        return "amax/amin of an empty tensor (eager raises)"
    return None


def _reduce(op: str):
    def lower(ctx: LoweringContext, node):
        x = ctx.value(node.args[0])
        rank = len(x.shape)
        out = ctx.out_for(node)
        if rank == 0:
            return emit_unary(ctx, "IDENTITY", x, out)
        dims = _dims(node, rank)
        kept = [d for d in range(rank) if d not in dims]
        if dims != list(range(dims[0], dims[-1] + 1)) or not x.is_contiguous():
            order = kept + dims  # reduced dims last, then reduce with inner = 1
            permuted = TensorRef(x.buffer, tuple(x.shape[d] for d in order),
                                 tuple(x.strides[d] for d in order), x.offset, x.dtype)
            x = emit_unary(ctx, "IDENTITY", permuted, ctx.new_buffer(permuted.shape, name=node.name + "_perm"))
            outer, red, inner = _prod(x.shape[:len(kept)]), _prod(x.shape[len(kept):]), 1
        else:
            outer, red, inner = _prod(x.shape[:dims[0]]), _prod(x.shape[dims[0]:dims[-1] + 1]), _prod(x.shape[dims[-1] + 1:])
        if out.numel:
            ctx.emit("REDUCE", flops=x.numel, op=ABI.reduce[op], outer=outer, red=red, inner=inner,
                     **{"in": addr(x)}, out=addr(out))
        return out
    return lower


register(aten.sum.dim_IntList, aten.sum.default, kernels=["REDUCE"], check=_dtype_check)(_reduce("SUM"))
register(aten.mean.dim, aten.mean.default, kernels=["REDUCE"], check=_dtype_check)(_reduce("MEAN"))
register(aten.amax.default, kernels=["REDUCE"], check=_empty_max_check)(_reduce("AMAX"))
register(aten.amin.default, kernels=["REDUCE"], check=_empty_max_check)(_reduce("AMIN"))

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
