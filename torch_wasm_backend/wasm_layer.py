"""The wasm layer under both runners: everything that touches wasmtime, in one place.

- engines (threads, shared memory, SIMD; with or without epoch interruption, the time limits) and
  the epoch ticker;
- `Memory`: a shared wasm memory and its host view, the one place that turns a byte offset in wasm
  memory into a host address or a torch view (and gives freed pages back to the OS);
- `Instance`: one Store + Instance of a kernel module on that memory, with `RawFunc`s, the
  unchecked calls (under 1 us, docs/design.md decision 1), and wasmtime-py's shared-memory
  workaround (`define_shared_memory`, decision 3);
- `Pool`: a main instance plus worker threads parked inside wasm (decision 2), `run_plan` with its
  epoch deadline and error decoding (the codes are kernel_abi.def's RUN_ERRORs), and shutdown.

Each runner keeps only what is its own: the compile-time `Runtime` (runtime.py) its allocator,
retirement and generations; `ExportedModel` (exported_model.py) the file's validation, metadata,
sizes and input binding."""
from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
import threading
import time

import numpy as np
import torch
import wasmtime
from wasmtime import _ffi as ffi

from torch_wasm_backend.lowering.abi import ABI
from .errors import WasmInputError, WasmOutOfMemory, WasmTimeout, WasmTrap

log = logging.getLogger("torch_wasm_backend")

PAGE = 65536
MAX_PAGES = 65536            # wasm32: 4 GiB
WORKER_STACK = 256 * 1024    # bytes of wasm stack per worker instance (the host places it in memory)
ENGINE_SETTINGS = "threads,shared_memory,simd,relaxed_simd"  # what engine() enables (part of compile-cache keys)
TICK_SECONDS = 0.005
NO_DEADLINE = 1 << 40        # ticks: ~170 years
WORKER_IDLE_MS = 100         # worker_loop returns this often when idle; the host calls it again
WORKER_CHECK_SECONDS = 0.1   # how often a worker on an epoch engine checks that it may keep running
SHUTDOWN_SECONDS = 5         # the deadline of pool_shutdown itself (a hostile module may loop)
# The functions the layer calls, with their wasm signatures (params, results): every kernel module
# (kernels.wasm, and each exported file's own) exports them (KERNEL_EXPORT in kernel_abi.def).
KERNEL_EXPORTS = ABI.kernel_exports
_INPUT_ERROR = ABI.run_error["INPUT"]
_UPDATE_DEADLINE_CONTINUE = 0  # wasmtime_update_deadline_kind_t: keep running with a new deadline
# wasmtime_store_epoch_deadline_callback's callback: (context, env, *delta, *kind) -> error or 0.
_DeadlineCallback = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.POINTER(ffi.wasmtime_context_t), ctypes.c_void_p,
                                     ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t))
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)()


class PlanInputError(WasmInputError):
    """run_plan's INPUT code: a kernel rejected the inputs (an index out of range) in the record at
    plan word `word`. Nothing is broken: the pool stays usable."""

    def __init__(self, message: str, word: int):
        super().__init__(message)
        self.word = word


# ---- engines and deadlines ------------------------------------------------------------------------
_engine_lock = threading.Lock()
_engines: dict[bool, wasmtime.Engine] = {}


def engine(epoch_interruption: bool) -> wasmtime.Engine:
    """The process's engine of this kind (threads, shared memory, SIMD), made on first use. With
    epoch_interruption (time limits), a ticker thread advances its epoch every TICK_SECONDS."""
    with _engine_lock:
        if epoch_interruption not in _engines:
            cfg = wasmtime.Config()
            cfg.wasm_threads = True
            cfg.shared_memory = True
            cfg.wasm_simd = True
            # For the relaxed-SIMD kernel build; non-deterministic mode: relaxed_madd is an FMA
            # where the CPU has one, mul+add elsewhere.
            cfg.wasm_relaxed_simd = True
            cfg.epoch_interruption = epoch_interruption
            _engines[epoch_interruption] = wasmtime.Engine(cfg)
            if epoch_interruption:
                _EpochTicker(_engines[epoch_interruption]).start()
        return _engines[epoch_interruption]


class _EpochTicker(threading.Thread):
    """Advances the engine's epoch every TICK_SECONDS; a store whose deadline passes traps with
    'interrupt'. One sleeping thread per process."""

    def __init__(self, engine_: wasmtime.Engine):
        super().__init__(name="wasm-epoch-ticker", daemon=True)
        self.engine = engine_

    def run(self):
        while True:
            time.sleep(TICK_SECONDS)
            self.engine.increment_epoch()


def deadline_ticks(seconds: float | None) -> int:
    """Epoch ticks for a time limit (None: effectively never)."""
    if seconds is None:
        return NO_DEADLINE
    return max(1, math.ceil(seconds / TICK_SECONDS)) + 1


# ---- memory ---------------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_MADV_DONTNEED = 4
HOST_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class Memory:
    """A shared wasm memory of `pages` pages (growable up to `max_pages`) and its host view: byte
    offsets in wasm memory become torch views (no copy) here and nowhere else. The memory's address
    never moves (shared memories grow in place)."""

    def __init__(self, engine_: wasmtime.Engine, pages: int, max_pages: int):
        self.shared = wasmtime.SharedMemory(
            engine_, wasmtime.MemoryType(wasmtime.Limits(pages, max_pages), shared=True))
        self.max_pages = max_pages  # grow_to's limit
        self.address = ctypes.cast(self.shared.data_ptr(), ctypes.c_void_p).value
        self._bytes: torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        return self.shared.data_len()

    def grow_to(self, end: int) -> None:
        """Grows the memory to at least `end` bytes; WasmOutOfMemory past max_pages."""
        have = self.shared.data_len()
        if end <= have:
            return
        pages = (end - have + PAGE - 1) // PAGE
        if have // PAGE + pages > self.max_pages:
            raise WasmOutOfMemory(
                f"needs {end / 2**20:.0f} MiB of wasm memory; the limit is {self.max_pages * PAGE / 2**20:.0f} MiB "
                "(wasm32 addresses 4 GiB at most)")
        try:
            self.shared.grow(pages)
        except wasmtime.WasmtimeError as e:
            raise WasmOutOfMemory(f"growing wasm memory to {end / 2**20:.0f} MiB failed: {e}") from e
        self._bytes = None

    # Both run with inference mode off: the memory tensor is cached and its views are kept across
    # calls (plans' input views), and a tensor made under torch.inference_mode() cannot be written
    # outside it, so a model first run under inference_mode would fail in every later plain call.
    @torch.inference_mode(False)
    def bytes(self) -> torch.Tensor:
        """The whole memory as a uint8 tensor (no copy)."""
        if self._bytes is None:
            n = self.shared.data_len()
            self._bytes = torch.frombuffer((ctypes.c_ubyte * n).from_address(self.address), dtype=torch.uint8)
        return self._bytes

    @torch.inference_mode(False)
    def view(self, offset: int, shape, dtype=torch.float32, strides=None) -> torch.Tensor:
        """A torch view of wasm memory at byte `offset` (contiguous unless `strides`, in elements)."""
        flat = self.bytes().view(dtype) if dtype != torch.uint8 else self.bytes()
        start = offset // dtype.itemsize
        if strides is None:
            n = int(np.prod(shape)) if len(shape) else 1
            return flat[start:start + n].view(tuple(shape))
        return flat.as_strided(tuple(shape), tuple(strides), start)

    def write(self, offset: int, t: torch.Tensor) -> None:
        self.view(offset, t.shape, t.dtype).copy_(t)

    def write_bytes(self, offset: int, data: bytes) -> None:
        self.bytes()[offset:offset + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def write_words(self, offset: int, words) -> None:
        """Writes int32 words (a plan) at offset."""
        self.write(offset, torch.as_tensor(np.asarray(words, dtype=np.int32)))

    def read_i32(self, offset: int) -> int:
        return int(self.view(offset, (1,), torch.int32)[0])

    def release(self, offset: int, nbytes: int) -> None:
        """Gives the host pages of [offset, offset + nbytes) back to the OS (wasm memory cannot
        shrink; its RSS can). wasmtime maps a shared memory private and anonymous here (`rw-p`, no
        file: checked in /proc/self/maps), where MADV_DONTNEED frees the pages at once and they read
        back as zeros (MADV_REMOVE fails with EINVAL on it, MADV_FREE frees lazily). Callers must
        not rely on what freshly allocated memory holds (the compile path uploads constants and
        plans right after alloc; kernels write their outputs before reading them). Repeating it over
        already released pages costs microseconds. Best effort: a failure is logged once and
        releasing stops."""
        global _libc
        if _libc is None:
            return
        if _libc.madvise(ctypes.c_void_p(self.address + offset), ctypes.c_size_t(nbytes),
                         ctypes.c_int(_MADV_DONTNEED)) != 0:
            log.debug("madvise(MADV_DONTNEED) failed (%s); freed wasm memory stays resident",
                      os.strerror(ctypes.get_errno()))
            _libc = None


# ---- instances and raw calls ------------------------------------------------------------------------
def define_shared_memory(linker: wasmtime.Linker, store: wasmtime.Store, memory: wasmtime.SharedMemory) -> None:
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


def one_line(message: str) -> str:
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
            raise WasmTrap(one_line(trap.message))
        return vals


class Instance:
    """One Store + Instance of a kernel module on the shared memory (one per thread), with a
    RawFunc for each of `exports` in `fn`. load_limit_s (seconds; epoch engines only) bounds the
    start function and _initialize; a failure raises wasmtime's error or WasmTrap."""

    def __init__(self, engine_: wasmtime.Engine, module: wasmtime.Module, memory: Memory, exports,
                 load_limit_s: float | None = None):
        self.store = wasmtime.Store(engine_)
        self.store.set_epoch_deadline(deadline_ticks(load_limit_s))  # the start function runs at instantiation
        linker = wasmtime.Linker(engine_)
        define_shared_memory(linker, self.store, memory.shared)
        self.instance = linker.instantiate(self.store, module)
        found = self.instance.exports(self.store)
        self.fn = {name: RawFunc(self.store, found[name]) for name in exports}
        self.fn["_initialize"]()
        self.store.set_epoch_deadline(NO_DEADLINE)


# ---- worker threads -----------------------------------------------------------------------------------
def stop_when(inst: Instance, broken) -> None:
    """On an engine with epoch interruption: every WORKER_CHECK_SECONDS while inst runs wasm, ask
    broken() and trap if it gives a reason (None: keep running). A worker is thus never interrupted
    while its pool is in use (each call's own deadline, on the main instance, bounds the call,
    however long the worker keeps busy), and a worker stuck in a kernel of a retired runtime (or a
    closed exported model) ends within WORKER_CHECK_SECONDS."""
    ticks = deadline_ticks(WORKER_CHECK_SECONDS)

    def on_deadline(_context, _env, delta, kind):
        reason = broken()
        if reason is not None:
            error = ffi.wasmtime_error_new(f"stopped: {reason}".encode())
            return ctypes.cast(error, ctypes.c_void_p).value
        delta[0] = ticks
        kind[0] = _UPDATE_DEADLINE_CONTINUE
        return 0

    inst.on_deadline = _DeadlineCallback(on_deadline)  # kept alive as long as the instance
    ffi.wasmtime_store_epoch_deadline_callback(inst.store.ptr(), inst.on_deadline, None, _NO_FINALIZER)
    inst.store.set_epoch_deadline(ticks)


def park_worker(inst: Instance, worker_id: int, broken=lambda: None) -> None:
    """The body of a host worker thread (already registered with pool_register_worker(1)): parks
    in worker_loop. broken() gives the reason the worker's pool may no longer run (None while it
    is usable): see stop_when. Returns after pool_shutdown(); on a trap, unblocks the main thread
    (pool_abort) and re-raises. Unregisters the worker either way."""
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


class Pool:
    """A kernel module's main instance on `memory` and the worker threads parked in it. `broken`
    says why it may no longer run plans (a trap, a fatal run_plan code, a worker that trapped, or
    whatever its owner sets); `closed` after shutdown(). Not re-entrant: the owner serializes calls.
    The worker threads reference the pool, never its owner, so they do not keep the owner alive."""

    def __init__(self, engine_: wasmtime.Engine, module: wasmtime.Module, memory: Memory, exports=(),
                 load_limit_s: float | None = None, thread_name: str = "wasm-worker"):
        self.engine, self.module, self.memory = engine_, module, memory
        self.thread_name = thread_name
        self.main = Instance(engine_, module, memory, (*KERNEL_EXPORTS, *exports), load_limit_s)
        self._run_plan = self.main.fn["run_plan"]
        self.workers: list[threading.Thread] = []
        self.broken: str | None = None
        self.closed = False

    def stop_reason(self) -> str | None:
        """Why the workers must stop (stop_when asks this while they run wasm)."""
        return self.broken or ("it was shut down" if self.closed else None)

    def start_worker(self, worker_id: int, stack_top: int, load_limit_s: float | None = None) -> None:
        """Instantiates the module once more, with its stack below byte stack_top (stacks grow
        down), and parks a host thread in it as worker `worker_id` (1, 2, ...)."""
        inst = Instance(self.engine, self.module, self.memory, KERNEL_EXPORTS, load_limit_s)
        inst.fn["stackRestore"](stack_top)
        inst.fn["pool_register_worker"](1)

        def park():
            try:
                park_worker(inst, worker_id, self.stop_reason)
            except WasmTrap as e:
                if self.broken or self.closed:  # stopped on purpose: it was stuck in a kernel (a time limit)
                    log.debug("wasm worker thread %d stopped: %s", worker_id, e)
                else:
                    self.broken = f"worker {worker_id} trapped: {e}"
                    log.warning("wasm worker thread %d stopped: %s", worker_id, e)

        t = threading.Thread(target=park, name=f"{self.thread_name}-{worker_id}", daemon=True)
        t.start()
        self.workers.append(t)

    def run_plan(self, plan_at: int, n_words: int, threads: int, error_at: int,
                 time_limit: float | None = None) -> None:
        """Runs the plan of n_words int32 at plan_at on the main instance and up to threads - 1
        workers, within time_limit seconds if given (on an epoch engine); run_plan stores a failing
        record's plan word at error_at. Raises WasmTimeout past the limit and WasmTrap on a trap
        or a fatal run_plan code (both set `broken`: the memory is in an unknown state and a
        worker may still be in a kernel), and PlanInputError when a kernel rejected the inputs
        (the pool stays usable)."""
        store = self.main.store
        if time_limit is not None:
            store.set_epoch_deadline(deadline_ticks(time_limit))
        try:
            self._run_plan(plan_at, n_words, threads, error_at)
        except WasmTrap as e:
            trap = e
        else:
            trap = None
        finally:
            if time_limit is not None:  # (before the owner shuts down: pool_shutdown runs on this store)
                store.set_epoch_deadline(NO_DEADLINE)
        if trap is not None:
            self.broken = self.broken or str(trap)
            if "interrupt" in str(trap) and time_limit is not None:
                raise WasmTimeout(f"exceeded the time limit of {time_limit * 1e3:.0f} ms") from trap
            raise trap
        rc = self._run_plan.words[0]
        if rc != 0:
            word = self.memory.read_i32(error_at)
            message = f"{ABI.run_error_message.get(rc, rc)} at plan word {word}"
            if rc == _INPUT_ERROR:
                raise PlanInputError(message, word)
            self.broken = self.broken or message
            raise WasmTrap(message)

    def shutdown(self, join_s: float | None = None) -> None:
        """Stops the worker threads (pool_shutdown) and marks the pool closed, then waits up to
        join_s seconds for each (None: does not wait). A worker stalled in a kernel ends only at its
        next check (stop_when), and not at all on an engine without epoch interruption."""
        if not self.workers:
            self.closed = True
            return
        store = self.main.store
        # A fresh deadline: the last call's may have passed long ago (or expired: a timeout).
        store.set_epoch_deadline(deadline_ticks(SHUTDOWN_SECONDS))
        try:
            self.main.fn["pool_shutdown"]()
        except WasmTrap as e:  # a broken or hostile module: its workers still end at their next check
            (log.debug if self.broken else log.warning)("stopping the worker threads failed: %s", e)
        finally:
            store.set_epoch_deadline(NO_DEADLINE)
        self.closed = True  # a worker that did not take the shutdown is interrupted instead
        workers, self.workers = self.workers, []
        for t in workers if join_s is not None else ():
            if t is not threading.current_thread():  # the GC may run an owner's finalizer anywhere
                t.join(timeout=join_s)
