"""WOLINEAR (the weight-only int8 linear's kernel) against twb_quant::weight_only_linear's eager
implementation (torchao Int8WeightOnlyConfig's chain: mm(x, w.t().float()) * scale + bias) at awkward
shapes: K not a multiple of 4, 8 or 16 (the GEMV's unroll and the panel's load), N odd and not a
multiple of the 8-channel panel, N past one 8-panel block of the widened path (70, 130), M 1 and 3
(the GEMV path), 6 and 129 (the widened panels on the float GEMM, 129 with a row tail),
with and without bias, K = 0; rows of x further apart than K (the gap must not be read); 1 thread and
2 threads.

Tolerance: the kernel computes what eager computes in the same order (exact int8 -> float32 weights,
float32 products summed, the sum times the scale, plus the bias), so the two differ only by the
summation order of the dot product: dot_rel(K) relative to sum |x * w * scale| + |bias|
(tests/kernels/kernel_testing.py), the bound of every float32 GEMM test."""
from __future__ import annotations

import pytest
import torch

from kernels.kernel_testing import dot_rel
from test_int8_kernels import _run_twice
from torch_wasm_backend.lowering.ops.quant_weight_only import PANEL, SCRATCH_PANELS, pack_panels, weight_only_linear


def _operands(m: int, n: int, k: int, with_bias: bool):
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    scale = torch.rand(n) * 0.02 + 1e-3  # per-channel scales as torchao's (absmax / 127)
    return torch.randn(m, k) * 3, w, scale, torch.randn(n) if with_bias else None


def _run_wolinear(s, x, w, scale, bias, row_stride: int | None = None) -> torch.Tensor:
    """WOLINEAR as the lowering emits it -> float32 [m, n]."""
    m, k = x.shape
    n = w.shape[0]
    stride = row_stride or k
    wide = torch.full((m, stride), float("nan"))  # padding between rows must not be read
    wide[:, :k] = x
    packed = pack_panels(w)
    ptrs = dict(x=s.put(wide), w=s.put(packed) if packed.numel() else s.alloc(16), scale=s.put(scale),
                bias=s.put(bias) if bias is not None else 0, scratch=s.alloc(4 * SCRATCH_PANELS * PANEL * k + 16))
    got = _run_twice(s, m * n, torch.float32, lambda out: s.record(
        "WOLINEAR", m=m, n=n, k=k, x_stride=stride, **ptrs, out=out))
    return got.reshape(m, n)


def _check_against_eager(got, x, w, scale, bias):
    ref = weight_only_linear(x, w, scale, bias)
    magnitude = x.abs() @ (w.float() * scale[:, None]).abs().t() + (bias.abs() if bias is not None else 0)
    bound = dot_rel(x.shape[1]) * magnitude
    assert ((got.double() - ref.double()).abs() <= bound).all(), (got, ref)


@pytest.mark.parametrize("m", [1, 3, 6, 129])
@pytest.mark.parametrize("n,k", [(1, 1), (5, 7), (8, 16), (17, 33), (31, 130), (70, 9)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_wolinear_against_pytorch(s1, m, n, k, with_bias):
    torch.manual_seed(m * 1000 + n * 10 + k)
    x, w, scale, bias = _operands(m, n, k, with_bias)
    _check_against_eager(_run_wolinear(s1, x, w, scale, bias, row_stride=k + 3), x, w, scale, bias)


@pytest.mark.parametrize("with_bias", [True, False])
def test_wolinear_k_zero(s1, with_bias):
    """An empty dot product: eager gives 0 * scale (+ bias)."""
    x, w, scale, bias = _operands(3, 9, 0, with_bias)
    got = _run_wolinear(s1, x, w, scale, bias)
    assert torch.equal(got, weight_only_linear(x, w, scale, bias))


def test_wolinear_exact_on_integers(s1):
    """Integer activations, scales 1 and a dot product below 2^24: every partial sum is exact in
    float32 in any order, so the output is exactly the integer product (catches a wrong weight
    layout or a dropped k step, which the tolerance above would also catch, with a clearer diff)."""
    x = torch.randint(-8, 9, (5, 37)).float()
    w = torch.randint(-128, 128, (11, 37), dtype=torch.int8)
    got = _run_wolinear(s1, x, w, torch.ones(11), None)
    assert torch.equal(got.to(torch.int64), x.to(torch.int64) @ w.to(torch.int64).t())


def test_threads_split_the_work_to_the_same_result(s1, s2):
    """A shape past worth_threading (threadpool.h): 2 threads split the output channels, each
    computing its channels exactly as 1 thread does."""
    torch.manual_seed(0)
    x, w, scale, bias = _operands(37, 70, 150, True)
    one, two = (_run_wolinear(s, x, w, scale, bias) for s in (s1, s2))
    assert torch.equal(one, two)
    _check_against_eager(one, x, w, scale, bias)
