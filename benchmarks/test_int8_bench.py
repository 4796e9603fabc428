"""Int8 vs float32, both on our wasm kernels, in one process at 1 thread: a small CNN and an MLP,
float32 as is and statically quantized by torch_wasm_backend.quantize.quantize_pt2e (torchao's PT2E
recipe), and a BERT-style encoder (transformers BertModel, d256 x 4 layers, seq 128) with its
linears quantized dynamically (quantize_pt2e(..., dynamic=True)). The ratio float32 time / int8
time is what the int8 path buys (issue #15's targets: MobileNetV2 / ResNet-18 >= 1.8x, the BERT-style
encoder >= 1.4x).

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


class BertEncoder(nn.Module):
    """transformers' BertModel (random weights), its last hidden state."""

    def __init__(self):
        super().__init__()
        import tv_import  # noqa: F401  (tests/: before transformers, which imports torchvision)
        import transformers
        config = transformers.BertConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                         intermediate_size=1024, max_position_embeddings=512)
        self.bert = transformers.BertModel(config, add_pooling_layer=False)

    def forward(self, ids):
        return self.bert(input_ids=ids).last_hidden_state


def token_ids(shape):
    return torch.randint(0, 1000, shape)


# name -> (factory, input maker, input shape, quantize_pt2e's dynamic flag)
MODELS = {"cnn_3x64x64": (cnn, torch.randn, (1, 3, 64, 64), False),
          "mlp_256_1024x2_batch8": (mlp, torch.randn, (8, 256), False),
          "bert_256x4_seq128_dynamic": (BertEncoder, token_ids, (1, 128), True)}
_quantized = {}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_int8_vs_float32(benchmark, name, precision):
    factory, make_input, shape, dynamic = MODELS[name]
    torch.manual_seed(0)
    model, x = factory().eval(), make_input(shape)
    if precision == "int8":
        model = _quantized.get(name) or _quantized.setdefault(name, quantize_pt2e(
            model, (x,), calibration=[(x,)] if dynamic else None, dynamic=dynamic))
    compiled = torch.compile(model, backend="wasm", options={"threads": 1, "strict": True})
    with torch.inference_mode():
        expected, got = model(x), compiled(x)
        # A sanity check only (tests/quant holds the int8 path to its bounds): the run is the model's.
        # (Against the quantized model's own eager run; 1e-2 for the BERT encoder: its layers' float
        # inputs differ from eager's by float rounding, so a dynamically quantized activation can
        # sit one LSB away, and four layers carry that.)
        tol = 1e-2 if dynamic else 1e-3
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol * float(expected.abs().max()))
        benchmark.group = f"int8 vs float32: {name}"
        benchmark.extra_info.update(kind="int8", model=name, precision=precision, threads=1)
        benchmark(compiled, x)
    s = twb.stats()
    assert s["calls"] > 0 and s["eager_partition_calls"] == 0 and s["lowered_fraction"] == 1.0, s
