"""Kernels against the machine, measured in one run: the module's SIMD128 peak loops; GEMM on square
shapes and on linear-layer shapes (M = 1, 8, 64 rows against a pre-packed weight, with a bias), as a
fraction of that peak; the memory bandwidth wasm reaches streaming a buffer of each weight's size
(the roofline of the memory-bound small-M shapes); ResNet-18's conv layers. Each at 1 and 2 threads,
so the 2-thread speedups come from the same run.

    make bench      # writes .benchmarks/all.json and BENCHMARKS.md via benchmarks/report.py
"""
import math

import pytest
import torch
import torch.nn.functional as F

from torch_wasm_backend.lowering.abi import ABI
from torch_wasm_backend.lowering.ops.conv import winograd_tile_block, winograd_weight
from torch_wasm_backend.lowering.ops.matmul import pack_b
from torch_wasm_backend.kernel_call import KernelSession
from torch_wasm_backend.runtime import INITIAL_PAGES, _engine_module
from torch_wasm_backend.wasm_layer import KERNEL_EXPORTS, MAX_PAGES, Instance, Memory

THREADS = [1, 2]
PEAK_ITERS = 200_000
SQUARE = [64, 256, 512, 1024]  # 64^3 = 5e5 flops: just above the threading threshold (2e5)
LINEAR_M = [1, 8, 64]
LINEAR_KN = [(256, 1024), (1024, 1024), (1024, 4096), (4096, 4096)]
DRAM_FLOATS = 128 * 1024 * 1024  # 512 MiB, twice the L3 this machine reports
# ResNet-18 (batch 1) convs: (name, c_in, hw, c_out, kernel, stride, padding).
CONVS = [("3x3 56x56x64", 64, 56, 64, 3, 1, 1), ("3x3 28x28x128", 128, 28, 128, 3, 1, 1),
         ("3x3 14x14x256", 256, 14, 256, 3, 1, 1), ("3x3 7x7x512", 512, 7, 512, 3, 1, 1),
         ("1x1/2 28x28x128->256", 128, 28, 256, 1, 2, 0)]


@pytest.mark.parametrize("simd", ["baseline", "relaxed"])
@pytest.mark.parametrize("loop", ["peak_flops", "peak_flops_chains"])
def test_peak_simd128(benchmark, loop, simd):
    """The yardsticks in kernels_cpp/peak.cpp, on one instance of each kernel build: peak_flops (the
    GEMM micro-kernel's shape, 2 loads per step) and peak_flops_chains (12 mul+add chains, no
    loads: the highest rate a wasm loop reaches)."""
    engine, module = _engine_module(simd=simd)
    memory = Memory(engine, INITIAL_PAGES, MAX_PAGES)
    instance = Instance(engine, module, memory, (*KERNEL_EXPORTS, loop))  # (kept alive: fn holds raw pointers)
    run = instance.fn[loop]
    flops = run(1)[0].f64  # warm up; returns flops per call for 1 iter
    benchmark.group = "gemm vs peak"
    benchmark.extra_info.update(kind="peak", loop=loop, simd=simd, flops=run(PEAK_ITERS)[0].f64)
    benchmark(run, PEAK_ITERS)
    assert flops > 0


def _bench_gemm(benchmark, threads, m, n, k, bias_mode, group, **info):
    a, b = torch.randn(m, k), torch.randn(k, n)
    bias = torch.randn(n)
    repeat = max(1, int(2e7 / (2.0 * m * n * k)))  # >= ~1 ms per run: the ~3 us call is noise
    with KernelSession(threads=threads) as ks:
        pa, pb, pc, pbias = ks.put(a), ks.put(pack_b(b)), ks.empty((m, n)), ks.put(bias)
        ks.prepare("GEMM", repeat=repeat, batch=1, m=m, n=n, k=k, a=pa, lda=k, a_batch_stride=0, b_packed=pb,
                   b_batch_stride=0, c=pc, ldc=n, c_batch_stride=0, bias=pbias if bias_mode else 0,
                   bias_mode=bias_mode, act=ABI.unary["IDENTITY"], p0=0.0, p1=0.0)
        ks.run()
        want = a.double() @ b.double() + (bias.double() if bias_mode else 0)
        torch.testing.assert_close(ks.get(pc, (m, n)).double(), want, rtol=1e-4, atol=1e-3 * math.sqrt(k / 512))
        benchmark.group = group
        benchmark.extra_info.update(flops=2.0 * m * n * k * repeat, threads=threads, m=m, n=n, k=k, **info)
        benchmark(ks.run)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("size", SQUARE)
def test_gemm_square(benchmark, size, threads):
    _bench_gemm(benchmark, threads, size, size, size, 0, "gemm vs peak", kind="gemm")


@pytest.mark.parametrize("threads", THREADS)
def test_eager_gemm_512(benchmark, threads):
    """Native eager torch.mm at 512^3 next to the wasm peak: the ceiling of wasm/eager on GEMM-bound
    models is (eager GEMM rate) / (wasm peak), whatever the kernels do."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        benchmark.group = "gemm vs peak"
        benchmark.extra_info.update(kind="eager_gemm", flops=2.0 * 512 ** 3, threads=threads)
        benchmark(torch.mm, a, b)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("kn", LINEAR_KN, ids=lambda kn: f"k{kn[0]}n{kn[1]}")
@pytest.mark.parametrize("m", LINEAR_M)
def test_gemm_linear(benchmark, m, kn, threads):
    """x[m, k] @ W[k, n] + bias, W packed once (a linear layer's weight)."""
    k, n = kn
    _bench_gemm(benchmark, threads, m, n, k, 1, "linear vs peak / roofline", kind="linear")


def _bench_stream(benchmark, threads, floats, **info):
    """Bytes per second reading a buffer of `floats` floats (the module's read_bandwidth loop, split
    over the threads), re-read as the GEMV benchmark re-reads its weight: the bandwidth a kernel
    streaming an operand of that size can get."""
    passes = max(1, 2**22 // floats)  # >= 16 MiB per run
    with KernelSession(threads=threads) as ks:
        buf = ks.alloc(4 * floats)
        ks.runtime.memory.view(buf, (floats,)).fill_(1.0)  # touch every page before timing
        nbytes = ks.runtime.read_bandwidth(buf, 4 * floats, passes, threads)
        assert nbytes == 4.0 * floats * passes
        benchmark.group = "memory bandwidth"
        benchmark.extra_info.update(kind="stream", bytes=nbytes, threads=threads, **info)
        benchmark(ks.runtime.read_bandwidth, buf, 4 * floats, passes, threads)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("kn", LINEAR_KN, ids=lambda kn: f"k{kn[0]}n{kn[1]}")
def test_stream_weight(benchmark, kn, threads):
    _bench_stream(benchmark, threads, kn[0] * kn[1], k=kn[0], n=kn[1])


@pytest.mark.parametrize("threads", THREADS)
def test_stream_dram(benchmark, threads):
    _bench_stream(benchmark, threads, DRAM_FLOATS, dram=True)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("conv", CONVS, ids=lambda c: c[0].replace(" ", "_"))
@pytest.mark.parametrize("kernel", ["CONV2D", "CONV2D_WINOGRAD"])
def test_conv_resnet18(benchmark, kernel, conv, threads):
    """One conv layer (batch 1, bias + ReLU fused, as after BN folding) as its CONV2D record (im2col +
    GEMM) and, for the 3x3 stride-1 layers, as the CONV2D_WINOGRAD record models use for them."""
    name, c_in, hw, c_out, ks_, stride, pad = conv
    if kernel == "CONV2D_WINOGRAD" and (ks_, stride) != (3, 1):
        pytest.skip("Winograd runs 3x3 stride-1 convs only")
    x, w, bias = torch.randn(1, c_in, hw, hw), torch.randn(c_out, c_in, ks_, ks_) * 0.05, torch.randn(c_out)
    oh = (hw + 2 * pad - ks_) // stride + 1
    with KernelSession(threads=threads) as ks:
        out = ks.empty((1, c_out, oh, oh))
        common = dict(n=1, c_in=c_in, h=hw, w=hw, c_out=c_out, ph=pad, pw=pad, oh=oh, ow=oh, bias=ks.put(bias),
                      out=out, act=ABI.unary["RELU"], p0=0.0, p1=0.0, **{"in": ks.put(x)})
        if kernel == "CONV2D":
            scratch = ks.empty((math.ceil(oh * oh / ABI.gemm_nr) * ABI.gemm_nr * c_in * ks_ * ks_,))
            ks.prepare("CONV2D", groups=1, kh=ks_, kw=ks_, sh=stride, sw=stride, dh=1, dw=1, weight=ks.put(w),
                       scratch=scratch, **common)
        else:
            block = winograd_tile_block(((oh + 1) // 2) ** 2, c_in)
            ks.prepare("CONV2D_WINOGRAD", tile_block=block, weight=ks.put(winograd_weight(w)),
                       scratch=ks.empty((16 * (c_in + c_out) * block,)), **common)
        ks.run()
        want = F.relu(F.conv2d(x.double(), w.double(), bias.double(), stride, pad))
        torch.testing.assert_close(ks.get(out, (1, c_out, oh, oh)).double(), want, rtol=1e-4, atol=1e-3)
        benchmark.group = "conv (ResNet-18 layers)"
        label = name + (" winograd" if kernel == "CONV2D_WINOGRAD" else "")
        benchmark.extra_info.update(kind="conv", name=label, threads=threads,
                                    flops=2.0 * c_out * oh * oh * c_in * ks_ * ks_)
        benchmark(ks.run)
