"""Int8 vs float32, both on our wasm kernels, in one process at 1 thread: a small CNN, an MLP,
MobileNetV2 and ResNet-18 at 224x224, float32 as is and statically quantized by
torch_wasm_backend.quantize.quantize_pt2e (torchao's PT2E recipe), and a BERT-style encoder
(transformers BertModel, d256 x 4 layers, seq 128) with its linears quantized dynamically
(quantize_pt2e(..., dynamic=True)). The ratio float32 time / int8 time is what the int8 path buys
(issue #15's targets: MobileNetV2 / ResNet-18 >= 1.8x, the BERT-style encoder >= 1.4x).

Both 224 models are benchmarks/model_zoo.py's (torchvision's layer shapes, batch-norm statistics
measured on noise by calibrate_batch_norm), not torchvision's own: torchao 0.18's X86InductorQuantizer rejects torchvision's
ResNet BasicBlock, which calls one ReLU module twice ("Input partition has more than one output
node"), and torchvision's MobileNetV2 at its random initialization quantizes to all-zero logits.

    python3 -m pytest benchmarks/test_int8_bench.py --benchmark-group-by=group
"""
import copy
import statistics
import time

import pytest
import torch
import torch.nn as nn

import torch_wasm_backend as twb
from model_zoo import BertEncoder, calibrate_batch_norm, mobilenet_v2, resnet18

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


def token_ids(shape):
    return torch.randint(0, 1000, shape)


# name -> (factory, input maker, input shape, quantize_pt2e's dynamic flag)
MODELS = {"cnn_3x64x64": (cnn, torch.randn, (1, 3, 64, 64), False),
          "mlp_256_1024x2_batch8": (mlp, torch.randn, (8, 256), False),
          "bert_256x4_seq128_dynamic": (BertEncoder, token_ids, (1, 128), True),
          "mobilenet_v2_224": (lambda: calibrate_batch_norm(mobilenet_v2(), (1, 3, 224, 224)), torch.randn, (1, 3, 224, 224), False),
          "resnet18_224": (lambda: calibrate_batch_norm(resnet18(), (1, 3, 224, 224)), torch.randn, (1, 3, 224, 224), False)}
_quantized = {}


def _quantize(name, model, x, dynamic=False):
    return _quantized.get(name) or _quantized.setdefault(name, quantize_pt2e(
        model, (x,), calibration=[(x,)] if dynamic else None, dynamic=dynamic))


def _check_output(got, expected, name, dynamic=False):
    """A sanity check only (tests/quant holds the int8 path to its bounds): the run is the model's,
    against the quantized model's own eager run. Deep int8 models: 1-LSB requantization differences
    (tests/quant's bound per layer) compound over 20-50 layers, so those compare the output as a
    whole (relative L2 error), not elementwise. 1e-2 for the BERT encoder: its layers' float inputs
    differ from eager's by float rounding, so a dynamically quantized activation can sit one LSB
    away, and four layers carry that."""
    if name.endswith("_224"):
        assert expected.abs().max() > 0  # (a model whose int8 activations collapse to 0 checks nothing)
        assert float((got - expected).norm() / expected.norm()) < 0.05
    else:
        tol = 1e-2 if dynamic else 1e-3
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol * float(expected.abs().max()))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_int8_vs_float32(benchmark, name, precision):
    factory, make_input, shape, dynamic = MODELS[name]
    torch.manual_seed(0)
    model, x = factory().eval(), make_input(shape)
    if precision == "int8":
        model = _quantize(name, model, x, dynamic)
    compiled = torch.compile(model, backend="wasm", options={"threads": 1, "strict": True})
    with torch.inference_mode():
        expected, got = model(x), compiled(x)
        _check_output(got, expected, name, dynamic)
        benchmark.group = f"int8 vs float32: {name}"
        benchmark.extra_info.update(kind="int8", model=name, precision=precision, threads=1)
        benchmark(compiled, x)
    s = twb.stats()
    assert s["calls"] > 0 and s["eager_partition_calls"] == 0 and s["lowered_fraction"] == 1.0, s


@pytest.mark.parametrize("name", ["mobilenet_v2_224", "resnet18_224"])
def test_int8_speedup_alternating(benchmark, name):
    """float32 and int8 called alternately (f, q, f, q, ...) in each round: on a shared machine only
    such a ratio means something. Recorded in extra_info: the median thread CPU time and wall time of
    each, and their ratios float32 / int8 (the benchmark's own time is one float32 + int8 pair)."""
    factory, make_input, shape, _ = MODELS[name]
    torch.manual_seed(0)
    model, x = factory().eval(), make_input(shape)
    compiled = {"float32": torch.compile(model, backend="wasm", options={"threads": 1, "strict": True}),
                "int8": torch.compile(_quantize(name, model, x), backend="wasm", options={"threads": 1, "strict": True})}
    times = {p: {"cpu": [], "wall": []} for p in compiled}

    def pair():
        for precision, c in compiled.items():
            wall, cpu = time.perf_counter(), time.thread_time()  # 1 thread: the kernels run on this one
            c(x)
            times[precision]["cpu"].append(time.thread_time() - cpu)
            times[precision]["wall"].append(time.perf_counter() - wall)

    with torch.inference_mode():
        for precision, c in compiled.items():
            _check_output(c(x), (model if precision == "float32" else _quantize(name, model, x))(x), name)
        benchmark.group = f"int8 vs float32 alternating: {name}"
        benchmark.pedantic(pair, rounds=10, iterations=1)
    med = {p: {k: statistics.median(v) for k, v in t.items()} for p, t in times.items()}
    benchmark.extra_info.update(kind="int8", model=name, threads=1, **{
        f"{p}_{k}_ms": round(1e3 * v, 2) for p, m in med.items() for k, v in m.items()},
        ratio_cpu=round(med["float32"]["cpu"] / med["int8"]["cpu"], 3),
        ratio_wall=round(med["float32"]["wall"] / med["int8"]["wall"], 3))
    s = twb.stats()
    assert s["calls"] > 0 and s["eager_partition_calls"] == 0 and s["lowered_fraction"] == 1.0, s


@pytest.mark.parametrize("rows", [1, 128])
def test_weight_only_int8_alternating(benchmark, rows):
    """torchao's Int8WeightOnlyConfig (int8 weights, float activations: twb_quant::weight_only_linear
    on WOLINEAR) against the float32 model, on a stack of 8 Linear(512, 512): rows 1 is a batch-1
    decoding step (a GEMV per layer: each weight read once), rows 128 a prompt. Alternating as above;
    extra_info also holds each side's weight bytes read per second (8 MB float32, 2 MB int8)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(512, 512) for _ in range(8)]).eval()
    qmodel = copy.deepcopy(model)
    quantize_(qmodel, Int8WeightOnlyConfig())
    x = torch.randn(rows, 512)
    compiled = {p: torch.compile(m, backend="wasm", options={"threads": 1, "strict": True})
                for p, m in (("float32", model), ("int8", qmodel))}
    times = {p: [] for p in compiled}

    def pair():
        for precision, c in compiled.items():
            cpu = time.thread_time()
            c(x)
            times[precision].append(time.thread_time() - cpu)

    with torch.inference_mode():
        torch.testing.assert_close(compiled["int8"](x), qmodel(x), rtol=1e-4, atol=1e-4)  # (tests/quant holds it to its bound)
        compiled["float32"](x)
        benchmark.group = f"weight-only int8 vs float32: 8 x Linear(512, 512), {rows} row(s)"
        benchmark.pedantic(pair, rounds=20, iterations=1)
    med = {p: statistics.median(t) for p, t in times.items()}
    weight_bytes = {"float32": 4 * 8 * 512 * 512, "int8": 8 * 512 * 512}
    benchmark.extra_info.update(kind="int8", model=f"linear_512x8_rows{rows}_weight_only", threads=1,
                                **{f"{p}_cpu_ms": round(1e3 * v, 3) for p, v in med.items()},
                                **{f"{p}_weight_GBps": round(weight_bytes[p] / v / 1e9, 2) for p, v in med.items()},
                                ratio_cpu=round(med["float32"] / med["int8"], 3))
    s = twb.stats()
    assert s["plan_kernels"].get("WOLINEAR", 0) == 8 and s["eager_partition_calls"] == 0, s
