"""Backend behaviour around the kernels: registration, options, guards and the plan cache,
parameters changed after compiling, fallback with reasons, strict mode, trap recovery."""
import logging
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import torch_wasm_backend as twb
from torch_wasm_backend.testing import inject_traps
from helpers import MATMUL, assert_ran_in_wasm

REPO = Path(__file__).resolve().parents[2]


def test_backend_registered_without_import():
    out = subprocess.run(
        ["python", "-c", "import torch._dynamo as d; print('wasm' in d.list_backends())"],
        capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_unknown_option_is_a_clear_error():
    f = torch.compile(lambda x: x + 1, backend="wasm", options={"thread": 2})
    with pytest.raises(Exception, match=r"unknown option\(s\) \['thread'\].*valid options"):
        f(torch.ones(3))


def test_bad_option_type():
    f = torch.compile(lambda x: x + 1, backend="wasm", options={"threads": "two"})
    with pytest.raises(Exception, match="'threads' must be an int"):
        f(torch.ones(3))


def test_new_shapes_get_new_plans_and_the_cache_is_bounded():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU()).eval()
    compiled = torch.compile(model, backend="wasm", options={"max_plans_per_partition": 2},
                             dynamic=False)
    with torch.no_grad():
        for rows in (3, 4, 5, 3, 4, 5, 3):
            x = torch.randn(rows, 6)
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)
    s = twb.stats()
    assert s["calls"] == 7
    assert s["eager_partition_calls"] == 0


def test_signature_includes_strides():
    f = torch.compile(lambda x: torch.relu(x) * 2, backend="wasm")
    x = torch.randn(5, 7)
    with torch.no_grad():
        torch.testing.assert_close(f(x), torch.relu(x) * 2)
        xt = torch.randn(7, 5).t()  # same shape, other strides
        torch.testing.assert_close(f(xt), torch.relu(xt) * 2)
    assert twb.stats()["calls"] == 2


def test_parameter_changed_in_place_is_not_stale():
    model = nn.Linear(4, 3).eval()
    compiled = torch.compile(model, backend="wasm")
    x = torch.randn(2, 4)
    with torch.no_grad():
        compiled(x)
        model.weight.mul_(2.0)
        model.bias.add_(1.0)
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)


def test_unsupported_op_falls_back_with_reason():
    def f(x):
        return torch.cumprod(torch.relu(x), 0) * 3
    x = torch.randn(4, 5)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(f, backend="wasm")(x), f(x))
    s = twb.stats()
    reasons = {r["op"]: r["reason"] for r in s["fallback_nodes"]}
    assert "no wasm lowering for aten::cumprod" in reasons["aten::cumprod"]
    assert s["lowered_by_op"].get("aten::relu") == 1


def test_other_dtypes_fall_back_with_reason():
    f = torch.compile(lambda x: (x * 2).relu(), backend="wasm")
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(f(x), (x * 2).relu())
    assert any("dtype float64" in r["reason"] for r in twb.stats()["fallback_nodes"])


def test_strict_mode_raises_naming_op_and_reason():
    f = torch.compile(lambda x: torch.cumprod(x, 0), backend="wasm", options={"strict": True})
    with pytest.raises(Exception, match=r"cumprod.*no wasm lowering for aten::cumprod"):
        f(torch.randn(3))


def test_trap_inside_wasm_recovers_with_eager_result(caplog):
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh()).eval()
    compiled = torch.compile(model, backend="wasm", options={"max_failures": 2})
    x = torch.randn(3, 8)
    with torch.no_grad():
        compiled(x)
        with caplog.at_level(logging.WARNING, logger="torch_wasm_backend"), inject_traps(1):
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)
        assert "trapped inside wasm" in caplog.text and "unreachable" in caplog.text
        s = twb.stats()
        assert s["recoveries"] == 1
        # The runtime was rebuilt: the next call runs in wasm again, with right numbers.
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
        assert twb.stats()["calls"] == s["calls"] + 1
        # A second failure reaches max_failures: the partition stays on eager, and says so.
        with inject_traps(1):
            compiled(x)
        calls = twb.stats()["calls"]
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
        s = twb.stats()
        assert s["calls"] == calls and s["eager_partition_calls"] >= 1
        assert any("kept on eager" in r["reason"] for r in s["fallback_nodes"])


def test_trap_in_strict_mode_raises_with_details():
    model = nn.Linear(4, 4).eval()
    compiled = torch.compile(model, backend="wasm", options={"strict": True})
    with torch.no_grad():
        compiled(torch.randn(2, 4))
        with inject_traps(1), pytest.raises(twb.WasmBackendError, match=r"trapped inside wasm.*unreachable.*\(2, 4\)"):
            compiled(torch.randn(2, 4))


def test_missing_emcc_says_how_to_install():
    out = subprocess.run(["make", "-B", "-s", "kernels", "EMCC=emcc-that-does-not-exist"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "apt-get install -y emscripten" in out.stdout + out.stderr


def test_missing_or_corrupt_module_is_a_clear_error(tmp_path, monkeypatch):
    from torch_wasm_backend import runtime
    monkeypatch.setattr(runtime, "_modules", {})
    monkeypatch.setitem(runtime.KERNEL_BUILDS, "baseline", tmp_path / "nope.wasm")
    with pytest.raises(twb.WasmBackendError, match="make kernels"):
        runtime._engine_module(simd="baseline")
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0garbage")
    monkeypatch.setitem(runtime.KERNEL_BUILDS, "baseline", bad)
    with pytest.raises(twb.WasmBackendError, match="not a valid kernel module"):
        runtime._engine_module(simd="baseline")


def test_unknown_simd_build_is_a_clear_error(monkeypatch):
    from torch_wasm_backend import runtime
    monkeypatch.setenv(runtime.SIMD_ENV, "avx")
    with pytest.raises(twb.WasmBackendError, match="use one of baseline, relaxed"):
        runtime.simd_build()


def test_abi_version_mismatch_is_detected(monkeypatch):
    from torch_wasm_backend import runtime
    monkeypatch.setattr(runtime.ABI, "version", runtime.ABI.version + 1)
    with pytest.raises(twb.WasmBackendError, match="ABI version"):
        runtime.Runtime(threads=1)


def test_stats_keys_and_reset():
    f = torch.compile(lambda x: x.sigmoid() + 1, backend="wasm")
    with torch.no_grad():
        f(torch.randn(10))
    s = twb.stats()
    for key in ("graphs_compiled", "partitions", "aten_nodes_lowered", "aten_nodes_total",
                "lowered_by_op", "fallback_nodes", "calls", "seconds_in_wasm", "seconds_host",
                "bytes_copied_in", "bytes_copied_out", "plan_cache_hits", "plan_cache_misses",
                "recoveries"):
        assert key in s
    assert_ran_in_wasm(s)
    assert s["bytes_copied_in"] == 40 and s["bytes_copied_out"] == 40
    twb.reset_stats()
    assert twb.stats()["calls"] == 0


def test_docs_op_table_is_generated_from_the_registry():
    from torch_wasm_backend.__main__ import ops_table
    assert (REPO / "docs" / "ops.md").read_text() == ops_table(), \
        "docs/ops.md is stale: run `python -m torch_wasm_backend ops > docs/ops.md`"


def test_out_of_wasm_memory_runs_in_eager_with_reason(monkeypatch):
    from torch_wasm_backend import runtime
    from torch_wasm_backend.wasm_layer import PAGE
    runtime.rebuild_runtime()
    rt, _ = runtime.get_runtime(1)
    # Cap the memory a little above what is in use: a 64 MiB intermediate no longer fits.
    monkeypatch.setattr(runtime, "MAX_PAGES", rt.memory.nbytes // PAGE + 64)
    f = torch.compile(lambda a, b: torch.relu(a @ b).sum(), backend="wasm")
    a, b = torch.randn(4096, 1), torch.randn(1, 4096)
    with torch.no_grad():
        torch.testing.assert_close(f(a, b), torch.relu(a @ b).sum(), rtol=1e-4, atol=1e-2)
    s = twb.stats()
    assert s["eager_partition_calls"] == 1
    assert any("MiB of wasm memory" in r["reason"] for r in s["fallback_nodes"])
    strict = torch.compile(lambda a, b: torch.relu(a @ b).sum() + 1, backend="wasm", options={"strict": True})
    with torch.no_grad(), pytest.raises(twb.WasmOutOfMemory, match="MiB of wasm memory"):
        strict(a, b)


def test_dynamic_shapes_plan_from_symbolic_meta_without_retracing(monkeypatch):
    """dynamic=True: one Dynamo graph; each new length gets a plan from the graph's symbolic meta
    values (no re-tracing: the tracing fallback is made to fail here), with eager's numbers."""
    import torch_wasm_backend.lowering.lower

    def no_tracing(*_):
        raise AssertionError("re-traced a graph whose symbolic shapes were known")

    monkeypatch.setattr(torch_wasm_backend.lowering.lower, "concrete_values", no_tracing)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).eval()
    compiled = torch.compile(layer, backend="wasm", dynamic=True)
    with torch.no_grad():
        for length in (3, 9, 17, 4):
            x = torch.randn(2, length, 16)
            torch.testing.assert_close(compiled(x), layer(x), **MATMUL)
    s = twb.stats()
    assert s["graphs_compiled"] == 1
    assert s["plan_cache_misses"] == 4 and s["calls"] == 4


def test_parameter_replaced_is_not_stale():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    compiled = torch.compile(model, backend="wasm")
    x = torch.randn(2, 4)
    with torch.no_grad():
        compiled(x)
        model[0].weight = nn.Parameter(torch.randn(3, 4))
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
        model.load_state_dict({k: v * 3 for k, v in model.state_dict().items()})
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
    assert twb.stats()["eager_partition_calls"] == 0


def test_mark_dynamic_batch_size():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2)).eval()
    compiled = torch.compile(model, backend="wasm")
    with torch.no_grad():
        for batch in (2, 5, 3):
            x = torch.randn(batch, 3, 6, 6)
            torch._dynamo.mark_dynamic(x, 0)
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)
    s = twb.stats()
    assert s["graphs_compiled"] == 1 and s["calls"] == 3 and s["eager_partition_calls"] == 0
