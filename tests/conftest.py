"""Shared fixtures: a fresh Dynamo cache and fresh metrics for every test (so Dynamo's recompile
limit never silently sends a test to eager, and stats assertions see only that test); the
partitions a test compiled, for tests that look inside them."""
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


@pytest.fixture
def partitions(monkeypatch):
    """The CompiledPartitions created during the test, in order."""
    from torch_wasm_backend import partition_runner
    made = []
    init = partition_runner.CompiledPartition.__init__

    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)
    monkeypatch.setattr(partition_runner.CompiledPartition, "__init__", record)
    return made
