"""A bug of ours never breaks a model that runs in eager: an exception while lowering a partition
(other than Unsupported, the normal "cannot lower") sends that partition to eager, and one while
partitioning sends the whole graph; either way the error's type and message are in
stats()["fallback_nodes"] and explain(), and the traceback is logged at WARNING once. With strict,
WasmBackendError chained to the error (its __cause__) is raised instead."""
import logging

import pytest
import torch
import torch.nn as nn

import torch_wasm_backend as twb
import torch_wasm_backend.lowering.partition
from torch_wasm_backend.lowering.registry import REGISTRY

aten = torch.ops.aten
MESSAGE = "injected lowering bug"


def mlp():
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).eval()


@pytest.fixture
def broken_tanh(monkeypatch):
    """tanh's lowering raises a RuntimeError (standing for any bug in a lowering)."""
    def lower(ctx, node):
        raise RuntimeError(MESSAGE)
    monkeypatch.setattr(REGISTRY[aten.tanh.default], "lower", lower)


@pytest.fixture
def broken_partitioner(monkeypatch):
    """The partitioner's support check raises a KeyError (standing for any bug in partitioning)."""
    def support_reason(node, static):
        raise KeyError(MESSAGE)
    monkeypatch.setattr(torch_wasm_backend.lowering.partition, "support_reason", support_reason)


def _tracebacks(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.exc_info]


def test_lowering_error_runs_the_partition_in_eager_loudly(broken_tanh, caplog):
    model = mlp()
    compiled = torch.compile(model, backend="wasm", dynamic=True)  # one graph for every batch size
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="torch_wasm_backend"):
        for batch in (4, 4, 7):  # a second signature of the partition lowers again, fails again
            x = torch.randn(batch, 6)
            torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)  # eager's own result
    s = twb.stats()
    assert s["calls"] == 0 and s["eager_partition_calls"] == 3
    reasons = [f["reason"] for f in s["fallback_nodes"] if f["op"] == "partition"]
    assert len(reasons) == 2 and all(f"internal error while lowering: RuntimeError: {MESSAGE}" in r
                                     for r in reasons)
    [logged] = _tracebacks(caplog)  # the traceback once, not once per signature
    assert logged.exc_info[0] is RuntimeError and MESSAGE in logged.getMessage()


def test_lowering_error_is_in_explain(broken_tanh):
    report = twb.explain(mlp(), torch.randn(4, 6))
    [partition] = report.partitions
    assert f"RuntimeError: {MESSAGE}" in partition.eager_reason
    assert report.lowered_nodes == 0 and report.total_nodes > 0
    assert any(f.op == "partition" and f"RuntimeError: {MESSAGE}" in f.reason for f in report.fallback)
    assert f"RuntimeError: {MESSAGE}" in str(report)


def test_lowering_error_in_strict_mode_raises_chained_to_the_cause(broken_tanh):
    compiled = torch.compile(mlp(), backend="wasm", options={"strict": True})
    with torch.no_grad(), pytest.raises(twb.WasmBackendError, match=f"RuntimeError: {MESSAGE}") as info:
        compiled(torch.randn(4, 6))
    assert isinstance(info.value.__cause__, RuntimeError) and str(info.value.__cause__) == MESSAGE


def test_unsupported_is_not_an_internal_error(monkeypatch, caplog):
    """Unsupported keeps its own reason and logs no traceback."""
    from torch_wasm_backend.lowering.registry import Unsupported

    def lower(ctx, node):
        raise Unsupported("this shape is not handled")
    monkeypatch.setattr(REGISTRY[aten.tanh.default], "lower", lower)
    model = mlp()
    x = torch.randn(4, 6)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="torch_wasm_backend"):
        torch.testing.assert_close(torch.compile(model, backend="wasm")(x), model(x), rtol=0, atol=0)
    [reason] = [f["reason"] for f in twb.stats()["fallback_nodes"] if f["op"] == "partition"]
    assert "this shape is not handled" in reason and "internal error" not in reason
    assert _tracebacks(caplog) == []


def test_partitioning_error_runs_the_whole_graph_in_eager_loudly(broken_partitioner, caplog):
    model = mlp()
    x = torch.randn(4, 6)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="torch_wasm_backend"):
        got = torch.compile(model, backend="wasm")(x)
    torch.testing.assert_close(got, model(x), rtol=0, atol=0)
    s = twb.stats()
    assert s["partitions"] == 0 and s["aten_nodes_lowered"] == 0 and s["calls"] == 0
    assert len(s["fallback_nodes"]) == s["aten_nodes_total"] > 0
    expected = f"internal error while partitioning: KeyError: '{MESSAGE}'"
    assert all(expected in f["reason"] for f in s["fallback_nodes"])
    [logged] = _tracebacks(caplog)
    assert logged.exc_info[0] is KeyError

    report = twb.explain(model, x)
    assert report.partitions == [] and report.lowered_nodes == 0
    assert len(report.fallback) == report.total_nodes > 0
    assert all(expected in f.reason for f in report.fallback)


def test_partitioning_error_in_strict_mode_raises_chained_to_the_cause(broken_partitioner):
    compiled = torch.compile(mlp(), backend="wasm", options={"strict": True})
    with torch.no_grad(), pytest.raises(Exception, match="internal error while partitioning: KeyError") as info:
        compiled(torch.randn(4, 6))
    error = info.value  # Dynamo wraps what a backend raises at compile time; ours is in the chain
    while error is not None and not isinstance(error, twb.WasmBackendError):
        error = error.__cause__ or error.__context__
    assert isinstance(error, twb.WasmBackendError) and isinstance(error.__cause__, KeyError)


def test_lowering_error_in_export_raises_chained_to_the_cause(broken_tanh, tmp_path):
    path = tmp_path / "m.wasm"
    with pytest.raises(twb.WasmBackendError, match=f"internal error while lowering \\(RuntimeError: {MESSAGE}\\)") as info:
        twb.export(mlp(), (torch.randn(4, 6),), path)
    assert isinstance(info.value.__cause__, RuntimeError) and not path.exists()


def test_error_while_making_a_constant_at_load_runs_in_eager_loudly(monkeypatch, caplog):
    """A constant is made when its plan is loaded into a runtime (Buffer.make); a bug there is an
    internal error like one in a lowering: eager runs the call, the reason is recorded, the
    traceback logged once; strict raises WasmBackendError from it."""
    import torch_wasm_backend.residency as residency

    def broken_upload(runtime, offset, buf, args):
        raise ValueError(MESSAGE)
    monkeypatch.setattr(residency, "upload", broken_upload)
    model = mlp()
    x = torch.randn(4, 6)
    compiled = torch.compile(model, backend="wasm")
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="torch_wasm_backend"):
        for _ in range(2):
            torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)
    s = twb.stats()
    assert s["calls"] == 0 and s["eager_partition_calls"] == 2
    [reason] = [f["reason"] for f in s["fallback_nodes"] if f["op"] == "partition"]
    assert f"internal error while loading the plan: ValueError: {MESSAGE}" in reason
    assert len(_tracebacks(caplog)) == 1
    torch._dynamo.reset()
    strict = torch.compile(model, backend="wasm", options={"strict": True})
    with torch.no_grad(), pytest.raises(Exception) as info:
        strict(x)
    chain, error = [], info.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    assert any(isinstance(e, twb.WasmBackendError) for e in chain)
    assert any(isinstance(e, ValueError) and str(e) == MESSAGE for e in chain)
