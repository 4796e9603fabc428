"""A transformers BertModel (hidden 32, 2 layers) quantized with PT2E's dynamic config
(torch_wasm_backend.quantize.quantize_pt2e(..., dynamic=True): every linear's activation quantized
per tensor at run time, int8 per-channel weights), compiled with backend="wasm" and exported,
against PyTorch's execution of the same quantized graph (not the float model).

Every linear's float input and float output are made extra graph outputs, so each of the 12
linears is checked in place on the input it got: the kernels choose the activation's scale and
zero point and quantize exactly as eager does (test_int8_dynamic_kernels.py), so on the same input
the linear differs from eager only by the rounding of eager's float dot product: dot_rel(K)
relative to sum |x_f * w_f| + |bias| (the kernel tests' bound). Comparing only the model's output
would need a bound for a 1-LSB flip of a quantized activation (when our float input of a linear
sits within float rounding of a rounding boundary) carried through layer norms, which is loose.

The model is quantized and exported with a dynamic sequence dim. The exported file runs in
wasmtime and Node.js at 1 thread, as the compiled model does: same plans, same kernels, same thread
count, so the same bits (at the example's length; at another length Node.js against wasmtime)."""
from __future__ import annotations

import copy
import operator
from pathlib import Path

import pytest
import torch

import tv_import  # noqa: F401  (before transformers, which imports torchvision)
import torch_wasm_backend as twb
from helpers import MATMUL, assert_ran_in_wasm
from kernels.kernel_testing import dot_rel
from torch_wasm_backend.exporter import ALIGN
from torch_wasm_backend.lowering.quant_dynamic import dynamic_linear
from torch_wasm_backend.quantize import quantize_pt2e

pytest.importorskip("torchao", reason="the int8 tests quantize with torchao (pip install torchao==0.18.0)")
transformers = pytest.importorskip("transformers")

qd = torch.ops.quantized_decomposed
LAYERS, HIDDEN, INTERMEDIATE, SEQ = 2, 32, 48, 9
DIMS = ({1: torch.export.Dim("seq", min=2, max=32)},)
LINEARS = LAYERS * 6  # q, k, v, attention output, intermediate, output


class LastHidden(torch.nn.Module):
    """BertModel's last hidden state (one tensor output, as exported files return)."""

    def __init__(self, hidden: int = HIDDEN, intermediate: int = INTERMEDIATE):
        super().__init__()
        config = transformers.BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=LAYERS,
                                         num_attention_heads=2, intermediate_size=intermediate,
                                         max_position_embeddings=32)
        self.bert = transformers.BertModel(config, add_pooling_layer=False)

    def forward(self, ids):
        return self.bert(input_ids=ids).last_hidden_state


def _linears(gm: torch.fx.GraphModule):
    """(linear node, its float input before choose_qparams) of each dynamically quantized linear."""
    found = []
    for n in gm.graph.nodes:
        if n.target is torch.ops.aten.linear.default and n.args[0].target is qd.dequantize_per_tensor.tensor:
            found.append((n, n.args[0].args[0].args[0]))
    return found


def expose_linears(gm: torch.fx.GraphModule) -> list:
    """Adds each linear's float input and output to gm's outputs (after the original one); returns
    the linear nodes in that order."""
    linears = _linears(gm)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    extra = tuple(v for linear, x in linears for v in (x, linear))
    outs = output.args[0]
    output.args = ((tuple(outs) if isinstance(outs, (list, tuple)) else (outs,)) + extra,)
    gm.graph._codegen = torch.fx.graph.CodeGen()  # plain tuple output (export's pytree spec has one leaf)
    gm.graph.lint()
    gm.recompile()
    return [linear for linear, _ in linears]


def _reference(gm, linear, x: torch.Tensor):
    """Eager's dynamic linear (the chain the fused op replaces) on x, and the bound of the module
    docstring."""
    dq_x, dq_w, bias = linear.args[:3]
    _, _, _, qmin, qmax, dtype = dq_x.args[:6]
    eps = dq_x.args[1].args[0].args[3]  # choose_qparams.tensor's eps
    w, w_scale, w_zp, b = (operator.attrgetter(a.target)(gm) for a in (*dq_w.args[:3], bias))
    x2 = x.reshape(-1, x.shape[-1])
    scale, zp = qd.choose_qparams.tensor(x2, qmin, qmax, eps, dtype)
    xf = qd.dequantize_per_tensor.tensor(qd.quantize_per_tensor.tensor(x2, scale, zp, qmin, qmax, dtype), scale, zp,
                                         qmin, qmax, dtype)
    wf = qd.dequantize_per_channel.default(w, w_scale, w_zp, 0, -128, 127, torch.int8)
    y = torch.addmm(b, xf, wf.t())
    bound = dot_rel(x.shape[-1]) * (xf.abs() @ wf.abs().t() + b.abs())
    return y, bound


@pytest.fixture(scope="module")
def bert():
    """(quantized GraphModule as converted, the same with its linears exposed, those linears, ids)."""
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (1, SEQ))
    converted = quantize_pt2e(LastHidden().eval(), (ids,), calibration=[(ids,)], dynamic=True, dynamic_shapes=DIMS)
    exposed = copy.deepcopy(converted)
    linears = expose_linears(exposed)
    assert len(linears) == LINEARS
    return converted, exposed, linears, ids


@pytest.fixture(scope="module")
def compiled(bert):
    """The exposed graph compiled (strict: nothing in eager) at 1 thread, its outputs, its stats."""
    _, gm, _, ids = bert
    twb.reset_stats()
    model = torch.compile(gm, backend="wasm", options={"strict": True, "threads": 1})
    with torch.no_grad():
        got = model(ids)
    return got, twb.stats()


def test_every_linear_runs_as_int8_and_matches_pytorch(bert, compiled):
    _, gm, linears, _ = bert
    got, s = compiled
    for i, linear in enumerate(linears):
        x, y = got[1 + 2 * i], got[2 + 2 * i]
        ref, bound = _reference(gm, linear, x)
        err = (y.reshape(ref.shape).double() - ref.double()).abs()
        assert (err <= bound).all(), f"{linear.name}: max error {float(err.max())}"
    assert_ran_in_wasm(s)
    assert s["lowered_by_op"].get("twb_quant::dynamic_linear", 0) == LINEARS, dict(s["lowered_by_op"])
    assert s["plan_kernels"].get("QGEMM_DYN", 0) == LINEARS
    assert not any(k in s["plan_kernels"] for k in ("QUANTIZE", "DEQUANTIZE"))  # no float GEMM on int8 weights


@pytest.fixture(scope="module")
def exported(bert, compiled, tmp_path_factory):
    """The quantized and the float model exported (their metadata), the file, ids and the compiled
    quantized model's output (1 thread)."""
    converted, _, _, ids = bert
    path = tmp_path_factory.mktemp("int8_dynamic") / "bert_int8.wasm"
    meta = twb.export(converted, (ids,), str(path), dynamic_shapes=DIMS)
    torch.manual_seed(0)
    float_meta = twb.export(LastHidden().eval(), (ids,), str(path.with_name("bert_f32.wasm")), dynamic_shapes=DIMS)
    return path, meta, float_meta, ids, compiled[0][0]


def test_exported_file_runs_the_int8_kernels_as_compiled(exported):
    path, _, _, ids, expected = exported
    loaded = twb.load(str(path), threads=1)
    assert loaded.metadata["kernel_calls"].get("QGEMM_DYN", 0) == LINEARS
    assert torch.equal(loaded(ids), expected)


def test_exported_weights_are_int8(exported):
    """Each linear's weight is stored as int8 rows (kp = K here: K is a multiple of 8) plus a row sum
    and a scale per output channel (int32, float32) instead of float32 [N, K]: the weights section
    shrinks by 3 * N * K - 8 * N bytes per linear, less up to ALIGN bytes of padding for each of the
    three constants (the bias, embeddings and layer norms are float32 in both files)."""
    _, meta, float_meta, _, _ = exported
    shapes = [(HIDDEN, HIDDEN)] * 4 + [(INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)]
    saved = LAYERS * sum(3 * n * k - 8 * n - 3 * ALIGN for n, k in shapes)
    assert float_meta["layout"]["weights_bytes"] - meta["layout"]["weights_bytes"] >= saved


def test_exported_file_runs_in_node(exported, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "export"))
    from test_export_dynamic import _node_runs, _runs_json
    from test_export_node import NODE
    if NODE is None:
        pytest.skip("Node.js is not installed (scripts/setup.sh installs it)")
    path, _, _, ids, expected = exported
    other = torch.randint(0, 100, (1, 13))
    with torch.no_grad():
        other_expected = twb.load(str(path), threads=1)(other)
    runs = _node_runs(path, 1, _runs_json(tmp_path, [{"ids": ("int64", x)} for x in (ids, other)]))
    for got, e in zip(runs, (expected, other_expected)):
        (out,) = got.values()
        assert torch.equal(torch.tensor(out["data"], dtype=torch.float32).reshape(e.shape), e)


def test_linear_without_bias_and_relu_between():
    """nn.Linear(bias=False) decomposes to mm, not addmm: it fuses too. The second linear's input
    (after the first linear and a relu) can differ from eager's by float rounding, so one of its
    quantized values can sit one LSB away: its output is held to one input LSB on every input,
    s_x * sum_k |w_f[n, k]| (s_x: the scale eager chose for that input; ours differs from it by
    float rounding), plus MATMUL's float32 tolerance."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 33, bias=False), torch.nn.ReLU(), torch.nn.Linear(33, 5)).eval()
    x = torch.randn(2, 5, 20)
    gm = quantize_pt2e(model, (x,), calibration=[(x,)], dynamic=True)
    compiled = torch.compile(gm, backend="wasm", options={"strict": True})
    (first, _), (last, _) = _linears(gm)
    with torch.no_grad():
        got, expected = compiled(x), gm(x)
        w1, ws1, wz1 = (operator.attrgetter(a.target)(gm) for a in first.args[1].args[:3])
        eps = first.args[0].args[1].args[0].args[3]  # choose_qparams.tensor's eps
        hidden = torch.relu(dynamic_linear(x.reshape(-1, 20), 0, 255, eps, torch.uint8, w1, ws1, wz1, None))
    s = twb.stats()
    assert s["lowered_by_op"].get("twb_quant::dynamic_linear", 0) == 2, dict(s["lowered_by_op"])
    w, w_scale = (operator.attrgetter(a.target)(gm) for a in last.args[1].args[:2])
    x_scale, _ = qd.choose_qparams.tensor(hidden, 0, 255, eps, torch.uint8)  # eager's scale of that input
    bound = float(x_scale) * (w.float() * w_scale[:, None]).abs().sum(1) + MATMUL["atol"] + MATMUL["rtol"] * expected.abs()
    assert ((got - expected).abs() <= bound).all()
