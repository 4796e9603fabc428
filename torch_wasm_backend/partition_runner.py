"""CompiledPartition: the call path of one wasm partition. A call finds its Plan (the previous
call's Replay, else the PlanCache by input signature, lowered on a miss), checks the parameters
once (Weights), places the plan and the weights in the runtime's memory if they are not there yet
(Residency), copies the inputs in, runs the whole Plan in one wasm call and copies the outputs
out. Around that: verification against eager (option verify), recovery from traps, the eager
fallback and its reasons, and the metrics. A call whose runtime was retired before it ran is
simply run again on the new one (RuntimeRetired)."""
from __future__ import annotations

import logging
import time
import weakref

import torch
from torch.fx import GraphModule

from torch_wasm_backend.lowering.lower import lower_partition
from torch_wasm_backend.lowering.registry import Unsupported
from torch_wasm_backend.lowering.state import LoweringState
from . import metrics as stats
from .errors import WasmBackendError, WasmInputError, WasmOutOfMemory, WasmTimeout, WasmTrap
from .options import Options
from .plan_cache import Entry, PlanCache, Replay
from .residency import Loaded, residency_in
from .runtime import Runtime, RuntimeRetired, get_runtime
from .weights import Weights

log = logging.getLogger("torch_wasm_backend")

# verify=N compares against eager with a tolerance loose enough for reordered float32 sums in
# deep nets, and tight enough that a wrong index or a dropped term (O(0.1) errors) is caught.
VERIFY_RTOL, VERIFY_ATOL = 1e-3, 1e-4

_profiler_enabled = torch._C._autograd._profiler_enabled
_clone = torch.Tensor.clone


def describe_inputs(args) -> str:
    return ", ".join(f"{tuple(a.shape)}:{str(a.dtype).replace('torch.', '')}" if isinstance(a, torch.Tensor)
                     else repr(a) for a in args)


class CompiledPartition:
    """Callable that replaces one fused partition submodule (a plain object, not an nn.Module: the
    module call machinery would add microseconds to every call)."""

    def __init__(self, gm: GraphModule, constant_inputs: set[int], options: Options, name: str):
        self.gm = gm
        self.lowering = LoweringState(gm)  # what lowering keeps between this partition's plans
        self.name = name
        self.constant_inputs = constant_inputs
        self.options = options
        self.failures = 0
        self.disabled_reason: str | None = None
        self._verify_left = options.verify
        self._timed = bool(options.timeout_ms)  # runs on the runtime with epoch interruption
        n_inputs = sum(1 for n in gm.graph.nodes if n.op == "placeholder")
        self._varying = [i for i in range(n_inputs) if i not in constant_inputs]
        self.plans = PlanCache(self._varying, options.max_plans_per_partition)
        self.weights = Weights(sorted(constant_inputs), name)
        self._replay: Replay | None = None  # set after a wasm call that left nothing to check
        # (weak reference to a runtime, this partition's Residency there): saves the users_state lookup.
        self._last_residency: tuple = (lambda: None, None)
        output = next(n for n in gm.graph.nodes if n.op == "output")
        self._single_output = not isinstance(output.args[0], (list, tuple))
        # Plans run with one plain wasm call (no time limit, no per-kernel profiler spans).
        self._plain_run = not options.timeout_ms and not options.profile_kernels
        self._threads = options.threads
        self._internal_error_logged = False  # an internal error's traceback is logged once

    # ---- the call ------------------------------------------------------------------------------
    def __call__(self, *args):
        start = time.perf_counter()
        replay = self._replay
        if replay is not None and replay.matches(args) and self.weights.current(args):
            entry, hit = replay.entry, True
        else:
            self._replay = None
            if self.disabled_reason:
                stats.add(eager_partition_calls=1)
                return self.gm(*args)
            entry, hit = self.plans.lookup(args, self.weights.sync(args), lambda: self._new_entry(args))
            if entry.plan is None:
                stats.add(plan_cache_hits=int(hit), plan_cache_misses=int(not hit), eager_partition_calls=1)
                return self.gm(*args)
        try:
            outputs, wasm_seconds, loaded = self._run(entry, args)
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
        if self._replay is None and not self.disabled_reason and Replay.possible(args, self._varying):
            self._replay = Replay(entry, args, self._varying)
        return result

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
        entry = self.plans.peek(args)
        if entry is None or entry.plan is None:
            return "?"
        return ", ".join(f"{k}x{v}" for k, v in entry.plan.aten_ops.items())

    def _new_entry(self, args) -> Entry:
        start = time.perf_counter()
        try:
            plan = lower_partition(self.lowering, args, self.constant_inputs)
        except Unsupported as e:
            return Entry(None, self._eager_reason(args, e, WasmBackendError))
        except Exception as e:  # a bug of the lowering, not of the model: eager runs it, loudly
            return Entry(None, self._internal_error(args, e, "lowering"))
        finally:
            stats.add(seconds_planning=time.perf_counter() - start)
        stats.record_plan(kernel for kernel, _ in plan.records)
        stats.add(plans_from_template=int(plan.from_template), plans_lowered=int(not plan.from_template))
        footprint = plan.arena_size + sum(b.nbytes for b in plan.constants)
        cap = self.options.max_memory_mb * 2**20 if self.options.max_memory_mb else None
        if cap is not None and footprint > cap:
            problem = (f"needs {footprint / 2**20:.1f} MiB of wasm memory, over "
                       f"max_memory_mb={self.options.max_memory_mb}")
            return Entry(None, self._eager_reason(args, problem, WasmOutOfMemory))
        return Entry(plan)

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

    def _run(self, entry: Entry, args):
        while True:
            runtime, _ = get_runtime(self._threads, self._timed)  # lock-free when nothing changed
            with runtime.lock:
                if runtime.broken:
                    continue  # retired while this call waited for it: run on its successor
                try:
                    return self._run_on(runtime, entry, args)
                except RuntimeRetired:  # (a worker trapped in between: nothing ran)
                    continue

    def _run_on(self, runtime: Runtime, entry: Entry, args):
        """_run on one runtime, whose lock the caller holds."""
        weights, evictions = self.weights, self.plans.evictions
        last_runtime, residency = self._last_residency
        if last_runtime() is not runtime or residency.epoch != weights.epoch:
            residency = residency_in(runtime, self, weights.epoch, weights.generation, evictions)
            self._last_residency = (weakref.ref(runtime), residency)
        if residency.evictions_seen != evictions:
            residency.unload_evicted(runtime, evictions)
        if residency.generation != weights.generation:
            residency.refresh(runtime, entry, weights.generation, args)
        loaded = residency.loaded.get(entry)
        if loaded is None:
            load_start = time.perf_counter()
            loaded = residency.load(runtime, entry, args)
            stats.add(seconds_planning=time.perf_counter() - load_start)
        for i, view in loaded.input_views:
            view.copy_(args[i])
        t0 = time.perf_counter()
        if self._plain_run and not _profiler_enabled():
            runtime.run_locked(loaded.plan_words, loaded.n_words, self._threads)
        else:
            self._run_plan_specially(runtime, loaded)
        wasm_seconds = time.perf_counter() - t0
        # clone() keeps the view's layout, which is eager's when same_layout (the usual case).
        if loaded.output_views is not None:
            outputs = list(map(_clone, loaded.output_views))
        else:
            outputs = [view.clone() if same_layout else _copy_in_layout(view, spec.shape, spec.strides)
                       for spec, view, same_layout in loaded.outputs]
        if entry.evicted:  # evicted during the call (after the sweep above): its memory is ours to free
            residency.unload(runtime, entry)
        return outputs, wasm_seconds, loaded

    def _run_plan_specially(self, runtime: Runtime, loaded: Loaded) -> None:
        """Runs the plan with a time limit or profiler spans."""
        limit = self.options.timeout_ms / 1e3 if self.options.timeout_ms else None
        if self.options.profile_kernels:
            # One wasm call per kernel, each in its own profiler span (opt-in: costs a call each).
            for kernel, offset, length in loaded.records:
                with torch.profiler.record_function(f"wasm::{kernel}"):
                    runtime.run(loaded.plan_words + 4 * offset, length, self._threads, limit)
        elif _profiler_enabled():
            with torch.profiler.record_function(f"wasm::{self.name}"):
                runtime.run(loaded.plan_words, loaded.n_words, self._threads, limit)
        else:
            runtime.run(loaded.plan_words, loaded.n_words, self._threads, limit)

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


def _copy_in_layout(view: torch.Tensor, shape, strides) -> torch.Tensor:
    """view copied into eager's layout (shape, strides). That layout may repeat elements (eager
    returned an expand: stride 0), and a fresh tensor cannot be written through a repeating
    layout: such dims are copied once and expanded, as eager's are. Any other overlap (rare) gets a
    contiguous copy: right values, another layout."""
    repeated = [d for d, (size, stride) in enumerate(zip(shape, strides)) if stride == 0 and size > 1]
    source = view
    for d in repeated:
        source = source.narrow(d, 0, 1)
    out = torch.empty_strided(source.shape, strides, dtype=view.dtype)
    if torch._debug_has_internal_overlap(out) != 0:
        return view.clone(memory_format=torch.contiguous_format)
    return out.copy_(source).expand(shape)
