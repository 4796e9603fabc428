"""Benchmarks run with torch and wasm on the same thread count, in one process, so ratios compare
like with like on this shared, noisy machine."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # model_zoo

import pytest
import torch

import torch_wasm_backend as twb


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # Many benchmarks compile nn.Sequential.forward: without a reset Dynamo's per-code recompile
    # limit (8) is reached mid-run and later "wasm" rows would silently time eager.
    torch._dynamo.reset()
    twb.reset_stats()
    yield
