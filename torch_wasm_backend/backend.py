"""The Dynamo backend `wasm`: Dynamo FX graph -> aot_autograd (with the registry's decompositions)
-> ATen graph -> wasm partitions (CompiledPartition) + eager remainder. Registered through the
`torch_dynamo_backends` entry point, so `torch.compile(model, backend="wasm")` needs no import."""
from __future__ import annotations

import logging
from collections import Counter

import torch
from torch._dynamo.backends.common import aot_autograd
from torch.fx import GraphModule
from functorch.compile import make_boxed_func

from lowering.partition import is_tensor_op, partition_graph
from lowering.registry import decomposition_table, op_name
from lowering import ops  # noqa: F401  (fills the registry)
from . import metrics as stats
from .errors import WasmBackendError
from .options import Options
from .partition_runner import CompiledPartition

log = logging.getLogger("torch_wasm_backend")

# Without this Dynamo graph-breaks around nn.LSTM / nn.GRU and runs them in eager outside any graph
# (no fallback would even be reported); with it they are traced and unrolled into ops we lower.
# Process-wide: it applies to other torch.compile backends too (they handle traced RNNs as well).
torch._dynamo.config.allow_rnn = True

_CONSTANT_SOURCES = ("_parameters[", "_buffers[")


def _placeholders(gm: GraphModule):
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def _constant_input_indices(gm: GraphModule, example_inputs) -> set[int]:
    """Dynamo inlines nn modules: parameters and buffers arrive as placeholders whose source names
    them (DESIGN.md decision 5). Those become constants copied into wasm once."""
    found = set()
    for i, node in enumerate(_placeholders(gm)):
        grapharg = node.meta.get("grapharg")
        source = getattr(grapharg, "source", None)
        name = getattr(source, "name", "")
        name = name() if callable(name) else str(name)
        if any(s in name for s in _CONSTANT_SOURCES):
            found.add(i)
    return found


def compile_aten_graph(gm: GraphModule, constant_inputs: set[int], options: Options, label: str,
                       on_partition=None):
    """Partitions an ATen graph and swaps every wasm partition for a CompiledPartition.
    on_partition(label, result), if given, sees the PartitionResult first (explain() uses it)."""
    result = partition_graph(gm, options.min_partition_size)
    if on_partition is not None:
        on_partition(label, result)
    if options.strict and result.fallback:
        lines = [f"  {node}: {op}: {reason}" for node, (op, reason) in result.fallback.items()]
        raise WasmBackendError(
            "strict mode: these nodes cannot run in wasm:\n" + "\n".join(lines)
            + "\nRemove or replace these ops, or compile without options={'strict': True}.")
    top = result.module
    top_inputs = _placeholders(top)
    lowered_ops: Counter = Counter()
    for node in list(top.graph.nodes):
        if node.op != "call_module" or node.target not in result.partitions:
            continue
        sub = getattr(top, node.target)
        consts = {k for k, a in enumerate(node.args)
                  if isinstance(a, torch.fx.Node) and a.op == "placeholder"
                  and top_inputs.index(a) in constant_inputs}
        for n in sub.graph.nodes:
            if is_tensor_op(n):
                lowered_ops[op_name(n.target)] += 1
        delattr(top, node.target)  # the fused submodule; a plain callable takes its name
        setattr(top, node.target, CompiledPartition(sub, consts, options, f"{label}/{node.target}"))
    stats.record_graph(label, result.total_nodes, lowered_ops, result.fallback, len(result.partitions))
    for node, (op, reason) in result.fallback.items():
        log.info("%s: %s (%s) runs in eager: %s", label, node, op, reason)
    return top


_graph_counter = 0


def wasm_backend(gm: GraphModule, example_inputs, options: dict | None = None, on_partition=None,
                 **kwargs):
    """The `wasm` backend for torch.compile. Options: see torch_wasm_backend.options.Options.
    on_partition: see compile_aten_graph (a Python hook for explain(), not a compile option)."""
    if kwargs:
        raise WasmBackendError(
            f"unexpected arguments {sorted(kwargs)}; pass options as torch.compile(..., options={{...}})")
    opts = Options.parse(options)
    global _graph_counter
    _graph_counter += 1
    graph_id = _graph_counter
    dynamo_constants = _constant_input_indices(gm, example_inputs)

    def forward_compiler(fw_gm: GraphModule, fw_inputs):
        constants = set()
        for j, node in enumerate(_placeholders(fw_gm)):
            idx = getattr(node.meta.get("desc"), "idx", None)
            if idx in dynamo_constants:
                constants.add(j)
        return make_boxed_func(compile_aten_graph(fw_gm, constants, opts, f"graph{graph_id}",
                                                  on_partition))

    def backward_compiler(bw_gm: GraphModule, bw_inputs):
        if opts.strict:
            raise WasmBackendError("strict mode: the backward graph would run in eager (wasm kernels "
                                   "are forward-only); compile under torch.no_grad() or drop strict")
        for node in bw_gm.graph.nodes:
            if node.op == "call_function":
                stats.record_fallback(f"graph{graph_id}/backward", node.name, op_name(node.target),
                                      "backward graphs run in eager")
        return make_boxed_func(bw_gm)

    return aot_autograd(fw_compiler=forward_compiler, bw_compiler=backward_compiler,
                        decompositions=decomposition_table())(gm, example_inputs)
