"""Int8 vs float32, both on our wasm kernels, in one process at 1 thread: a small CNN and an MLP,
float32 as is and statically quantized by torch_wasm_backend.quantize.quantize_pt2e (torchao's PT2E
recipe). The ratio float32 time / int8 time is what the int8 path buys (issue #15's targets are for
MobileNetV2 / ResNet-18; these are the first slice's patterns: conv, linear, relu, pools).

    python3 -m pytest benchmarks/test_int8_bench.py --benchmark-group-by=group
"""
import pytest
import torch
import torch.nn as nn

import torch_wasm_backend as twb

pytest.importorskip("torchao", reason="pip install torchao==0.18.0")
from torch_wasm_backend.quantize import quantize_pt2e  # noqa: E402


def cnn():
    return nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def mlp():
    return nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))


MODELS = {"cnn_3x64x64": (cnn, (1, 3, 64, 64)), "mlp_256_1024x2_batch8": (mlp, (8, 256))}
_quantized = {}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_int8_vs_float32(benchmark, name, precision):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    model, x = factory().eval(), torch.randn(shape)
    if precision == "int8":
        model = _quantized.get(name) or _quantized.setdefault(name, quantize_pt2e(model, (x,)))
    compiled = torch.compile(model, backend="wasm", options={"threads": 1, "strict": True})
    with torch.inference_mode():
        expected, got = model(x), compiled(x)
        # A sanity check only (tests/quant holds the int8 path to its bounds): the run is the model's.
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
        benchmark.group = f"int8 vs float32: {name}"
        benchmark.extra_info.update(kind="int8", model=name, precision=precision, threads=1)
        benchmark(compiled, x)
    s = twb.stats()
    assert s["calls"] > 0 and s["eager_partition_calls"] == 0 and s["lowered_fraction"] == 1.0, s
