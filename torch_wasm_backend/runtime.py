"""The compile path's runtime: the kernel module (kernels.wasm, compiled once per process), one
shared memory with its allocator, and a wasm_layer.Pool (main instance + parked workers) that runs
whole Plans through the raw call path (docs/design.md decisions 1-3). wasm_layer.py does the
wasmtime part; this module adds what is the compile path's own: allocation, retirement and
generations.

A runtime that traps or times out is retired, never reset under its users: it is marked broken and
taken out of the table get_runtime() hands out, so new calls get a fresh runtime; a call that held
its lock finishes on it, a call waiting for its lock sees it broken and retries on the successor
(RuntimeRetired); its workers are shut down and the memory goes when the last reference does."""
from __future__ import annotations

import atexit
import bisect
import functools
import logging
import os
import threading
import weakref
from pathlib import Path

import wasmtime

from torch_wasm_backend.lowering.abi import ABI
from . import wasm_layer
from .compile_cache import load_module
from .errors import WasmBackendError, WasmTimeout, WasmTrap
from .wasm_layer import HOST_PAGE, MAX_PAGES, WORKER_STACK, Memory, Pool

log = logging.getLogger("torch_wasm_backend")

# The two builds of the kernels (Makefile): "relaxed" uses f32x4.relaxed_madd in the GEMM and
# convolution loops (one fused multiply-add where the CPU has FMA), "baseline" plain SIMD128.
KERNEL_BUILDS = {"baseline": Path(__file__).resolve().parent / "kernels.wasm",
                 "relaxed": Path(__file__).resolve().parent / "kernels_relaxed.wasm"}
SIMD_ENV = "TORCH_WASM_BACKEND_SIMD"
INITIAL_PAGES = 256


class RuntimeRetired(WasmTrap):
    """The runtime was retired (it broke, or a bigger one replaced it) before this call could run
    on it: nothing ran; run the call again on get_runtime()'s current runtime."""

_engine_lock = threading.Lock()
_modules: dict[tuple[bool, str], wasmtime.Module] = {}


def simd_build() -> str:
    """The kernel build the compile path runs: "baseline" unless TORCH_WASM_BACKEND_SIMD=relaxed."""
    value = os.environ.get(SIMD_ENV, "baseline")
    if value not in KERNEL_BUILDS:
        raise WasmBackendError(f"{SIMD_ENV}={value!r}: use one of {', '.join(KERNEL_BUILDS)}")
    return value


def _engine_module(timed: bool = False, simd: str | None = None) -> tuple[wasmtime.Engine, wasmtime.Module]:
    """The engine and compiled kernel module (the `simd` build, default simd_build()), built once
    per process and kind. Only a `timed` engine has epoch interruption (for options.timeout_ms): its
    checks at every loop header cost 3% on a BERT encoder, 11% on ResNet-18 and 45% on
    MobileNetV2's depthwise loops (measured here), so models without a time limit run on an engine
    without them."""
    simd = simd or simd_build()
    engine = wasm_layer.engine(epoch_interruption=timed)
    with _engine_lock:
        if (timed, simd) not in _modules:
            wasm_path = KERNEL_BUILDS[simd]
            if not wasm_path.exists():
                raise WasmBackendError(
                    f"kernel module {wasm_path} is missing. Build it with `make kernels` from the "
                    "repository root (needs Emscripten and clang-19: `apt-get update && apt-get install -y "
                    "emscripten clang-19 lld-19`), or run `make setup`.")
            settings = wasm_layer.ENGINE_SETTINGS + (",epoch_interruption" if timed else "")
            try:
                module, origin = load_module(engine, wasm_path.read_bytes(), settings)
            except wasmtime.WasmtimeError as e:
                raise WasmBackendError(
                    f"{wasm_path} is not a valid kernel module ({e}); rebuild it with `make kernels`."
                ) from e
            log.debug("kernel module: %s (%s)", origin, wasm_path.name)
            _modules[(timed, simd)] = module
        return engine, _modules[(timed, simd)]


@functools.cache
def kernel_heap_base(simd: str) -> int:
    """Where a kernel build's static data and stack end (its heap_base export): an exported file's
    layout starts there. Read once per build and process, from a throwaway instance on its own memory."""
    engine, module = _engine_module(False, simd)
    pool = Pool(engine, module, Memory(engine, INITIAL_PAGES, MAX_PAGES))
    try:
        return pool.main.fn["heap_base"]()[0].i32
    finally:
        pool.shutdown()


class Allocator:
    """First-fit allocator over [base, limit) of the shared memory; grows the memory on demand.
    A free run of at least RELEASE_BYTES is handed to `release(offset, nbytes)` (whole host pages)
    so that one big plan, once evicted, does not keep its resident memory for the process's life."""

    ALIGN = 64
    RELEASE_BYTES = 1 << 20

    def __init__(self, base: int, grow, release=None):
        self.base = (base + self.ALIGN - 1) // self.ALIGN * self.ALIGN
        self._grow = grow  # grow(min_end_bytes) -> new limit
        self._release = release
        self._free: list[tuple[int, int]] = []  # (offset, size), sorted, coalesced
        self._top = self.base
        self._sizes: dict[int, int] = {}
        self.in_use = 0

    def alloc(self, nbytes: int) -> int:
        size = max(self.ALIGN, (nbytes + self.ALIGN - 1) // self.ALIGN * self.ALIGN)
        for i, (off, free) in enumerate(self._free):
            if free >= size:
                if free == size:
                    del self._free[i]
                else:
                    self._free[i] = (off + size, free - size)
                break
        else:
            off = self._top
            self._grow(off + size)
            self._top = off + size
        self._sizes[off] = size
        self.in_use += size
        return off

    def free(self, off: int) -> None:
        size = self._sizes.pop(off)
        self.in_use -= size
        i = bisect.bisect(self._free, (off, size))
        # Coalesce with the free neighbours, then give the tail back to the bump pointer.
        if i < len(self._free) and off + size == self._free[i][0]:
            size += self._free.pop(i)[1]
        if i > 0 and self._free[i - 1][0] + self._free[i - 1][1] == off:
            off, size = self._free[i - 1][0], self._free[i - 1][1] + size
            i -= 1
            self._free.pop(i)
        if size >= self.RELEASE_BYTES and self._release is not None:
            start = -(-off // HOST_PAGE) * HOST_PAGE
            end = (off + size) // HOST_PAGE * HOST_PAGE
            self._release(start, end - start)
        if off + size == self._top:
            self._top = off
        else:
            self._free.insert(i, (off, size))


class Runtime:
    """Shared memory + allocator + a Pool (main instance, parked workers). `run(plan)` is
    serialized by `lock`; hold it from the first write into this runtime's memory to the last read
    of a call's outputs."""

    def __init__(self, threads: int, timed: bool = False, generation: int = 0):
        engine, module = _engine_module(timed)
        self.timed = timed
        self.generation = generation
        self.memory = Memory(engine, INITIAL_PAGES, MAX_PAGES)
        self.lock = threading.RLock()
        self.retired = False
        # What each user (a compiled partition) keeps in this memory: its weights and loaded plans.
        # Read and written only under self.lock; dropped with the runtime or the user.
        self.users_state: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.pool = Pool(engine, module, self.memory,
                         ("read_bandwidth", "set_gemm_load_splat", "set_qconv_split_tiles"))
        version = self.pool.main.fn["abi_version"]()[0].i32
        if version != ABI.version:
            raise WasmBackendError(
                f"kernel module ABI version {version} != {ABI.version} expected by this package; "
                "rebuild the kernels with `make kernels`.")
        self.heap_base = self.pool.main.fn["heap_base"]()[0].i32
        self.allocator = Allocator(self.heap_base, self.memory.grow_to, self.memory.release)
        self._error_at = self.allocator.alloc(64)
        self.threads = max(1, int(threads))
        for worker_id in range(1, self.threads):
            stack = self.allocator.alloc(WORKER_STACK)
            self.pool.start_worker(worker_id, stack + WORKER_STACK)

    @property
    def broken(self) -> str | None:
        """Why this runtime may no longer run plans (it is retired), or None."""
        return self.pool.broken

    @broken.setter
    def broken(self, reason: str | None) -> None:
        self.pool.broken = reason

    def close(self, wait: bool = True) -> None:
        """Shuts the workers down (waiting up to a second for them if `wait`: a worker stalled in
        a kernel ends only at its next check, and not at all on an engine without deadlines)."""
        with self.lock:
            self.pool.shutdown(join_s=1 if wait else None)

    def run(self, plan_offset: int, n_words: int, threads: int, time_limit: float | None = None) -> None:
        """Runs the encoded plan at plan_offset; raises WasmTimeout past time_limit (seconds),
        WasmTrap on a trap or executor error (either retires this runtime: get_runtime() gives a
        new one), WasmInputError when a kernel rejected the inputs (the runtime stays usable), and
        RuntimeRetired when the runtime was retired before the call."""
        with self.lock:
            self.run_locked(plan_offset, n_words, threads, time_limit)

    def run_locked(self, plan_offset: int, n_words: int, threads: int, time_limit: float | None = None) -> None:
        """run() for a caller that already holds self.lock (saves re-entering it on every call)."""
        pool = self.pool
        if pool.broken:
            raise RuntimeRetired(f"runtime is unusable: {pool.broken}")
        try:
            pool.run_plan(plan_offset, n_words, min(threads, self.threads), self._error_at, time_limit)
        except (WasmTrap, WasmTimeout) as e:  # (not WasmInputError: the caller's inputs, nothing broke)
            # A worker may still be in a kernel and memory is in an unknown state.
            retire(self, pool.broken or str(e))
            raise

    def set_gemm_load_splat(self, on: bool) -> None:
        """Makes the GEMM micro-kernel broadcast A by load32_splat (the JS loader's choice, faster
        in V8) instead of load + shuffle (the default, faster in wasmtime): kernels_cpp/gemm.cpp."""
        with self.lock:
            self.pool.main.fn["set_gemm_load_splat"](1 if on else 0)

    def set_qconv_split_tiles(self, on: bool) -> None:
        """Makes QCONV2D run each tile as a function of its own (the JS loader's choice, faster in
        V8) instead of inlined (the default, faster in wasmtime): kernels_cpp/quant.cpp."""
        with self.lock:
            self.pool.main.fn["set_qconv_split_tiles"](1 if on else 0)

    def read_bandwidth(self, offset: int, nbytes: int, passes: int, threads: int) -> float:
        """Reads nbytes (a multiple of 128) at offset `passes` times on `threads` threads; returns
        the bytes read (the host times the call: the bandwidth yardstick of the kernel benchmarks)."""
        with self.lock:
            return self.pool.main.fn["read_bandwidth"](offset, nbytes, passes, min(threads, self.threads))[0].f64


_runtimes: dict[bool, Runtime] = {}   # timed (epoch interruption) or not -> the current runtime
_generation = 0                      # bumped for every runtime created (a serial number)
_runtime_lock = threading.Lock()     # guards the two above; never held while taking a runtime's lock


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def get_runtime(min_threads: int = 1, timed: bool = False) -> tuple[Runtime, int]:
    """The current runtime of this kind (created on first use, re-created after it broke or when
    more threads are asked for), and its serial number. Hold its lock while using it and check
    `broken` once you have it: it may have been retired in between."""
    runtime = _runtimes.get(timed)
    if runtime is not None and runtime.threads >= min_threads and not runtime.broken:
        return runtime, runtime.generation  # the common case, without the lock
    global _generation
    with _runtime_lock:
        old = _runtimes.get(timed)
        if old is None or old.threads < min_threads or old.broken:
            _generation += 1
            _runtimes[timed] = Runtime(max(min_threads, old.threads if old else 1), timed, _generation)
        else:
            old = None  # another thread replaced it already
        runtime = _runtimes[timed]
    if old is not None:
        retire(old, old.broken or f"replaced by a runtime with {runtime.threads} threads")
    return runtime, runtime.generation


def retire(runtime: Runtime, reason: str) -> None:
    """Marks the runtime broken, takes it out of get_runtime()'s table and shuts its workers down
    (without waiting for a stalled one). A call holding its lock (maybe the caller) finishes
    first; calls waiting for the lock then see `broken` and retry on a new runtime."""
    with runtime.lock:
        if runtime.retired:
            return
        runtime.retired = True
        runtime.broken = runtime.broken or reason
        runtime.users_state.clear()  # nobody will run on it again: free the users' views now
        with _runtime_lock:
            if _runtimes.get(runtime.timed) is runtime:
                del _runtimes[runtime.timed]
        try:
            runtime.close(wait=False)
        except Exception as e:  # a broken runtime may fail to shut down; it is discarded anyway
            log.debug("closing a retired runtime failed: %s", e)
    log.debug("wasm runtime %d retired: %s", runtime.generation, reason)


def rebuild_runtime(timed: bool = False) -> None:
    """Retires the current runtime of this kind (if any): the next get_runtime() makes a fresh
    one. Calls in progress on the old one finish there."""
    runtime = _runtimes.get(timed)
    if runtime is not None:
        retire(runtime, "rebuild_runtime() was called")


@atexit.register
def _shutdown() -> None:
    for runtime in list(_runtimes.values()):
        try:
            runtime.close(wait=True)
        except Exception as e:
            log.debug("runtime shutdown at exit failed: %s", e)
