"""Limits (time limit through epoch interruption, memory cap), a stalled worker, the verify
option, profiler spans, the logger's env var, and the on-disk compile cache."""
import json
import logging
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn

import torch_wasm_backend as twb
from torch_wasm_backend.testing import inject_stalls
from helpers import MATMUL


@pytest.mark.parametrize("threads", [1, 2])
def test_stalled_kernel_hits_the_time_limit_and_the_runtime_stays_usable(threads):
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU()).eval()
    compiled = torch.compile(model, backend="wasm", options={"threads": threads, "timeout_ms": 200})
    x = torch.randn(4, 8)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
        t0 = time.monotonic()
        with inject_stalls(1), pytest.raises(twb.WasmTimeout, match=r"time limit of 200 ms.*timeout_ms.*rebuilt"):
            compiled(x)
        assert time.monotonic() - t0 < 30  # not a hang (generous: a loaded CI machine)
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)  # usable again, in wasm
    s = twb.stats()
    assert s["timeouts"] == 1 and s["calls"] == 2


def test_memory_cap_sends_big_plans_to_eager_or_raises_in_strict():
    f = torch.compile(lambda x: (x @ x.t()).relu(), backend="wasm", options={"max_memory_mb": 1})
    small, big = torch.randn(8, 8), torch.randn(700, 8)  # 700x700 floats = 1.9 MiB of output
    with torch.no_grad():
        torch.testing.assert_close(f(small), (small @ small.t()).relu(), **MATMUL)
        torch.testing.assert_close(f(big), (big @ big.t()).relu(), **MATMUL)
    s = twb.stats()
    assert s["calls"] == 1 and s["eager_partition_calls"] == 1
    assert any("over max_memory_mb=1" in r["reason"] for r in s["fallback_nodes"])
    strict = torch.compile(lambda x: (x @ x.t()).sigmoid(), backend="wasm",
                           options={"max_memory_mb": 1, "strict": True})
    with torch.no_grad(), pytest.raises(twb.WasmOutOfMemory, match="max_memory_mb"):
        strict(big)


def test_verify_compares_with_eager_then_stops():
    model = nn.Sequential(nn.Linear(5, 5), nn.Tanh()).eval()
    compiled = torch.compile(model, backend="wasm", options={"verify": 2})
    with torch.no_grad():
        for _ in range(4):
            x = torch.randn(3, 5)
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)
    s = twb.stats()
    assert s["verify_passes"] == 2 and s["verify_mismatches"] == 0 and s["calls"] == 4


def test_verify_mismatch_moves_the_partition_to_eager(caplog):
    model = nn.Sequential(nn.Linear(5, 5), nn.Tanh()).eval()
    compiled = torch.compile(model, backend="wasm", options={"verify": 3})
    x = torch.randn(3, 5)
    with torch.no_grad():
        compiled(x)
        # Change the weight through .data: that bypasses the parameter's version counter, so the
        # backend keeps the weights it uploaded (documented) — exactly what verify is for.
        version = model[0].weight._version
        model[0].weight.data.add_(1.0)
        assert model[0].weight._version == version
        with caplog.at_level(logging.WARNING, logger="torch_wasm_backend"):
            got = compiled(x)
    torch.testing.assert_close(got, model(x), **MATMUL)
    s = twb.stats()
    assert s["verify_mismatches"] == 1, s
    assert "differs from eager" in caplog.text
    assert any("verify" in r["reason"] for r in s["fallback_nodes"])


@pytest.mark.parametrize("per_kernel", [False, True])
def test_profiler_spans(per_kernel):
    model = nn.Sequential(nn.Linear(6, 6), nn.Softmax(-1)).eval()
    compiled = torch.compile(model, backend="wasm", options={"profile_kernels": per_kernel})
    x = torch.randn(2, 6)
    with torch.no_grad():
        compiled(x)
        with torch.profiler.profile() as prof:
            compiled(x)
    names = {e.name for e in prof.events()}
    if per_kernel:
        assert {"wasm::GEMM", "wasm::SOFTMAX"} <= names, names
    else:
        assert any(n.startswith("wasm::graph") for n in names), names


def test_log_level_env_var():
    code = ("import logging, torch_wasm_backend; "
            "print(logging.getLogger('torch_wasm_backend').getEffectiveLevel())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "TORCH_WASM_BACKEND_LOG": "debug"})
    assert out.stdout.strip() == str(logging.DEBUG)


_START = """
import json, time, torch
t0 = time.perf_counter()
from torch_wasm_backend import runtime
runtime.get_runtime(1)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def _new_process(cache_dir, log=""):
    env = {**os.environ, "TORCH_WASM_BACKEND_CACHE_DIR": str(cache_dir), "TORCH_WASM_BACKEND_LOG": log or "WARNING"}
    out = subprocess.run([sys.executable, "-c", _START], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_compile_cache_is_written_reused_and_rebuilt_when_corrupt(tmp_path):
    _, _ = _new_process(tmp_path)
    entries = list(tmp_path.glob("kernels-*.cwasm"))
    assert len(entries) == 1
    first = entries[0].read_bytes()
    _, err = _new_process(tmp_path, "DEBUG")
    assert "kernel module: cache" in err
    entries[0].write_bytes(first[: len(first) // 2])  # truncated
    _, err = _new_process(tmp_path, "DEBUG")
    assert "ignoring compile cache entry" in err and "compiled+cached" in err
    assert entries[0].read_bytes() == first  # rebuilt, same artifact
    entries[0].write_bytes(b"not a cache entry at all")
    _, err = _new_process(tmp_path)
    assert "ignoring compile cache entry" in err


def test_compile_cache_can_be_turned_off(tmp_path):
    _, err = _new_process("off", "DEBUG")
    assert "kernel module: compiled" in err and "cached" not in err
