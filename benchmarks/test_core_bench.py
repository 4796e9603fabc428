"""First benchmarks: eager vs wasm for an MLP and a CNN, and a 512x512x512 GEMM next to the
module's SIMD128 peak loop, so GEMM speed is a fraction of the peak measured in the same run.

    make bench      # writes .benchmarks/core.json and prints benchmarks/report.py's table
"""
import pytest
import torch
import torch.nn as nn

from lowering.ops.matmul import pack_b
from lowering.abi import ABI
from torch_wasm_backend.kernel_call import KernelSession

THREADS = [1, 2]


def mlp():
    return nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 512), nn.GELU(), nn.Linear(512, 10)).eval()


def cnn():
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()


MODELS = {"mlp_b32": (mlp, (32, 256)), "cnn_b4_64px": (cnn, (4, 3, 64, 64))}


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("engine", ["eager", "wasm"])
def test_model(benchmark, engine, model_name, threads):
    make, shape = MODELS[model_name]
    torch.manual_seed(0)
    model, x = make(), torch.randn(shape)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fn = model if engine == "eager" else torch.compile(model, backend="wasm", options={"threads": threads})
        with torch.inference_mode():
            fn(x)
            benchmark.group = f"{model_name} threads={threads}"
            benchmark.extra_info.update(kind="model", model=model_name, engine=engine, threads=threads)
            benchmark(fn, x)
    finally:
        torch.set_num_threads(old)


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
