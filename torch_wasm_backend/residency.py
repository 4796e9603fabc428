"""What one partition keeps in one runtime's memory: its constants (weights, shared by its plans)
and its loaded plans (arena, encoded records, input and output views). It belongs to that runtime
(Runtime.users_state) and is only touched under its lock, so a runtime retired after a trap in
another thread never shares it with its successor, and a partition that is dropped gives it back
(release_dropped)."""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field

from torch_wasm_backend.lowering.abi import ABI
from torch_wasm_backend.lowering.plan import contiguous_strides

from . import metrics as stats
from .errors import WasmBackendError
from .plan_cache import Entry
from .runtime import Runtime


@dataclass
class Loaded:
    """A Plan placed in one runtime's memory."""
    arena: int
    plan_words: int
    n_words: int
    input_views: list                  # (input index, view in wasm memory)
    outputs: list                      # (OutputSpec, view in wasm memory, same layout as eager's)
    output_views: tuple | None         # the views alone, for the all-same-layout case
    records: list                      # (kernel, word offset, words) per record
    owned: list                        # (offset, Buffer): this plan's per-shape constants
    bytes_in: int
    bytes_out: int


@dataclass(eq=False)
class Residency:
    """One partition's constants and loaded plans in one runtime, made for one Weights.epoch;
    `generation` is the Weights.generation its constants hold and `evictions_seen` the
    PlanCache.evictions when its evicted plans were last freed."""
    epoch: int
    generation: int
    evictions_seen: int
    constants: dict = field(default_factory=dict)  # (name, nbytes) -> (offset, Buffer), shared by plans
    loaded: dict = field(default_factory=dict)     # Entry -> Loaded

    def load(self, runtime: Runtime, entry: Entry, args) -> Loaded:
        """Uploads the entry's constants, encodes its records for this runtime and makes the
        input and output views."""
        plan = entry.plan
        addrs, owned = {}, []
        for buf in plan.constants:
            if buf.per_shape:  # made from this plan's sizes (masks, index tables): freed with it
                offset = runtime.allocator.alloc(buf.nbytes)
                upload(runtime, offset, buf, args)
                owned.append((offset, buf))
                addrs[id(buf)] = offset
                continue
            # Plans of one partition share the other constants by name: LoweringContext.constant
            # names them by node, dtype and shape, so equal names mean equal values. (Hashing the
            # values instead cost a BERT-style encoder ~20 ms per new sequence length.)
            key = (buf.name, buf.nbytes)
            if key not in self.constants:
                offset = runtime.allocator.alloc(buf.nbytes)
                upload(runtime, offset, buf, args)
                self.constants[key] = (offset, buf)
            addrs[id(buf)] = self.constants[key][0]
        arena = runtime.allocator.alloc(plan.arena_size)
        words = plan.encode(arena, addrs)
        plan_at = runtime.allocator.alloc(4 * len(words))
        runtime.memory.write_words(plan_at, words)
        records, offset = [], 0
        for kernel, _ in plan.records:
            length = 2 + ABI.ops[kernel].n_words
            records.append((kernel, offset, length))
            offset += length

        def view(ref, strides=None):
            return runtime.memory.view(plan.address(ref, arena, addrs), ref.shape, ref.dtype, strides)

        inputs = [(i, view(ref)) for i, ref in enumerate(plan.inputs) if ref is not None]
        outputs = [view(spec.ref, spec.ref.strides) for spec in plan.outputs]
        same_layout = [view.is_contiguous() and spec.strides == contiguous_strides(spec.shape)
                       for spec, view in zip(plan.outputs, outputs)]
        loaded = self.loaded[entry] = Loaded(
            arena, plan_at, len(words), inputs, list(zip(plan.outputs, outputs, same_layout)),
            tuple(outputs) if all(same_layout) else None, records, owned,
            bytes_in=sum(v.numel() * v.element_size() for _, v in inputs),
            bytes_out=sum(v.numel() * v.element_size() for v in outputs))
        return loaded

    def unload(self, runtime: Runtime, entry: Entry) -> None:
        """Frees the entry's plan memory in this runtime."""
        loaded = self.loaded.pop(entry, None)
        if loaded is not None:
            runtime.allocator.free(loaded.arena)
            runtime.allocator.free(loaded.plan_words)
            for offset, _ in loaded.owned:
                runtime.allocator.free(offset)

    def unload_evicted(self, runtime: Runtime, evictions: int) -> None:
        """Frees the plans evicted from the cache (evictions: its count, now evictions_seen)."""
        self.evictions_seen = evictions
        for old in [e for e in self.loaded if e.evicted]:
            self.unload(runtime, old)

    def refresh(self, runtime: Runtime, entry: Entry, generation: int, args) -> None:
        """A parameter changed in place (Weights.generation moved on): re-uploads the constants
        from this call's inputs. Per-shape constants may be made from weights too: the entry's
        are re-made, other shapes' are freed with their plans (remade when next called)."""
        for offset, buf in self.constants.values():
            upload(runtime, offset, buf, args)
        for other, loaded in list(self.loaded.items()):
            if other is entry:
                for offset, buf in loaded.owned:
                    upload(runtime, offset, buf, args)
            elif loaded.owned:
                self.unload(runtime, other)
        self.generation = generation

    def release(self, runtime: Runtime) -> None:
        """Frees all of it (once: it is empty afterwards)."""
        for entry in list(self.loaded):
            self.unload(runtime, entry)
        for offset, _ in self.constants.values():
            runtime.allocator.free(offset)
        self.constants.clear()


def residency_in(runtime: Runtime, owner, epoch: int, generation: int, evictions: int) -> Residency:
    """owner's Residency in the runtime, under its lock: made on the first call there, and made
    again (the old one freed) when owner's parameters were replaced (a new epoch)."""
    residency = runtime.users_state.get(owner)
    if residency is None or residency.epoch != epoch:
        if residency is not None:
            residency.release(runtime)
        residency = runtime.users_state[owner] = Residency(epoch, generation, evictions)
        # A partition that is dropped (torch._dynamo.reset(), a deleted model) gives its memory
        # back; the runtime may outlive it, and must not be kept alive by it.
        release = weakref.finalize(owner, release_dropped, weakref.ref(runtime), residency)
        release.atexit = False  # at exit the memory goes with the process: no thread then
    return residency


def release_dropped(runtime_ref, residency: Residency) -> None:
    """Finalizer of a partition: frees its Residency in a runtime that is still alive. It may run
    in the middle of any code of this thread (a garbage collection), maybe while this thread holds
    the runtime's (reentrant) lock inside the allocator, so the memory is freed from another
    thread, which waits for the lock like any call."""
    def release():
        runtime = runtime_ref()
        if runtime is not None:
            with runtime.lock:
                residency.release(runtime)

    if runtime_ref() is not None:
        try:
            threading.Thread(target=release, name="wasm-release-dropped", daemon=True).start()
        except RuntimeError:  # interpreter shutdown: the memory goes with the process
            pass


def upload(runtime: Runtime, offset: int, buf, args) -> None:
    """Writes constant buf, made for this call's inputs, at offset (allocated for buf.nbytes)."""
    value = buf.make(args)
    if value.numel() * value.element_size() != buf.nbytes:  # never write past the allocation
        raise WasmBackendError(f"internal error: constant {buf.name} came out as {tuple(value.shape)} "
                               f"{value.dtype}, not the {buf.nbytes} bytes its plan reserved (a lowering bug: "
                               "please report it with this message)")
    runtime.memory.write(offset, value)
    stats.add(constant_bytes_uploaded=buf.nbytes)
