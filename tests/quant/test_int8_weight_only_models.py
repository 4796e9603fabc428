"""A transformers BertModel (hidden 64, 2 layers) quantized with torchao's Int8WeightOnlyConfig
(quantize_: every nn.Linear's weight an int8 tensor subclass with a per-channel scale, float
activations), compiled with backend="wasm" and exported, against PyTorch's execution of the same
quantized model (not the float model).

Tolerance: every linear runs on WOLINEAR, which computes eager's chain (mm of x and the float32 cast
of the int8 weight, times the scale, plus the bias) with the dot product summed in another order;
the rest of the model is the float32 BERT our float tests check. Nothing is requantized, so no
rounding boundary can amplify a difference: MATMUL (tests/helpers.py), the float32 GEMM tolerance.

The exported file runs in wasmtime and Node.js at 1 thread, as the compiled model does: same
kernels, same thread count, so the same bits."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import tv_import  # noqa: F401  (before transformers, which imports torchvision)
import torch_wasm_backend as twb
from helpers import MATMUL, assert_ran_in_wasm
from test_int8_dynamic_models import LAYERS, LastHidden
from torch_wasm_backend.exporter import ALIGN

torchao_quant = pytest.importorskip("torchao.quantization", reason="pip install torchao==0.18.0")
transformers = pytest.importorskip("transformers")

HIDDEN, INTERMEDIATE, SEQ = 64, 96, 9
LINEARS = LAYERS * 6  # q, k, v, attention output, intermediate, output


def weight_only(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of model with torchao's Int8WeightOnlyConfig applied to its linears."""
    model = copy.deepcopy(model)
    torchao_quant.quantize_(model, torchao_quant.Int8WeightOnlyConfig())
    return model


@pytest.fixture(scope="module")
def bert():
    """(float model, its weight-only int8 copy, ids, the int8 copy's eager output)."""
    torch.manual_seed(0)
    model = LastHidden(HIDDEN, INTERMEDIATE).eval()
    qmodel = weight_only(model)
    ids = torch.randint(0, 100, (1, SEQ))
    with torch.no_grad():
        expected = qmodel(ids)
    return model, qmodel, ids, expected


@pytest.fixture(scope="module")
def compiled(bert):
    """The int8 model compiled (strict: nothing in eager) at 1 thread: its output and stats."""
    _, qmodel, ids, _ = bert
    torch._dynamo.reset()
    twb.reset_stats()
    with torch.no_grad():
        got = torch.compile(qmodel, backend="wasm", options={"strict": True, "threads": 1})(ids)
    return got, twb.stats()


def test_every_linear_reads_int8_weights_and_matches_pytorch(bert, compiled):
    *_, expected = bert
    got, s = compiled
    torch.testing.assert_close(got, expected, **MATMUL)
    assert_ran_in_wasm(s)
    assert s["lowered_by_op"].get("twb_quant::weight_only_linear", 0) == LINEARS, dict(s["lowered_by_op"])
    assert s["plan_kernels"].get("WOLINEAR", 0) == LINEARS


@pytest.fixture(scope="module")
def exported(bert, tmp_path_factory):
    """The int8 and the float model exported: (int8 file, its metadata, the float file's metadata)."""
    model, qmodel, ids, _ = bert
    path = tmp_path_factory.mktemp("int8_weight_only") / "bert_wo_int8.wasm"
    meta = twb.export(qmodel, (ids,), str(path))
    float_meta = twb.export(model, (ids,), str(path.with_name("bert_f32.wasm")))
    return path, meta, float_meta


def test_exported_file_runs_the_int8_kernel_as_compiled(bert, compiled, exported):
    path, meta, _ = exported
    _, _, ids, _ = bert
    assert meta["kernel_calls"].get("WOLINEAR", 0) == LINEARS
    assert torch.equal(twb.load(str(path), threads=1)(ids), compiled[0])


def test_exported_weights_are_int8(exported):
    """Each linear's weight is stored as int8 [N, K] (packed; N is a multiple of the 8-channel panel
    here) plus a float32 scale per output channel instead of float32 [N, K]: the weights section
    shrinks by 3 * N * K - 4 * N bytes per linear, less up to ALIGN bytes of padding for each of the
    two constants (the bias, embeddings and layer norms are float32 in both files)."""
    _, meta, float_meta = exported
    shapes = [(HIDDEN, HIDDEN)] * 4 + [(INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)]
    saved = LAYERS * sum(3 * n * k - 4 * n - 2 * ALIGN for n, k in shapes)
    assert float_meta["layout"]["weights_bytes"] - meta["layout"]["weights_bytes"] >= saved


def test_exported_file_runs_in_node(bert, compiled, exported, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "export"))
    from test_export_dynamic import _node_runs, _runs_json
    from test_export_node import NODE
    if NODE is None:
        pytest.skip("Node.js is not installed (scripts/setup.sh installs it)")
    path, _, _ = exported
    _, _, ids, _ = bert
    (got,) = _node_runs(path, 1, _runs_json(tmp_path, [{"ids": ("int64", ids)}]))
    (out,) = got.values()
    expected = compiled[0]
    assert torch.equal(torch.tensor(out["data"], dtype=torch.float32).reshape(expected.shape), expected)


def test_unmatched_cast_weight_stays_float_and_says_so():
    """An int8 weight cast to float32 for an mm with no per-channel scale after it is not the
    pattern: it runs as before (cast + float32 GEMM, in wasm) and explain says why."""
    class CastOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.randint(-128, 128, (6, 10), dtype=torch.int8))

        def forward(self, x):
            return x @ self.w.t().float()

    x = torch.randn(3, 10)
    report = twb.explain(CastOnly(), x)
    (row,) = report.int8
    assert not row.fused and "per-output-channel scale" in row.reason
    assert not report.fallback


def test_decoding_step_gemv_in_node_equals_wasmtime(tmp_path, monkeypatch):
    """One row (a batch-1 decoding step: WOLINEAR's GEMV path, which the BERT above at 9 tokens does
    not take) exported and run in Node.js: equal to wasmtime's run of the same file (same kernels,
    1 thread), and within MATMUL of eager's run of the same int8-weight model."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "export"))
    from test_export_dynamic import _node_runs, _runs_json
    from test_export_node import NODE
    if NODE is None:
        pytest.skip("Node.js is not installed (scripts/setup.sh installs it)")
    torch.manual_seed(0)
    qmodel = weight_only(torch.nn.Sequential(torch.nn.Linear(37, 70), torch.nn.GELU(), torch.nn.Linear(70, 29)).eval())
    x = torch.randn(1, 37)
    path = tmp_path / "mlp_wo_int8.wasm"
    meta = twb.export(qmodel, (x,), str(path))
    assert meta["kernel_calls"].get("WOLINEAR", 0) == 2
    expected = twb.load(str(path), threads=1)(x)
    with torch.no_grad():
        torch.testing.assert_close(expected, qmodel(x), **MATMUL)
    (got,) = _node_runs(path, 1, _runs_json(tmp_path, [{"input": ("float32", x)}]))
    (out,) = got.values()
    assert torch.equal(torch.tensor(out["data"], dtype=torch.float32).reshape(expected.shape), expected)
