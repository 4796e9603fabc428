"""Options of `torch.compile(..., backend="wasm", options={...})`, validated."""
from __future__ import annotations

from dataclasses import dataclass, fields

from .errors import WasmBackendError
from .runtime import default_threads


@dataclass(frozen=True)
class Options:
    threads: int = 0                  # threads per kernel; 0 = the CPUs this process may use
    strict: bool = False              # raise WasmBackendError instead of running anything in eager
    min_partition_size: int = 1       # smaller wasm partitions (in compute nodes) stay in eager
    max_plans_per_partition: int = 8  # per-input-signature plan cache (LRU) of each partition
    max_failures: int = 3             # traps before a partition is kept on eager for good
    timeout_ms: int = 0               # per-call time limit inside wasm (0 = none): WasmTimeout
    max_memory_mb: int = 0            # wasm memory one plan may use (0 = wasm32's 4 GiB)
    verify: int = 0                   # compare the first N calls of each partition with eager
    profile_kernels: bool = False     # one torch.profiler span per kernel (one wasm call each)

    @classmethod
    def parse(cls, options: dict | None) -> "Options":
        options = dict(options or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise WasmBackendError(
                f"unknown option(s) {unknown} for backend='wasm'; valid options: {sorted(known)}")
        for name, value in options.items():
            want = bool if known[name].type == "bool" else int
            if want is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise WasmBackendError(f"option {name!r} must be an int, got {value!r}")
            if want is bool and not isinstance(value, bool):
                raise WasmBackendError(f"option {name!r} must be True or False, got {value!r}")
        opts = cls(**options)
        if (opts.threads < 0 or opts.min_partition_size < 1 or opts.max_plans_per_partition < 1
                or opts.max_failures < 1 or opts.timeout_ms < 0 or opts.max_memory_mb < 0 or opts.verify < 0):
            raise WasmBackendError(
                f"invalid option values {options}: min_partition_size, max_plans_per_partition and "
                "max_failures >= 1; threads, timeout_ms, max_memory_mb, verify >= 0")
        if opts.threads == 0:
            opts = cls(**{**options, "threads": default_threads()})
        return opts
