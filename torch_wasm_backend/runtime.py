"""The wasmtime side: loads the kernel module once per process, owns the shared memory and its
allocator, runs whole Plans through the raw (unchecked) call path, and parks worker threads inside
wasm (docs/design.md decisions 1-3).

A runtime that traps or times out is retired, never reset under its users: it is marked broken and
taken out of the table get_runtime() hands out, so new calls get a fresh runtime; a call that held
its lock finishes on it, a call waiting for its lock sees it broken and retries on the successor
(RuntimeRetired); its workers are shut down and the memory goes when the last reference does."""
from __future__ import annotations

import atexit
import bisect
import ctypes
import functools
import logging
import math
import os
import sys
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import torch
import wasmtime
from wasmtime import _ffi as ffi

from torch_wasm_backend.lowering.abi import ABI
from .compile_cache import load_module
from .errors import WasmBackendError, WasmInputError, WasmOutOfMemory, WasmTimeout, WasmTrap

log = logging.getLogger("torch_wasm_backend")

# The two builds of the kernels (Makefile): "relaxed" uses f32x4.relaxed_madd in the GEMM and
# convolution loops (one fused multiply-add where the CPU has FMA), "baseline" plain SIMD128.
KERNEL_BUILDS = {"relaxed": Path(__file__).resolve().parent / "kernels_relaxed.wasm",
                 "baseline": Path(__file__).resolve().parent / "kernels.wasm"}
SIMD_ENV = "TORCH_WASM_BACKEND_SIMD"
PAGE = 65536
MAX_PAGES = 65536  # wasm32: 4 GiB
WORKER_STACK = 256 * 1024
ENGINE_SETTINGS = "threads,shared_memory,simd,relaxed_simd"
TICK_SECONDS = 0.005
NO_DEADLINE = 1 << 40        # ticks: ~170 years
WORKER_IDLE_MS = 100         # worker_loop returns this often when idle; the host calls it again
WORKER_CHECK_SECONDS = 0.1   # how often a worker of a timed runtime checks that it is still in use
INPUT_ERROR = -5             # run_plan's code for invalid inputs (an index out of range)
_RUN_PLAN_ERRORS = {-1: "unknown op code", -2: "wrong argument count for op",
                    -3: "truncated plan", -4: "a worker thread trapped",
                    INPUT_ERROR: "an index out of range"}
_UPDATE_DEADLINE_CONTINUE = 0  # wasmtime_update_deadline_kind_t: keep running with a new deadline
# wasmtime_store_epoch_deadline_callback's callback: (context, env, *delta, *kind) -> error or 0.
_DeadlineCallback = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.POINTER(ffi.wasmtime_context_t), ctypes.c_void_p,
                                     ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t))
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)()


class RuntimeRetired(WasmTrap):
    """The runtime was retired (it broke, or a bigger one replaced it) before this call could run
    on it: nothing ran; run the call again on get_runtime()'s current runtime."""

_engine_lock = threading.Lock()
_engines: dict[bool, wasmtime.Engine] = {}
_modules: dict[tuple[bool, str], wasmtime.Module] = {}


def new_engine(epoch_interruption: bool) -> wasmtime.Engine:
    """A wasmtime engine for the kernel module (threads, shared memory, SIMD), with or without
    epoch interruption (time limits). Used by the compile path and by exported models."""
    cfg = wasmtime.Config()
    cfg.wasm_threads = True
    cfg.shared_memory = True
    cfg.wasm_simd = True
    cfg.wasm_relaxed_simd = True  # non-deterministic mode: relaxed_madd is an FMA where the CPU has one
    cfg.epoch_interruption = epoch_interruption
    return wasmtime.Engine(cfg)


def simd_build() -> str:
    """The kernel build the compile path runs: "relaxed" unless TORCH_WASM_BACKEND_SIMD=baseline.
    wasmtime runs relaxed SIMD on every CPU (as mul+add where there is no FMA)."""
    value = os.environ.get(SIMD_ENV, "relaxed")
    if value not in KERNEL_BUILDS:
        raise WasmBackendError(f"{SIMD_ENV}={value!r}: use one of {', '.join(KERNEL_BUILDS)}")
    return value


def _engine_module(timed: bool = False, simd: str | None = None) -> tuple[wasmtime.Engine, wasmtime.Module]:
    """The engine and compiled kernel module (`simd` build, default simd_build()), built once per
    process and kind. Only a `timed` engine has epoch interruption (for options.timeout_ms): its
    checks at every loop header cost 3% on a BERT encoder, 11% on ResNet-18 and 45% on
    MobileNetV2's depthwise loops (measured here), so models without a time limit run on an engine
    without them."""
    simd = simd or simd_build()
    with _engine_lock:
        if timed not in _engines:
            _engines[timed] = new_engine(epoch_interruption=timed)
            if timed:
                _EpochTicker(_engines[timed]).start()
        engine = _engines[timed]
        if (timed, simd) not in _modules:
            wasm_path = KERNEL_BUILDS[simd]
            if not wasm_path.exists():
                raise WasmBackendError(
                    f"kernel module {wasm_path} is missing. Build it with `make kernels` from the "
                    "repository root (needs Emscripten and clang-19: `apt-get update && apt-get install -y "
                    "emscripten clang-19 lld-19`), or run `make setup`.")
            settings = ENGINE_SETTINGS + (",epoch_interruption" if timed else "")
            try:
                module, origin = load_module(engine, wasm_path.read_bytes(), settings)
            except wasmtime.WasmtimeError as e:
                raise WasmBackendError(
                    f"{wasm_path} is not a valid kernel module ({e}); rebuild it with `make kernels`."
                ) from e
            log.debug("kernel module %s: %s", wasm_path.name, origin)
            _modules[(timed, simd)] = module
        return engine, _modules[(timed, simd)]


@functools.cache
def kernel_heap_base(simd: str) -> int:
    """Where a kernel build's static data and stack end (its heap_base export): an exported file's
    layout starts there. Read from a throwaway instance on its own memory."""
    engine, module = _engine_module(False, simd)
    memory = wasmtime.SharedMemory(engine, wasmtime.MemoryType(wasmtime.Limits(256, MAX_PAGES), shared=True))
    return _Instance(engine, module, memory).fn["heap_base"]()[0].i32


class _EpochTicker(threading.Thread):
    """Advances the engine's epoch every TICK_SECONDS; a store whose deadline passes traps with
    'interrupt'. One sleeping thread per process."""

    def __init__(self, engine: wasmtime.Engine):
        super().__init__(name="wasm-epoch-ticker", daemon=True)
        self.engine = engine

    def run(self):
        while True:
            time.sleep(TICK_SECONDS)
            self.engine.increment_epoch()


def deadline_ticks(seconds: float | None) -> int:
    """Epoch ticks for a time limit (None: effectively never)."""
    if seconds is None:
        return NO_DEADLINE
    return max(1, math.ceil(seconds / TICK_SECONDS)) + 1


def define_shared_memory(linker: wasmtime.Linker, store: wasmtime.Store, memory) -> None:
    """Linker.define(store, "env", "memory", memory), working around wasmtime-py 50's
    SharedMemory._as_extern, which wraps its pointer once too often (ctypes TypeError)."""
    try:
        linker.define(store, "env", "memory", memory)
        return
    except TypeError:
        pass
    union = ffi.wasmtime_extern_union(sharedmemory=memory.ptr())
    extern = ffi.wasmtime_extern_t(ffi.WASMTIME_EXTERN_SHAREDMEMORY, union)
    err = ffi.wasmtime_linker_define(linker.ptr(), store._context(), b"env", 3, b"memory", 6,
                                     ctypes.byref(extern))
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)


def _one_line(message: str) -> str:
    """wasmtime's multi-line trap text -> 'wasm trap: <cause> (in <innermost frame>)'."""
    lines = [l.strip() for l in message.splitlines() if l.strip()]
    cause = next((l for l in lines if l.startswith("wasm trap:")), lines[-1] if lines else message)
    frame = next((l.split("- ", 1)[-1] for l in lines if l[:1].isdigit() and " - " in l), None)
    return f"{cause} (in {frame})" if frame else cause


# wasmtime_func_call_unchecked through a function pointer of our own (dll[...] makes a new one;
# wasmtime-py's keeps its settings): without argtypes and with a plain address as result, ctypes
# skips the per-argument type checks and the error-pointer object, ~0.9 us of a ~2.3 us call
# (measured). Every argument is passed as a ready ctypes object of the exact C type.
_call_unchecked = ffi.dll["wasmtime_func_call_unchecked"]
_call_unchecked.argtypes = None
_call_unchecked.restype = ctypes.c_void_p  # wasmtime_error_t *, None when the call succeeded


class RawFunc:
    """Calls one exported function through wasmtime_func_call_unchecked with a pre-allocated value
    array: under 1 us per call of an empty run_plan instead of Func.__call__'s tens of
    microseconds. Not thread-safe; each thread uses its own Store and RawFuncs."""

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func):
        ty = func.type(store)
        self._n = max(len(ty.params), len(ty.results), 1)
        self._n_arg = ctypes.c_size_t(self._n)
        self._vals = (ffi.wasmtime_val_raw_t * self._n)()
        # The same memory as 32-bit words: value k's i32 is word 4k (a wasmtime_val_raw_t is a
        # 16-byte little-endian union), so all i32 arguments are stored by one slice assignment
        # and an i32 result is words[0] after the call.
        self.words = (ctypes.c_int32 * (4 * self._n)).from_buffer(self._vals)
        self._ctx = store._context()
        self._func = func  # keeps the func struct alive for the byref below
        self._fptr = ctypes.byref(func._func)
        self._new_trap_slot()

    def _new_trap_slot(self):
        self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
        self._trap_ref = ctypes.byref(self._trap)

    def __call__(self, *args: int):
        vals = self._vals
        self.words[0:4 * len(args):4] = args
        err = _call_unchecked(self._ctx, self._fptr, vals, self._n_arg, self._trap_ref)
        if err:
            error = ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t))
            raise WasmTrap(str(wasmtime.WasmtimeError._from_ptr(error)))
        if self._trap:
            trap = wasmtime.Trap._from_ptr(self._trap)
            self._new_trap_slot()
            raise WasmTrap(_one_line(trap.message))
        return vals


class _Instance:
    """One Store + Instance on the shared memory (one per thread)."""

    def __init__(self, engine, module, memory):
        self.store = wasmtime.Store(engine)
        self.store.set_epoch_deadline(NO_DEADLINE)  # the start function runs at instantiation
        linker = wasmtime.Linker(engine)
        define_shared_memory(linker, self.store, memory)
        self.instance = linker.instantiate(self.store, module)
        exports = self.instance.exports(self.store)
        self.fn = {name: RawFunc(self.store, exports[name]) for name in
                   ("_initialize", "abi_version", "heap_base", "run_plan", "worker_loop",
                    "pool_shutdown", "pool_abort", "pool_register_worker",
                    "stackRestore", "peak_flops", "read_bandwidth")}
        self.fn["_initialize"]()


def stop_when(inst, broken) -> None:
    """On an engine with epoch interruption: every WORKER_CHECK_SECONDS while inst (an instance
    with a `store`) runs wasm, ask broken() and trap if it gives a reason (None: keep running). A
    worker is thus never interrupted while its runtime is in use (each call's own deadline, on the
    main instance, bounds the call, however long the worker keeps busy), and a worker stuck in a
    kernel of a retired runtime (or a closed exported model) ends within WORKER_CHECK_SECONDS."""
    ticks = deadline_ticks(WORKER_CHECK_SECONDS)

    def on_deadline(_context, _env, delta, kind):
        reason = broken()
        if reason is not None:
            error = ffi.wasmtime_error_new(f"runtime retired: {reason}".encode())
            return ctypes.cast(error, ctypes.c_void_p).value
        delta[0] = ticks
        kind[0] = _UPDATE_DEADLINE_CONTINUE
        return 0

    inst.on_deadline = _DeadlineCallback(on_deadline)  # kept alive as long as the instance
    ffi.wasmtime_store_epoch_deadline_callback(inst.store.ptr(), inst.on_deadline, None, _NO_FINALIZER)
    inst.store.set_epoch_deadline(ticks)


def park_worker(inst: _Instance, worker_id: int, broken=lambda: None) -> None:
    """The body of a host worker thread (already registered with pool_register_worker(1)): parks
    in worker_loop. broken() gives the reason the worker's runtime may no longer run (None while
    it is usable): see stop_when. Returns after pool_shutdown(); on a trap, unblocks the
    main thread (pool_abort) and re-raises. Unregisters the worker either way."""
    stop_when(inst, broken)
    try:
        while inst.fn["worker_loop"](worker_id, WORKER_IDLE_MS)[0].i32 != 0:
            pass
    except WasmTrap:
        try:
            inst.fn["pool_abort"]()
        except WasmTrap:
            pass
        raise
    finally:
        try:
            inst.fn["pool_register_worker"](-1)
        except WasmTrap:
            pass


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_MADV_DONTNEED = 4
HOST_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def release_pages(memory_address: int, offset: int, nbytes: int) -> None:
    """Gives the host pages of [offset, offset + nbytes) of a wasm memory back to the OS (wasm
    memory cannot shrink; its RSS can). wasmtime maps a shared memory private and anonymous here
    (`rw-p`, no file: checked in /proc/self/maps), where MADV_DONTNEED frees the pages at once and
    they read back as zeros (MADV_REMOVE fails with EINVAL on it, MADV_FREE frees lazily).
    Nothing relies on what freshly allocated memory holds (constants are uploaded and plans written
    right after alloc; kernels write their outputs before reading them), so zeros where old
    contents were change nothing. Repeating it over already released pages costs microseconds.
    Best effort: a failure is logged once and releasing stops."""
    global _libc
    if _libc is None:
        return
    if _libc.madvise(ctypes.c_void_p(memory_address + offset), ctypes.c_size_t(nbytes),
                     ctypes.c_int(_MADV_DONTNEED)) != 0:
        log.debug("madvise(MADV_DONTNEED) failed (%s); freed wasm memory stays resident",
                  os.strerror(ctypes.get_errno()))
        _libc = None


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
    """Shared memory + main instance + parked workers. `run(plan)` is serialized by `lock`; hold
    it from the first write into this runtime's memory to the last read of a call's outputs."""

    def __init__(self, threads: int, timed: bool = False, generation: int = 0):
        engine, module = _engine_module(timed)
        self.timed = timed
        self.generation = generation
        self.memory = wasmtime.SharedMemory(
            engine, wasmtime.MemoryType(wasmtime.Limits(256, MAX_PAGES), shared=True))
        self.lock = threading.RLock()
        self.broken: str | None = None    # why this runtime may no longer run plans (it is retired)
        self.retired = False
        # What each user (a compiled partition) keeps in this memory: its weights and loaded plans.
        # Read and written only under self.lock; dropped with the runtime or the user.
        self.users_state: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.main = _Instance(engine, module, self.memory)
        self._run_plan = self.main.fn["run_plan"]
        version = self.main.fn["abi_version"]()[0].i32
        if version != ABI.version:
            raise WasmBackendError(
                f"kernel module ABI version {version} != {ABI.version} expected by this package; "
                "rebuild the kernels with `make kernels`.")
        self._base_addr = ctypes.cast(self.memory.data_ptr(), ctypes.c_void_p).value
        self._bytes_view: torch.Tensor | None = None
        self.allocator = Allocator(self.main.fn["heap_base"]()[0].i32, self._ensure_size,
                                   functools.partial(release_pages, self._base_addr))
        self._error_at = self.allocator.alloc(64)
        self.threads = max(1, int(threads))
        self._workers: list[threading.Thread] = []
        for worker_id in range(1, self.threads):
            self._start_worker(engine, module, worker_id)

    # ---- memory ----------------------------------------------------------------------------
    def _ensure_size(self, end: int) -> None:
        have = self.memory.data_len()
        if end <= have:
            return
        pages = (end - have + PAGE - 1) // PAGE
        if have // PAGE + pages > MAX_PAGES:
            raise WasmOutOfMemory(
                f"needs {end / 2**20:.0f} MiB of wasm memory; the limit is {MAX_PAGES * PAGE / 2**20:.0f} MiB "
                "(wasm32 addresses 4 GiB at most)")
        try:
            self.memory.grow(pages)
        except wasmtime.WasmtimeError as e:
            raise WasmOutOfMemory(f"growing wasm memory to {end / 2**20:.0f} MiB failed: {e}") from e
        self._bytes_view = None

    def bytes(self) -> torch.Tensor:
        """The whole memory as a uint8 tensor (no copy). Its address never moves (shared memory)."""
        if self._bytes_view is None:
            n = self.memory.data_len()
            self._bytes_view = torch.frombuffer(
                (ctypes.c_ubyte * n).from_address(self._base_addr), dtype=torch.uint8)
        return self._bytes_view

    def tensor(self, offset: int, shape, dtype=torch.float32, strides=None) -> torch.Tensor:
        """A torch view of wasm memory at `offset` (contiguous unless `strides` is given)."""
        itemsize = dtype.itemsize
        flat = self.bytes().view(dtype) if dtype != torch.uint8 else self.bytes()
        start = offset // itemsize
        if strides is None:
            n = int(np.prod(shape)) if len(shape) else 1
            return flat[start:start + n].view(tuple(shape))
        return flat.as_strided(tuple(shape), tuple(strides), start)

    def write(self, offset: int, t: torch.Tensor) -> None:
        self.tensor(offset, t.shape, t.dtype).copy_(t)

    def write_words(self, offset: int, words) -> None:
        arr = torch.as_tensor(np.asarray(words, dtype=np.int32))
        self.tensor(offset, arr.shape, torch.int32).copy_(arr)

    # ---- threads ---------------------------------------------------------------------------
    def _start_worker(self, engine, module, worker_id: int) -> None:
        inst = _Instance(engine, module, self.memory)
        stack = self.allocator.alloc(WORKER_STACK)
        inst.fn["stackRestore"](stack + WORKER_STACK)
        inst.fn["pool_register_worker"](1)

        def park():
            try:
                park_worker(inst, worker_id, lambda: self.broken)
            except WasmTrap as e:
                if self.broken:  # retired already: this worker was stuck in a kernel (a time limit)
                    log.debug("wasm worker thread %d stopped: %s", worker_id, e)
                else:
                    self.broken = f"worker {worker_id} trapped: {e}"
                    log.warning("wasm worker thread %d stopped: %s", worker_id, e)

        t = threading.Thread(target=park, name=f"wasm-worker-{worker_id}", daemon=True)
        t.start()
        self._workers.append(t)

    def close(self, wait: bool = True) -> None:
        """Shuts the workers down (waiting up to a second for them if `wait`: a worker stalled in
        a kernel ends only at its next check, and not at all on an engine without deadlines)."""
        if self._workers:
            with self.lock:
                self.main.fn["pool_shutdown"]()
            workers, self._workers = self._workers, []
            for t in workers if wait else ():
                t.join(timeout=1)

    # ---- running ---------------------------------------------------------------------------
    def run(self, plan_offset: int, n_words: int, threads: int, time_limit: float | None = None) -> None:
        """Runs the encoded plan at plan_offset; raises WasmTimeout past time_limit (seconds),
        WasmTrap on a trap or executor error (either retires this runtime: get_runtime() gives a
        new one), WasmInputError when a kernel rejected the inputs (the runtime stays usable), and
        RuntimeRetired when the runtime was retired before the call."""
        with self.lock:
            self.run_locked(plan_offset, n_words, threads, time_limit)

    def run_locked(self, plan_offset: int, n_words: int, threads: int, time_limit: float | None = None) -> None:
        """run() for a caller that already holds self.lock (saves re-entering it on every call)."""
        if self.broken:
            raise RuntimeRetired(f"runtime is unusable: {self.broken}")
        if time_limit is not None:
            self.main.store.set_epoch_deadline(deadline_ticks(time_limit))
        try:
            self._run_plan(plan_offset, n_words, min(threads, self.threads), self._error_at)
        except WasmTrap as e:
            trap = e
        else:
            trap = None
        finally:
            if time_limit is not None:  # (before retire(): its pool_shutdown runs on this store)
                self.main.store.set_epoch_deadline(NO_DEADLINE)
        if trap is not None:
            # A worker may still be in a kernel and memory is in an unknown state.
            retire(self, str(trap))
            if "interrupt" in str(trap) and time_limit is not None:
                raise WasmTimeout(f"exceeded the time limit of {time_limit * 1e3:.0f} ms") from trap
            raise trap
        rc = self._run_plan.words[0]
        if rc != 0:
            at = int(self.tensor(self._error_at, (1,), torch.int32)[0])
            msg = f"{_RUN_PLAN_ERRORS.get(rc, rc)} at plan word {at}"
            if rc == INPUT_ERROR:
                raise WasmInputError(msg)
            retire(self, msg)
            raise WasmTrap(msg)

    def peak_flops(self, iters: int) -> float:
        with self.lock:
            return self.main.fn["peak_flops"](iters)[0].f64

    def read_bandwidth(self, offset: int, nbytes: int, passes: int, threads: int) -> float:
        """Reads nbytes (a multiple of 128) at offset `passes` times on `threads` threads; returns
        the bytes read (the host times the call: the bandwidth yardstick of the kernel benchmarks)."""
        with self.lock:
            return self.main.fn["read_bandwidth"](offset, nbytes, passes, min(threads, self.threads))[0].f64


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
