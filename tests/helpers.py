"""Test helpers: compile with backend="wasm", compare with eager, and check from the stats that the
graph really ran in wasm."""
from __future__ import annotations

from contextlib import contextmanager

import torch

import torch_wasm_backend as twb

# Tolerances (float32). Elementwise ops without transcendental functions are exact; exp/erf/tanh
# use polynomial approximations accurate to a few ulp; reductions, GEMM and conv sum in a different
# order than eager (blocked, SIMD lanes), so their error grows like sqrt(K) * eps * |values|.
EXACT = dict(rtol=0.0, atol=0.0)
TRANSCENDENTAL = dict(rtol=1e-5, atol=1e-6)
REDUCTION = dict(rtol=1e-5, atol=1e-5)
MATMUL = dict(rtol=1e-4, atol=1e-4)


@contextmanager
def allocations_made(runtime):
    """Yields a dict, offset -> bytes, of the runtime's allocations made inside the block and not
    freed yet. Memory allocated before the block does not count when it is freed: earlier tests'
    garbage partitions give theirs back from a thread of their own (residency.release_dropped)
    whenever the collector finds them, so a test that compared the runtime's total bytes in use
    could see those frees; this counts only what the test's own calls allocate."""
    allocator = runtime.allocator
    alloc, free = allocator.alloc, allocator.free
    live: dict[int, int] = {}

    def tracked_alloc(nbytes):
        offset = alloc(nbytes)
        live[offset] = allocator._sizes[offset]
        return offset

    def tracked_free(offset):
        free(offset)
        live.pop(offset, None)

    allocator.alloc, allocator.free = tracked_alloc, tracked_free
    try:
        yield live
    finally:
        del allocator.alloc, allocator.free


def randomized_bn(channels: int) -> torch.nn.BatchNorm2d:
    """An eval-ready BatchNorm2d whose statistics and affine parameters are not the identity, so a
    fold into the preceding conv changes the weights."""
    bn = torch.nn.BatchNorm2d(channels)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    return bn


def compile_wasm(fn, **options):
    return torch.compile(fn, backend="wasm", options={"strict": True, **options})


def check_against_eager(fn, *inputs, tol=MATMUL, options=None, expect_all_in_wasm=True):
    """Runs fn eagerly and through backend="wasm" (strict), asserts the outputs match within tol,
    and (by default) that every ATen node ran in wasm. Returns the stats."""
    twb.reset_stats()
    compiled = compile_wasm(fn, **(options or {}))
    with torch.no_grad():
        expected = fn(*inputs)
        got = compiled(*inputs)
    _assert_tree_close(got, expected, tol)
    s = twb.stats()
    if expect_all_in_wasm:
        assert_ran_in_wasm(s)
    return s


def assert_ran_in_wasm(s: dict, min_fraction: float = 1.0) -> None:
    assert s["calls"] >= 1, f"no partition ran in wasm: {s}"
    assert s["aten_nodes_total"] > 0
    assert s["lowered_fraction"] >= min_fraction, (
        f"only {s['aten_nodes_lowered']}/{s['aten_nodes_total']} ATen nodes in wasm; "
        f"fallbacks: {s['fallback_nodes']}")
    assert s["eager_partition_calls"] == 0, f"a partition ran in eager: {s['fallback_nodes']}"


def _assert_tree_close(got, expected, tol):
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor)
        assert got.shape == expected.shape, (got.shape, expected.shape)
        assert got.dtype == expected.dtype
        torch.testing.assert_close(got, expected, equal_nan=True, **tol)
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            _assert_tree_close(g, e, tol)
    else:
        assert got == expected
