"""Exported model files shared by the export tests (exporting costs ~1 s each, so once per session),
and the eager references they are compared with; the JS loader's npm tarball."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

import torch_wasm_backend as twb
from models.test_models import encoder, mlp, randomize_bn, small_cnn
from export_testing import NPM


def _models():
    """name -> (model, example input, export's simd=)."""
    torch.manual_seed(0)
    cnn = (randomize_bn(small_cnn()).eval(), torch.randn(2, 3, 19, 21))
    return {
        "mlp": (mlp().eval(), torch.randn(9, 37), "baseline"),
        "cnn": (*cnn, "baseline"),
        "encoder": (encoder().eval(), torch.randn(3, 11, 32), "baseline"),
        # The relaxed-SIMD kernel build (GEMM, convolution and depthwise loops use relaxed_madd).
        "cnn_relaxed": (*cnn, "relaxed"),
    }


class Exported:
    def __init__(self, name, model, x, path):
        self.name, self.model, self.x, self.path = name, model, x, path
        with torch.no_grad():
            self.expected = model(x)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """name -> Exported (model, example input, eager output, path of its .wasm)."""
    out = {}
    root = tmp_path_factory.mktemp("exported")
    for name, (model, x, simd) in _models().items():
        path = root / f"{name}.wasm"
        twb.export(model, (x,), path, simd=simd)
        out[name] = Exported(name, model, x, path)
    return out


if NPM is None and os.environ.get("CI"):
    raise RuntimeError("npm is missing on CI: scripts/setup.sh installs it (Debian package 'npm')")


@pytest.fixture(scope="session")
def npm_tarball(tmp_path_factory) -> Path:
    """The JS loader packed by `npm pack` (torch_wasm_backend/js/package.json), as users install it."""
    if NPM is None:
        pytest.skip("npm is not installed (scripts/setup.sh installs it)")
    out = tmp_path_factory.mktemp("pack")
    run = subprocess.run([NPM, "pack", "--pack-destination", str(out)], cwd=Path(twb.__file__).parent / "js",
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return out / run.stdout.strip().splitlines()[-1]
