"""The relaxed-SIMD kernel build (kernels_relaxed.wasm: f32x4.relaxed_madd in the GEMM, convolution and
depthwise loops) against the baseline build: the same model exported with simd="relaxed" and
simd="baseline" gives the same numbers in wasmtime and in Node.js, and an engine without relaxed SIMD
refuses the relaxed file with an error saying which file to load instead; the compile path runs it
with TORCH_WASM_BACKEND_SIMD=relaxed. (Chromium runs the relaxed file in test_export_browser.py.)"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import torch_wasm_backend as twb
from torch_wasm_backend import wasm_file
from torch_wasm_backend.runtime import KERNEL_BUILDS
from helpers import MATMUL
from export_testing import wasm_tools_print
from test_export_node import DRIVERS, LOADER, NODE

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (scripts/setup.sh installs it)")
RELAXED_FLAG = "--experimental-wasm-relaxed-simd"  # Node.js 20's V8 (11.3) ships relaxed SIMD behind it


def test_builds_differ_only_in_relaxed_madd():
    """The relaxed build really uses relaxed_madd (and the baseline build does not), so that the tests
    below compare two different kernel builds."""
    relaxed, baseline = (wasm_tools_print(KERNEL_BUILDS[b]) for b in ("relaxed", "baseline"))
    assert relaxed.count("f32x4.relaxed_madd") >= 8  # GEMM micro-kernel, depthwise conv, peak loop
    assert "relaxed" not in baseline


def test_relaxed_file_equals_baseline_and_eager(exported):
    """FMA rounds once where mul+add rounds twice: results differ in the last bits, so the two builds
    are compared with MATMUL's tolerance (the one every GEMM-based op is held to against eager)."""
    base, relaxed = exported["cnn"], exported["cnn_relaxed"]
    assert wasm_file.read_metadata(relaxed.path)["simd"] == "relaxed"
    assert wasm_file.read_metadata(base.path)["simd"] == "baseline"
    out_base = twb.load(base.path)(base.x)
    out_relaxed = twb.load(relaxed.path, threads=2)(relaxed.x)
    torch.testing.assert_close(out_relaxed, out_base, **MATMUL)
    torch.testing.assert_close(out_relaxed, relaxed.expected, **MATMUL)


def _node_run(e, tmp_path, *flags):
    x_file = tmp_path / "x.f32"
    x_file.write_bytes(e.x.numpy().astype("<f4").tobytes())
    name = wasm_file.read_metadata(e.path)["inputs"][0]["name"]
    return subprocess.run([NODE, *flags, str(DRIVERS / "run_model.mjs"), str(LOADER), str(e.path), "2", str(tmp_path),
                           f"{name}={x_file}"], capture_output=True, text=True, timeout=120)


def test_node_runs_relaxed_file_when_the_engine_has_relaxed_simd(exported, tmp_path):
    e = exported["cnn_relaxed"]
    run = _node_run(e, tmp_path, RELAXED_FLAG)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])["outputs"]["output"]
    got = torch.from_numpy(np.fromfile(out, dtype="<f4").reshape(e.expected.shape))
    torch.testing.assert_close(got, e.expected, **MATMUL)


def test_node_without_relaxed_simd_refuses_the_relaxed_file_and_says_what_to_load(exported, tmp_path):
    run = _node_run(exported["cnn_relaxed"], tmp_path)
    assert run.returncode != 0
    assert "ModelFileError" in run.stderr and 'exported with simd="relaxed"' in run.stderr
    assert 'simd="baseline"' in run.stderr and "relaxedSimdSupported()" in run.stderr


def test_relaxed_simd_probe_matches_the_engine(tmp_path):
    script = tmp_path / "probe.mjs"
    script.write_text(f"const m = await import({json.dumps(LOADER.as_uri())}); console.log(m.relaxedSimdSupported());")
    for flags, expected in (([], "false"), ([RELAXED_FLAG], "true")):
        run = subprocess.run([NODE, *flags, str(script)], capture_output=True, text=True, timeout=60)
        assert run.stdout.strip() == expected, run.stderr


def test_unknown_simd_is_refused_before_exporting(tmp_path):
    with pytest.raises(twb.WasmBackendError, match="simd='avx'"):
        twb.export(torch.nn.Linear(3, 2), (torch.randn(1, 3),), tmp_path / "x.wasm", simd="avx")
    assert not (tmp_path / "x.wasm").exists()



COMPILE_WITH_RELAXED = """
import torch, torch_wasm_backend as twb
from torch_wasm_backend import runtime
assert runtime.simd_build() == "relaxed"
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Conv2d(12, 12, 3, padding=1, groups=12), torch.nn.Flatten(),
                            torch.nn.Linear(12 * 7 * 9, 13)).eval()
x = torch.randn(5, 3, 7, 9)
got = torch.compile(model, backend="wasm")(x)
assert twb.stats()["lowered_fraction"] == 1.0, twb.stats()
torch.testing.assert_close(got, model(x), rtol={rtol}, atol={atol})
print("ok")
"""


def test_compile_path_runs_the_relaxed_build_when_asked():
    """TORCH_WASM_BACKEND_SIMD picks the compile path's kernel build for the process (a subprocess:
    the runtime is made once per process); GEMM, 3x3 conv and depthwise conv run relaxed_madd."""
    env = {**os.environ, "TORCH_WASM_BACKEND_SIMD": "relaxed", "TORCH_WASM_BACKEND_CACHE_DIR": "off",
           "PYTHONPATH": os.pathsep.join([str(Path(twb.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", COMPILE_WITH_RELAXED.format(**MATMUL)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
