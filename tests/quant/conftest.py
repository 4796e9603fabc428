"""Fixtures for the int8 tests: kernel sessions on the process-wide runtime (as tests/kernels)."""
import pytest
import torch

from kernels.kernel_testing import Session
from torch_wasm_backend.runtime import get_runtime


@pytest.fixture
def s1():
    with Session(threads=1, runtime=get_runtime(2)[0]) as s:
        yield s


@pytest.fixture
def s2():
    with Session(threads=2, runtime=get_runtime(2)[0]) as s:
        yield s
