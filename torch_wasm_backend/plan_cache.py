"""A partition's plans, keyed by input signature: a bounded LRU of Entries (a Plan, or why that
signature runs in eager) made for one set of parameters (Weights.epoch), and the Replay of the
previous call, which finds its Entry without computing the signature."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from operator import itemgetter
from typing import Callable

import torch

from torch_wasm_backend.lowering.plan import Plan


def signature(args, indices) -> tuple:
    """What a Plan is specialised on: per (non-constant) tensor input its shape, strides, dtype and
    device; other inputs (symbolic sizes) by value."""
    return tuple((a.shape, a.stride(), a.dtype, a.device) if isinstance(a, torch.Tensor) else (type(a), a)
                 for a in map(args.__getitem__, indices))


@dataclass(eq=False)  # hashed by identity: a key of Residency.loaded
class Entry:
    """One signature's Plan, or why that signature runs in eager."""
    plan: Plan | None                 # None: this signature runs in eager
    reason: str = ""
    evicted: bool = False             # dropped from the cache; its memory is freed by the next call


class PlanCache:
    """Entries by the signature of the varying (non-constant) inputs, least recently used first,
    at most `capacity`. Shared by all calling threads (hence the lock). `evictions` counts the
    entries dropped, so that each runtime's Residency knows when to free their memory."""

    def __init__(self, varying: list[int], capacity: int):
        self.varying = varying
        self.capacity = capacity
        self.evictions = 0
        self._entries: OrderedDict[tuple, Entry] = OrderedDict()
        self._epoch = 0  # the Weights.epoch the entries were made for
        self._lock = threading.Lock()

    def lookup(self, args, weights_epoch: int, make: Callable[[], Entry]) -> tuple[Entry, bool]:
        """The entry for this call's signature and whether it was there (a hit); on a miss, make()
        makes it. Entries made for other parameters (another weights_epoch) are dropped first:
        a replaced parameter may have another shape."""
        key = signature(args, self.varying)
        with self._lock:
            if weights_epoch != self._epoch:
                self._epoch = weights_epoch
                while self._entries:
                    self._evict()
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry, True
            entry = self._entries[key] = make()
            while len(self._entries) > self.capacity:
                self._evict()
            return entry, False

    def peek(self, args) -> Entry | None:
        """The entry for this call's signature, if any (for messages: not a use)."""
        return self._entries.get(signature(args, self.varying))

    def _evict(self) -> None:
        _, old = self._entries.popitem(last=False)
        old.evicted = True
        self.evictions += 1


def args_getter(indices: list[int]):
    """A C-level function args -> tuple(args[i] for i in indices)."""
    if len(indices) == 1:
        return itemgetter(slice(indices[0], indices[0] + 1))
    return itemgetter(*indices) if indices else itemgetter(slice(0, 0))


class Replay:
    """The previous call's Entry, if it ran in wasm, with a cheap test for "this call has the same
    signature": Dynamo's C++ TensorGuards on the varying tensor inputs (dtype, device, sizes,
    strides, requires_grad, dispatch keys: stricter than the signature, so a mismatch only means
    the full lookup). With Weights.current, ~2 us instead of ~4.5 us for the batch-1 MLP's
    partition (one input, six parameters; measured)."""

    def __init__(self, entry: Entry, args, varying: list[int]):
        self.entry = entry
        tensors = [args[i] for i in varying]
        self._guard = torch._C._dynamo.guards.TensorGuards(
            *tensors, dynamic_dims_sizes=[list(t.shape) for t in tensors],
            dynamic_dims_strides=[list(t.stride()) for t in tensors])
        self._varying = args_getter(varying)

    @staticmethod
    def possible(args, varying: list[int]) -> bool:
        """Only all-tensor varying inputs (no symbolic sizes passed by value) are replayed."""
        return all(isinstance(args[i], torch.Tensor) for i in varying)

    def matches(self, args) -> bool:
        return not self.entry.evicted and self._guard.check(*self._varying(args))
