"""Test-only hooks: the next n wasm partition runs of the calling thread execute a plan that starts
with a debug record, so the fault really happens inside the kernel module. `inject_traps(n)`: wasm `unreachable`.
`inject_stalls(n)`: a worker thread (or, single-threaded, the caller) spins forever; only a
time limit (option timeout_ms) ends it."""
import threading
from contextlib import contextmanager

from torch_wasm_backend.lowering.abi import ABI

from . import partition_runner


@contextmanager
def _inject(record, n):
    me = threading.get_ident()
    partition_runner._inject[me] = [record, n]
    try:
        yield
    finally:
        del partition_runner._inject[me]


def inject_traps(n: int = 1):
    return _inject(ABI.encode("DEBUG_TRAP", unused=0), n)


def inject_stalls(n: int = 1):
    return _inject(ABI.encode("DEBUG_STALL", unused=0), n)
