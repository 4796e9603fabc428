"""Test-only hooks: the next n plan runs of the calling thread are each preceded, on the same
runtime and with the same threads and time limit, by a one-record plan that faults, so the fault
really happens inside the kernel module. `inject_traps(n)`: wasm `unreachable`.
`inject_stalls(n)`: a worker thread (or, single-threaded, the caller) spins forever; only a
time limit (option timeout_ms) ends it.

The seam is Runtime.run_locked (every plan run goes through it), wrapped only while a hook is
active, so the partition runner's call path knows nothing of it."""
import threading
from contextlib import contextmanager

from torch_wasm_backend.lowering.abi import ABI

from .runtime import Runtime

_pending: dict[int, list] = {}  # thread id -> [record words, runs left]
_lock = threading.Lock()        # guards _pending and the wrapping of Runtime.run_locked
_unwrapped = Runtime.run_locked


def _run_locked_after_fault(runtime: Runtime, plan_offset: int, n_words: int, threads: int,
                            time_limit: float | None = None) -> None:
    pending = _pending.get(threading.get_ident())
    if pending and pending[1] > 0:
        pending[1] -= 1
        record = pending[0]
        at = runtime.allocator.alloc(4 * len(record))
        try:
            runtime.memory.write_words(at, record)
            _unwrapped(runtime, at, len(record), threads, time_limit)  # raises: the fault
        finally:
            runtime.allocator.free(at)
    _unwrapped(runtime, plan_offset, n_words, threads, time_limit)


@contextmanager
def _inject(record, n):
    me = threading.get_ident()
    with _lock:
        _pending[me] = [record, n]
        Runtime.run_locked = _run_locked_after_fault
    try:
        yield
    finally:
        with _lock:
            del _pending[me]
            if not _pending:
                Runtime.run_locked = _unwrapped


def inject_traps(n: int = 1):
    return _inject(ABI.encode("DEBUG_TRAP", unused=0), n)


def inject_stalls(n: int = 1):
    return _inject(ABI.encode("DEBUG_STALL", unused=0), n)
