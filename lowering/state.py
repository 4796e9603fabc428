"""LoweringState: what lowering remembers about one partition's graph between its plans.

A partition is lowered once per input signature (torch.compile) or per variant (export with
dynamic dims); what does not depend on the signature is worked out once and kept here: the
function evaluating every node's TensorSpec from the inputs' sizes (shapes.SpecEvaluator), which
nodes fold to constants and the constants shared by the plans (FoldCache), the plan templates
(template.py) and each node's arguments bound to its op's schema (registry.bind). The owner of the partition creates one LoweringState per graph and passes it to
every lowering of it: CompiledPartition for torch.compile, the exporter for export. Nothing is
stored on the torch objects (graph module, nodes), so a graph lowered twice by two owners shares
nothing, and the state goes away with its owner."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch.fx import GraphModule, Node

from .shapes import SpecEvaluator, Unbound

ConstFn = Callable[[Sequence[torch.Tensor]], Any]


@dataclass
class FoldCache:
    """For one set of constant inputs (which nodes are constant does not depend on shapes):
    const_fns: node -> the function of the inputs computing it, or None if it is not constant
    (folds that use a plan's sizes are kept per plan, not here); constants: the constants that do
    not depend on sizes (weights, folds and packings of them), by what determines their value
    (LoweringContext.shared_constant); structural_keys / interned_keys: how each foldable value is
    computed, as small ints (LoweringContext.structural_key)."""
    const_fns: dict[Node, ConstFn | None] = field(default_factory=dict)
    constants: dict[Any, Any] = field(default_factory=dict)
    structural_keys: dict[Node, int] = field(default_factory=dict)
    interned_keys: dict[Any, int] = field(default_factory=dict)


class LoweringState:
    """Created once per partition graph by its owner and passed to every lowering of it."""

    def __init__(self, gm: GraphModule):
        self.gm = gm
        self._specs: SpecEvaluator | None | bool = False  # False: not made yet
        self._folds: dict[frozenset[int], FoldCache] = {}
        # (constant inputs, conv choice) -> template.PartitionTemplates
        self.templates: dict[Any, Any] = {}
        self.bound: dict[Node, dict[str, Any]] = {}  # node -> its arguments by name (registry.bind)

    @property
    def specs(self) -> SpecEvaluator | None:
        """The graph's spec evaluator (made on first use), or None if its meta values cannot be
        evaluated from the inputs alone (then each signature is traced)."""
        if self._specs is False:
            try:
                self._specs = SpecEvaluator(self.gm)
            except Unbound:
                self._specs = None
        return self._specs

    def folds(self, constant_inputs) -> FoldCache:
        """The fold cache for this set of constant inputs."""
        key = frozenset(constant_inputs)
        cache = self._folds.get(key)
        if cache is None:
            cache = self._folds[key] = FoldCache()
        return cache
