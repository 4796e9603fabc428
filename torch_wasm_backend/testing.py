"""Test-only hooks. `inject_traps(n)`: the next n wasm partition runs execute a plan that starts with
a DEBUG_TRAP record, so the trap (wasm `unreachable`) really happens inside the kernel module."""
from contextlib import contextmanager

from . import partition_runner


@contextmanager
def inject_traps(n: int = 1):
    partition_runner._inject_traps = n
    try:
        yield
    finally:
        partition_runner._inject_traps = 0
