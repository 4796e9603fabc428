"""GEMM and PACK_B kernels against float64 torch.

Every (m, n, k) in the tile-boundary set below is run (the micro-kernel is 2 rows x 2 panels of 8,
k is sliced by 256, n blocked by 32 panels), with row strides larger than k / n, batch > 1 with
batch strides that leave gaps (and 0 = broadcast), every bias_mode and the RELU / CLAMP epilogues.
A's padding columns and batch gaps hold NaN (a read past k poisons the result); C's padding columns
and gaps hold a sentinel that must survive, and C starts NaN-filled so every element must be written.

Tolerance: a float32 dot product of length k, summed in any order (blocked, SIMD lanes, k slices),
is within gamma_k ~ k * 2^-24 of the exact one relative to sum |a_i b_i|; one more rounding for the
bias. So |C - C_exact| <= (k + 2) * 2^-24 * (|A| @ |B| + |bias|), a worst-case bound, used as is
up to k ~ 166 where it reaches 1e-5; longer dot products are held to 1e-5 relative to
|A| @ |B| + |bias| (errors of blocked sums grow ~ sqrt(k), far below the worst case).
RELU and CLAMP are 1-Lipschitz, so the bound carries through the epilogue.
PACK_B is a copy: exact."""
from __future__ import annotations

import itertools
import random

import pytest
import torch

from kernel_testing import NAN, SENTINEL, Session, assert_exact, assert_within, dot_rel
from torch_wasm_backend.lowering.abi import ABI
from torch_wasm_backend.lowering.ops.matmul import pack_b, packed_numel
from torch_wasm_backend.runtime import get_runtime

SIZES = [0, 1, 3, 4, 5, 7, 8, 9, 16, 17, 33, 64, 100]
ACTS = {"IDENTITY": (0.0, 0.0), "RELU": (0.0, 0.0), "CLAMP": (-0.5, 0.7)}


def _store(blocks: torch.Tensor, row_len: int, gap: int, fill) -> tuple[torch.Tensor, int]:
    """[batch, rows, cols] -> flat storage with rows padded to row_len and `gap` floats between
    batches, padding = fill. Returns (storage, batch stride)."""
    batch, rows, cols = blocks.shape
    stride = rows * row_len + gap
    st = torch.full((batch, stride), fill)
    st[:, :rows * row_len].view(batch, rows, row_len)[..., :cols] = blocks
    return st.reshape(-1), stride


def run_gemm(s: Session, a, b, bias=None, bias_mode=0, act="IDENTITY", lda_pad=0, ldc_pad=0,
             a_gap=0, b_gap=0, c_gap=0, a_bcast=False, b_bcast=False, b_packed_ptr=None):
    """a [batch or 1, m, k], b [batch or 1, k, n] (1 with *_bcast: batch stride 0).
    Returns C [batch, m, n] after checking C's padding and gaps were left alone."""
    batch = max(a.shape[0], b.shape[0])
    m, k = a.shape[1:]
    n = b.shape[2]
    lda, ldc = k + lda_pad, n + ldc_pad
    a_store, a_bs = _store(a, lda, a_gap, NAN)
    if b_packed_ptr is None:
        pk = packed_numel(k, n)
        b_store = torch.full((b.shape[0], pk + b_gap), NAN)
        b_store[:, :pk] = pack_b(b).reshape(b.shape[0], pk)
        b_ptr, b_bs = s.put_guarded(b_store), pk + b_gap
    else:
        b_ptr, b_bs = b_packed_ptr
    c_init, c_bs = _store(torch.full((batch, m, n), NAN), ldc, c_gap, SENTINEL)
    out = s.out(c_init.numel(), init=c_init)
    p0, p1 = ACTS[act]
    s.record("GEMM", batch=batch, m=m, n=n, k=k, a=s.put_guarded(a_store), lda=lda,
             a_batch_stride=0 if a_bcast else a_bs, b_packed=b_ptr, b_batch_stride=0 if b_bcast else b_bs,
             c=out.ptr, ldc=ldc, c_batch_stride=c_bs, bias=s.put_guarded(bias) if bias_mode else 0,
             bias_mode=bias_mode, act=ABI.unary[act], p0=p0, p1=p1)
    c_all = out.flat().view(batch, c_bs)
    padding = c_all.clone()
    padding[:, :m * ldc].view(batch, m, ldc)[..., :n] = SENTINEL
    assert bool((padding == SENTINEL).all()), "GEMM wrote into C's row padding or batch gap"
    return c_all[:, :m * ldc].view(batch, m, ldc)[..., :n]


def reference(a, b, bias, bias_mode, act):
    """(exact result, magnitude |A||B| + |bias|) in float64."""
    a64, b64 = a.double(), b.double()
    c = a64 @ b64
    mag = a64.abs() @ b64.abs()
    if bias_mode:
        bb = bias.double()[None, None, :] if bias_mode == 1 else bias.double()[None, :, None]
        c, mag = c + bb, mag + bb.abs()
    p0, p1 = ACTS[act]
    if act == "RELU":
        c = c.clamp_min(0)
    elif act == "CLAMP":
        c = c.clamp(p0, p1)
    return c, mag


def check_gemm(got, a, b, bias, bias_mode, act):
    ref, mag = reference(a, b, bias, bias_mode, act)
    k = a.shape[2]
    assert_within(got, ref.expand(got.shape), dot_rel(k) * mag.expand(got.shape))


def gemm_case(s, m, n, k, rnd: random.Random):
    batch = rnd.choice([1, 1, 2, 3])
    a_bcast = batch > 1 and rnd.random() < 0.25
    b_bcast = batch > 1 and not a_bcast and rnd.random() < 0.33
    a = torch.randn(1 if a_bcast else batch, m, k)
    b = torch.randn(1 if b_bcast else batch, k, n)
    bias_mode = rnd.choice([0, 1, 2])
    bias = torch.randn(n if bias_mode == 1 else m) if bias_mode else None
    act = rnd.choice(list(ACTS))
    kw = dict(lda_pad=rnd.choice([0, 0, 3]), ldc_pad=rnd.choice([0, 0, 5]),
              a_gap=rnd.choice([0, 7]), b_gap=rnd.choice([0, 8]), c_gap=rnd.choice([0, 2]))
    got = run_gemm(s, a, b, bias, bias_mode, act, a_bcast=a_bcast, b_bcast=b_bcast, **kw)
    check_gemm(got, a, b, bias, bias_mode, act)


@pytest.fixture(params=["shuffle", "load_splat"])
def broadcast(request):
    """Both ways the micro-kernel broadcasts A (wasmtime's default and the JS loader's choice), on
    the runtime the sessions share (tests/kernels/conftest.py)."""
    runtime, _ = get_runtime(2)
    runtime.set_gemm_load_splat(request.param == "load_splat")
    yield request.param
    runtime.set_gemm_load_splat(False)


@pytest.mark.parametrize("m", SIZES)
def test_gemm_tile_boundaries(s1, broadcast, m):
    """All n, k in SIZES for this m; layout/bias/act options drawn per case from a seeded RNG."""
    rnd = random.Random(m)
    failures = []
    for n, k in itertools.product(SIZES, SIZES):
        try:
            with s1.scope() as s:
                gemm_case(s, m, n, k, rnd)
        except AssertionError as e:
            failures.append(f"m={m} n={n} k={k}: {str(e).splitlines()[0]}")
    assert not failures, f"{len(failures)} failing shapes:\n" + "\n".join(failures[:20])


@pytest.mark.parametrize("bias_mode", [0, 1, 2])
@pytest.mark.parametrize("act", list(ACTS))
def test_gemm_epilogues(s1, broadcast, act, bias_mode):
    """Each bias mode x activation on one shape with every kind of edge (m, n tails, two k slices)."""
    a, b = torch.randn(2, 19, 300), torch.randn(2, 300, 21)
    bias = torch.randn(21 if bias_mode == 1 else 19) * 3 if bias_mode else None
    got = run_gemm(s1, a, b, bias, bias_mode, act, lda_pad=1, ldc_pad=3, a_gap=5, b_gap=8, c_gap=4)
    check_gemm(got, a, b, bias, bias_mode, act)


@pytest.mark.parametrize("m,n,k", [(37, 300, 700), (130, 45, 513), (5, 1000, 257), (64, 264, 256),
                                   (2, 7, 1025), (1, 1000, 300), (8, 520, 64), (14, 2001, 33),
                                   (16, 2001, 33), (1, 9, 20000)])
def test_gemm_large(s12, broadcast, m, n, k):
    """Several k slices (KC = 256) and L2 blocks of panels (n > 256), with 1 and 2 threads; on 2
    threads m < 16 (fewer row pairs than the 8 tasks wanted) splits n only, m >= 16 splits rows."""
    a, b, bias = torch.randn(1, m, k), torch.randn(1, k, n), torch.randn(n)
    got = run_gemm(s12, a, b, bias, 1, "RELU", ldc_pad=1)
    check_gemm(got, a, b, bias, 1, "RELU")


def test_gemm_batched_many(s12):
    a, b = torch.randn(16, 9, 40), torch.randn(16, 40, 33)
    got = run_gemm(s12, a, b, a_gap=3, c_gap=1)
    check_gemm(got, a, b, None, 0, "IDENTITY")


@pytest.mark.parametrize("act", ["IDENTITY", "CLAMP", "SILU"])
def test_gemm_broadcasts_bit_identical(s12, act):
    """The load32_splat micro-kernel (V8's, a function of its own) and the shuffle one (inlined)
    add the same products in the same k order, so their outputs are bit-identical, with the bias
    and an activation applied after the tile (SILU: a polynomial activation). Odd m, n tails, k not
    a multiple of 4, two k slices, two L2 panel blocks, 1 and 2 threads."""
    runtime = s12.runtime
    a, b, bias = torch.randn(2, 23, 301), torch.randn(2, 301, 263), torch.randn(263)
    p0, p1 = ACTS.get(act, (0.0, 0.0))
    got = {}
    for splat in (False, True):
        runtime.set_gemm_load_splat(splat)
        try:
            with s12.scope() as s:
                pk = packed_numel(301, 263)
                b_ptr = s.put(pack_b(b).reshape(-1))
                out = s.out(2 * 23 * 265)
                s.record("GEMM", batch=2, m=23, n=263, k=301, a=s.put(a.reshape(-1)), lda=301,
                         a_batch_stride=23 * 301, b_packed=b_ptr, b_batch_stride=pk, c=out.ptr,
                         ldc=265, c_batch_stride=23 * 265, bias=s.put(bias), bias_mode=1,
                         act=ABI.unary[act], p0=p0, p1=p1)
                got[splat] = out.flat().view(2, 23, 265)[..., :263].clone()
        finally:
            runtime.set_gemm_load_splat(False)
    assert torch.equal(got[False], got[True])
    ref = a.double() @ b.double() + bias.double()
    ref = torch.nn.functional.silu(ref) if act == "SILU" else ref.clamp(p0, p1) if act == "CLAMP" else ref
    assert_within(got[True], ref, 1e-5 * (a.double().abs() @ b.double().abs() + bias.double().abs() + 1))


def test_gemm_special_values(s1):
    """NaN / inf in A or B propagate to exactly the outputs they touch (no zero-padding tricks
    that multiply a padded 0 by inf)."""
    a, b = torch.randn(1, 5, 9), torch.randn(1, 9, 11)
    a[0, 1, 3] = NAN
    b[0, 4, 9] = float("inf")
    got = run_gemm(s1, a, b, ldc_pad=2)
    ref = a @ b  # float32 torch: only NaN/inf placement is compared here
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    assert torch.equal(torch.isinf(got), torch.isinf(ref))


# ---- PACK_B --------------------------------------------------------------------------------------
def run_pack_b(s: Session, bview: torch.Tensor, batch_stride0=False):
    """bview: [batch, k, n] strided view. Returns (packed [batch, packed_numel], out offset)."""
    batch, k, n = bview.shape
    ptr, (sb, sk, sn) = s.put_view(bview)
    pk = packed_numel(k, n)
    out = s.out(batch * pk)
    s.record("PACK_B", batch=batch, k=k, n=n, b=ptr, stride_k=sk, stride_n=sn,
             b_batch_stride=0 if batch_stride0 else sb, out=out.ptr)
    return out.read((batch, pk)), out


PACK_LAYOUTS = {
    "contiguous": lambda k, n, batch: torch.randn(batch, k, n),
    "transposed": lambda k, n, batch: torch.randn(batch, n, k).transpose(1, 2),
    "strided": lambda k, n, batch: torch.randn(batch + 1, 2 * k + 1, 3 * n)[1:, 1::2, ::3],
    "batch_transposed": lambda k, n, batch: torch.randn(k, batch, n).permute(1, 0, 2),
}


@pytest.mark.parametrize("layout", list(PACK_LAYOUTS))
def test_pack_b(s1, layout):
    for batch, k, n in [(1, 1, 1), (1, 3, 8), (2, 9, 7), (1, 17, 9), (3, 33, 17), (1, 64, 100), (2, 5, 33)]:
        b = PACK_LAYOUTS[layout](k, n, batch)
        got, _ = run_pack_b(s1, b)
        assert_exact(got, pack_b(b.contiguous()).reshape(batch, -1))  # padding past n must be 0


def test_pack_b_broadcast_batch(s1):
    b = torch.randn(1, 10, 13).expand(3, 10, 13)
    got, _ = run_pack_b(s1, b, batch_stride0=True)
    assert_exact(got, pack_b(b.contiguous()).reshape(3, -1))


@pytest.mark.parametrize("m,n,k", [(5, 19, 33), (17, 100, 64), (3, 9, 300)])
def test_pack_b_then_gemm(s12, m, n, k):
    """Device-packed transposed B (as linear weights are) feeding GEMM, batch 2."""
    a = torch.randn(2, m, k)
    bt = torch.randn(2, n, k)
    b = bt.transpose(1, 2)
    packed, out = run_pack_b(s12, b)
    assert_exact(packed, pack_b(b.contiguous()).reshape(2, -1))
    got = run_gemm(s12, a, b, b_packed_ptr=(out.ptr, packed_numel(k, n)), ldc_pad=1)
    check_gemm(got, a, b, None, 0, "IDENTITY")
