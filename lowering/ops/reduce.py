"""sum / mean / amax / amin over dims -> REDUCE over a contiguous [outer, red, inner] view (a
permuting copy first when the reduced dims are not adjacent)."""
from __future__ import annotations

from math import prod

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..plan import TensorRef, contiguous_strides
from ..registry import register
from .elementwise import emit_unary

aten = torch.ops.aten


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
            outer, red, inner = prod(x.shape[:len(kept)]), prod(x.shape[len(kept):]), 1
        else:
            outer, red, inner = prod(x.shape[:dims[0]]), prod(x.shape[dims[0]:dims[-1] + 1]), prod(x.shape[dims[-1] + 1:])
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
