"""CONV3D, POOL3D and GATHER kernels against torch, plus SIN / COS over wide argument ranges.

Inputs sit between NaN guard bands (an out-of-bounds read poisons the result) and outputs start
NaN-filled between sentinel guards (every element must be written, nothing outside). Bounds: a
CONV3D output is a dot product of length K = c_in/groups * kd * kh * kw plus the bias (the GEMM
bound, kernel_testing.dot_rel); max pooling and GATHER are exact; an average is a sum of <= kd*kh*kw
terms and one division, within (kd*kh*kw + 1) * EPS * (the same average of |x|)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kernel_testing import EPS, NAN, NR, Session, assert_exact, assert_within, dot_rel, ulp32
from torch_wasm_backend.lowering.abi import ABI
from test_elementwise_kernels import run_unary

U = ABI.unary


# ---- CONV3D --------------------------------------------------------------------------------------
def run_conv3d(s: Session, x, w, bias, stride, padding, dilation, groups, act="IDENTITY", scratch_panels=None):
    n, c, d, h, wd = x.shape
    co, cig, kd, kh, kw = w.shape
    od, oh, ow = ((size + 2 * p - dl * (k - 1) - 1) // st + 1
                  for size, k, st, p, dl in zip((d, h, wd), (kd, kh, kw), stride, padding, dilation))
    out = s.out(n * co * od * oh * ow)
    # NaN-filled scratch: the kernel must write every element it reads (and stay inside it)
    panels = scratch_panels or math.ceil(od * oh * ow / NR)
    scratch = s.out(panels * NR * cig * kd * kh * kw)
    s.record("CONV3D", n=n, c_in=c, d=d, h=h, w=wd, c_out=co, groups=groups, kd=kd, kh=kh, kw=kw,
             sd=stride[0], sh=stride[1], sw=stride[2], pd=padding[0], ph=padding[1], pw=padding[2],
             dd=dilation[0], dh=dilation[1], dw=dilation[2], od=od, oh=oh, ow=ow, weight=s.put_guarded(w),
             bias=s.put_guarded(bias) if bias is not None else 0, out=out.ptr, scratch=scratch.ptr,
             scratch_panels=panels, act=U[act], p0=0.0, p1=0.0, **{"in": s.put_guarded(x)})
    return out.read((n, co, od, oh, ow))


CONV3D_CASES = {
    # name: (n, c_in, (d, h, w), c_out, groups, (kd, kh, kw), stride, padding, dilation)
    "3x3x3": (1, 3, (4, 6, 7), 5, 1, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
    "r3d_stem": (2, 3, (4, 17, 15), 8, 1, (3, 7, 7), (1, 2, 2), (1, 3, 3), (1, 1, 1)),
    "downsample_1x1x1_s2": (1, 8, (5, 9, 9), 9, 1, (1, 1, 1), (2, 2, 2), (0, 0, 0), (1, 1, 1)),
    "dilated_rect": (1, 2, (5, 7, 11), 3, 1, (2, 3, 2), (1, 1, 2), (1, 2, 0), (2, 1, 3)),
    "groups": (2, 6, (3, 5, 4), 9, 3, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
    "depthwise": (1, 5, (4, 6, 9), 5, 5, (3, 3, 3), (1, 2, 1), (1, 1, 1), (1, 1, 1)),
    "kernel_eq_input": (1, 3, (2, 3, 3), 4, 1, (2, 3, 3), (1, 1, 1), (0, 0, 0), (1, 1, 1)),
    "one_output": (1, 1, (1, 1, 1), 1, 1, (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1)),
    # several column blocks (od*oh*ow = 2048 > one 256 KiB block at K = 16*27): threads take blocks
    "wide": (1, 16, (8, 16, 16), 12, 1, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1)),
}


@pytest.mark.parametrize("scratch_panels", [None, 1, 9])
@pytest.mark.parametrize("case", list(CONV3D_CASES))
def test_conv3d(s12, case, scratch_panels):
    """scratch_panels: the whole vol2col (None), one panel (every block one panel, serial), or 9
    (threads' blocks in waves of one block each)."""
    n, c, dhw, co, g, k, st, p, dl = CONV3D_CASES[case]
    x = torch.randn(n, c, *dhw)
    w = torch.randn(co, c // g, *k)
    b = torch.randn(co)
    got = run_conv3d(s12, x, w, b, st, p, dl, g, scratch_panels=scratch_panels)
    exact = F.conv3d(x.double(), w.double(), b.double(), st, p, dl, g)
    mag = F.conv3d(x.double().abs(), w.double().abs(), b.double().abs(), st, p, dl, g)
    assert_within(got, exact, dot_rel(w[0].numel()) * mag)


def test_conv3d_no_bias_relu_epilogue(s1):
    x, w = torch.randn(1, 4, 3, 5, 6), torch.randn(6, 4, 2, 2, 3)
    got = run_conv3d(s1, x, w, None, (1, 1, 1), (0, 1, 1), (1, 1, 1), 1, act="RELU")
    exact = F.conv3d(x.double(), w.double(), None, 1, (0, 1, 1)).clamp_min(0)
    mag = F.conv3d(x.double().abs(), w.double().abs(), None, 1, (0, 1, 1))
    assert_within(got, exact, dot_rel(w[0].numel()) * mag)


# ---- POOL3D --------------------------------------------------------------------------------------
POOL3D_CASES = {
    # name: (planes, (d, h, w), k, stride, pad, dilation, ceil_mode)
    "2x2x2": (2, (4, 8, 8), (2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1), False),
    "3x3x3_s2_p1": (3, (5, 9, 11), (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), False),
    "3x3x3_s2_p1_ceil": (3, (6, 9, 10), (3, 3, 3), (2, 2, 2), (1, 1, 1), (1, 1, 1), True),
    "s3d_1x3x3": (4, (3, 9, 8), (1, 3, 3), (1, 2, 2), (0, 1, 1), (1, 1, 1), False),
    "dilated": (2, (7, 9, 13), (2, 3, 3), (1, 2, 2), (1, 1, 1), (2, 2, 2), False),
    "window_is_volume": (1, (3, 5, 5), (3, 5, 5), (1, 1, 1), (1, 2, 2), (1, 1, 1), False),
    "1x1x1": (1, (1, 1, 1), (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), False),
}


def run_pool3d(s: Session, mode, x, out_dhw, k, st, p, d=(1, 1, 1), cip=0, divisor=0, indices=0):
    planes = x.shape[0]
    out = s.out(planes * math.prod(out_dhw))
    s.record("POOL3D", mode=ABI.pool[mode], planes=planes, d=x.shape[1], h=x.shape[2], w=x.shape[3],
             od=out_dhw[0], oh=out_dhw[1], ow=out_dhw[2], kd=k[0], kh=k[1], kw=k[2], sd=st[0], sh=st[1],
             sw=st[2], pd=p[0], ph=p[1], pw=p[2], dd=d[0], dh=d[1], dw=d[2], count_include_pad=cip,
             divisor=divisor, out=out.ptr, indices=indices, **{"in": s.put_guarded(x)})
    return out.read((planes, *out_dhw))


@pytest.mark.parametrize("case", list(POOL3D_CASES))
def test_max_pool3d_with_indices(s12, case):
    """Values and int64 indices equal torch's: ties (first maximum wins), NaN (a later NaN wins
    again), padding never wins (inputs all negative-ish)."""
    planes, dhw, k, st, p, dl, ceil = POOL3D_CASES[case]
    x = (torch.randn(planes, *dhw) * 2).round() - 3.0
    if x.numel() > 20:
        x.view(-1)[13] = NAN
        x.view(-1)[14] = NAN
    ref, ref_idx = F.max_pool3d(x, k, st, p, dl, ceil_mode=ceil, return_indices=True)
    idx = s12.put(torch.full(ref.shape, -5, dtype=torch.int64))
    got = run_pool3d(s12, "MAX", x, ref.shape[1:], k, st, p, dl, indices=idx)
    assert_exact(got, ref)
    assert torch.equal(s12.get(idx, ref.shape, torch.int64), ref_idx)


@pytest.mark.parametrize("cip,divisor", [(1, 0), (0, 0), (1, 5)])
@pytest.mark.parametrize("case", [c for c, v in POOL3D_CASES.items() if v[5] == (1, 1, 1)])
def test_avg_pool3d(s1, case, cip, divisor):
    planes, dhw, k, st, p, _, ceil = POOL3D_CASES[case]
    if any(2 * pad > size for pad, size in zip(p, k)):
        pytest.skip("torch requires padding <= kernel / 2")
    x = torch.randn(planes, *dhw)
    kw = dict(ceil_mode=ceil, count_include_pad=bool(cip), divisor_override=divisor or None)
    ref = F.avg_pool3d(x.double(), k, st, p, **kw)
    got = run_pool3d(s1, "AVG", x, ref.shape[1:], k, st, p, cip=cip, divisor=divisor)
    bound = (math.prod(k) + 1) * EPS * F.avg_pool3d(x.double().abs(), k, st, p, **kw)
    assert_within(got, ref, bound)


@pytest.mark.parametrize("dhw,out", [((4, 7, 9), (2, 3, 4)), ((3, 5, 5), (1, 1, 1)), ((2, 3, 3), (3, 4, 5)),
                                     ((5, 9, 6), (5, 9, 6))])
def test_adaptive_avg_pool3d(s1, dhw, out):
    x = torch.randn(3, *dhw)
    ref = F.adaptive_avg_pool3d(x.double(), out)
    got = run_pool3d(s1, "ADAPTIVE_AVG", x, out, (1, 1, 1), (1, 1, 1), (0, 0, 0))
    window = max(math.ceil(a / b) + 1 for a, b in zip(dhw, out)) ** 3  # a bound on any window's taps
    assert_within(got, ref, (window + 1) * EPS * F.adaptive_avg_pool3d(x.double().abs(), out))


# ---- GATHER --------------------------------------------------------------------------------------
def run_gather(s: Session, x: torch.Tensor, dim: int, idx: torch.Tensor):
    """x contiguous with x.shape[d] == idx.shape[d] for d != dim (the lowering cuts x first)."""
    outer, inner = math.prod(idx.shape[:dim]), math.prod(idx.shape[dim + 1:])
    code = {torch.int64: ABI.dtype["I64"], torch.int32: ABI.dtype["I32"]}[idx.dtype]
    out = s.put(torch.zeros(idx.shape, dtype=x.dtype))
    s.record("GATHER", outer=outer, src_dim=x.shape[dim], inner=inner, n_idx=idx.shape[dim], idx_dtype=code,
             elem_size=x.element_size(), **{"in": s.put(x)}, idx=s.put(idx), out=out)
    return s.get(out, idx.shape, x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.int16, torch.bool])
@pytest.mark.parametrize("idx_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("shape,dim,n", [((3, 9), 1, 5), ((7, 4, 5), 0, 9), ((2, 3, 17), 2, 1), ((1,), 0, 4),
                                         ((33, 6, 3), 1, 6)])
def test_gather(s12, dtype, idx_dtype, shape, dim, n):
    x = (torch.randn(shape) * 100).to(dtype)
    idx_shape = list(shape)
    idx_shape[dim] = n
    idx = torch.randint(0, shape[dim], idx_shape)
    assert torch.equal(run_gather(s12, x, dim, idx.to(idx_dtype)), torch.gather(x, dim, idx))


@pytest.mark.parametrize("bad", [9, -1, 2**40])
def test_gather_out_of_range_is_an_input_error(s1, bad):
    """GATHER's bounds check (gather_indices_in_range): any index outside [0, src_dim) is reported
    as the caller's input error before anything is written (torch.gather raises for negative
    indices too), and the runtime stays usable."""
    from torch_wasm_backend.errors import WasmInputError
    idx = torch.tensor([[0, 3], [bad, 1]])
    with pytest.raises(WasmInputError, match="index out of range"):
        run_gather(s1, torch.randn(2, 9), 1, idx)
    assert not s1.runtime.broken
    x, good = torch.randn(2, 9), torch.tensor([[0, 3], [8, 1]])
    assert torch.equal(run_gather(s1, x, 1, good), torch.gather(x, 1, good))


# ---- SIN / COS over wide ranges --------------------------------------------------------------------
@pytest.mark.parametrize("op,fn", [("SIN", torch.sin), ("COS", torch.cos)])
def test_sin_cos_wide_range(s1, op, fn):
    """The double-precision reduction keeps <= 2 ulp over rotary-sized arguments, at float32
    multiples of pi/2 (tiny results) and beyond 2^19 (libm path)."""
    x = torch.cat([torch.linspace(-1e4, 1e4, 40001), (torch.arange(-5000, 5000).double() * (math.pi / 2)).float(),
                   torch.logspace(5, 38.5, 2001), -torch.logspace(5, 38.5, 2001)])
    ref = fn(x.double())
    assert_within(run_unary(s1, op, x), ref, 2.0 * ulp32(ref), x)
