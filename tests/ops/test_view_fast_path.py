"""The plain-Python view fast path gives what ATen's own view ops give (checked against meta tensors
on random layouts: permuted, sliced, offset), up to the strides of size-1 dims."""
import random
from collections import Counter

import torch

from torch_wasm_backend.lowering.ops.shape import _fast_view, _meta_like
from torch_wasm_backend.lowering.plan import Buffer, TensorRef

aten = torch.ops.aten


def _ref(rng):
    rank = rng.randint(0, 4)
    base = torch.empty([rng.randint(1, 5) for _ in range(rank)], device="meta")
    t = base.permute(rng.sample(range(rank), rank))
    d = rng.randrange(max(rank, 1))
    if rank and t.shape[d] > 1:
        t = t.narrow(d, 1, t.shape[d] - 1)
    return TensorRef(Buffer(4 * base.numel()), tuple(t.shape), tuple(t.stride()), t.storage_offset())


def _cases(rng, ref):
    rank = len(ref.shape)
    if rank < 2:
        yield aten.t.default, ()
    if rank == 0:
        yield aten.transpose.int, (0, 0)
        return
    yield aten.permute.default, (rng.sample(range(rank), rank),)
    yield aten.transpose.int, (rng.randrange(-rank, rank), rng.randrange(-rank, rank))
    yield aten.unsqueeze.default, (rng.randrange(-rank - 1, rank + 1),)
    yield aten.squeeze.dim, (rng.randrange(-rank, rank),)
    yield aten.squeeze.dims, (rng.sample(range(-rank, 0), rng.randint(0, rank)),)
    yield aten.squeeze.default, ()
    d = rng.randrange(rank)
    if ref.shape[d]:
        yield aten.select.int, (d, rng.randrange(-ref.shape[d], ref.shape[d]))
    yield aten.slice.Tensor, (d, rng.choice([None, -2, 0, 1, 7]), rng.choice([None, -1, 2, 9]), rng.choice([1, 2, 3]))
    yield aten.view.default, ([-1],)
    yield aten.reshape.default, ([ref.numel],)
    # view() of a non-contiguous layout: split a dim into two, merge neighbours, add size-1 dims
    yield aten.view.default, (_resplit(rng, ref.shape),)
    yield aten.expand.default, ([rng.choice([1, 3])] * rng.randint(0, 2)
                                + [rng.choice([s, -1, 4]) if s == 1 else rng.choice([s, -1]) for s in ref.shape],)
    yield aten.split.Tensor, (rng.randint(1, 4), rng.randrange(-rank, rank))
    d = rng.randrange(rank)
    cut = rng.randint(0, ref.shape[d])
    yield aten.split_with_sizes.default, ([cut, ref.shape[d] - cut], d)
    if rank == 2:
        yield aten.t.default, ()
    yield aten.alias.default, ()


def _resplit(rng, shape):
    """A random shape with the same numel: dims factored, merged with a neighbour, or 1s added."""
    out = []
    for s in shape:
        f = next((f for f in (2, 3) if s % f == 0 and s > f and rng.random() < 0.5), None)
        out += [f, s // f] if f else [s]
        if rng.random() < 0.2:
            out.append(1)
    if len(out) > 1 and rng.random() < 0.5:
        i = rng.randrange(len(out) - 1)
        out[i:i + 2] = [out[i] * out[i + 1]]
    return out


def test_fast_view_matches_aten_meta_views():
    rng = random.Random(0)
    checked = 0
    fast_by_op = Counter()
    for _ in range(300):
        ref = _ref(rng)
        for target, args in _cases(rng, ref):
            fast = _fast_view(target, ref, args, {})
            if fast is None:
                continue
            meta = target(_meta_like(ref), *args)
            # Strides of size-1 dims address nothing, and ATen picks them arbitrarily: ignore them.
            def layout(shape, strides, offset):
                return tuple(shape), tuple(st for sz, st in zip(shape, strides) if sz != 1), offset
            pairs = zip(fast, meta) if isinstance(meta, (list, tuple)) else [(fast, meta)]
            for f, m in pairs:
                assert layout(f.shape, f.strides, f.offset) == layout(m.shape, m.stride(), m.storage_offset()), (target, args, ref)
            checked += 1
            fast_by_op[target] += 1
    assert checked > 1000
    # The ops the fast path claims to handle really took it on non-contiguous layouts too
    assert all(fast_by_op[op] > 100 for op in (aten.view.default, aten.expand.default, aten.split.Tensor,
                                                 aten.split_with_sizes.default, aten.squeeze.dim,
                                                 aten.squeeze.dims, aten.squeeze.default)), fast_by_op


def test_fast_view_declines_what_aten_rejects():
    """A view across non-mergeable dims, expanding a non-1 dim, bad split sizes: None (the meta path
    then raises ATen's error or copies), never a wrong layout."""
    t = torch.empty(4, 6, device="meta").t()  # (6, 4) with strides (1, 6)
    ref = TensorRef(Buffer(96), tuple(t.shape), tuple(t.stride()))
    assert _fast_view(aten.view.default, ref, ([24],), {}) is None
    assert _fast_view(aten.expand.default, ref, ([6, 5],), {}) is None
    assert _fast_view(aten.expand.default, ref, ([4],), {}) is None
    assert _fast_view(aten.split_with_sizes.default, ref, ([2, 3], 0), {}) is None
    assert _fast_view(aten.split.Tensor, ref, (0, 0), {}) is None
