"""The wasm memory allocator: random alloc/free keeps blocks disjoint, coalesced and returns all
memory when everything is freed."""
import random

from torch_wasm_backend.runtime import Allocator


def test_random_alloc_free_keeps_invariants():
    grown = []
    alloc = Allocator(1000, grown.append)
    rng = random.Random(0)
    live = []
    for step in range(5000):
        if live and rng.random() < 0.5:
            alloc.free(live.pop(rng.randrange(len(live))))
        else:
            live.append(alloc.alloc(rng.randint(1, 5000)))
        if step % 250 == 0:
            free = alloc._free
            assert all(a[0] + a[1] < b[0] for a, b in zip(free, free[1:])), "free list not coalesced"
            spans = sorted([(o, alloc._sizes[o]) for o in live] + free)
            assert all(a[0] + a[1] <= b[0] for a, b in zip(spans, spans[1:])), "blocks overlap"
            assert all(o % Allocator.ALIGN == 0 for o in live)
    for offset in live:
        alloc.free(offset)
    assert alloc._free == [] and alloc._top == alloc.base and alloc.in_use == 0
    assert max(grown) >= alloc.base
