"""Splits an ATen graph into wasm partitions with torch's CapabilityBasedPartitioner; the op
registry decides what is supported and why not. Every node left to eager keeps its reason."""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
from torch.fx.passes.operator_support import OperatorSupportBase

from .quant_fuse import fuse_quantized_patterns
from .registry import is_view_op, op_name, support_reason


class _RegistrySupport(OperatorSupportBase):
    def __init__(self):
        self.reasons: dict[Node, str] = {}
        self.static: dict[Node, bool] = {}  # registry.is_static's answers for this graph

    def is_node_supported(self, submodules, node: Node) -> bool:
        if node.op != "call_function":
            return False
        if node.target is operator.getitem:
            parent = node.args[0]
            return isinstance(parent, Node) and self.is_node_supported(submodules, parent)
        reason = support_reason(node, self.static)
        if reason is not None:
            self.reasons[node] = reason
        return reason is None


@dataclass
class PartitionResult:
    module: GraphModule                                  # top graph; wasm parts are call_module nodes
    partitions: list[str] = field(default_factory=list)  # submodule names
    fallback: dict[str, tuple[str, str]] = field(default_factory=dict)  # node name -> (op, reason)
    total_nodes: int = 0
    int8: list = field(default_factory=list)             # [quant_fuse.Int8Pattern]: quantized convs / linears


def is_compute(node: Node) -> bool:
    return node.op == "call_function" and node.target is not operator.getitem and not is_view_op(node.target)


def is_tensor_op(node: Node) -> bool:
    """An ATen node that produces tensors (not getitem, not arithmetic on symbolic sizes)."""
    if node.op != "call_function" or node.target is operator.getitem:
        return False
    val = node.meta.get("val")
    vals = val if isinstance(val, (list, tuple)) else [val]
    return any(isinstance(v, torch.Tensor) for v in vals)


def partition_graph(gm: GraphModule, min_partition_size: int = 1) -> PartitionResult:
    int8 = fuse_quantized_patterns(gm)  # PT2E's int8 dq/op/q chains -> one int8 op each
    support = _RegistrySupport()
    partitioner = CapabilityBasedPartitioner(gm, support, allows_single_node_partition=True)
    proposed = partitioner.propose_partitions()
    kept = []
    small_reason: dict[Node, str] = {}
    for p in proposed:
        n_compute = sum(1 for n in p.nodes if is_compute(n))
        if n_compute == 0:
            for n in p.nodes:
                small_reason[n] = "partition holds only views (left to eager, costs no copy there)"
        elif n_compute < min_partition_size:
            for n in p.nodes:
                small_reason[n] = f"partition of {n_compute} compute nodes < min_partition_size={min_partition_size}"
        else:
            kept.append(p)
    compute_nodes = [n for n in gm.graph.nodes if is_tensor_op(n)]
    in_wasm = {n for p in kept for n in p.nodes}
    fallback = {}
    for n in compute_nodes:
        if n not in in_wasm:
            reason = support.reasons.get(n) or small_reason.get(n) or "not in a wasm partition"
            fallback[n.name] = (op_name(n.target), reason)
    fused = partitioner.fuse_partitions(kept) if kept else gm
    names = [n.target for n in fused.graph.nodes if n.op == "call_module"]
    return PartitionResult(fused, names, fallback, len(compute_nodes), int8)
