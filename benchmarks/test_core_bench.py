"""Kernels: a 512x512x512 GEMM next to the module's SIMD128 peak loop, so GEMM speed is a fraction
of the peak measured in the same run.

    make bench      # writes .benchmarks/core.json and prints benchmarks/report.py's table
"""
import pytest
import torch

from lowering.ops.matmul import pack_b
from lowering.abi import ABI
from torch_wasm_backend.kernel_call import KernelSession

THREADS = [1, 2]


PEAK_ITERS = 200_000


def test_peak_simd128(benchmark):
    with KernelSession(threads=1) as ks:
        flops = ks.runtime.peak_flops(1)  # warm up; returns flops per call for 1 iter
        benchmark.group = "gemm vs peak"
        benchmark.extra_info.update(kind="peak", flops=ks.runtime.peak_flops(PEAK_ITERS))
        benchmark(ks.runtime.peak_flops, PEAK_ITERS)
        assert flops > 0


@pytest.mark.parametrize("threads", THREADS)
def test_gemm_512(benchmark, threads):
    m = n = k = 512
    a, b = torch.randn(m, k), torch.randn(k, n)
    with KernelSession(threads=threads) as ks:
        pa, pb, pc = ks.put(a), ks.put(pack_b(b)), ks.empty((m, n))
        ks.prepare("GEMM", batch=1, m=m, n=n, k=k, a=pa, lda=k, a_batch_stride=0, b_packed=pb,
                   b_batch_stride=0, c=pc, ldc=n, c_batch_stride=0, bias=0, bias_mode=0,
                   act=ABI.unary["IDENTITY"], p0=0.0, p1=0.0)
        ks.run()
        torch.testing.assert_close(ks.get(pc, (m, n)), a @ b, rtol=1e-4, atol=1e-3)
        benchmark.group = "gemm vs peak"
        benchmark.extra_info.update(kind="gemm", flops=2.0 * m * n * k, threads=threads)
        benchmark(ks.run)
