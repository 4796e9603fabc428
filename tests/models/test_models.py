"""Whole networks through torch.compile(backend="wasm"): equal to eager within tolerance, and the
stats prove their ATen nodes ran in wasm (not in eager)."""
import pytest
import torch
import torch.nn as nn

import torch_wasm_backend as twb
from helpers import MATMUL, assert_ran_in_wasm

# Deeper nets accumulate reordering error of several GEMM/conv layers: 1e-4 relative/absolute
# on O(1) activations is ~1000 float32 ulps, well below any real discrepancy (a wrong index or
# a dropped term changes outputs by O(1e-1)).
MODEL_TOL = MATMUL


def mlp(widths=(37, 64, 48, 10)):
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.GELU()]
    return nn.Sequential(*layers[:-1])


def small_cnn(channels=8, classes=5):
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.BatchNorm2d(2 * channels), nn.ReLU(),
        nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels),  # depthwise
        nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * channels, classes))


def randomize_bn(model):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


def encoder(d_model=32, heads=4, ff=64, layers=2, norm_first=False, activation="relu"):
    layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout=0.0, batch_first=True,
                                       norm_first=norm_first, activation=activation)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def run_both(model, x, threads=1, mode=torch.no_grad):
    model.eval()
    compiled = torch.compile(model, backend="wasm", options={"threads": threads})
    with mode():
        expected = model(x)
        got = compiled(x)
        got_again = compiled(x)  # second call: plan cache hit, weights not re-uploaded
    torch.testing.assert_close(got, expected, **MODEL_TOL)
    torch.testing.assert_close(got_again, expected, **MODEL_TOL)
    return twb.stats()


@pytest.mark.parametrize("threads", [1, 2])
def test_mlp(threads):
    s = run_both(mlp(), torch.randn(9, 37), threads)
    assert_ran_in_wasm(s)
    assert s["lowered_by_op"]["aten::addmm"] == 3
    assert s["plan_cache_hits"] >= 1


@pytest.mark.parametrize("threads", [1, 2])
def test_small_cnn(threads):
    s = run_both(randomize_bn(small_cnn()), torch.randn(2, 3, 19, 21), threads, torch.inference_mode)
    assert_ran_in_wasm(s)
    assert s["partitions"] == 1
    assert s["lowered_by_op"]["aten::convolution"] == 3


@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
def test_transformer_encoder_fast_path(norm_first, activation):
    """Under no_grad in eval, nn.TransformerEncoderLayer calls the fused
    aten._transformer_encoder_layer_fwd; it must run on our kernels."""
    s = run_both(encoder(norm_first=norm_first, activation=activation), torch.randn(3, 11, 32))
    assert_ran_in_wasm(s)
    assert s["lowered_by_op"]["aten::native_layer_norm"] == 4
    assert s["lowered_by_op"]["aten::bmm"] == 4


def test_transformer_encoder_other_sizes():
    s = run_both(encoder(d_model=48, heads=3, ff=80, layers=3), torch.randn(1, 5, 48))
    assert_ran_in_wasm(s)


def test_training_graph_gives_eager_gradients():
    """With grad enabled the forward still runs in wasm; the backward runs in eager (and says so)."""
    model = mlp((5, 7, 3))
    x = torch.randn(4, 5, requires_grad=True)
    compiled = torch.compile(model, backend="wasm")
    compiled(x).square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()] + [x.grad.clone()]
    for p in list(model.parameters()) + [x]:
        p.grad = None
    model(x).square().sum().backward()
    expected = [p.grad for p in model.parameters()] + [x.grad]
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, **MATMUL)
    s = twb.stats()
    assert s["calls"] >= 1
    assert any(f["reason"] == "backward graphs run in eager" for f in s["fallback_nodes"])


def test_lstm_runs_in_wasm_without_dynamo_config_changes():
    """nn.LSTM reaches the backend (the backend turns on Dynamo's allow_rnn) and runs in wasm."""
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(6, 10, batch_first=True)
            self.head = nn.Linear(10, 3)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])

    s = run_both(Classifier(), torch.randn(2, 5, 6))
    assert_ran_in_wasm(s, min_fraction=0.98)
