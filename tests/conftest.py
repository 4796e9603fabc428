"""Shared fixtures: a fresh Dynamo cache and fresh metrics for every test (so Dynamo's recompile
limit never silently sends a test to eager, and stats assertions see only that test)."""
import pytest
import torch

import torch_wasm_backend as twb


@pytest.fixture(autouse=True)
def fresh_state():
    torch._dynamo.reset()
    twb.reset_stats()
    torch.manual_seed(0)
    yield
    torch._dynamo.reset()
