"""CONV2D, POOL2D, SOFTMAX, LAYERNORM, CHANNEL_AFFINE and REDUCE kernels against torch.

Inputs sit between NaN guard bands (an out-of-bounds read, e.g. a padding tap read from memory,
poisons the result) and outputs start NaN-filled between sentinel guards (every element must be
written, nothing outside). Error bounds, per kernel, in the comments next to them; EPS = 2^-24."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kernel_testing import (EPS, INF, NAN, NR, Session, assert_bits_equal, assert_exact, assert_within,
                            dot_rel, ulp32)
from torch_wasm_backend.lowering.abi import ABI

U = ABI.unary


def _act64(x, act, p0, p1):
    return {"IDENTITY": lambda: x, "RELU": lambda: x.clamp_min(0), "CLAMP": lambda: x.clamp(p0, p1),
            "SILU": lambda: F.silu(x)}[act]()


# ---- CONV2D --------------------------------------------------------------------------------------
def conv_out_hw(h, w, k, s, p, d):
    return ((h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1,
            (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1)


def run_conv(s: Session, x, w, bias, stride, padding, dilation, groups, act="IDENTITY", p0=0.0, p1=0.0,
             scratch=True):
    n, c, h, wd = x.shape
    co, cig, kh, kw = w.shape
    oh, ow = conv_out_hw(h, wd, (kh, kw), stride, padding, dilation)
    out = s.out(n * co * oh * ow)
    scratch_ptr = 0
    if scratch:  # NaN-filled: the kernel must write every scratch element it reads
        scratch_ptr = s.out(math.ceil(oh * ow / NR) * NR * cig * kh * kw).ptr
    s.record("CONV2D", n=n, c_in=c, h=h, w=wd, c_out=co, groups=groups, kh=kh, kw=kw,
             sh=stride[0], sw=stride[1], ph=padding[0], pw=padding[1], dh=dilation[0], dw=dilation[1],
             oh=oh, ow=ow, weight=s.put_guarded(w), bias=s.put_guarded(bias) if bias is not None else 0,
             out=out.ptr, scratch=scratch_ptr, act=U[act], p0=p0, p1=p1, **{"in": s.put_guarded(x)})
    return out.read((n, co, oh, ow))


def check_conv(got, x, w, bias, stride, padding, dilation, groups, act="IDENTITY", p0=0.0, p1=0.0):
    """A conv output is a dot product of length K = c_in/groups * kh * kw plus the bias, so the
    GEMM bound applies (kernel_testing.dot_rel): min(K + 2, 1e-5 / EPS) * EPS * (|x| conv |w| +
    |bias|), the worst case for any summation order up to K ~ 166, 1e-5 relative beyond;
    relu/clamp are 1-Lipschitz; silu's slope is <= 1.1 and it adds its own 3 ulp."""
    b64 = bias.double() if bias is not None else None
    args = (stride, padding, dilation, groups)
    exact = F.conv2d(x.double(), w.double(), b64, *args)
    mag = F.conv2d(x.double().abs(), w.double().abs(), b64.abs() if b64 is not None else None, *args)
    K = w.shape[1] * w.shape[2] * w.shape[3]
    ref = _act64(exact, act, p0, p1)
    bound = dot_rel(K) * mag
    if act == "SILU":
        bound = 1.1 * bound + 3 * ulp32(ref) + 1e-36
    assert_within(got, ref, bound)


CONV_CASES = {
    # name: (n, c_in, h, w, c_out, groups, (kh, kw), stride, padding, dilation)
    "3x3": (1, 3, 8, 8, 4, 1, (3, 3), (1, 1), (1, 1), (1, 1)),
    "3x3_s2_batch": (2, 5, 7, 9, 6, 1, (3, 3), (2, 2), (1, 1), (1, 1)),
    "1x1_pointwise": (1, 4, 5, 5, 8, 1, (1, 1), (1, 1), (0, 0), (1, 1)),
    "1x1_pointwise_odd": (2, 16, 13, 11, 9, 1, (1, 1), (1, 1), (0, 0), (1, 1)),
    "1x1_stride2": (1, 8, 9, 11, 5, 1, (1, 1), (2, 2), (0, 0), (1, 1)),
    "1x1_padded": (1, 3, 4, 6, 5, 1, (1, 1), (1, 1), (1, 1), (1, 1)),
    "depthwise_3x3": (1, 6, 10, 10, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1)),
    "depthwise_5x5_wide": (2, 8, 17, 23, 8, 8, (5, 5), (1, 1), (2, 2), (1, 1)),
    "depthwise_s2": (1, 8, 17, 23, 8, 8, (3, 3), (2, 2), (1, 1), (1, 1)),
    "depthwise_dilated": (1, 4, 9, 19, 4, 4, (3, 3), (1, 1), (2, 2), (2, 2)),
    "depthwise_long_row": (1, 2, 3, 30, 2, 2, (1, 7), (1, 1), (0, 3), (1, 1)),
    "depthwise_no_pad": (1, 3, 12, 37, 3, 3, (3, 3), (1, 1), (0, 0), (1, 1)),
    "channel_multiplier": (1, 4, 9, 9, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1)),
    "grouped": (1, 8, 9, 9, 12, 4, (3, 3), (1, 2), (0, 1), (1, 1)),
    "grouped_pointwise": (2, 6, 7, 7, 4, 2, (1, 1), (1, 1), (0, 0), (1, 1)),
    "kernel_larger_than_input": (1, 3, 4, 4, 5, 1, (5, 5), (1, 1), (2, 2), (1, 1)),
    "1x1_image": (1, 2, 1, 1, 3, 1, (3, 3), (1, 1), (1, 1), (1, 1)),
    "asymmetric": (1, 3, 6, 5, 2, 1, (2, 3), (3, 2), (0, 2), (2, 1)),
    "64ch_28x28": (1, 64, 28, 28, 64, 1, (3, 3), (1, 1), (1, 1), (1, 1)),
    "7x7_s2_stem": (1, 3, 32, 32, 16, 1, (7, 7), (2, 2), (3, 3), (1, 1)),
}
CONV_ACTS = [("IDENTITY", 0.0, 0.0), ("RELU", 0.0, 0.0), ("CLAMP", -0.3, 0.9)]


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d(s1, case):
    n, ci, h, w, co, g, k, st, p, d = CONV_CASES[case]
    i = list(CONV_CASES).index(case)
    x = torch.randn(n, ci, h, w)
    wt = torch.randn(co, ci // g, *k)
    bias = torch.randn(co) if i % 2 == 0 else None
    act, p0, p1 = CONV_ACTS[i % 3]
    check_conv(run_conv(s1, x, wt, bias, st, p, d, g, act, p0, p1), x, wt, bias, st, p, d, g, act, p0, p1)


# The vectorised depthwise planes (kernels_cpp/conv.cpp depthwise_plane_k: K in {3, 5}, stride 1 or 2,
# dilation 1): 4-wide output blocks that load straight from a row only when their whole input span is
# inside it, the rest from a zero-filled copy. Widths around the block and span sizes (1 to 4 blocks,
# a 1-column tail), heights of 1, padding 0 / 1 / 2 / larger than the kernel's reach, odd channel counts.
DEPTHWISE_CASES = {
    # name: (n, c, h, w, k, stride, padding)
    "3x3_s1_w1": (1, 3, 5, 1, 3, 1, 1),
    "3x3_s1_w4": (1, 5, 4, 4, 3, 1, 1),
    "3x3_s1_w9": (2, 3, 7, 9, 3, 1, 1),
    "3x3_s1_w14": (1, 7, 14, 14, 3, 1, 1),
    "3x3_s1_h1_nopad": (1, 2, 3, 21, 3, 1, 0),
    "3x3_s1_pad2": (1, 3, 6, 13, 3, 1, 2),
    "3x3_s2_w7": (1, 5, 7, 7, 3, 2, 1),
    "3x3_s2_w16": (1, 3, 16, 16, 3, 2, 1),
    "3x3_s2_w29_nopad": (1, 3, 9, 29, 3, 2, 0),
    "3x3_s2_w2": (1, 2, 2, 2, 3, 2, 1),
    "5x5_s1_w7": (1, 3, 7, 7, 5, 1, 2),
    "5x5_s1_w19": (1, 5, 6, 19, 5, 1, 2),
    "5x5_s2_w14": (1, 3, 14, 14, 5, 2, 2),
    "5x5_s2_w31_pad1": (2, 3, 11, 31, 5, 2, 1),
    "5x5_s1_w3_pad3": (1, 2, 3, 3, 5, 1, 3),
}


@pytest.mark.parametrize("case", list(DEPTHWISE_CASES))
def test_conv2d_depthwise_vectorised(s1, case):
    n, c, h, w, k, st, p = DEPTHWISE_CASES[case]
    i = list(DEPTHWISE_CASES).index(case)
    x, wt = torch.randn(n, c, h, w), torch.randn(c, 1, k, k)
    bias = torch.randn(c) if i % 2 == 0 else None
    act, p0, p1 = CONV_ACTS[i % 3]
    args = ((st, st), (p, p), (1, 1), c)
    check_conv(run_conv(s1, x, wt, bias, *args, act, p0, p1, scratch=False), x, wt, bias, *args, act, p0, p1)


@pytest.mark.parametrize("case", list(DEPTHWISE_CASES))
def test_conv2d_depthwise_silu(s1, case):
    """SiLU's own depthwise planes (conv.cpp: each output row written raw, then SiLU over it, the
    row's last partial block in registers) at every vectorised shape: within the conv + silu bound of
    eager on inputs wide enough (|conv| up to ~100) to reach exp_sat_v's clamps, and with NaN / +-inf
    inputs the same values as the identity conv followed by a separate UNARY SILU."""
    n, c, h, w, k, st, p = DEPTHWISE_CASES[case]
    x, wt, bias = torch.randn(n, c, h, w) * 15, torch.randn(c, 1, k, k), torch.randn(c)
    args = ((st, st), (p, p), (1, 1), c)
    check_conv(run_conv(s1, x, wt, bias, *args, "SILU", scratch=False), x, wt, bias, *args, "SILU")
    flat = x.view(-1)
    flat[torch.linspace(0, flat.numel() - 1, 4).long()] = torch.tensor([NAN, INF, -INF, 1e30])
    fused = run_conv(s1, x, wt, bias, *args, "SILU", scratch=False)
    plain = run_conv(s1, x, wt, bias, *args, scratch=False)
    out = s1.out(plain.numel())
    size = [1] * 5 + [plain.numel()]
    s1.record("UNARY", op=U["SILU"], size=size, out_stride=[0] * 5 + [1], in_stride=[0] * 5 + [1],
              out=out.ptr, p0=0.0, p1=0.0, **{"in": s1.put_guarded(plain)})
    assert_exact(fused, out.read(plain.shape))


# Shapes around the im2col column blocking and its threading (kernels_cpp/conv.cpp): on 2 threads a
# conv with >= 8 output panels (of NR = 8 columns) runs whole column blocks per task, fewer panels
# split the GEMM rows; blocks hold >= 8 panels, shrunk to ~4 per thread when threaded. All are
# above the threading threshold (2e5 flops), so s12's 2-thread runs take the threaded paths.
CONV_BLOCK_CASES = {
    # name: (n, c_in, h, w, c_out, (kh, kw), stride, padding)
    "7_panels_row_split": (1, 40, 7, 7, 19, (3, 3), (1, 1), (1, 1)),       # NC 49, K 360
    "8_panels_exactly": (1, 24, 8, 8, 9, (3, 3), (1, 1), (1, 1)),          # NC 64
    "8_panels_ragged": (1, 24, 3, 19, 13, (3, 3), (1, 1), (1, 1)),         # NC 57: last panel 1 column
    "many_blocks_ragged": (2, 7, 30, 31, 13, (3, 3), (1, 1), (1, 1)),      # NC 930, 2 images
    "long_k_strided": (1, 64, 17, 15, 33, (3, 3), (2, 2), (1, 1)),        # K 576 (3 k slices), NC 72
    "1x1_strided_wide": (1, 130, 28, 28, 17, (1, 1), (2, 2), (0, 0)),      # K 130, NC 196
    # Pointwise convs (their input planes packed as B, no im2col): K past the GEMM's 256-deep k
    # slices, wide threaded layers with and without a ragged last panel, a single ragged panel.
    "1x1_whole_strips_k_sliced": (1, 300, 4, 6, 10, (1, 1), (1, 1), (0, 0)),  # NC 24, K 300
    "1x1_wide_whole_strips": (1, 24, 28, 28, 40, (1, 1), (1, 1), (0, 0)),     # NC 784
    "1x1_ragged_strip_only": (2, 9, 1, 5, 7, (1, 1), (1, 1), (0, 0)),         # NC 5
    "1x1_wide_ragged": (1, 24, 27, 29, 40, (1, 1), (1, 1), (0, 0)),           # NC 783
    # 1 thread packs and multiplies column blocks of 65536 / (K * 8) = 27 panels: 3 per image here,
    # the last 7 panels with a ragged 3-column one; K 300 also crosses the 256-deep k slices.
    "1x1_1thread_blocks_ragged": (2, 300, 23, 21, 11, (1, 1), (1, 1), (0, 0)),  # NC 483
    "1x1_1thread_blocks_bias": (1, 520, 16, 16, 5, (1, 1), (1, 1), (0, 0)),     # NC 256: 15-panel blocks
}


@pytest.mark.parametrize("case", list(CONV_BLOCK_CASES))
def test_conv2d_column_blocks(s12, case):
    n, ci, h, w, co, k, st, p = CONV_BLOCK_CASES[case]
    i = list(CONV_BLOCK_CASES).index(case)
    x, wt = torch.randn(n, ci, h, w), torch.randn(co, ci, *k)
    bias = torch.randn(co) if i % 2 == 0 else None
    act, p0, p1 = CONV_ACTS[i % 3]
    check_conv(run_conv(s12, x, wt, bias, st, p, (1, 1), 1, act, p0, p1), x, wt, bias, st, p, (1, 1), 1,
               act, p0, p1)


def test_conv2d_depthwise_without_scratch(s1):
    """The ABI allows scratch = 0 where the kernel does not need it (depthwise)."""
    x, wt, bias = torch.randn(2, 5, 11, 13), torch.randn(5, 1, 3, 3), torch.randn(5)
    args = ((1, 1), (1, 1), (1, 1), 5)
    check_conv(run_conv(s1, x, wt, bias, *args, scratch=False), x, wt, bias, *args)


# The direct kernel for c_in <= 4 (kernels_cpp/conv_small_cin.cpp: groups 1, the same stride 1 or 2
# both ways, dilation 1): output vectors of 4 columns (widths 1 to 23, a ragged last vector), blocks
# of output channels (c_out 2 to 17, a ragged last block), c_in 1 to 4, kernels 1x1 to 5x5 and
# non-square, padding 0 to 3 and asymmetric, kernels reaching past the input, batches, row bands on
# 2 threads. The last cases are ones the kernel leaves to im2col + GEMM.
SMALL_CIN_CASES = {
    # name: (n, c_in, h, w, c_out, (kh, kw), stride, (ph, pw), dilation)
    "c1_3x3_s1_w1": (1, 1, 5, 1, 3, (3, 3), 1, (1, 1), 1),
    "c2_3x3_s2_w9_nopad": (1, 2, 9, 9, 5, (3, 3), 2, (0, 0), 1),
    "c3_3x3_s2_batch_threaded": (2, 3, 17, 23, 21, (3, 3), 2, (1, 1), 1),  # 2.4e5 flops: bands cross images
    "c3_3x3_s2_threaded": (1, 3, 40, 37, 16, (3, 3), 2, (1, 1), 1),  # 3.3e5 flops: 2 threads split rows
    "c3_3x3_s1_w10": (1, 3, 6, 10, 17, (3, 3), 1, (1, 1), 1),
    "c4_3x3_s1_pad2": (1, 4, 7, 11, 8, (3, 3), 1, (2, 2), 1),
    "c1_5x5_s2_pad3": (1, 1, 9, 14, 6, (5, 5), 2, (3, 3), 1),
    "c1_1x7_s1_pad3_h1": (1, 1, 1, 6, 4, (1, 7), 1, (0, 3), 1),
    "c2_2x5_s2_asym_pad": (1, 2, 8, 14, 16, (2, 5), 2, (0, 2), 1),
    "c1_1x1_s2": (2, 1, 6, 7, 2, (1, 1), 2, (0, 0), 1),
    "c1_kernel_past_input": (1, 1, 3, 2, 7, (5, 5), 1, (2, 2), 1),
    # im2col + GEMM: more than 36 taps (c_in * kh * kw), dilation, stride 3
    "c3_7x7_s2_resnet_stem": (1, 3, 19, 21, 9, (7, 7), 2, (3, 3), 1),
    "c3_3x3_dilated": (1, 3, 11, 13, 6, (3, 3), 1, (2, 2), 2),
    "c3_3x3_s3": (1, 3, 11, 13, 6, (3, 3), 3, (1, 1), 1),
}
SMALL_CIN_ACTS = ["IDENTITY", "RELU", "CLAMP", "HARDSWISH", "SILU", "GELU_ERF"]


@pytest.mark.parametrize("case", list(SMALL_CIN_CASES))
def test_conv2d_small_cin(s12, case):
    """Against float64 eager (check_conv's dot-product bound); a fused activation, one per case in
    turn (the kernel specialises IDENTITY to SILU and takes GELU_ERF through its runtime switch),
    must give the bits of the unfused conv followed by a UNARY op."""
    n, ci, h, w, co, k, st, p, d = SMALL_CIN_CASES[case]
    i = list(SMALL_CIN_CASES).index(case)
    x, wt = torch.randn(n, ci, h, w), torch.randn(co, ci, *k)
    bias = torch.randn(co) if i % 2 == 0 else None
    args = ((st, st), p, (d, d), 1)
    plain = run_conv(s12, x, wt, bias, *args)
    check_conv(plain, x, wt, bias, *args)
    act = SMALL_CIN_ACTS[i % len(SMALL_CIN_ACTS)]
    p0, p1 = (-0.3, 0.9) if act == "CLAMP" else (0.0, 0.0)
    fused = run_conv(s12, x, wt, bias, *args, act, p0, p1)
    out = s12.out(plain.numel())
    s12.record("UNARY", op=U[act], size=[1] * 5 + [plain.numel()], out_stride=[0] * 5 + [1],
               in_stride=[0] * 5 + [1], out=out.ptr, p0=p0, p1=p1, **{"in": s12.put_guarded(plain)})
    assert_bits_equal(fused, out.read(plain.shape))


def test_conv2d_small_cin_nan_input(s1):
    """A NaN pixel poisons exactly the outputs whose window covers it (padding taps are zeros, never
    read from memory: the NaN guard bands around the input must not leak in)."""
    x, wt, bias = torch.randn(1, 3, 13, 15), torch.randn(10, 3, 3, 3), torch.randn(10)
    x[0, 1, 6, 0] = NAN
    args = ((2, 2), (1, 1), (1, 1), 1)
    got = run_conv(s1, x, wt, bias, *args, "RELU")
    assert bool(got.isnan().any())
    check_conv(got, x, wt, bias, *args, "RELU")


@pytest.mark.parametrize("case", ["3x3", "1x1_pointwise", "depthwise_3x3", "depthwise_5x5_wide", "grouped"])
@pytest.mark.parametrize("act", ["RELU", "CLAMP", "SILU", "GELU_ERF", "HARDSWISH"])
def test_conv2d_fused_activation_matches_unary(s1, case, act):
    """elementwise.h: a fused epilogue activation gives the same bits as a separate UNARY op."""
    n, ci, h, w, co, g, k, st, p, d = CONV_CASES[case]
    x, wt, bias = torch.randn(n, ci, h, w), torch.randn(co, ci // g, *k), torch.randn(co)
    p0, p1 = (-0.3, 0.9) if act == "CLAMP" else (0.0, 0.0)
    fused = run_conv(s1, x, wt, bias, st, p, d, g, act, p0, p1)
    plain = run_conv(s1, x, wt, bias, st, p, d, g)
    out = s1.out(plain.numel())
    size = [1] * 5 + [plain.numel()]
    s1.record("UNARY", op=U[act], size=size, out_stride=[0] * 5 + [1], in_stride=[0] * 5 + [1],
              out=out.ptr, p0=p0, p1=p1, **{"in": s1.put_guarded(plain)})
    assert_bits_equal(fused, out.read(plain.shape))


# ---- POOL2D --------------------------------------------------------------------------------------
def run_pool(s: Session, mode, x, oh, ow, k, st, p, d=(1, 1), cip=0, divisor=0):
    planes, h, w = x.shape
    out = s.out(planes * oh * ow)
    s.record("POOL2D", mode=ABI.pool[mode], planes=planes, h=h, w=w, oh=oh, ow=ow, kh=k[0], kw=k[1],
             sh=st[0], sw=st[1], ph=p[0], pw=p[1], dh=d[0], dw=d[1], count_include_pad=cip,
             divisor=divisor, out=out.ptr, indices=0, **{"in": s.put_guarded(x)})
    return out.read((planes, oh, ow))


POOL_CASES = {
    # name: (planes, h, w, k, stride, pad, dilation, ceil_mode)
    "2x2_s2": (2, 8, 8, (2, 2), (2, 2), (0, 0), (1, 1), False),
    "3x3_s2_p1": (3, 9, 11, (3, 3), (2, 2), (1, 1), (1, 1), False),
    "3x3_s2_p1_ceil": (3, 9, 11, (3, 3), (2, 2), (1, 1), (1, 1), True),
    "3x3_s1_wide": (2, 7, 30, (3, 3), (1, 1), (1, 1), (1, 1), False),
    "window_is_image": (1, 5, 5, (5, 5), (1, 1), (2, 2), (1, 1), False),
    "dilated": (4, 13, 17, (3, 3), (2, 2), (1, 1), (2, 2), False),
    "1x1": (1, 1, 1, (1, 1), (1, 1), (0, 0), (1, 1), False),
    "resnet_stem": (64, 56, 56, (3, 3), (2, 2), (1, 1), (1, 1), False),
    "rect_ceil": (2, 10, 21, (2, 4), (1, 3), (1, 2), (1, 1), True),
}


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_max_pool2d(s1, case):
    """Max is exact; a NaN in a window wins (as torch); padding never wins."""
    planes, h, w, k, st, p, d, ceil = POOL_CASES[case]
    x = torch.randn(planes, h, w) - 3.0  # all negative-ish, so a padding 0 winning would show
    if x.numel() > 20:
        x.view(-1)[13] = NAN
    ref = F.max_pool2d(x, k, st, p, d, ceil_mode=ceil)
    assert_exact(run_pool(s1, "MAX", x, ref.shape[1], ref.shape[2], k, st, p, d), ref)


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_max_pool2d_with_indices(s1, case):
    """Values and int64 indices equal torch's, NaN and ties included (first maximum wins)."""
    planes, h, w, k, st, p, d, ceil = POOL_CASES[case]
    x = (torch.randn(planes, h, w) * 2).round() - 3.0  # many ties
    if x.numel() > 20:
        x.view(-1)[13] = NAN
        x.view(-1)[14] = NAN
    ref, ref_idx = F.max_pool2d(x, k, st, p, d, ceil_mode=ceil, return_indices=True)
    oh, ow = ref.shape[1:]
    out = s1.out(planes * oh * ow)
    idx = s1.put(torch.full((planes, oh, ow), -5, dtype=torch.int64))
    s1.record("POOL2D", mode=ABI.pool["MAX"], planes=planes, h=h, w=w, oh=oh, ow=ow, kh=k[0], kw=k[1],
              sh=st[0], sw=st[1], ph=p[0], pw=p[1], dh=d[0], dw=d[1], count_include_pad=0, divisor=0,
              out=out.ptr, indices=idx, **{"in": s1.put_guarded(x)})
    assert_exact(out.read((planes, oh, ow)), ref)
    assert torch.equal(s1.get(idx, (planes, oh, ow), torch.int64), ref_idx)


MAX_SPECIAL_CASES = {**POOL_CASES, "all_padding_windows": (2, 2, 10, (2, 2), (1, 1), (1, 1), (3, 3), False)}


def _nan(payload: int) -> torch.Tensor:
    return torch.tensor([0x7FC00000 | payload], dtype=torch.int32).view(torch.float32)


@pytest.mark.parametrize("case", list(MAX_SPECIAL_CASES))
def test_max_pool2d_specials_bitwise(s1, case):
    """Bit-for-bit equal to torch where bits are all that differ: inputs of -1, -0 and +0 (the
    maximum is mostly a zero, and torch keeps the first of equal values, so -0 or +0 by position),
    NaNs with distinct payloads (torch keeps the last NaN of a window) in a SIMD chunk, at the row
    borders and two in one window, +inf next to -inf (a sum of taps would be NaN: must not become
    NaN), and windows of padding only (-inf)."""
    planes, h, w, k, st, p, d, ceil = MAX_SPECIAL_CASES[case]
    x = torch.tensor([-1.0, -0.0, 0.0])[torch.randint(0, 3, (planes, h, w))]
    if h * w >= 16:
        x[0, h // 2, w // 2] = _nan(1)  # inside a vector chunk
        x[0, h // 2, w // 2 + 1] = _nan(2)  # a second NaN in the same windows: the last one wins
        x[-1, 0, 0] = _nan(3)  # top-left border
        x[-1, h - 1, w - 1] = _nan(4)  # bottom-right border
        x[0, h - 1, w // 2], x[0, h - 1, w // 2 + 1] = INF, -INF
    ref = F.max_pool2d(x, k, st, p, d, ceil_mode=ceil)
    assert_bits_equal(run_pool(s1, "MAX", x, ref.shape[1], ref.shape[2], k, st, p, d), ref)


def avg_bound(x, k, st, p, ceil, cip, div):
    """A window average is a sum of <= kh*kw terms then one division: within
    (kh*kw + 1) * EPS * (the same average of |x|)."""
    mag = F.avg_pool2d(x.double().abs(), k, st, p, ceil_mode=ceil, count_include_pad=bool(cip),
                       divisor_override=div or None)
    return (k[0] * k[1] + 1) * EPS * mag


@pytest.mark.parametrize("case", [c for c, v in POOL_CASES.items() if v[6] == (1, 1)])
def test_avg_pool2d(s1, case):
    planes, h, w, k, st, p, _, ceil = POOL_CASES[case]
    x = torch.randn(planes, h, w)
    for cip in (0, 1):
        for div in (0, 3):
            ref = F.avg_pool2d(x.double(), k, st, p, ceil_mode=ceil, count_include_pad=bool(cip),
                               divisor_override=div or None)
            got = run_pool(s1, "AVG", x, ref.shape[1], ref.shape[2], k, st, p, cip=cip, divisor=div)
            assert_within(got, ref, avg_bound(x, k, st, p, ceil, cip, div))


@pytest.mark.parametrize("planes,h,w,oh,ow", [(2, 7, 7, 1, 1), (3, 10, 13, 3, 4), (1, 5, 5, 7, 7),
                                              (2, 9, 9, 9, 9), (64, 14, 14, 5, 3), (1, 17, 6, 4, 6)])
def test_adaptive_avg_pool2d(s1, planes, h, w, oh, ow):
    x = torch.randn(planes, h, w)
    ref = F.adaptive_avg_pool2d(x.double(), (oh, ow))
    kmax = (math.ceil(h / oh) + 1) * (math.ceil(w / ow) + 1)  # largest window
    bound = (kmax + 1) * EPS * F.adaptive_avg_pool2d(x.double().abs(), (oh, ow))
    assert_within(run_pool(s1, "ADAPTIVE_AVG", x, oh, ow, (1, 1), (1, 1), (0, 0)), ref, bound)


# ---- SOFTMAX -------------------------------------------------------------------------------------
def run_softmax(s: Session, x, mode):
    outer, dim, inner = x.shape
    out = s.out(x.numel())
    s.record("SOFTMAX", outer=outer, dim=dim, inner=inner, mode=mode, out=out.ptr,
             **{"in": s.put_guarded(x)})
    return out.read(x.shape)


def softmax_ref(x, mode):
    x64 = x.double()
    if x.numel() == 0:
        return x64
    if mode == 1:
        return F.log_softmax(x64, 1)
    ref = F.softmax(x64, 1)
    if mode == 2:  # torch's _safe_softmax: a slice whose max is -inf gives zeros
        ref = torch.where(x64.amax(1, keepdim=True) == -INF, torch.zeros_like(ref), ref)
    return ref


def softmax_bound(x, mode):
    """exp is within 1.5 ulp, x - max rounds (relative error |x - max| * EPS after exp), the sum
    of `dim` terms is blocked (within min(dim, 1024) * EPS relative, blocks combined in double),
    then one multiply by the rounded reciprocal: relative bound
    (6 + |x - max| + min(dim, 1024)) * EPS. log_softmax = (x - max) - log(sum): absolute bound
    (|x - max| + |log sum| + |out|) * EPS + relative sum error + 1 ulp."""
    x64 = x.double()
    dim = x.shape[1]
    if x.numel() == 0:
        return 0.0
    d = (x64 - x64.amax(1, keepdim=True)).abs().nan_to_num(0.0, 0.0, 0.0)
    sum_rel = min(dim, 1024) * EPS
    ref = softmax_ref(x, mode)
    if mode == 1:
        lse = (d.neg().exp().sum(1, keepdim=True)).log().abs()
        return (d + lse + ref.abs().nan_to_num(0.0, 0.0, 0.0)) * EPS * 2 + sum_rel + 1e-30
    return ref.abs().nan_to_num(0.0, 0.0, 0.0) * (6 + d + min(dim, 1024)) * EPS + 1e-45


SOFTMAX_SHAPES = [(1, 1, 1), (3, 5, 1), (4, 33, 1), (2, 4, 9), (1, 3000, 1), (2, 7, 3), (2, 100, 65),
                  (5, 4, 130), (1, 0, 3), (0, 3, 4), (2, 1031, 1)]


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_softmax(s1, mode, shape):
    x = torch.randn(shape) * 5
    if x.numel() > 5:
        x[0, 0, 0] = 1e4  # one huge logit: needs the max subtraction
    assert_within(run_softmax(s1, x, mode), softmax_ref(x, mode), softmax_bound(x, mode))


@pytest.mark.parametrize("inner", [1, 5])
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_softmax_special_values(s1, mode, inner):
    """Fully masked slices (all -inf): NaN for modes 0/1 like torch, zeros for mode 2; partly
    masked: exact 0 (mode 0/2) or -inf (log); NaN anywhere in a slice: that slice is NaN."""
    rows = torch.tensor([[-INF, -INF, -INF, -INF, -INF],
                         [-INF, 0.0, -INF, 1.0, 2.0],
                         [NAN, 1.0, 2.0, 3.0, 4.0],
                         [1.0, 2.0, 3.0, 4.0, 5.0],
                         [-INF, -INF, 7.0, -INF, -INF]])
    x = rows[:, :, None].expand(5, 5, inner).contiguous()
    if inner > 1:
        x[:, :, 1] = rows.flip(1)
        x[3, :, 2] = -INF
    assert_within(run_softmax(s1, x, mode), softmax_ref(x, mode), softmax_bound(x, mode))


# ---- LAYERNORM -----------------------------------------------------------------------------------
def run_layernorm(s: Session, x, weight, bias, eps, stats):
    rows, cols = x.shape
    out = s.out(x.numel())
    mean = s.out(rows) if stats else None
    rstd = s.out(rows) if stats else None
    s.record("LAYERNORM", rows=rows, cols=cols, eps=eps, out=out.ptr,
             weight=s.put_guarded(weight) if weight is not None else 0,
             bias=s.put_guarded(bias) if bias is not None else 0,
             mean=mean.ptr if stats else 0, rstd=rstd.ptr if stats else 0, **{"in": s.put_guarded(x)})
    return out.read(x.shape), (mean.read((rows,)) if stats else None), (rstd.read((rows,)) if stats else None)


LN_SHAPES = [(1, 1), (3, 5), (4, 8), (7, 33), (2, 1000), (65, 768), (3, 1031)]
LN_AFFINE = {"weight_bias": (True, True), "none": (False, False), "weight_only": (True, False),
             "bias_only": (False, True)}


@pytest.mark.parametrize("shape", LN_SHAPES, ids=str)
@pytest.mark.parametrize("affine", list(LN_AFFINE))
def test_layernorm(s1, affine, shape):
    """vs torch.native_layer_norm in float64. Rows have mean 10, std 3 (the mean must really be
    subtracted). Bounds: mean within 1e-5 * mean|x|; rstd within 1e-5 relative (two blocked
    reductions); out within 1e-5 * (|x - mean| * rstd * |w| + |b|) + 1 ulp, plus the rounding of
    the float32 mean (<= 1/2 ulp + its sum error, taken as 4 * EPS * |mean|) which shifts every
    x - mean of the row by the same amount: + 4 * EPS * |mean| * rstd * |w|."""
    rows, cols = shape
    use_w, use_b = LN_AFFINE[affine]
    x = torch.randn(rows, cols) * 3 + 10
    w = torch.randn(cols) if use_w else None
    b = torch.randn(cols) if use_b else None
    eps = 1e-5
    stats = affine in ("weight_bias", "none")
    got, mean, rstd = run_layernorm(s1, x, w, b, eps, stats)
    ref, ref_mean, ref_rstd = torch.native_layer_norm(
        x.double(), (cols,), w.double() if use_w else None, b.double() if use_b else None, eps)
    xhat = ((x.double() - ref_mean) * ref_rstd).abs()
    wabs = w.double().abs() if use_w else 1.0
    scale = xhat * wabs + (b.double().abs() if use_b else 0.0)
    shift = 4 * EPS * ref_mean.abs() * ref_rstd * wabs
    assert_within(got, ref, 1e-5 * scale + shift + ulp32(ref))
    if stats:
        assert_within(mean, ref_mean.view(rows), 1e-5 * x.double().abs().mean(1))
        assert_within(rstd, ref_rstd.view(rows), 1e-5 * ref_rstd.view(rows))


def test_layernorm_constant_rows(s1):
    """Zero variance: out = bias exactly (x - mean = 0), rstd = 1/sqrt(eps)."""
    x = torch.full((3, 37), 2.5)
    b = torch.randn(37)
    got, mean, rstd = run_layernorm(s1, x, torch.randn(37), b, 1e-5, True)
    assert_exact(got, b.expand(3, 37))
    assert_exact(mean, torch.full((3,), 2.5))
    assert_within(rstd, torch.full((3,), 1 / math.sqrt(1e-5), dtype=torch.float64), 1e-5 / math.sqrt(1e-5))


def test_layernorm_empty(s1):
    run_layernorm(s1, torch.zeros(0, 8), None, None, 1e-5, True)  # rows = 0: nothing to write
    got, _, _ = run_layernorm(s1, torch.zeros(3, 0), None, None, 1e-5, False)  # cols = 0
    assert got.shape == (3, 0)


# ---- CHANNEL_AFFINE ------------------------------------------------------------------------------
AFFINE_SHAPES = [(1, 1, 1), (2, 3, 1), (3, 17, 1), (2, 5, 7), (4, 3, 33), (1, 64, 3136), (0, 3, 4), (2, 9, 5)]


def run_channel_affine(s: Session, x, scale, shift, act="IDENTITY", p0=0.0, p1=0.0):
    outer, channels, inner = x.shape
    out = s.out(x.numel())
    s.record("CHANNEL_AFFINE", outer=outer, channels=channels, inner=inner, out=out.ptr,
             scale=s.put_guarded(scale), shift=s.put_guarded(shift), act=U[act], p0=p0, p1=p1,
             **{"in": s.put_guarded(x)})
    return out.read(x.shape)


@pytest.mark.parametrize("shape", AFFINE_SHAPES, ids=str)
@pytest.mark.parametrize("act", ["IDENTITY", "RELU", "CLAMP"])
def test_channel_affine(s1, act, shape):
    """x * scale + shift is a mul then an add in float32 (no FMA), as torch computes it: exact,
    and so are relu / clamp after it."""
    x = torch.randn(shape)
    if x.numel() > 10:
        x.view(-1)[[3, -1]] = torch.tensor([NAN, INF])
    sc, sh = torch.randn(shape[1]), torch.randn(shape[1])
    y = x * sc[None, :, None] + sh[None, :, None]
    ref = {"IDENTITY": y, "RELU": torch.relu(y), "CLAMP": torch.clamp(y, -0.5, 0.5)}[act]
    assert_exact(run_channel_affine(s1, x, sc, sh, act, -0.5, 0.5), ref)


@pytest.mark.parametrize("act", ["SILU", "GELU_TANH"])
def test_channel_affine_fused_activation_matches_unary(s1, act):
    x = torch.randn(2, 7, 19)
    sc, sh = torch.randn(7), torch.randn(7)
    fused = run_channel_affine(s1, x, sc, sh, act)
    plain = run_channel_affine(s1, x, sc, sh)
    out = s1.out(plain.numel())
    s1.record("UNARY", op=U[act], size=[1] * 5 + [plain.numel()], out_stride=[0] * 5 + [1],
              in_stride=[0] * 5 + [1], out=out.ptr, p0=0.0, p1=0.0, **{"in": s1.put_guarded(plain)})
    assert_bits_equal(fused, out.read(plain.shape))


# ---- REDUCE --------------------------------------------------------------------------------------
def run_reduce(s: Session, op, x):
    outer, red, inner = x.shape
    out = s.out(outer * inner)
    s.record("REDUCE", op=ABI.reduce[op], outer=outer, red=red, inner=inner, out=out.ptr,
             **{"in": s.put_guarded(x)})
    return out.read((outer, inner))


REDUCE_SHAPES = [(1, 1, 1), (3, 5, 1), (2, 7, 3), (4, 33, 1), (2, 100, 65), (1, 100000, 1), (3, 1000, 70),
                 (5, 4, 130), (2, 257, 3), (2, 0, 3), (1, 0, 1)]
TORCH_REDUCE = {"SUM": torch.sum, "MEAN": torch.mean, "AMAX": torch.amax, "AMIN": torch.amin}
assert set(TORCH_REDUCE) == set(ABI.reduce)


@pytest.mark.parametrize("op,shape", [(op, sh) for op in ABI.reduce for sh in REDUCE_SHAPES
                                      if sh[1] or op not in ("AMAX", "AMIN")],  # see test_reduce_empty_max
                         ids=str)
def test_reduce(s1, op, shape):
    """AMAX / AMIN exact (NaN propagates, as torch). SUM / MEAN vs float64: a float32 sum of red
    terms in any order is within red * EPS * sum|x| (worst case); the kernel blocks its sums
    (float partials of <= 1024 or 256 terms combined in double or float), so the bound used is
    min(red + 1, 1e-5 / EPS) * EPS * sum|x|: exact worst case for short sums, ~1e-5 relative to
    sum|x| for long ones."""
    outer, red, inner = shape
    x = torch.randn(shape) + 1
    ref = TORCH_REDUCE[op](x.double(), 1)
    got = run_reduce(s1, op, x)
    if op in ("AMAX", "AMIN"):
        assert_exact(got, ref)
    else:
        mag = x.double().abs().sum(1) / (red if op == "MEAN" and red else 1)
        assert_within(got, ref, min(red + 1, 1e-5 / EPS) * EPS * mag + 1e-45)


@pytest.mark.parametrize("shape", [(3, 9, 1), (2, 40, 1), (2, 9, 6), (1, 300, 70)], ids=str)
@pytest.mark.parametrize("op", list(ABI.reduce))
def test_reduce_nan_propagation(s1, op, shape):
    """A NaN anywhere in a slice (first, last, SIMD body, tail) makes that output NaN, others not."""
    outer, red, inner = shape
    x = torch.randn(shape)
    x[0, 0, 0] = NAN
    x[-1, red - 1, inner - 1] = NAN
    if outer > 1 and inner > 1:
        x[1, red // 2, inner // 2] = NAN
    if outer > 2:
        x[1, red // 2, 0] = NAN
        x[2, 1, 0] = INF
    ref = TORCH_REDUCE[op](x.double(), 1)
    got = run_reduce(s1, op, x)
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    assert torch.equal(torch.isinf(got), torch.isinf(ref))


def test_reduce_empty_max(s1):
    """red = 0 (torch raises, having no identity for max): no crash, nothing written out of bounds;
    the value is not specified by the ABI."""
    for op in ("AMAX", "AMIN"):
        run_reduce(s1, op, torch.zeros(1, 0, 3))
