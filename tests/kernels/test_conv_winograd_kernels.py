"""CONV2D_WINOGRAD (3x3 stride-1 conv by Winograd F(2x2, 3x3)) against float64 torch, at awkward
shapes: images smaller than a tile, odd sizes (partial tiles at the right/bottom edges), channel
counts off multiples of 4/8, batches whose tile blocks straddle images, padding 0/1/2 and
asymmetric, blocks of one panel. Inputs sit between NaN guards, output and scratch start NaN.

Error bound (first order, EPS = 2^-24): the kernel computes y = A^T [sum_ci U (.) V] A + bias with
U = G g G^T rounded once from float64 (1 EPS), V = B^T d B (two levels of +-1 sums: 2 EPS), a
length-c_in dot per component (c_in EPS), the output transform (four levels of sums: 4 EPS) and
the bias add (1 EPS). Each level's error is at most EPS times the sum of the magnitudes it adds,
so |y - exact| <= (c_in + 8) EPS * Y_abs, where Y_abs is the same algorithm run on magnitudes:
|A^T| [sum_ci (|G| |g| |G^T|) (.) (|B^T| |d| |B|)] |A| + |bias|. On random data Y_abs is ~14x
the direct conv's |x| conv |w| (the transforms mix in the whole 4x4 patch), while the measured
errors stay at the direct conv's level (~2e-6 at c_in = 64). As for the other GEMM-based kernels
(kernel_testing.dot_rel), the c_in term is capped at 1e-5 / EPS: blocked sums grow ~ sqrt(k)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernel_testing import Session, assert_bits_equal, assert_within, dot_rel
from torch_wasm_backend.lowering.abi import ABI
from torch_wasm_backend.lowering.ops.conv import WINOGRAD_G, winograd_weight
from torch_wasm_backend.errors import WasmTrap

U = ABI.unary
B_T = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64)
A_T = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)


def out_hw(h, w, ph, pw):
    return h + 2 * ph - 2, w + 2 * pw - 2


def run_winograd(s: Session, x, w, bias, ph, pw, tile_block, act="IDENTITY", p0=0.0, p1=0.0):
    n, c, h, wd = x.shape
    co = w.shape[0]
    oh, ow = out_hw(h, wd, ph, pw)
    out = s.out(n * co * oh * ow)
    scratch = s.out(16 * (c + co) * tile_block)  # NaN: every element read must have been written
    s.record("CONV2D_WINOGRAD", n=n, c_in=c, h=h, w=wd, c_out=co, ph=ph, pw=pw, oh=oh, ow=ow,
             tile_block=tile_block, weight=s.put_guarded(winograd_weight(w)),
             bias=s.put_guarded(bias) if bias is not None else 0, out=out.ptr, scratch=scratch.ptr,
             act=U[act], p0=p0, p1=p1, **{"in": s.put_guarded(x)})
    return out.read((n, co, oh, ow))


def winograd_magnitude(x, w, bias, ph, pw):
    """Y_abs of the module docstring: F(2x2, 3x3) on magnitudes, in float64, cropped to the output."""
    n, c, h, wd = x.shape
    oh, ow = out_hw(h, wd, ph, pw)
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    # zero padding: ph/pw on top/left, enough on bottom/right for the last (partial) tile's patch
    d = F.pad(x.double().abs(), (pw, 2 * tw + 2 - wd - pw, ph, 2 * th + 2 - h - ph))
    d = d.unfold(2, 4, 2).unfold(3, 4, 2)  # [n, c, th, tw, 4, 4]
    v = B_T.abs() @ d @ B_T.abs().T
    u = WINOGRAD_G.abs() @ w.double().abs() @ WINOGRAD_G.abs().T  # [co, c, 4, 4]
    m = torch.einsum("ncyxij,ocij->noyxij", v, u)
    y = A_T.abs() @ m @ A_T.abs().T  # [n, co, th, tw, 2, 2]
    y = y.permute(0, 1, 2, 4, 3, 5).reshape(n, w.shape[0], 2 * th, 2 * tw)[:, :, :oh, :ow]
    return y + (bias.double().abs().reshape(1, -1, 1, 1) if bias is not None else 0.0)


def check_winograd(got, x, w, bias, ph, pw, act="IDENTITY", p0=0.0, p1=0.0):
    exact = F.conv2d(x.double(), w.double(), bias.double() if bias is not None else None, padding=(ph, pw))
    ref = {"IDENTITY": exact, "RELU": exact.clamp_min(0), "CLAMP": exact.clamp(p0, p1)}[act]
    bound = dot_rel(x.shape[1] + 6) * winograd_magnitude(x, w, bias, ph, pw)  # relu/clamp: 1-Lipschitz
    assert_within(got, ref, bound)


WINO_CASES = {
    # name: (n, c_in, h, w, c_out, ph, pw, tile_block)
    "1x1_image": (1, 1, 1, 1, 1, 1, 1, 8),
    "2x2_image": (1, 3, 2, 2, 5, 1, 1, 8),
    "3x3_no_pad": (1, 8, 3, 3, 4, 0, 0, 8),
    "odd_batch3_blocks_straddle_images": (3, 17, 5, 7, 33, 1, 1, 8),
    "13x13": (1, 16, 13, 13, 16, 1, 1, 16),
    "tall_thin_no_pad": (2, 33, 7, 3, 17, 0, 0, 8),
    "asymmetric_pad": (1, 9, 6, 11, 10, 0, 1, 16),
    "pad2_wide_rows": (1, 5, 30, 37, 7, 2, 2, 24),
    "resnet_64ch_28x28": (1, 64, 28, 28, 64, 1, 1, 64),
    "one_block_7x7_512": (1, 40, 7, 7, 24, 1, 1, 16),
    "groups_cross_rows_and_images": (3, 12, 9, 9, 10, 1, 1, 16),  # 5x5 tiles per image
}
ACTS = [("IDENTITY", 0.0, 0.0), ("RELU", 0.0, 0.0), ("CLAMP", -0.3, 0.9)]


@pytest.mark.parametrize("case", list(WINO_CASES))
def test_conv2d_winograd(s12, case):
    n, ci, h, w, co, ph, pw, block = WINO_CASES[case]
    i = list(WINO_CASES).index(case)
    x, wt = torch.randn(n, ci, h, w), torch.randn(co, ci, 3, 3)
    bias = torch.randn(co) if i % 2 == 0 else None
    act, p0, p1 = ACTS[i % 3]
    check_winograd(run_winograd(s12, x, wt, bias, ph, pw, block, act, p0, p1), x, wt, bias, ph, pw, act, p0, p1)


def test_conv2d_winograd_one_vs_two_threads_bit_identical(s1, s2):
    """Threads split the transforms by channel and the GEMMs by component: no sum changes order."""
    x, wt, bias = torch.randn(2, 24, 19, 21), torch.randn(20, 24, 3, 3), torch.randn(20)
    assert_bits_equal(run_winograd(s1, x, wt, bias, 1, 1, 40), run_winograd(s2, x, wt, bias, 1, 1, 40))


@pytest.mark.parametrize("act", ["RELU", "CLAMP", "SILU", "GELU_ERF"])
def test_conv2d_winograd_fused_activation_matches_unary(s1, act):
    """elementwise.h: the fused activation gives the same bits as a separate UNARY op."""
    x, wt, bias = torch.randn(1, 9, 9, 7), torch.randn(11, 9, 3, 3), torch.randn(11)
    p0, p1 = (-0.3, 0.9) if act == "CLAMP" else (0.0, 0.0)
    fused = run_winograd(s1, x, wt, bias, 1, 1, 16, act, p0, p1)
    plain = run_winograd(s1, x, wt, bias, 1, 1, 16)
    out = s1.out(plain.numel())
    size = [1] * 5 + [plain.numel()]
    s1.record("UNARY", op=U[act], size=size, out_stride=[0] * 5 + [1], in_stride=[0] * 5 + [1],
              out=out.ptr, p0=p0, p1=p1, **{"in": s1.put_guarded(plain)})
    assert_bits_equal(fused, out.read(plain.shape))



@pytest.mark.parametrize("tile_block", [0, 12])
def test_conv2d_winograd_bad_tile_block_traps(s1, tile_block):
    """tile_block must be a positive multiple of NR (0 would loop forever)."""
    with pytest.raises(WasmTrap):
        run_winograd(s1, torch.randn(1, 8, 6, 6), torch.randn(8, 8, 3, 3), None, 1, 1, tile_block)
