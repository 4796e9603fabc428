"""The parameters a partition's plans and uploaded constants were made for: the one place that
checks a call's constant inputs (parameters and buffers) by identity and version counter.

Two counters say what changed, so that the plan cache and every runtime's copies compare ints
instead of tensors: `epoch` (a parameter was replaced, maybe by one of another shape: the plans
are void) and `generation` (a parameter was changed in place: the copies in wasm memory are stale).
"""
from __future__ import annotations

import logging
import threading
from operator import attrgetter, is_

from .plan_cache import args_getter

log = logging.getLogger("torch_wasm_backend")

_get_version = attrgetter("_version")


class Weights:
    """One partition's constant inputs as last recorded. current() is the replay's check, sync()
    the full path's; calls from several threads may see the same change (hence the lock)."""

    def __init__(self, constants: list[int], name: str):
        self.epoch = 0
        self.generation = 0
        self._name = name
        self._indices = constants
        self._constants = args_getter(constants)
        # (the tensors themselves, held: see current(); getter of those with a version counter;
        # their versions), swapped as one so that current() never sees half an update.
        self._recorded: tuple | None = None
        self._lock = threading.Lock()

    def current(self, args) -> bool:
        """This call's constants are the recorded ones, unchanged since. The tensors themselves are
        compared, not their ids: a replaced parameter, once freed, may leave its id to a new tensor
        (same version 0), and an id check would then reuse stale weights."""
        recorded = self._recorded
        return (recorded is not None and all(map(is_, self._constants(args), recorded[0]))
                and tuple(map(_get_version, recorded[1](args))) == recorded[2])

    def sync(self, args) -> int:
        """Records this call's constants if they are not current(), bumping epoch (one was
        replaced) or generation (one was changed in place); returns the epoch."""
        if self.current(args):
            return self.epoch
        with self._lock:
            if self.current(args):  # another thread recorded them meanwhile
                return self.epoch
            params = self._constants(args)
            if self._recorded is not None:
                if all(map(is_, params, self._recorded[0])):
                    log.info("partition %s: a parameter changed since compile; re-uploading weights", self._name)
                    self.generation += 1
                else:
                    log.info("partition %s: a parameter was replaced; re-planning", self._name)
                    self.epoch += 1
            # Inference tensors have no version counter (and cannot change outside inference mode).
            versioned = args_getter([i for i, p in zip(self._indices, params) if not p.is_inference()])
            self._recorded = (params, versioned, tuple(map(_get_version, versioned(args))))
            return self.epoch
