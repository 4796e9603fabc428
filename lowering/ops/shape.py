"""View ops cost no copy: the output is a new TensorRef (shape, strides, offset) on the same buffer,
computed by running the very same ATen op on a meta tensor laid out like ours. cat copies."""
from __future__ import annotations

import torch
from torch.fx import Node

from ..context import LoweringContext
from ..plan import TensorRef
from ..registry import ALL_DTYPES, Unsupported, register
from .elementwise import emit_copy

aten = torch.ops.aten

VIEW_OPS = (
    aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.permute.default,
    aten.transpose.int, aten.t.default, aten.expand.default, aten.unsqueeze.default,
    aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.slice.Tensor, aten.select.int,
    aten.alias.default, aten.detach.default, aten.narrow.default, aten.split.Tensor,
    aten.split_with_sizes.default, aten.unbind.int, aten.chunk.default, aten.flatten.using_ints,
    aten.unflatten.int, aten.view_as.default if hasattr(aten, "view_as") else aten.alias.default,
)


def _meta_like(ref: TensorRef) -> torch.Tensor:
    span = 1 + sum((s - 1) * st for s, st in zip(ref.shape, ref.strides) if s > 0)
    base = torch.empty(ref.offset + max(span, 1), dtype=ref.dtype, device="meta")
    return base.as_strided(ref.shape, ref.strides, ref.offset)


def _apply(target, src: TensorRef, args, kwargs):
    out = target(_meta_like(src), *args, **kwargs)
    def wrap(t):
        return TensorRef(src.buffer, tuple(t.shape), tuple(t.stride()), t.storage_offset(), src.dtype)
    return tuple(wrap(t) for t in out) if isinstance(out, (list, tuple)) else wrap(out)


@register(*dict.fromkeys(VIEW_OPS), kernels=[], dtypes=ALL_DTYPES, notes="view: no copy")
def lower_view(ctx: LoweringContext, node: Node):
    src = ctx.value(node.args[0])
    args = ctx.value(node.args[1:])  # symbolic sizes arrive as nodes; these are their values
    kwargs = {k: ctx.value(v) for k, v in node.kwargs.items()}
    try:
        return _apply(node.target, src, args, kwargs)
    except RuntimeError:
        # Not expressible as a view of our layout (e.g. view() of a permuted tensor): copy first.
        return _apply(node.target, ctx.contiguous(src), args, kwargs)


def is_view_op(target) -> bool:
    return target in VIEW_OPS


@register(aten.cat.default, kernels=["UNARY", "CAST"], dtypes=ALL_DTYPES)
def _cat(ctx: LoweringContext, node: Node):
    out = ctx.out_for(node)
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    dim %= max(len(out.shape), 1)
    start = 0
    for arg in node.args[0]:
        v = ctx.val(arg)
        if v.dim() == 1 and v.shape[0] == 0 and len(out.shape) != 1:
            continue  # torch.cat skips legacy empty 1-d tensors
        size = v.shape[dim]
        piece = TensorRef(out.buffer, tuple(v.shape), out.strides, start * out.strides[dim], out.dtype)
        emit_copy(ctx, ctx.value(arg), piece)  # converts too: cat promotes mixed dtypes
        start += size
    return out


@register(aten.stack.default, kernels=["UNARY", "CAST"], dtypes=ALL_DTYPES)
def _stack(ctx: LoweringContext, node: Node):
    out = ctx.out_for(node)
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    dim %= max(len(out.shape), 1)
    for i, arg in enumerate(node.args[0]):
        # out.select(dim, i): the slot of input i
        piece = TensorRef(out.buffer, out.shape[:dim] + out.shape[dim + 1:],
                          out.strides[:dim] + out.strides[dim + 1:], i * out.strides[dim], out.dtype)
        emit_copy(ctx, ctx.value(arg), piece)
    return out


@register(aten.flip.default, kernels=["UNARY", "CAST"], dtypes=ALL_DTYPES)
def _flip(ctx: LoweringContext, node: Node):
    """A copy through a view with negative strides (the kernels take signed strides)."""
    x = ctx.value(node.args[0])
    dims = {d % max(len(x.shape), 1) for d in node.args[1]}
    offset, strides = x.offset, list(x.strides)
    for d in dims:
        if x.shape[d] > 1:
            offset += (x.shape[d] - 1) * x.strides[d]
            strides[d] = -x.strides[d]
    view = TensorRef(x.buffer, x.shape, tuple(strides), offset, x.dtype)
    return emit_copy(ctx, view, ctx.out_for(node))


__all__ = ["is_view_op", "Unsupported"]
