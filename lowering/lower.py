"""Entry point: one partition (its LoweringState) + the inputs of one call signature -> a Plan with
its arena offsets assigned."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.fx import GraphModule, Interpreter, Node
from torch._subclasses.fake_tensor import FakeTensorMode

from . import ops  # noqa: F401  (fills the registry)
from .context import LoweringContext
from .plan import Plan, assign_offsets
from .shapes import TensorSpec, Unbound
from .state import LoweringState
from .template import plan_from_template


def concrete_values(gm: GraphModule, inputs: Sequence[Any]) -> dict[Node, Any]:
    """Every node's value (as fake tensors) for these concrete inputs."""
    values: dict[Node, Any] = {}

    class _Record(Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            values[n] = result
            return result

    # Meta tensors carry shapes, strides and dtypes through ATen's meta kernels at ~10 us per op,
    # an order of magnitude below FakeTensorMode; fake tensors remain the fallback for the rare op
    # whose meta kernel is missing.
    meta = [_meta_copy(t) if isinstance(t, torch.Tensor) else t for t in inputs]
    try:
        with torch.no_grad():
            _Record(gm).run(*meta)
        return values
    except (NotImplementedError, RuntimeError):
        values.clear()
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    fake = [mode.from_tensor(t, static_shapes=True) if isinstance(t, torch.Tensor) else t for t in inputs]
    with mode, torch.no_grad():
        _Record(gm).run(*fake)
    return values


def _meta_copy(t: torch.Tensor) -> torch.Tensor:
    span = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()) if s > 0)
    base = torch.empty(t.storage_offset() + max(span, 1), dtype=t.dtype, device="meta")
    return base.as_strided(t.shape, t.stride(), t.storage_offset())


def node_values(state: LoweringState, inputs: Sequence[Any]) -> dict[Node, Any]:
    """TensorSpecs of every node for these inputs: from the graph's symbolic meta values when they
    determine everything (fast), else by tracing with meta/fake tensors."""
    if state.specs is not None:
        try:
            return state.specs.values(inputs)
        except Unbound:
            pass
    return {n: _to_spec(v) for n, v in concrete_values(state.gm, inputs).items()}


def _to_spec(v):
    if isinstance(v, torch.Tensor):
        return TensorSpec.of(v)
    if isinstance(v, (list, tuple)):
        return tuple(_to_spec(x) for x in v)
    return v


def lower_partition(state: LoweringState, inputs: Sequence[Any], constant_inputs: set[int],
                    winograd: bool = True) -> Plan:
    """Raises registry.Unsupported (with the reason) if some node cannot run for these shapes.
    winograd=False keeps every conv on im2col + GEMM (smaller exported weights). A graph with
    symbolic sizes is lowered once per template (lowering/template.py); a new shape that fits a
    template is only instantiated and its offsets assigned. state: the partition's LoweringState,
    created once by the caller and passed to every lowering of that partition."""
    def lower(vals: dict[Node, Any]) -> Plan:
        ctx = LoweringContext(state, vals, constant_inputs, winograd)
        ctx.lower_graph()
        return ctx.plan

    try:
        plan = plan_from_template(state, inputs, (frozenset(constant_inputs), winograd), lower)
    except Unbound:
        plan = None
    if plan is None:
        plan = lower(node_values(state, inputs))
        assign_offsets(plan)
    return plan
