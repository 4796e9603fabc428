"""Damaged and hostile exported files (tests/export/fuzz_corpus.py, ~300 variants of the MLP export) in
twb.load + call, the CLI (info and run, as subprocesses) and Node's loadModel + run: each gives the
clear error (WasmBackendError / one line from the CLI / ModelFileError), or for a self-consistent
edited file a run with the declared output shapes; never a hang, a crash or a raw exception.
Also: Ctrl-C stops the CLI inside an endless run_plan, and dropped models free their threads."""
import gc
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import torch_wasm_backend as twb
from torch_wasm_backend.errors import WasmBackendError, WasmTimeout
from fuzz_corpus import write as write_corpus
from test_export_node import DRIVERS, LOADER, NODE

TIMEOUT_MS = 1000


@pytest.fixture(scope="module")
def corpus(exported, tmp_path_factory):
    e = exported["mlp"]
    return e, write_corpus(e.path, tmp_path_factory.mktemp("fuzz"))


def _python_outcome(path, x, threads=1) -> tuple[str, object]:
    """("ran", outputs) | ("error", WasmBackendError) | ("timeout", error); other exceptions propagate."""
    try:
        with twb.load(path, threads=threads, timeout_ms=TIMEOUT_MS) as m:
            out = m(x)
            return "ran", (m.metadata, out)
    except WasmTimeout as err:
        return "timeout", err
    except WasmBackendError as err:
        return ("timeout" if "time limit" in str(err) else "error"), err


def test_corpus_in_python(corpus):
    e, cases = corpus
    with twb.load(e.path) as m:
        reference = m(e.x)
    counts = {}
    for case, path in cases:
        hostile_module = case.expect == "timeout" or "run_plan" in case.name or "worker_loop" in case.name
        for threads in ((1, 2) if hostile_module else (1,)):
            outcome, detail = _python_outcome(path, e.x, threads)
            where = f"{case.name} (threads={threads}): {outcome} {str(detail)[:200]}"
            if case.expect in ("error", "timeout"):
                assert outcome == case.expect, where
            else:
                assert outcome in ("error", "ran"), where
            if outcome == "ran":
                meta, out = detail
                assert list(out.shape) == meta["outputs"][0]["shape"], where
                outcome = "ran, same output" if torch.equal(out, reference) else "ran, other output"
            counts[outcome] = counts.get(outcome, 0) + 1
    print("python outcomes:", counts)
    assert counts["error"] > 250 and counts["timeout"] >= 3


def test_corpus_in_node(corpus, tmp_path):
    if NODE is None:
        pytest.skip("Node.js is not installed")
    e, cases = corpus
    x_file = tmp_path / "x.f32"
    x_file.write_bytes(e.x.numpy().astype("<f4").tobytes())
    run = subprocess.run([NODE, str(DRIVERS / "fuzz.mjs"), str(LOADER), str(x_file), str(e.path),
                          *(str(p) for _, p in cases)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for case, path in cases:
        r = results[str(path)]
        where = f"{case.name}: {r}"
        if case.expect == "error":
            assert r["outcome"] == "error" and r["name"] == "ModelFileError", where
        elif case.expect == "timeout":
            assert r["outcome"] == "error" and r["name"] in ("ModelFileError", "ModelTimeoutError") \
                and ("time limit" in r["message"] or "within" in r["message"]), where
        elif r["outcome"] == "error":
            assert r["name"] in ("ModelFileError", "ModelInputError"), where
        else:
            assert r["shapesOk"], where


# Each CLI call imports torch (seconds on a busy machine): `info` on damaged files, `run` on hostile
# modules (the Python run above covers every file in-process).
MODULE_CASES = ("imports wasi fd_write", "start function loops forever", "run_plan loops forever")
CLI_CASES = ("truncated at 9", "400 KB LEB128 section size", "meta variants.0.outputs.0.offset huge",
             "meta nested 100000 deep") + MODULE_CASES


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "torch_wasm_backend", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=Path(twb.__file__).parent.parent)


def test_corpus_in_cli(corpus, tmp_path):
    """`info` (reads sections and metadata, compiles nothing) or `run` on a sample of the corpus."""
    e, cases = corpus
    x_file = tmp_path / "x.npy"
    np.save(x_file, e.x.numpy())
    chosen = {}
    for case, path in cases:
        key = next((k for k in CLI_CASES if case.name.startswith(k)), None)
        if key is not None:
            chosen.setdefault(key, (case, path))
    assert len(chosen) == len(CLI_CASES)
    for key, (case, path) in chosen.items():
        commands = [("run", path, "--input", x_file, "--timeout-ms", TIMEOUT_MS)] if key in MODULE_CASES else [("info", path)]
        for command in commands:
            r = _cli(*command)
            where = f"{case.name} {command[0]}: rc={r.returncode} stderr={r.stderr[-2000:]}"
            assert r.returncode == 1, where
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, where
            if case.expect == "timeout":
                assert "time limit" in lines[0], where


def test_ctrl_c_stops_the_cli_inside_wasm(corpus, tmp_path):
    """The CLI's main() with debug logging, so that the test knows when the model is loaded (the
    endless run_plan starts right after), then SIGINT."""
    e, cases = corpus
    path = next(p for c, p in cases if c.name == "run_plan loops forever")
    x_file = tmp_path / "x.npy"
    np.save(x_file, e.x.numpy())
    code = ("import logging, sys; logging.basicConfig(level=logging.DEBUG); "
            "from torch_wasm_backend.__main__ import main; sys.exit(main(sys.argv[1:]))")
    # The child starts with SIGINT's default action, as a command in a terminal does: an ignored SIGINT
    # is inherited across exec, and Python then leaves it ignored (a test runner's worker, or anything
    # it ran in-process, may have set that: the child would never see the Ctrl-C).
    proc = subprocess.Popen([sys.executable, "-c", code, "run", str(path), "--input", str(x_file), "--timeout-ms", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(twb.__file__).parent.parent,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    parent_sigint = signal.getsignal(signal.SIGINT)
    try:
        for line in proc.stderr:
            if "loaded " in line:
                break
        time.sleep(1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (err, f"SIGINT in the test process: {parent_sigint}")
    assert err.strip().splitlines()[-1] == "interrupted", err


def _threads() -> int:
    return threading.active_count()


def test_dropped_models_free_their_threads(exported):
    path = exported["mlp"].path
    gc.collect()
    before = _threads()
    for _ in range(30):
        m = twb.load(path, threads=3)
        m(exported["mlp"].x)  # used, never closed
    del m
    gc.collect()
    deadline = time.time() + 10
    while _threads() > before + 2 and time.time() < deadline:
        time.sleep(0.05)
    assert _threads() <= before + 2, (before, _threads())


def test_context_manager_and_closed_model(exported):
    e = exported["mlp"]
    before = _threads()
    with twb.load(e.path, threads=2) as m:
        torch.testing.assert_close(m(e.x), e.expected, atol=1e-4, rtol=1e-4)
        assert _threads() == before + 1
    assert _threads() == before
    with pytest.raises(WasmBackendError, match="closed"):
        m(e.x)


def test_node_frees_workers_of_collected_models(exported):
    if NODE is None:
        pytest.skip("Node.js is not installed")
    run = subprocess.run([NODE, "--expose-gc", str(DRIVERS / "collect.mjs"), str(LOADER), str(exported["mlp"].path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    # 10 models x (1 controller + 2 pool Workers) while alive; back near the start after gc
    assert counts["loaded"] >= counts["start"] + 30, counts
    assert counts["collected"] <= counts["start"] + 3, counts


def test_load_timeout_is_validated(exported):
    with pytest.raises(WasmBackendError, match="timeout_ms"):
        twb.load(exported["mlp"].path, timeout_ms=-1)


class ReturnsViews(torch.nn.Module):
    """Outputs the validation must accept: a parameter as it is (in the weights), the input itself,
    a broadcast (stride-0) view of it, and a computed tensor."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(3, 5))
        self.lin = torch.nn.Linear(5, 5)

    def forward(self, x):
        return self.lin(x), self.w, x, x.expand(4, 7, 5)


def test_legitimate_unusual_outputs_pass_validation(tmp_path):
    m, x = ReturnsViews().eval(), torch.randn(7, 5)
    path = tmp_path / "views.wasm"
    twb.export(m, (x,), path)
    with torch.no_grad():
        expected = m(x)
    with twb.load(path) as loaded:
        for got, want in zip(loaded(x), expected):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # GEMM vs eager summation order
