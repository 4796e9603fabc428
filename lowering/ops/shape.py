"""View ops cost no copy: the output is a new TensorRef (shape, strides, offset) on the same buffer,
computed by running the very same ATen op on a meta tensor laid out like ours. cat copies."""
from __future__ import annotations

import torch
from torch.fx import Node

from ..context import LoweringContext
from ..plan import TensorRef, contiguous_strides
from ..registry import ALL_DTYPES, Unsupported, register
from ..tracked import holds_tracked, pin
from .elementwise import contiguous, emit_copy

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


def _view_shape(shape, numel):
    shape = list(shape)
    if -1 in shape:
        known = 1
        for d in shape:
            if d != -1:
                known *= d
        shape[shape.index(-1)] = numel // known if known else 0
    return tuple(shape)


def _fast_view(target, src: TensorRef, args, kwargs) -> TensorRef | None:
    """The common view ops in plain Python (a meta-tensor call costs ~20 us; a plan for a new shape
    has hundreds of views). None: not handled here, use the meta path."""
    shape, strides, offset = list(src.shape), list(src.strides), src.offset
    rank = len(shape)
    if kwargs or rank == 0:  # 0-d tensors wrap dims as if 1-d: leave them to ATen
        return None
    if target in (aten.view.default, aten._unsafe_view.default, aten.reshape.default):
        new = _view_shape(args[0], src.numel)
        if src.is_contiguous():
            return TensorRef(src.buffer, new, contiguous_strides(new), offset, src.dtype)
        new_strides = _view_strides(shape, strides, new)
        return None if new_strides is None else TensorRef(src.buffer, new, new_strides, offset, src.dtype)
    if target is aten.expand.default:
        return _expand(src, args[0])
    if target in (aten.split.Tensor, aten.split_with_sizes.default):
        d = (args[1] if len(args) > 1 else 0) % rank
        lengths = _split_lengths(args[0], shape[d]) if target is aten.split.Tensor else list(args[0])
        if lengths is None or sum(lengths) != shape[d] or min(lengths, default=0) < 0:
            return None  # an invalid split: let ATen raise its error
        pieces, start = [], 0
        for length in lengths:
            piece_shape = shape[:d] + [length] + shape[d + 1:]
            pieces.append(TensorRef(src.buffer, tuple(piece_shape), tuple(strides), offset + start * strides[d],
                                    src.dtype))
            start += length
        return tuple(pieces)
    if target in (aten.alias.default, aten.detach.default):
        return src
    if target is aten.permute.default:
        dims = [d % rank for d in args[0]]
        return TensorRef(src.buffer, tuple(shape[d] for d in dims), tuple(strides[d] for d in dims), offset, src.dtype)
    if target is aten.t.default and rank < 2:
        return src
    if target in (aten.transpose.int, aten.t.default):
        d0, d1 = (args[0] % rank, args[1] % rank) if target is aten.transpose.int else (0, rank - 1)
        shape[d0], shape[d1] = shape[d1], shape[d0]
        strides[d0], strides[d1] = strides[d1], strides[d0]
        return TensorRef(src.buffer, tuple(shape), tuple(strides), offset, src.dtype)
    if target is aten.unsqueeze.default:
        d = args[0] % (rank + 1)
        stride = shape[d] * strides[d] if d < rank else 1
        return TensorRef(src.buffer, tuple(shape[:d] + [1] + shape[d:]), tuple(strides[:d] + [stride] + strides[d:]),
                         offset, src.dtype)
    if target in (aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default):
        if target is aten.squeeze.default:
            dims = range(rank)
        else:
            dims = {d % rank for d in (args[0] if target is aten.squeeze.dims else [args[0]])}
        keep = [d for d in range(rank) if not (d in dims and shape[d] == 1)]
        return TensorRef(src.buffer, tuple(shape[d] for d in keep), tuple(strides[d] for d in keep), offset,
                         src.dtype)
    if target is aten.select.int:
        d = args[0] % rank
        index = args[1] + shape[d] if args[1] < 0 else args[1]
        return TensorRef(src.buffer, tuple(shape[:d] + shape[d + 1:]), tuple(strides[:d] + strides[d + 1:]),
                         offset + index * strides[d], src.dtype)
    if target is aten.slice.Tensor:
        dim, start, end, step = (list(args) + [0, None, None, 1][len(args):])[:4]
        d = dim % rank
        size = shape[d]
        start = 0 if start is None else (start + size if start < 0 else start)
        end = size if end is None else (end + size if end < 0 else end)
        start, end = _clamp(start, size), _clamp(end, size)
        length = max(0, (end - start + step - 1) // step)
        shape[d] = length
        offset += start * strides[d]
        strides[d] *= step
        return TensorRef(src.buffer, tuple(shape), tuple(strides), offset, src.dtype)
    return None


# No tensor in wasm32 memory has this many elements along a dim.
_PAST_ANY_SIZE = 1 << 32


def _clamp(index, size):
    """A slice bound clamped to [0, size]. A plain int past any possible size (torch.export writes
    sys.maxsize for `x[:, a:]`) is `size` without a comparison: compared with a tracked size it would
    become a guard of an exported file holding a number the loaders refuse (beyond +-2**53)."""
    if type(index) is int and index >= _PAST_ANY_SIZE:
        return size
    return min(max(index, 0), size)


def _view_strides(shape, strides, new_shape) -> tuple[int, ...] | None:
    """The strides view(new_shape) gives a non-contiguous tensor, or None where view() would fail
    (ATen's computeStride: each run of dims that are contiguous with each other may be re-split)."""
    if not shape or 0 in shape:
        return None  # 0-d and empty tensors: ATen's special cases, on the meta path
    new_strides = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    chunk_base_stride, tensor_numel, view_numel = strides[-1], 1, 1
    for tensor_d in range(len(shape) - 1, -1, -1):
        tensor_numel *= shape[tensor_d]
        if tensor_d == 0 or (shape[tensor_d - 1] != 1 and strides[tensor_d - 1] != tensor_numel * chunk_base_stride):
            while view_d >= 0 and (view_numel < tensor_numel or new_shape[view_d] == 1):
                new_strides[view_d] = view_numel * chunk_base_stride
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if tensor_d > 0:
                chunk_base_stride, tensor_numel, view_numel = strides[tensor_d - 1], 1, 1
    return tuple(new_strides) if view_d == -1 else None


def _expand(src: TensorRef, sizes) -> TensorRef | None:
    """expand(sizes) as ATen's inferExpandGeometry: broadcast dims get stride 0."""
    rank, ndim = len(src.shape), len(sizes)
    if ndim < rank:
        return None
    shape, strides = [0] * ndim, [0] * ndim
    for i in range(ndim - 1, -1, -1):
        d = i - (ndim - rank)
        size = src.shape[d] if d >= 0 else 1
        stride = src.strides[d] if d >= 0 else shape[i + 1] * strides[i + 1]  # (d >= 0 for i = ndim - 1)
        target = sizes[i]
        if target == -1:
            if d < 0:
                return None
            target = size
        if size != target:
            if size != 1:
                return None
            size, stride = target, 0
        shape[i], strides[i] = size, stride
    return TensorRef(src.buffer, tuple(shape), tuple(strides), src.offset, src.dtype)


def _split_lengths(split_size: int, size: int) -> list[int] | None:
    """The piece lengths of split(split_size) along a dim of this size (ATen: at least one piece)."""
    if split_size <= 0:
        return [0] if split_size == 0 and size == 0 else None
    pieces = max((size + split_size - 1) // split_size, 1)
    return [min(split_size, size - i * split_size) for i in range(pieces)]


def _apply(target, src: TensorRef, args, kwargs):
    fast = _fast_view(target, src, args, kwargs)
    if fast is not None:
        return fast
    if holds_tracked((src.shape, src.strides, src.offset, args, kwargs)):
        pin(f"{target} on ATen's meta kernel")  # (its sizes come back as plain ints)
    out = target(_meta_like(src), *args, **kwargs)
    def wrap(t):
        return TensorRef(src.buffer, tuple(t.shape), tuple(t.stride()), t.storage_offset(), src.dtype)
    return tuple(wrap(t) for t in out) if isinstance(out, (list, tuple)) else wrap(out)


@register(*dict.fromkeys(VIEW_OPS), kernels=[], dtypes=ALL_DTYPES, notes="view: no copy", view=True)
def lower_view(ctx: LoweringContext, node: Node):
    src = ctx.value(node.args[0])
    args = ctx.value(node.args[1:])  # symbolic sizes arrive as nodes; these are their values
    kwargs = {k: ctx.value(v) for k, v in node.kwargs.items()}
    try:
        return _apply(node.target, src, args, kwargs)
    except RuntimeError:
        # Not expressible as a view of our layout (e.g. view() of a permuted tensor): copy first.
        return _apply(node.target, contiguous(ctx, src), args, kwargs)


@register(aten.cat.default, kernels=["UNARY", "CAST"], dtypes=ALL_DTYPES)
def _cat(ctx: LoweringContext, node: Node):
    out = ctx.out_for(node)
    dim = ctx.args(node)["dim"] % max(len(out.shape), 1)
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
    dim = ctx.args(node)["dim"] % max(len(out.shape), 1)
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


__all__ = ["Unsupported"]


def _is_dense(shape, strides) -> bool:
    """True if (shape, strides) covers exactly numel elements: a permutation of a contiguous layout."""
    expected = 1
    for size, stride in sorted(((sz, st) for sz, st in zip(shape, strides) if sz != 1), key=lambda d: d[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def _same_layout_as_eager(ctx: LoweringContext, node: Node, ref: TensorRef) -> bool:
    eager = ctx.val(node.args[0])
    return ref.offset == 0 and all(
        size == 1 or ours == theirs for size, ours, theirs in zip(ref.shape, ref.strides, eager.stride()))


@register(aten.as_strided.default, kernels=[], dtypes=ALL_DTYPES,
          notes="view: no copy (when our layout is eager's)")
def _as_strided(ctx: LoweringContext, node: Node):
    """as_strided addresses the input's storage, so it is only a view here when our buffer holds
    the input in eager's layout (true for the restrides aot_autograd inserts); else copy into
    eager's layout first."""
    src = ctx.value(node.args[0])
    if not _same_layout_as_eager(ctx, node, src):
        eager = ctx.val(node.args[0])
        if not _is_dense(src.shape, eager.stride()):
            raise Unsupported("as_strided on a tensor whose eager layout is not dense")
        dense = ctx.new_buffer(src.shape, src.dtype, node.name + "_restride")
        dense = TensorRef(dense.buffer, src.shape, tuple(eager.stride()), 0, src.dtype)
        src = emit_copy(ctx, src, dense)
    return _apply(node.target, src, ctx.value(node.args[1:]), {k: ctx.value(v) for k, v in node.kwargs.items()})
