"""PT2E-quantized models (torchao 0.18: torch.export -> prepare_pt2e(X86InductorQuantizer default
config: uint8 per-tensor activations, int8 symmetric per-channel weights) -> calibrate ->
convert_pt2e) compiled with backend="wasm", against PyTorch's execution of the same converted graph
(not the float model).

Every quantize node of the graph is made an extra output, so each integer activation is compared,
not only the final float output:
- integer activations within 1 LSB: eager rounds a float32 conv/linear result; ours differs from it
  by float rounding only (we sum exact integers), so round(y / scale) can land on the neighbouring
  integer when y / scale sits within ~1e-6 of a half-integer (see test_int8_kernels.py). A flip
  feeds the next layer as a 1-LSB input change, which moves that layer's output by s_in * |w|, far
  under one output LSB here (the scales cover the layer's whole range).
- the float output (the last linear, not requantized): its inputs are uint8 activations within
  1 LSB, so |dy[n]| <= s_x * sum_k |w_f[n, k]| per flipped input, plus float32 rounding
  (MATMUL tolerance of tests/helpers.py); the bound used is one LSB on every input.
And coverage: every node runs in wasm (strict), each conv / linear as a recognized int8 pattern."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_wasm_backend as twb
from helpers import MATMUL, assert_ran_in_wasm, compile_wasm
from torch_wasm_backend.quantize import quantize_pt2e

pytest.importorskip("torchao", reason="the int8 tests quantize with torchao (pip install torchao==0.18.0)")


class SmallCNN(nn.Module):
    """conv+relu, maxpool, strided conv, depthwise conv, pointwise conv + residual add, avg pool, linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.relu(self.c2(x))
        x = F.relu(self.pw(F.relu(self.dw(x))) + x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class MLP(nn.Module):
    """Linear layers on a [batch, seq, features] input (views around each addmm), odd widths."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(20, 33), nn.Linear(33, 17), nn.Linear(17, 5)

    def forward(self, x):
        return self.l3(F.relu(self.l2(F.relu(self.l1(x)))))


def expose_quantized(gm: torch.fx.GraphModule) -> int:
    """Adds every quantize_per_tensor node of gm to its outputs (after the original ones); returns
    how many."""
    quantized = [n for n in gm.graph.nodes if n.target is torch.ops.quantized_decomposed.quantize_per_tensor.default]
    output = next(n for n in gm.graph.nodes if n.op == "output")
    outs = output.args[0]
    output.args = (tuple(outs if isinstance(outs, (list, tuple)) else [outs]) + tuple(quantized),)
    gm.graph._codegen = torch.fx.graph.CodeGen()  # plain tuple output (export's pytree spec has one leaf)
    gm.graph.lint()
    gm.recompile()
    return len(quantized)


def assert_matches(gm, got, expected, layers: int) -> None:
    """got vs eager's outputs of gm (float output, then the int8 activations) within the bounds of
    the module docstring."""
    float_out, *ints = got
    assert len(ints) >= layers - 1 and all(t.dtype == torch.uint8 for t in ints)
    for g, e in zip(ints, expected[1:]):
        diff = (g.int() - e.int()).abs()
        assert diff.max() <= 1, f"{int((diff > 1).sum())} int8 activations off by more than 1 LSB"
    x_scale, w = _last_linear(gm)
    lsb_bound = x_scale * w.abs().sum(1)  # one LSB on every input of the last linear
    err = (float_out - expected[0]).abs()
    assert (err <= lsb_bound + MATMUL["atol"] + MATMUL["rtol"] * expected[0].abs()).all(), err.max()


@pytest.fixture(scope="module")
def quantized():
    """name -> (quantized GraphModule with its int8 activations as extra outputs, input, the
    number of conv and linear layers, the quantized GraphModule as converted)."""
    torch.manual_seed(0)
    models = {}
    for name, model, x, layers in [("cnn", SmallCNN(), torch.randn(2, 3, 17, 15), 5),
                                   ("mlp", MLP(), torch.randn(2, 5, 20), 3)]:
        converted = quantize_pt2e(model, (x,))
        gm = copy.deepcopy(converted)
        expose_quantized(gm)
        models[name] = (gm, x, layers, converted)
    return models


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_quantized_model_matches_pytorch(quantized, name):
    gm, x, layers, _ = quantized[name]
    compiled = compile_wasm(gm)  # strict: any node left to eager raises
    with torch.no_grad():
        expected = gm(x)
        got = compiled(x)
    assert_matches(gm, got, expected, layers)
    s = twb.stats()
    assert_ran_in_wasm(s)
    fused = sum(s["lowered_by_op"].get(f"twb_quant::{op}", 0) for op in ("conv2d", "linear"))
    assert fused == layers, f"int8 patterns recognized: {fused} of {layers} layers ({dict(s['lowered_by_op'])})"
    assert sum(s["plan_kernels"].get(k, 0) for k in ("QGEMM", "QCONV2D", "QCONV2D_WINO")) == layers


def _last_linear(gm) -> tuple[float, torch.Tensor]:
    """The input scale and the dequantized weight of gm's last linear (dq(x) and dq(w) feed it)."""
    linear = [n for n in gm.graph.nodes if n.target is torch.ops.aten.linear.default][-1]
    dq_x, dq_w = linear.args[:2]
    w_q, w_scale = (getattr(gm, a.target) for a in dq_w.args[:2])
    return dq_x.args[1], w_q.float() * w_scale[:, None]


def test_explain_lists_the_int8_patterns(quantized):
    gm, x, _, _ = quantized["cnn"]
    report = twb.explain(gm, x)
    assert report.lowered_fraction == 1.0, report
    assert report.by_op["twb_quant::conv2d"]["lowered"] == 4 and report.by_op["twb_quant::linear"]["lowered"] == 1
    assert not any(op.startswith("quantized_decomposed::") and c["fallback"] for op, c in report.by_op.items())
    # Each conv / linear by node, then the pools and the flatten between them: all fused. (quantize_pt2e
    # restores the conv -> F.relu match, so every conv output but the linear's is quantized.)
    assert all(n.fused for n in report.int8)
    assert [n.pattern for n in report.int8] == ["dq -> conv2d -> relu -> q"] * 3 + [
        "dq -> conv2d -> add(dq) -> relu -> q", "dq -> linear -> float32 out", "dq -> max_pool2d -> q",
        "dq -> mean(H, W) -> q", "dq -> view -> q"]
    assert "Int8 patterns: 8 of 8" in str(report)
    assert type(report).from_dict(report.to_dict()).int8 == report.int8


@pytest.fixture(scope="module")
def exported_cnn(quantized, tmp_path_factory):
    """The quantized CNN with its int8 activations as extra outputs (uint8 tensors: exported files
    return them as they are), exported; the compiled model's outputs for the same input (the same
    kernels: the file must return exactly them), and the bound of the float output against eager
    (as assert_matches)."""
    gm, x, layers, _ = quantized["cnn"]
    path = tmp_path_factory.mktemp("int8") / "cnn_int8.wasm"
    twb.export(gm, (x,), str(path))
    with torch.no_grad():
        expected = gm(x)
        compiled = compile_wasm(gm)(x)
    x_scale, w = _last_linear(gm)
    bound = x_scale * w.abs().sum(1) + MATMUL["atol"] + MATMUL["rtol"] * expected[0].abs()
    return path, x, expected, compiled, bound, layers


def _assert_equal_to_compiled(got: list, compiled: tuple, expected: tuple, bound) -> None:
    assert len(got) == len(compiled) > 1
    assert ((got[0] - expected[0]).abs() <= bound).all()
    for g, c in zip(got[1:], compiled[1:]):
        assert g.dtype == torch.uint8 and torch.equal(g, c)


def test_quantized_cnn_exports_on_int8_kernels(exported_cnn):
    """torch_wasm_backend.export fuses the same patterns: the file runs the int8 kernels (in
    wasmtime), returns its uint8 outputs as uint8 tensors equal to the compiled model's, and its
    float output within the bound of eager's."""
    path, x, expected, compiled, bound, layers = exported_cnn
    loaded = twb.load(str(path))
    calls = loaded.metadata["kernel_calls"]
    assert sum(calls.get(k, 0) for k in ("QGEMM", "QCONV2D", "QCONV2D_WINO")) == layers
    assert not any(op.startswith(("aten::convolution", "aten::addmm")) for op in loaded.metadata["ops"])
    assert {o["dtype"] for o in loaded.metadata["outputs"][1:]} == {"uint8"}
    _assert_equal_to_compiled(list(loaded(x)), compiled, expected, bound)


def _node_outputs(result: dict, shapes) -> list:
    dtypes = {"Float32Array": "<f4", "Uint8Array": "u1"}
    return [torch.from_numpy(np.fromfile(result["outputs"][name], dtype=dtypes[result["types"][name]]).reshape(shape))
            for name, shape in zip(result["outputs"], shapes)]


def test_quantized_cnn_runs_in_node(exported_cnn, tmp_path, monkeypatch):
    """The same file in Node.js 20 through the shipped JS loader (tests/export's driver, whose
    module imports its folder's helpers as top-level modules): uint8 outputs as Uint8Array."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "export"))
    from test_export_node import NODE, node
    if NODE is None:
        pytest.skip("Node.js is not installed (scripts/setup.sh installs it)")
    path, x, expected, compiled, bound, _ = exported_cnn
    x_file = tmp_path / "x.f32"
    x_file.write_bytes(x.numpy().astype("<f4").tobytes())
    result = node("run_model.mjs", path, 1, tmp_path, f"x={x_file}")
    assert set(list(result["types"].values())[1:]) == {"Uint8Array"}
    _assert_equal_to_compiled(_node_outputs(result, [c.shape for c in compiled]), compiled, expected, bound)


def test_quantized_cnn_runs_in_chromium(exported_cnn, tmp_path, monkeypatch):
    """The same file in headless Chromium (tests/export's run.html page and run_page driver)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "export"))
    from test_export_browser import CHROMIUM, PAGE, run_page
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    path, x, expected, compiled, bound, _ = exported_cnn
    shutil.copy(PAGE, tmp_path / "run.html")
    shutil.copy(path, tmp_path / "cnn_int8.wasm")
    (tmp_path / "x.f32").write_bytes(x.numpy().astype("<f4").tobytes())
    cases = [{"model": "/cnn_int8.wasm", "input": "/x.f32", "name": "x"}]
    report = run_page(tmp_path, {"cases": json.dumps(cases), "threads": 1}, False, tmp_path)
    assert "fatal" not in report, report["fatal"]
    r = report["results"]["/cnn_int8.wasm"]
    assert r["same"]
    outs = list(r["outputs"].values())
    assert [o["type"] for o in outs[1:]] == ["Uint8Array"] * (len(outs) - 1)
    dtypes = {"Float32Array": torch.float32, "Uint8Array": torch.uint8}
    got = [torch.tensor(o["values"], dtype=dtypes[o["type"]]).reshape(c.shape) for o, c in zip(outs, compiled)]
    _assert_equal_to_compiled(got, compiled, expected, bound)


def test_dynamic_batch_and_length_through_the_fused_linear():
    """quantize_pt2e with dynamic dims: the views around each fused linear take symbolic sizes, and
    new sizes reuse the dynamic graph (eager of the same converted graph as the reference)."""
    torch.manual_seed(0)
    dims = ({0: torch.export.Dim("batch", min=1, max=64), 1: torch.export.Dim("length", min=1, max=64)},)
    gm = quantize_pt2e(MLP(), (torch.randn(2, 5, 20),), dynamic_shapes=dims)
    compiled = compile_wasm(gm)
    for shape in [(2, 5, 20), (3, 7, 20), (4, 9, 20)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected, got = gm(x), compiled(x)
        x_scale, w = _last_linear(gm)
        assert ((got - expected).abs() <= x_scale * w.abs().sum(1) + MATMUL["atol"]
                + MATMUL["rtol"] * expected.abs()).all()
    s = twb.stats()
    assert_ran_in_wasm(s)
    assert s["graphs_compiled"] == 2  # the static first shape, then one dynamic graph for the others


# ---- torchvision CNNs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torchvision_quantized():
    """name -> (quantized GraphModule with its int8 activations as extra outputs, input, conv +
    linear layers, residual adds, the quantized GraphModule as converted): MobileNetV2 (width 0.35:
    ReLU6 after conv, residual adds without relu) and ResNet-18 (conv -> add -> relu residuals, max
    pooling), at 32x32 inputs to keep compile time small."""
    from tv_import import import_torchvision
    tv = import_torchvision()
    torch.manual_seed(0)
    models = {}
    for name, model in [("mobilenet_v2", tv.models.mobilenet_v2(width_mult=0.35)), ("resnet18", tv.models.resnet18())]:
        x = torch.randn(1, 3, 32, 32)
        converted = quantize_pt2e(model, (x,))
        layers = sum(n.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)
                     for n in converted.graph.nodes)
        adds = sum(n.target in (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor) for n in converted.graph.nodes)
        gm = copy.deepcopy(converted)
        expose_quantized(gm)
        models[name] = (gm, x, layers, adds, converted)
    return models


def teacher_forced(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of gm (expose_quantized's) whose dequantize_per_tensor nodes read their integer input
    from new graph inputs (after gm's own) instead of the quantize nodes: fed eager's integer
    activations, every layer computes from eager's inputs, so each is held to its own 1 LSB.

    Why: free-running, a 1-LSB flip (module docstring) in one layer's output moves the next layers'
    outputs, and over ResNet-18's 20 layers (residual adds pass their input's difference through at
    ratio s_residual / s_out, about 1) such flips compound to 3-4 LSB deep in the net: measured on
    ResNet-18 at 32x32, one flip at layer 8, 4 LSB at layer 20. That is the order of rounding, not
    a kernel's error, and it says nothing per layer."""
    gm = copy.deepcopy(gm)
    qd = torch.ops.quantized_decomposed
    last = [n for n in gm.graph.nodes if n.op == "placeholder"][-1]
    for i, q in enumerate([n for n in gm.graph.nodes if n.target is qd.quantize_per_tensor.default]):
        with gm.graph.inserting_after(last):
            last = gm.graph.placeholder(f"eager_q{i}")
        for user in list(q.users):
            if user.target is qd.dequantize_per_tensor.default:
                user.replace_input_with(q, last)
    gm.graph.lint()
    gm.recompile()
    return gm


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_torchvision_cnn_runs_on_int8_kernels(torchvision_quantized, name):
    """Compiled strict: every conv and linear is an int8 kernel, every residual add and ReLU6 fused
    into one (no float add or hardtanh left), the pools int8 too, and every int8 activation within 1 LSB of eager's
    execution of the same graph, layer by layer (teacher_forced; assert_matches)."""
    gm, x, layers, adds, _ = torchvision_quantized[name]
    assert adds > 0
    with torch.no_grad():
        expected = gm(x)
        forced = teacher_forced(gm)
        got = compile_wasm(forced)(x, *expected[1:])
    assert_matches(gm, got, expected, layers)
    s = twb.stats()
    assert_ran_in_wasm(s)
    ops = s["lowered_by_op"]
    assert sum(ops.get(f"twb_quant::{op}", 0) for op in ("conv2d", "linear")) == layers, dict(ops)
    assert sum(s["plan_kernels"].get(k, 0) for k in ("QGEMM", "QCONV2D", "QCONV2D_WINO")) == layers
    assert not any(op in ops for op in ("aten::add.Tensor", "aten::hardtanh", "aten::convolution", "aten::addmm",
                                        "aten::max_pool2d_with_indices", "aten::mean.dim")), dict(ops)
    assert s["plan_kernels"]["QPOOL2D"] == (2 if name == "resnet18" else 1)  # (max pool), global average pool


def test_resnet18_exports_with_int8_weights(torchvision_quantized, tmp_path):
    """The exported quantized ResNet-18: every conv / linear an int8 kernel call, weights ~4x
    smaller than float32 (1 byte per weight; per output channel an int32 zero-point term and
    float32 scale and bias; k padded to 8), and outputs equal to the compiled model's (the same
    kernels on the same input: bit for bit)."""
    _, x, layers, _, converted = torchvision_quantized["resnet18"]
    path = tmp_path / "resnet18_int8.wasm"
    twb.export(converted, (x,), str(path))
    loaded = twb.load(str(path))
    calls = loaded.metadata["kernel_calls"]
    assert sum(calls.get(k, 0) for k in ("QGEMM", "QCONV2D", "QCONV2D_WINO")) == layers
    weights = [getattr(converted, n.args[0].target) for n in converted.graph.nodes
               if n.target is torch.ops.quantized_decomposed.dequantize_per_channel.default]
    float_bytes = 4 * sum(w.numel() for w in weights)
    ratio = float_bytes / loaded.metadata["layout"]["weights_bytes"]
    assert 3.5 < ratio <= 4.0, ratio
    # layer1's four 3x3 stride-1 convs (8x8: 16 tiles; deeper ones have < WINOGRAD_MIN_TILES at 32x32)
    # run by integer Winograd, weights transformed at run time (still 1 byte each); winograd=False
    # keeps them on QCONV2D, with the same output bits
    assert calls.get("QCONV2D_WINO", 0) == 4, calls
    plain = tmp_path / "resnet18_int8_no_winograd.wasm"
    twb.export(converted, (x,), str(plain), winograd=False)
    no_wino = twb.load(str(plain))
    assert "QCONV2D_WINO" not in no_wino.metadata["kernel_calls"]
    with torch.no_grad():
        got = loaded(x)
        assert torch.equal(got, compile_wasm(converted)(x))
        assert torch.equal(got, no_wino(x))
