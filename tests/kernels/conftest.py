"""Fixtures for the kernel tests: sessions on the process-wide runtime (started with 2 threads, so
threads=1 and threads=2 sessions share it and a single-threaded run never rebuilds it)."""
import pytest
import torch

from kernel_testing import Session
from torch_wasm_backend.runtime import get_runtime


@pytest.fixture(autouse=True)
def fresh_state():
    # Overrides tests/conftest.py's fixture: these tests never touch Dynamo, only the seed matters.
    torch.manual_seed(0)
    yield


def _session(threads):
    runtime, _ = get_runtime(2)  # re-created here if an earlier test broke it
    return Session(threads=threads, runtime=runtime)


@pytest.fixture
def s1():
    with _session(1) as s:
        yield s


@pytest.fixture
def s2():
    with _session(2) as s:
        yield s


@pytest.fixture(params=[1, 2], ids=["t1", "t2"])
def s12(request):
    with _session(request.param) as s:
        yield s


@pytest.fixture(autouse=True, scope="module")
def single_threaded_torch():
    # The torch references are small; torch's OpenMP workers spinning between them would compete
    # with the wasm threads for the cores (and make the references several times slower).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
