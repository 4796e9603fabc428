"""CompiledPartition: runs one wasm partition. Guards each call's input signature, keeps a bounded
LRU of Plans per signature, uploads weights once (again only if a parameter changed in place),
copies inputs in and outputs out, runs the whole Plan in one wasm call, and recovers from traps.
A call like the previous one (same input kinds, same untouched parameters) takes a short path:
one C++ tensor check instead of the signature lookup (_Replay).

What a partition keeps in a runtime's memory (weights, loaded plans: _RuntimeState) belongs to
that runtime (Runtime.users_state) and is only touched under its lock, so a runtime retired after
a trap in another thread never shares state with its successor; a call whose runtime was retired
before it ran is simply run again on the new one (RuntimeRetired)."""
from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from operator import attrgetter, is_, itemgetter

import torch
from torch.fx import GraphModule

from torch_wasm_backend.lowering.lower import lower_partition
from torch_wasm_backend.lowering.plan import Plan, contiguous_strides
from torch_wasm_backend.lowering.registry import Unsupported
from torch_wasm_backend.lowering.state import LoweringState
from torch_wasm_backend.lowering.abi import ABI
from . import metrics as stats
from .errors import WasmBackendError, WasmInputError, WasmOutOfMemory, WasmTimeout, WasmTrap
from .options import Options
from .runtime import Runtime, RuntimeRetired, get_runtime

log = logging.getLogger("torch_wasm_backend")

# verify=N compares against eager with a tolerance loose enough for reordered float32 sums in
# deep nets, and tight enough that a wrong index or a dropped term (O(0.1) errors) is caught.
VERIFY_RTOL, VERIFY_ATOL = 1e-3, 1e-4

# Test hook (see torch_wasm_backend.testing): thread id -> [debug record, runs left]: that thread's
# upcoming plan runs start with the record (DEBUG_TRAP or DEBUG_STALL), so the fault really happens
# inside wasm. Empty but for tests: the hot path only tests its truth.
_inject: dict[int, list] = {}


def signature(args, indices) -> tuple:
    """What a Plan is specialised on: per (non-constant) tensor input its shape, strides, dtype and
    device; other inputs (symbolic sizes) by value."""
    return tuple((a.shape, a.stride(), a.dtype, a.device) if isinstance(a, torch.Tensor) else (type(a), a)
                 for a in map(args.__getitem__, indices))


def describe_inputs(args) -> str:
    return ", ".join(f"{tuple(a.shape)}:{str(a.dtype).replace('torch.', '')}" if isinstance(a, torch.Tensor)
                     else repr(a) for a in args)


@dataclass
class _Loaded:
    """A Plan placed in one runtime's memory."""
    arena: int
    plan_words: int
    n_words: int
    input_views: list                  # (input index, view in wasm memory)
    outputs: list                      # (OutputSpec, view in wasm memory, same layout as eager's)
    output_views: tuple                # the views alone, for the all-same-layout case
    prefix_words: int = 0              # the debug-record slot just before the plan
    records: list = field(default_factory=list)  # (kernel, word offset, words) per record
    owned: list = field(default_factory=list)    # (offset, Buffer): this plan's per-shape constants
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass(eq=False)  # hashed by identity: a key of _RuntimeState.loaded
class _Entry:
    plan: Plan | None                 # None: this signature runs in eager
    reason: str = ""
    evicted: bool = False             # dropped from the cache; its memory is freed by the next call


@dataclass(eq=False)
class _RuntimeState:
    """What one partition has in one runtime's memory. Only touched under that runtime's lock."""
    params_epoch: int                  # CompiledPartition._params_epoch it was made for
    evictions_seen: int                # CompiledPartition._evictions when last swept
    constants: dict = field(default_factory=dict)  # (name, nbytes) -> (offset, Buffer), shared by plans
    constant_versions: list | None = None           # (parameter, version) the constants hold
    loaded: dict = field(default_factory=dict)     # _Entry -> _Loaded


_get_version = attrgetter("_version")
_profiler_enabled = torch._C._autograd._profiler_enabled
_clone = torch.Tensor.clone


def _getter(indices: list[int]):
    """A C-level function args -> tuple(args[i] for i in indices)."""
    if len(indices) == 1:
        return itemgetter(slice(indices[0], indices[0] + 1))
    return itemgetter(*indices) if indices else itemgetter(slice(0, 0))


class _Replay:
    """The previous call of a partition, if it ran in wasm, as a cheap test for "this call needs
    the same plan and no weight upload": Dynamo's C++ TensorGuards checks the varying tensor
    inputs (dtype, device, sizes, strides, requires_grad, dispatch keys: stricter than the
    signature, so a mismatch only means the full path), then the parameters' identities and
    version counters are compared: ~2 us instead of ~4.5 us for the batch-1 MLP's partition (one
    input, six parameters; measured)."""

    def __init__(self, entry: _Entry, args, varying: list[int], constants: list[int]):
        self.entry = entry
        tensors = [args[i] for i in varying]
        self._guard = torch._C._dynamo.guards.TensorGuards(
            *tensors, dynamic_dims_sizes=[list(t.shape) for t in tensors],
            dynamic_dims_strides=[list(t.stride()) for t in tensors])
        self._varying = _getter(varying)
        self._constants = _getter(constants)
        # The tensors themselves, not their ids: a replaced parameter, once freed, may leave its id
        # to a new tensor (same version 0), and an id check would then reuse stale weights.
        self._params = self._constants(args)
        # Inference tensors have no version counter (and cannot change outside inference mode).
        versioned = [i for i in constants if not args[i].is_inference()]
        self._versioned = _getter(versioned)
        self._versions = tuple(map(_get_version, self._versioned(args)))

    @staticmethod
    def possible(args, varying: list[int]) -> bool:
        """Only all-tensor varying inputs (no symbolic sizes passed by value) are replayed."""
        return all(isinstance(args[i], torch.Tensor) for i in varying)

    def matches(self, args) -> bool:
        return (self._guard.check(*self._varying(args))
                and all(map(is_, self._constants(args), self._params))
                and tuple(map(_get_version, self._versioned(args))) == self._versions)


class CompiledPartition:
    """Callable that replaces one fused partition submodule (a plain object, not an nn.Module: the
    module call machinery would add microseconds to every call)."""

    def __init__(self, gm: GraphModule, constant_inputs: set[int], options: Options, name: str):
        self.gm = gm
        self.lowering = LoweringState(gm)  # what lowering keeps between this partition's plans
        self.name = name
        self.constant_inputs = constant_inputs
        self.options = options
        self.plans: OrderedDict[tuple, _Entry] = OrderedDict()
        self._plans_lock = threading.Lock()  # the cache is shared by all calling threads
        self.failures = 0
        self.disabled_reason: str | None = None
        self._verify_left = options.verify
        self._timed = bool(options.timeout_ms)  # runs on the runtime with epoch interruption
        n_inputs = sum(1 for n in gm.graph.nodes if n.op == "placeholder")
        self._varying = [i for i in range(n_inputs) if i not in constant_inputs]
        self._constant_list = sorted(constant_inputs)
        self._constant_params: list | None = None  # the parameters the plans were made for (held)
        # Bumped (under _plans_lock) when the parameters are replaced / an entry is evicted; each
        # runtime's state compares them on the next call there and frees what became stale.
        self._params_epoch = 0
        self._evictions = 0
        # (weak reference to a runtime, this partition's state there): saves the users_state lookup.
        self._last_state: tuple = (lambda: None, None)
        output = next(n for n in gm.graph.nodes if n.op == "output")
        self._single_output = not isinstance(output.args[0], (list, tuple))
        self._replay: _Replay | None = None  # set after a wasm call that left nothing to check
        # Plans run with one plain wasm call (no time limit, no per-kernel profiler spans).
        self._plain_run = not options.timeout_ms and not options.profile_kernels
        self._threads = options.threads
        self._internal_error_logged = False  # an internal error's traceback is logged once

    # ---- the call ------------------------------------------------------------------------------
    def __call__(self, *args):
        start = time.perf_counter()
        replay = self._replay
        replayed = replay is not None and not replay.entry.evicted and replay.matches(args)
        if replayed:
            entry, hit = replay.entry, True
        else:
            self._replay = None
            entry, hit = self._lookup(args)
            if entry is None:
                stats.add(eager_partition_calls=1)
                return self.gm(*args)
            if entry.plan is None:
                stats.add(plan_cache_hits=int(hit), plan_cache_misses=int(not hit), eager_partition_calls=1)
                return self.gm(*args)
        try:
            outputs, wasm_seconds, loaded = self._run(entry, args, replayed)
        except WasmTimeout as e:
            self._replay = None  # (the runtime retired itself: a worker may still be in a kernel)
            stats.add(timeouts=1)
            raise WasmTimeout(f"partition {self.name} {e} (option timeout_ms; inputs "
                              f"{describe_inputs(args)}; ops {self._ops(args)}); the wasm runtime "
                              "was rebuilt and is usable") from e
        except WasmInputError as e:
            return self._input_error(e, args)
        except WasmTrap as e:
            self._replay = None
            return self._recover(e, args)
        except WasmOutOfMemory as e:
            self._replay = None
            entry.plan, entry.reason = None, self._eager_reason(args, e, WasmOutOfMemory)
            stats.add(eager_partition_calls=1)
            return self.gm(*args)
        except Exception as e:  # a bug of ours while loading the plan (say, making a constant)
            self._replay = None
            entry.plan, entry.reason = None, self._internal_error(args, e, "loading the plan")
            stats.add(eager_partition_calls=1)
            return self.gm(*args)
        stats.record_call(wasm_seconds, time.perf_counter() - start - wasm_seconds, loaded.bytes_in,
                          loaded.bytes_out, hit)
        result = outputs[0] if self._single_output else tuple(outputs)
        if self._verify_left > 0:
            self._verify_left -= 1
            return self._verify(result, args)
        if self._replay is None and not self.disabled_reason and _Replay.possible(args, self._varying):
            self._replay = _Replay(entry, args, self._varying, self._constant_list)
        return result

    def _lookup(self, args) -> tuple[_Entry | None, bool]:
        """The plan cache entry for this call's signature (made on a miss) and whether it was a
        hit; (None, False) when the partition is kept on eager."""
        if self.disabled_reason:
            return None, False
        key = signature(args, self._varying)
        with self._plans_lock:
            params = [args[i] for i in self._constant_list]  # identity, not id(): see _Replay
            if self._constant_params is None or not all(map(is_, params, self._constant_params)):
                # A parameter was replaced (maybe with another shape): plans and constants made for
                # the old ones are void. (In-place changes are handled by _check_constants.)
                if self._constant_params is not None:
                    log.info("partition %s: a parameter was replaced; re-planning", self.name)
                    for old in self.plans.values():
                        old.evicted = True
                    self.plans.clear()
                    self._params_epoch += 1
                self._constant_params = params
            entry = self.plans.get(key)
            hit = entry is not None
            if entry is None:
                entry = self._new_entry(args)
                self.plans[key] = entry
                while len(self.plans) > self.options.max_plans_per_partition:
                    _, old = self.plans.popitem(last=False)
                    old.evicted = True
                    self._evictions += 1
            else:
                self.plans.move_to_end(key)
        return entry, hit

    def _verify(self, result, args):
        """Option verify=N: compare the first N calls with eager; on a mismatch warn, return the
        eager result and keep this partition on eager."""
        expected = self.gm(*args)
        got = [result] if self._single_output else list(result)
        want = [expected] if self._single_output else list(expected)
        for i, (g, w) in enumerate(zip(got, want)):
            if not torch.allclose(g, w, rtol=VERIFY_RTOL, atol=VERIFY_ATOL, equal_nan=True):
                diff = (g - w).abs().nan_to_num(float("inf")).max().item()
                self.disabled_reason = (f"verify: output {i} differs from eager by up to {diff:.3g} "
                                        f"(rtol={VERIFY_RTOL}, atol={VERIFY_ATOL}); kept on eager")
                log.warning("partition %s %s; inputs %s; ops %s", self.name, self.disabled_reason,
                            describe_inputs(args), self._ops(args))
                stats.record_fallback(self.name, "*", "partition", self.disabled_reason)
                stats.add(verify_mismatches=1)
                return expected
        stats.add(verify_passes=1)
        return result

    def _ops(self, args) -> str:
        entry = self.plans.get(signature(args, self._varying))
        if entry is None or entry.plan is None:
            return "?"
        return ", ".join(f"{k}x{v}" for k, v in entry.plan.aten_ops.items())

    def _new_entry(self, args) -> _Entry:
        start = time.perf_counter()
        try:
            plan = lower_partition(self.lowering, args, self.constant_inputs)
        except Unsupported as e:
            return _Entry(None, self._eager_reason(args, e, WasmBackendError))
        except Exception as e:  # a bug of the lowering, not of the model: eager runs it, loudly
            return _Entry(None, self._internal_error(args, e, "lowering"))
        finally:
            stats.add(seconds_planning=time.perf_counter() - start)
        stats.record_plan(kernel for kernel, _ in plan.records)
        stats.add(plans_from_template=int(plan.from_template), plans_lowered=int(not plan.from_template))
        footprint = plan.arena_size + sum(b.nbytes for b in plan.constants)
        cap = self.options.max_memory_mb * 2**20 if self.options.max_memory_mb else None
        if cap is not None and footprint > cap:
            problem = (f"needs {footprint / 2**20:.1f} MiB of wasm memory, over "
                       f"max_memory_mb={self.options.max_memory_mb}")
            return _Entry(None, self._eager_reason(args, problem, WasmOutOfMemory))
        return _Entry(plan)

    def _internal_error(self, args, error: Exception, doing: str) -> str:
        """A bug of ours while `doing` something for these inputs: the reason they run in eager,
        with the traceback logged once per partition; strict raises WasmBackendError from it."""
        problem = (f"internal error while {doing}: {type(error).__name__}: {error} (a bug of "
                   "torch_wasm_backend; please report it with this message)")
        if self.options.strict:
            raise WasmBackendError(f"wasm partition {self.name} failed on inputs "
                                   f"{describe_inputs(args)}: {problem}") from error
        if not self._internal_error_logged:
            self._internal_error_logged = True
            log.warning("partition %s: %s", self.name, problem, exc_info=error)
        return self._eager_reason(args, problem, WasmBackendError)

    def _eager_reason(self, args, problem, strict_error) -> str:
        """This input signature runs in eager: record why (strict mode raises strict_error)."""
        reason = f"inputs {describe_inputs(args)}: {problem}"
        if self.options.strict:
            error = strict_error(f"wasm partition {self.name} cannot run {reason}")
            raise error from (problem if isinstance(problem, Exception) else None)
        log.warning("partition %s runs in eager for %s", self.name, reason)
        stats.record_fallback(self.name, "*", "partition", reason)
        return reason

    def _run(self, entry: _Entry, args, constants_checked: bool = False):
        """constants_checked: the parameters are the ones the runtime's copies were last checked
        against, unchanged since (a _Replay match)."""
        while True:
            runtime, _ = get_runtime(self._threads, self._timed)  # lock-free when nothing changed
            with runtime.lock:
                if runtime.broken:
                    continue  # retired while this call waited for it: run on its successor
                try:
                    return self._run_on(runtime, entry, args, constants_checked)
                except RuntimeRetired:  # (a worker trapped in between: nothing ran)
                    continue

    def _run_on(self, runtime: Runtime, entry: _Entry, args, constants_checked: bool):
        """_run on one runtime, whose lock the caller holds."""
        last_runtime, state = self._last_state
        if last_runtime() is not runtime or state.params_epoch != self._params_epoch:
            state = self._state_in(runtime)
            constants_checked = False  # (the replay's check was against another runtime's copies)
        if state.evictions_seen != self._evictions:
            state.evictions_seen = self._evictions
            for old in [e for e in state.loaded if e.evicted]:
                self._unload(runtime, state, old)
        loaded = state.loaded.get(entry)
        if loaded is None:
            load_start = time.perf_counter()
            loaded = self._load(state, entry, runtime, args)
            stats.add(seconds_planning=time.perf_counter() - load_start)
        if not constants_checked:
            self._check_constants(runtime, state, entry, args)
        for i, view in loaded.input_views:
            view.copy_(args[i])
        t0 = time.perf_counter()
        if self._plain_run and not _inject and not _profiler_enabled():
            runtime.run_locked(loaded.plan_words, loaded.n_words, self._threads)
        else:
            self._run_plan_specially(runtime, loaded)
        wasm_seconds = time.perf_counter() - t0
        # clone() keeps the view's layout, which is eager's when same_layout (the usual case).
        if loaded.output_views is not None:
            outputs = list(map(_clone, loaded.output_views))
        else:
            outputs = [view.clone() if same_layout else
                       torch.empty_strided(spec.shape, spec.strides, dtype=view.dtype).copy_(view)
                       for spec, view, same_layout in loaded.outputs]
        if entry.evicted:  # evicted during the call (after the sweep above): its memory is ours to free
            self._unload(runtime, state, entry)
        return outputs, wasm_seconds, loaded

    def _run_plan_specially(self, runtime: Runtime, loaded: "_Loaded") -> None:
        """Runs the plan with a time limit, an injected debug record or profiler spans."""
        limit = self.options.timeout_ms / 1e3 if self.options.timeout_ms else None
        plan_at, n_words = loaded.plan_words, loaded.n_words
        inject = _inject.get(threading.get_ident())
        if inject and inject[1] > 0:
            record, inject[1] = inject[0], inject[1] - 1
            runtime.memory.write_words(loaded.prefix_words, record)
            plan_at, n_words = loaded.prefix_words, n_words + len(record)
        if self.options.profile_kernels:
            # One wasm call per kernel, each in its own profiler span (opt-in: costs a call each).
            for kernel, offset, length in loaded.records:
                with torch.profiler.record_function(f"wasm::{kernel}"):
                    runtime.run(loaded.plan_words + 4 * offset, length, self.options.threads, limit)
        elif _profiler_enabled():
            with torch.profiler.record_function(f"wasm::{self.name}"):
                runtime.run(plan_at, n_words, self.options.threads, limit)
        else:
            runtime.run(plan_at, n_words, self.options.threads, limit)

    # ---- memory (all under the runtime's lock) ----------------------------------------------------
    def _state_in(self, runtime: Runtime) -> _RuntimeState:
        """This partition's state in the runtime (made on the first call there, and again after
        its parameters were replaced)."""
        state = runtime.users_state.get(self)
        if state is None or state.params_epoch != self._params_epoch:
            if state is not None:
                self._free_state(runtime, state)
            state = runtime.users_state[self] = _RuntimeState(self._params_epoch, self._evictions)
            # A partition that is dropped (torch._dynamo.reset(), a deleted model) gives its memory
            # back; the runtime may outlive it, and must not be kept alive by it.
            release = weakref.finalize(self, _release_dropped, weakref.ref(runtime), state)
            release.atexit = False  # at exit the memory goes with the process: no thread then
        self._last_state = (weakref.ref(runtime), state)
        return state

    def _free_state(self, runtime: Runtime, state: _RuntimeState) -> None:
        """Frees everything this partition has in the runtime (its parameters were replaced)."""
        _release(runtime, state)
        del runtime.users_state[self]

    def _load(self, state: _RuntimeState, entry: _Entry, runtime: Runtime, args) -> _Loaded:
        """Uploads the entry's constants, encodes its records for this runtime and makes the
        input and output views."""
        plan = entry.plan
        addrs, owned = {}, []
        for buf in plan.constants:
            if buf.per_shape:  # made from this plan's sizes (masks, index tables): freed with it
                offset = runtime.allocator.alloc(buf.nbytes)
                _upload(runtime, offset, buf, args)
                owned.append((offset, buf))
                addrs[id(buf)] = offset
                continue
            # Plans of one partition share the other constants by name: LoweringContext.constant
            # names them by node, dtype and shape, so equal names mean equal values. (Hashing the
            # values instead cost a BERT-style encoder ~20 ms per new sequence length.)
            key = (buf.name, buf.nbytes)
            if key not in state.constants:
                offset = runtime.allocator.alloc(buf.nbytes)
                _upload(runtime, offset, buf, args)
                state.constants[key] = (offset, buf)
            addrs[id(buf)] = state.constants[key][0]
        arena = runtime.allocator.alloc(plan.arena_size)
        words = plan.encode(arena, addrs)
        # A slot before the plan where a test hook can put one debug record (see _inject).
        plan_at = runtime.allocator.alloc(4 * (len(words) + _DEBUG_RECORD_WORDS))
        runtime.memory.write_words(plan_at + 4 * _DEBUG_RECORD_WORDS, words)
        records, offset = [], 0
        for kernel, _ in plan.records:
            length = 2 + ABI.ops[kernel].n_words
            records.append((kernel, offset, length))
            offset += length

        def view(ref, strides=None):
            base = addrs[id(ref.buffer)] if ref.buffer.is_constant else arena + plan.arena_offsets[id(ref.buffer)]
            return runtime.memory.view(base + ref.offset * ref.itemsize, ref.shape, ref.dtype, strides)

        inputs = [(i, view(ref)) for i, ref in enumerate(plan.inputs) if ref is not None]
        outputs = [view(spec.ref, spec.ref.strides) for spec in plan.outputs]
        same_layout = [view.is_contiguous() and spec.strides == contiguous_strides(spec.shape)
                       for spec, view in zip(plan.outputs, outputs)]
        loaded = state.loaded[entry] = _Loaded(
            arena, plan_at + 4 * _DEBUG_RECORD_WORDS, len(words), inputs,
            list(zip(plan.outputs, outputs, same_layout)), tuple(outputs) if all(same_layout) else None,
            prefix_words=plan_at, records=records, owned=owned,
            bytes_in=sum(v.numel() * v.element_size() for _, v in inputs),
            bytes_out=sum(v.numel() * v.element_size() for v in outputs))
        return loaded

    def _check_constants(self, runtime: Runtime, state: _RuntimeState, entry: _Entry, args) -> None:
        """Parameters are uploaded once; re-upload if one was replaced or changed in place."""
        versions = [(args[i], _version(args[i])) for i in self.constant_inputs]
        if state.constant_versions is None:
            state.constant_versions = versions
            return
        if any(a is not b or va != vb for (a, va), (b, vb) in zip(versions, state.constant_versions)):
            log.info("partition %s: a parameter changed since compile; re-uploading weights", self.name)
            for offset, buf in state.constants.values():
                _upload(runtime, offset, buf, args)
            for offset, buf in state.loaded[entry].owned:  # per-shape constants may be made from weights too
                _upload(runtime, offset, buf, args)
            for other in [e for e, loaded in state.loaded.items() if e is not entry and loaded.owned]:
                self._unload(runtime, state, other)  # other shapes' ones: remade when next called
            state.constant_versions = versions

    @staticmethod
    def _unload(runtime: Runtime, state: _RuntimeState, entry: _Entry) -> None:
        """Frees the entry's plan memory in this runtime."""
        loaded = state.loaded.pop(entry, None)
        if loaded is not None:
            runtime.allocator.free(loaded.arena)
            runtime.allocator.free(loaded.prefix_words)
            for offset, _ in loaded.owned:
                runtime.allocator.free(offset)

    # ---- recovery -------------------------------------------------------------------------------
    def _input_error(self, error: WasmInputError, args):
        """A kernel rejected this call's inputs (an index out of range): the caller's error, so
        nothing is rebuilt or charged. Eager raises its own error (the IndexError the caller would
        get without the backend); no wasm result is ever returned."""
        stats.add(eager_partition_calls=1, input_errors=1)
        result = self.gm(*args)
        # Eager accepted inputs a kernel rejected: a kernel bug, handled like a trap.
        return self._recover(WasmTrap(f"a kernel rejected inputs eager accepts ({error})"), args, result)

    def _recover(self, error: WasmTrap, args, eager_result=None):
        """A trap (the runtime retired itself: the next call gets a fresh one): this partition is
        charged a failure and the call returns eager's result."""
        self.failures += 1
        message = (f"partition {self.name} trapped inside wasm: {error} (inputs {describe_inputs(args)}; "
                   f"ops {self._ops(args)})")
        if self.options.strict:
            raise WasmBackendError(message) from error
        log.warning("%s; returning the eager result (the wasm runtime was rebuilt)", message)
        stats.record_trap(message)
        if self.failures >= self.options.max_failures:
            self.disabled_reason = f"trapped {self.failures} times; kept on eager"
            log.warning("partition %s %s", self.name, self.disabled_reason)
            stats.record_fallback(self.name, "*", "partition", self.disabled_reason)
        return self.gm(*args) if eager_result is None else eager_result


def _release(runtime: Runtime, state: _RuntimeState) -> None:
    """Frees all the memory of one partition's state in the runtime (under its lock); once."""
    for entry in list(state.loaded):
        CompiledPartition._unload(runtime, state, entry)
    for offset, _ in state.constants.values():
        runtime.allocator.free(offset)
    state.constants.clear()


def _release_dropped(runtime_ref, state: _RuntimeState) -> None:
    """Finalizer of a partition: frees its state in a runtime that is still alive. It may run in
    the middle of any code of this thread (a garbage collection), maybe while this thread holds
    the runtime's (reentrant) lock inside the allocator, so the memory is freed from another
    thread, which waits for the lock like any call."""
    def release():
        runtime = runtime_ref()
        if runtime is not None:
            with runtime.lock:
                _release(runtime, state)

    if runtime_ref() is not None:
        try:
            threading.Thread(target=release, name="wasm-release-dropped", daemon=True).start()
        except RuntimeError:  # interpreter shutdown: the memory goes with the process
            pass


_DEBUG_RECORD_WORDS = len(ABI.encode("DEBUG_TRAP", unused=0))


def _upload(runtime: Runtime, offset: int, buf, args) -> None:
    """Writes constant buf, made for this call's inputs, at offset (allocated for buf.nbytes)."""
    value = buf.make(args)
    if value.numel() * value.element_size() != buf.nbytes:  # never write past the allocation
        raise WasmBackendError(f"internal error: constant {buf.name} came out as {tuple(value.shape)} "
                               f"{value.dtype}, not the {buf.nbytes} bytes its plan reserved (a lowering bug: "
                               "please report it with this message)")
    runtime.memory.write(offset, value)
    stats.add(constant_bytes_uploaded=buf.nbytes)


def _version(t):
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter; identity is all we can check
        return None
