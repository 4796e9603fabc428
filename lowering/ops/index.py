"""Index ops (embedding, index_select, advanced indexing) -> INDEX_SELECT with int64/int32
indices; shape-only factories (zeros_like, new_ones, ...) -> constants built per plan; constant
padding (fill + copy); cumsum -> CUMSUM. Factories whose arguments are all static (arange, ones,
full, ...) need no entry here: the lowering computes them at compile time (registry.is_static)."""
from __future__ import annotations

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..plan import TensorRef, contiguous_strides
from ..registry import ALL_DTYPES, Unsupported, register
from .elementwise import DTYPE_CODE, contiguous, emit_copy

aten = torch.ops.aten
INDEX_DTYPES = (torch.int64, torch.int32)


def _prod(xs):
    n = 1
    for x in xs:
        n *= x
    return n


def emit_index_select(ctx: LoweringContext, x: TensorRef, dim: int, idx: TensorRef, out: TensorRef,
                      negative: bool = False) -> TensorRef:
    """out = x.index_select(dim, idx.flatten()), laid out contiguously as [outer, n_idx, inner].
    negative: a negative index counts from the end (advanced indexing); otherwise it is out of
    range, as for eager's embedding and index_select (the kernel reports it, eager's IndexError)."""
    x = contiguous(ctx, x)
    idx = contiguous(ctx, idx)
    outer, inner = _prod(x.shape[:dim]), _prod(x.shape[dim + 1:])
    if out.numel == 0:
        return out
    if x.shape[dim] == 0:
        raise Unsupported("index into an empty dimension (eager raises)")
    ctx.emit("INDEX_SELECT", flops=out.numel, outer=outer, src_dim=x.shape[dim], inner=inner, n_idx=idx.numel,
             idx_dtype=DTYPE_CODE[idx.dtype], elem_size=x.itemsize, negative=int(negative), **{"in": addr(x)}, idx=addr(idx),
             out=addr(out))
    return out


def _index_dtype_check(*positions):
    def check(node):
        for p in positions:
            v = node.args[p].meta["val"]
            if v.dtype not in INDEX_DTYPES:
                return f"indices of dtype {v.dtype} (int64/int32 supported)"
        return None
    return check


def _embedding_check(node):
    if node.args[0].meta["val"].dim() != 2:
        return "embedding weight is not 2-d"
    return _index_dtype_check(1)(node)


@register(aten.embedding.default, kernels=["INDEX_SELECT"], dtypes=ALL_DTYPES, check=_embedding_check)
def _embedding(ctx, node):
    # padding_idx / scale_grad_by_freq / sparse only change the backward
    return emit_index_select(ctx, ctx.value(node.args[0]), 0, ctx.value(node.args[1]), ctx.out_for(node))


@register(aten.index_select.default, kernels=["INDEX_SELECT"], dtypes=ALL_DTYPES, check=_index_dtype_check(2))
def _index_select(ctx, node):
    x = ctx.value(node.args[0])
    dim = node.args[1] % max(len(x.shape), 1)
    if not x.shape:  # 0-d input: a 1-element selection
        x = TensorRef(x.buffer, (1,), (1,), x.offset, x.dtype)
    return emit_index_select(ctx, x, dim, ctx.value(node.args[2]), ctx.out_for(node))


def _index_check(node):
    indices = node.args[1]
    present = [i for i, t in enumerate(indices) if t is not None]
    if not present:
        return "index without index tensors"
    for i in present:
        v = indices[i].meta["val"]
        if v.dtype not in INDEX_DTYPES:
            return f"indexing with a {v.dtype} index (boolean masks select a data-dependent count)"
    if present != list(range(present[0], present[-1] + 1)):
        return "advanced indices separated by a slice (result dims move to the front)"
    return None


@register(aten.index.Tensor, aten._unsafe_index.Tensor, kernels=["INDEX_SELECT", "INDEX_ND"], dtypes=ALL_DTYPES,
          check=_index_check)
def _index(ctx, node):
    """x[..., i0, i1, ..., :] with adjacent index tensors at dims d..d+k-1. One index tensor: an
    index_select with its flattened values. Several: their combined flat index into the merged
    dims d..d+k-1, computed at compile time when the index tensors are static (upsampling, masks);
    several runtime ones go to INDEX_ND."""
    x = contiguous(ctx, ctx.value(node.args[0]))
    indices = node.args[1]
    present = [i for i, t in enumerate(indices) if t is not None]
    d, k = present[0], len(present)
    out = ctx.out_for(node)
    merged = x.shape[:d] + (_prod(x.shape[d:d + k]),) + x.shape[d + k:]
    xm = TensorRef(x.buffer, merged, contiguous_strides(merged), x.offset, x.dtype)
    if k == 1:
        return emit_index_select(ctx, xm, d, ctx.value(indices[d]), out, negative=True)
    fns = [ctx.const_fn(indices[i]) for i in present]
    sizes = x.shape[d:d + k]
    # The index tensors' broadcast shape: adjacent indices put it at dim d of the output. (Read
    # from the output, not from torch.broadcast_shapes, so that sizes stay tracked.)
    bshape = tuple(out.shape[d:d + max(ctx.val(indices[i]).dim() for i in present)])
    if any(f is None for f in fns):
        return _emit_index_nd(ctx, node, x, d, [ctx.value(indices[i]) for i in present], bshape, out)
    at_call_sizes = ctx.at_call_sizes((bshape, tuple(sizes)))

    def flat_index(ins):
        bshape, sizes = at_call_sizes(ins)
        flat = torch.zeros(bshape, dtype=torch.int64)
        bad = torch.zeros(bshape, dtype=torch.bool)
        for f, size in zip(fns, sizes):
            i = torch.as_tensor(f(ins)).to(torch.int64).expand(bshape)
            bad |= (i < -size) | (i >= size)
            flat = flat * size + torch.where(i < 0, i + size, i)
        # an out-of-range component makes the flat index out of range: the kernel reports it
        return torch.where(bad, torch.full_like(flat, _prod(sizes)), flat)

    idx = ctx.constant(flat_index, bshape, torch.int64, node.name + "_flat_index", per_shape=True,
                       replayable=True)
    return emit_index_select(ctx, xm, d, idx, out)


def _emit_index_nd(ctx: LoweringContext, node, x: TensorRef, d: int, idx: list, bshape, out: TensorRef):
    """Runtime index tensors: each broadcast (and converted) into a contiguous int64 array, then
    INDEX_ND combines them per output position."""
    k = len(idx)
    if k > 4:
        raise Unsupported(f"indexing with {k} runtime index tensors (at most 4)")
    if out.numel == 0:
        return out
    if any(s == 0 for s in x.shape[d:d + k]):
        raise Unsupported("index into an empty dimension (eager raises)")
    flat = []
    for j, ref in enumerate(idx):
        buf = ctx.new_buffer(tuple(bshape), torch.int64, f"{node.name}_idx{j}")
        flat.append(emit_copy(ctx, ref, buf))
    ptrs = [addr(f) for f in flat] + [0] * (4 - k)
    ctx.emit("INDEX_ND", flops=out.numel, outer=_prod(x.shape[:d]), inner=_prod(x.shape[d + k:]),
             n_idx=_prod(bshape), n_dims=k, src_size=list(x.shape[d:d + k]) + [1] * (4 - k),
             elem_size=x.itemsize, **{"in": addr(x)}, idx0=ptrs[0], idx1=ptrs[1], idx2=ptrs[2],
             idx3=ptrs[3], out=addr(out))
    return out


def _like_factory(ctx: LoweringContext, node):
    """zeros_like(x), new_ones(x, size)...: only x's shape and dtype matter, which the plan fixes,
    so the value is a constant of this plan (made at the call's sizes: see at_call_sizes)."""
    v = ctx.val(node.args[0])
    dtype = v.dtype
    shape = ctx.at_call_sizes(tuple(v.shape))
    args = ctx.at_call_sizes(ctx.value(tuple(node.args[1:])))
    kwargs = ctx.at_call_sizes({k: ctx.value(a) for k, a in node.kwargs.items()})
    out = ctx.vals[node]
    target = node.target

    def make(ins):
        result = target(torch.zeros(shape(ins), dtype=dtype), *args(ins), **kwargs(ins))
        return result.zero_() if "empty" in target.name() else result  # empty: any value is right

    return ctx.constant(make, tuple(out.shape), out.dtype, node.name, per_shape=True, replayable=True)


register(aten.zeros_like.default, aten.ones_like.default, aten.full_like.default, aten.empty_like.default,
         aten.new_zeros.default, aten.new_ones.default, aten.new_full.default, aten.new_empty.default,
         kernels=[], dtypes=ALL_DTYPES, notes="constant per plan (depends on shape only)")(_like_factory)


@register(aten.constant_pad_nd.default, kernels=["UNARY", "CAST"], dtypes=ALL_DTYPES)
def _constant_pad(ctx, node):
    """Fill with the value, then copy the (possibly cropped: negative padding) input into the
    interior view."""
    x = ctx.value(node.args[0])
    pad = [p if isinstance(p, int) else int(p) for p in ctx.value(list(node.args[1]))]  # (tracked stay)
    value = ctx.value(ctx.args(node)["value"])
    out = ctx.out_for(node)
    nd = len(x.shape)
    in_offset, in_shape = x.offset, list(x.shape)
    out_offset, any_pad = 0, False
    for j in range(len(pad) // 2):
        dim = nd - 1 - j
        left, right = pad[2 * j], pad[2 * j + 1]
        any_pad |= left > 0 or right > 0
        crop_l, crop_r = max(-left, 0), max(-right, 0)
        in_offset += crop_l * x.strides[dim]
        in_shape[dim] = max(x.shape[dim] - crop_l - crop_r, 0)
        out_offset += max(left, 0) * out.strides[dim]
    if out.numel == 0:
        return out
    if any_pad:
        fill = ctx.constant(lambda ins: torch.tensor(value, dtype=out.dtype), (), out.dtype, f"pad_{value!r}")
        emit_copy(ctx, fill, out)
    if _prod(in_shape):
        src = TensorRef(x.buffer, tuple(in_shape), x.strides, in_offset, x.dtype)
        dst = TensorRef(out.buffer, tuple(in_shape), out.strides, out_offset, out.dtype)
        emit_copy(ctx, src, dst)
    return out


def _cumsum_check(node):
    src, out = node.args[0].meta["val"].dtype, node.meta["val"].dtype
    if out == torch.float32 and src != torch.float32:
        return f"float cumsum of a {src} tensor"
    if src not in (torch.float32, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool):
        return f"cumsum of a {src} tensor"
    return None


@register(aten.cumsum.default, kernels=["CUMSUM", "INT_REDUCE"], dtypes=(torch.float32, torch.int64), promotes=True,
          check=_cumsum_check)
def _cumsum(ctx, node):
    """float32: CUMSUM (double accumulator, as eager); integers and bools: int64 running sums."""
    out = ctx.out_for(node)
    x = ctx.value(node.args[0])
    if x.dtype != out.dtype:
        x = emit_copy(ctx, x, ctx.new_buffer(x.shape, out.dtype, node.name + "_cast"))
    x = contiguous(ctx, x)
    if not x.shape:
        return emit_copy(ctx, x, out)
    dim = node.args[1] % len(x.shape)
    outer, red, inner = _prod(x.shape[:dim]), x.shape[dim], _prod(x.shape[dim + 1:])
    if out.numel and out.dtype == torch.int64:
        ctx.emit("INT_REDUCE", flops=out.numel, op=ABI.reduce["SUM"], cumulative=1, outer=outer, red=red,
                 inner=inner, **{"in": addr(x)}, out=addr(out))
    elif out.numel:
        ctx.emit("CUMSUM", flops=out.numel, outer=outer, dim=red, inner=inner, **{"in": addr(x)}, out=addr(out))
    return out


__all__ = ["emit_index_select"]
