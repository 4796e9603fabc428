"""The plain-Python view fast path gives what ATen's own view ops give (checked against meta tensors
on random layouts: permuted, sliced, offset), up to the strides of size-1 dims."""
import random

import torch

from lowering.ops.shape import _fast_view, _meta_like
from lowering.plan import Buffer, TensorRef

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
    d = rng.randrange(rank)
    if ref.shape[d]:
        yield aten.select.int, (d, rng.randrange(-ref.shape[d], ref.shape[d]))
    yield aten.slice.Tensor, (d, rng.choice([None, -2, 0, 1, 7]), rng.choice([None, -1, 2, 9]), rng.choice([1, 2, 3]))
    yield aten.view.default, ([-1],)
    yield aten.reshape.default, ([ref.numel],)
    if rank == 2:
        yield aten.t.default, ()
    yield aten.alias.default, ()


def test_fast_view_matches_aten_meta_views():
    rng = random.Random(0)
    checked = 0
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
            assert layout(fast.shape, fast.strides, fast.offset) == layout(meta.shape, meta.stride(), meta.storage_offset()), (target, args, ref)
            checked += 1
    assert checked > 1000
