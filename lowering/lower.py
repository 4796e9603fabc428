"""Entry point: one partition GraphModule + the inputs of one call signature -> a memory-planned Plan."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.fx import GraphModule, Interpreter, Node
from torch._subclasses.fake_tensor import FakeTensorMode

from . import ops  # noqa: F401  (fills the registry)
from .context import LoweringContext
from .plan import Plan, plan_memory


def concrete_values(gm: GraphModule, inputs: Sequence[Any]) -> dict[Node, Any]:
    """Every node's value (as fake tensors) for these concrete inputs."""
    values: dict[Node, Any] = {}

    class _Record(Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            values[n] = result
            return result

    mode = FakeTensorMode(allow_non_fake_inputs=False)
    fake = [mode.from_tensor(t, static_shapes=True) if isinstance(t, torch.Tensor) else t for t in inputs]
    with mode, torch.no_grad():
        _Record(gm).run(*fake)
    return values


def lower_partition(gm: GraphModule, inputs: Sequence[Any], constant_inputs: set[int]) -> Plan:
    """Raises registry.Unsupported (with the reason) if some node cannot run for these shapes."""
    ctx = LoweringContext(gm, concrete_values(gm, inputs), constant_inputs)
    output = next(n for n in gm.graph.nodes if n.op == "output")
    ctx.set_outputs(output)
    plan_memory(ctx.plan)
    return ctx.plan
