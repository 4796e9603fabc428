"""The dynamic int8 linear's kernels (QDYNPACK, QGEMM_DYN) against PyTorch's own quantized_decomposed
ops (choose_qparams.tensor, quantize_per_tensor.tensor) and twb_quant::dynamic_linear's eager
implementation (the chain of ops it replaces), at awkward shapes (tokens 1/3/7/129 around the 4-token
micro-tile, K odd and not a multiple of 8, N around the 8-feature panel, batch-1 GEMV), uint8 and
int8 activations, inputs that are all positive, all negative, all zero (range 0), mixed, on exact
rounding halves, and holding a NaN; 1 thread, and 2 threads at a shape large enough to split.

Tolerances:
- QDYNPACK: exact. scale, zero point and every quantized value are the same float32 operations as
  eager's, in the same order (kernel_abi.def spells them out).
- QGEMM_DYN: its integer accumulator is exact; the float output differs from eager's float dot
  product of the dequantized operands by that product's rounding only: dot_rel(K) relative to
  sum |x_f * w_f| + |bias| (tests/kernels/kernel_testing.py), as the static QGEMM's float output."""
from __future__ import annotations

import pytest
import torch

from kernels.kernel_testing import dot_rel
from test_int8_kernels import RANGE, _run_twice, _weights
from torch_wasm_backend.lowering.ops.quant_dynamic import pack_dynamic_weight, pair_k
from torch_wasm_backend.lowering.quant_dynamic import dynamic_linear

qd = torch.ops.quantized_decomposed
EPS = 2.0 ** -12  # the eps X86InductorQuantizer's dynamic config passes to choose_qparams (torchao 0.18)


def _inputs(m: int, k: int, kind: str) -> torch.Tensor:
    x = torch.randn(m, k) * 3
    if kind == "positive":
        return x.abs() + 0.5
    if kind == "negative":
        return -x.abs() - 0.5
    if kind == "zeros":  # range 0: scale = eps
        return torch.zeros(m, k)
    if kind == "halves":  # values on exact rounding halves of a scale the range gives (1/2 steps)
        x = torch.randint(-200, 200, (m, k)).float() / 2
        x.view(-1)[0], x.view(-1)[-1] = -100.0, 155.0  # range [-100, 155]: 255 levels of 1.0
        return x
    return x


def _run_qdynpack(s, x: torch.Tensor, dtype: torch.dtype, row_stride: int | None = None):
    """(scale, zp, int16 rows [ceil(m/4) * 4, kp] unpacked from its panels, kp) QDYNPACK writes for
    x [m, k] (rows row_stride apart in memory)."""
    m, k = x.shape
    kp = pair_k(k)
    lo, hi = RANGE[dtype]
    stride = row_stride or k
    wide = torch.full((m, stride), float("nan"))  # padding between rows must not be read
    wide[:, :k] = x
    x_ptr = s.put(wide)
    qparams = s.alloc(8)
    m4 = -(-m // 4) * 4
    panels = _run_twice(s, m4 * kp, torch.int16, lambda out: s.record(
        "QDYNPACK", cols=m, k=k, kp=kp, row_stride=stride, qmin=lo, qmax=hi, eps=EPS,
        **{"in": x_ptr}, qparams=qparams, out=out))
    scale = float(s.get(qparams, (1,), torch.float32))
    zp = int(s.get(qparams + 4, (1,), torch.int32))
    return scale, zp, panels.reshape(m4 // 4, kp // 2, 4, 2).permute(0, 2, 1, 3).reshape(m4, kp), kp


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8])
@pytest.mark.parametrize("m,k", [(1, 1), (1, 7), (3, 8), (5, 9), (4, 33), (9, 20), (7, 19)])
@pytest.mark.parametrize("kind", ["mixed", "positive", "negative", "zeros", "halves"])
def test_qdynpack_matches_choose_qparams_and_quantize(s1, dtype, m, k, kind):
    torch.manual_seed(m * 100 + k)
    x = _inputs(m, k, kind)
    lo, hi = RANGE[dtype]
    ref_scale, ref_zp = qd.choose_qparams.tensor(x, lo, hi, EPS, dtype)
    ref_q = qd.quantize_per_tensor.tensor(x, ref_scale, ref_zp, lo, hi, dtype)
    scale, zp, rows, kp = _run_qdynpack(s1, x, dtype, row_stride=k + 3)
    assert (scale, zp) == (float(ref_scale), int(ref_zp))
    assert torch.equal(rows[:m, :k], ref_q.to(torch.int16) - zp)
    assert not rows[:, k:].any() and not rows[m:].any()  # the padding is zero


def _run_dynamic_linear(s, x, dtype, w, w_scale, w_zp, bias) -> torch.Tensor:
    """QDYNPACK + QGEMM_DYN as the lowering emits them -> float32 [m, n]."""
    m, k = x.shape
    n = w.shape[0]
    kp = pair_k(k)
    lo, hi = RANGE[dtype]
    x_rows, qparams = s.alloc(2 * -(-m // 4) * 4 * kp), s.alloc(8)
    s.record("QDYNPACK", cols=m, k=k, kp=kp, row_stride=k, qmin=lo, qmax=hi, eps=EPS,
             **{"in": s.put(x)}, qparams=qparams, out=x_rows)
    ptrs = dict(w=s.put(pack_dynamic_weight(w, w_zp)), x=x_rows, qparams=qparams, w_scale=s.put(w_scale.float()),
                bias=s.put(bias) if bias is not None else 0)
    got = _run_twice(s, m * n, torch.float32, lambda out: s.record(
        "QGEMM_DYN", rows=n, cols=m, kp=kp, **ptrs, out=out))
    return got.reshape(m, n)


def _check_against_eager(got, x, dtype, w, w_scale, w_zp, bias):
    lo, hi = RANGE[dtype]
    ref = dynamic_linear(x, lo, hi, EPS, dtype, w, w_scale, w_zp, bias)
    scale, zp = qd.choose_qparams.tensor(x, lo, hi, EPS, dtype)
    xf = qd.dequantize_per_tensor.tensor(qd.quantize_per_tensor.tensor(x, scale, zp, lo, hi, dtype), scale, zp,
                                         lo, hi, dtype)
    magnitude = xf.abs() @ (w.float() * w_scale[:, None]).abs().t() + (bias.abs() if bias is not None else 0)
    bound = dot_rel(x.shape[1]) * magnitude
    assert ((got.double() - ref.double()).abs() <= bound).all(), (got, ref)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 5, 7), (1, 17, 40), (3, 2, 8), (5, 3, 9), (7, 8, 15), (9, 17, 33),
                                   (129, 9, 21)])
@pytest.mark.parametrize("kind,with_bias", [("mixed", True), ("positive", False), ("negative", True),
                                            ("zeros", True)])
def test_dynamic_linear_against_pytorch(s1, dtype, m, n, k, kind, with_bias):
    torch.manual_seed(m * 1000 + n * 10 + k)
    x = _inputs(m, k, kind)
    w, w_scale, w_zp = _weights(n, True, (k,))
    bias = torch.randn(n) if with_bias else None
    _check_against_eager(_run_dynamic_linear(s1, x, dtype, w, w_scale, w_zp, bias), x, dtype, w, w_scale, w_zp, bias)


def test_dynamic_linear_accumulator_exact(s1):
    """Weight scales 1 and an input whose chosen scale is 1 (range [-100, 155] over 255 levels,
    integer values): the output is the integer accumulator of (x_q - zp) * w, which must be exact."""
    x = torch.randint(-100, 156, (6, 19)).float()
    x[0, 0], x[-1, -1] = -100.0, 155.0
    w, _, w_zp = _weights(7, True, (19,))
    got = _run_dynamic_linear(s1, x, torch.uint8, w, torch.ones(7), w_zp, None)
    assert torch.equal(got.to(torch.int64), x.to(torch.int64) @ w.to(torch.int64).t())


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_dynamic_linear_nonfinite_input_gives_nan_as_eager(s1, bad):
    """A NaN or infinity in the activation makes eager's chosen scale NaN or infinite and its whole
    output NaN (the dequantized activation is (q - zp) * scale: NaN, or inf and 0 * inf); ours too."""
    torch.manual_seed(3)
    x = torch.randn(5, 12)
    x[2, 7] = bad
    w, w_scale, w_zp = _weights(9, True, (12,))
    bias = torch.randn(9)
    ref = dynamic_linear(x, 0, 255, EPS, torch.uint8, w, w_scale, w_zp, bias)
    assert ref.isnan().all()  # (the premise: eager's output is all NaN)
    assert _run_dynamic_linear(s1, x, torch.uint8, w, w_scale, w_zp, bias).isnan().all()


def test_threads_split_the_work_to_the_same_result(s1, s2):
    """A shape past worth_threading (threadpool.h) for both kernels: 2 threads give exactly 1
    thread's output."""
    torch.manual_seed(0)
    x = torch.randn(37, 150)
    w, w_scale, w_zp = _weights(70, True, (150,))
    bias = torch.randn(70)
    one, two = (_run_dynamic_linear(s, x, torch.uint8, w, w_scale, w_zp, bias) for s in (s1, s2))
    assert torch.equal(one, two)
    _check_against_eager(one, x, torch.uint8, w, w_scale, w_zp, bias)
