"""Ops that write into (a copy of) a tensor or read it by per-element indices: slice_scatter,
select_scatter, fill, copy (a copy then strided copies into views of the result: UNARY / CAST) and
gather (GATHER). Functionalization produces the scatters from in-place writes into slices (Swin's
shifted-window mask: `mask[:, h, w, :] = cnt`), torch.export produces aten.copy and, for every
`.to(...)`, aten._assert_tensor_metadata (nothing to run)."""
from __future__ import annotations

import torch

from ..context import LoweringContext, addr
from ..plan import TensorRef
from ..registry import ALL_DTYPES, Unsupported, register
from .elementwise import DTYPE_CODE, contiguous, emit_copy
from .shape import _fast_view

aten = torch.ops.aten


def _scatter_into_view(ctx: LoweringContext, node, view_op, view_args) -> TensorRef:
    """out = input with out.view_op(*view_args) replaced by src (args[1]): copy input, then src
    into the view of the copy (both converted to out's dtype)."""
    out = ctx.out_for(node)
    if out.numel == 0:
        return out
    emit_copy(ctx, ctx.value(node.args[0]), out)
    view = _fast_view(view_op, out, view_args, {})
    if view is None:
        raise Unsupported(f"{view_op.name()} of a {len(out.shape)}-d tensor")
    src = ctx.value(node.args[1])
    if view.numel:
        emit_copy(ctx, src, view)
    return out


@register(aten.slice_scatter.default, kernels=["UNARY", "CAST"], dtypes=ALL_DTYPES)
def _slice_scatter(ctx, node):
    a = ctx.args(node)
    return _scatter_into_view(ctx, node, aten.slice.Tensor, ctx.value((a["dim"], a["start"], a["end"], a["step"])))


@register(aten.select_scatter.default, kernels=["UNARY", "CAST"], dtypes=ALL_DTYPES)
def _select_scatter(ctx, node):
    return _scatter_into_view(ctx, node, aten.select.int, ctx.value((node.args[2], node.args[3])))


@register(aten.fill.Scalar, aten.fill.Tensor, kernels=["UNARY", "CAST"], dtypes=ALL_DTYPES)
def _fill(ctx, node):
    """A tensor of input's shape and dtype holding value (a number, or a 0-d tensor converted)."""
    out = ctx.out_for(node)
    value = ctx.value(node.args[1])
    if not isinstance(value, TensorRef):
        value = ctx.scalar(value, out.dtype)
    return emit_copy(ctx, value, out)


@register(aten.copy.default, kernels=["UNARY", "CAST"], dtypes=ALL_DTYPES)
def _copy(ctx, node):
    """aten.copy(self, src): src broadcast to self's shape, in self's dtype (self's values unused)."""
    return emit_copy(ctx, ctx.value(node.args[1]), ctx.out_for(node))


@register(aten._assert_tensor_metadata.default, kernels=[], dtypes=ALL_DTYPES,
          notes="no-op: checked when torch.export traced the model; the plan's signature fixes it")
def _assert_tensor_metadata(ctx, node):
    """torch.export's check that a tensor has the dtype / shape it had when traced. A plan is made
    for one input signature (dtypes and shapes fixed), so the check holds by construction and the
    node has no value (nothing uses it)."""
    return None


def _gather_check(node):
    idx = node.args[2].meta["val"]
    if idx.dtype not in (torch.int64, torch.int32):
        return f"gather indices of dtype {idx.dtype} (int64/int32 supported, as eager)"
    return None


@register(aten.gather.default, kernels=["GATHER", "UNARY", "CAST"], dtypes=ALL_DTYPES, check=_gather_check)
def _gather(ctx, node):
    """out[..., j, ...] = x[..., idx[..., j, ...], ...] along dim. x is first cut to idx's sizes in
    the other dims (eager allows idx to be smaller there) and made contiguous, so the kernel sees
    x as [outer, src_dim, inner] and idx, out as [outer, n_idx, inner]."""
    x, idx = ctx.value(node.args[0]), ctx.value(node.args[2])
    out = ctx.out_for(node)
    if out.numel == 0:
        return out
    if not x.shape:  # 0-d: gather along dim 0 of a 1-element tensor
        x = TensorRef(x.buffer, (1,), (1,), x.offset, x.dtype)
    if not idx.shape:
        idx = TensorRef(idx.buffer, (1,), (1,), idx.offset, idx.dtype)
    dim = node.args[1] % len(x.shape)
    if x.shape[dim] == 0:
        raise Unsupported("gather from an empty dimension (eager raises)")
    cut = tuple(x.shape[d] if d == dim else idx.shape[d] for d in range(len(x.shape)))
    x = contiguous(ctx, TensorRef(x.buffer, cut, x.strides, x.offset, x.dtype))
    idx = contiguous(ctx, idx)
    outer = inner = 1
    for d in range(dim):
        outer *= idx.shape[d]
    for d in range(dim + 1, len(idx.shape)):
        inner *= idx.shape[d]
    ctx.emit("GATHER", flops=out.numel, outer=outer, src_dim=x.shape[dim], inner=inner, n_idx=idx.shape[dim],
             idx_dtype=DTYPE_CODE[idx.dtype], elem_size=x.itemsize, **{"in": addr(x)}, idx=addr(idx),
             out=addr(out))
    return out
