"""The Dynamo backend `wasm`: Dynamo FX graph -> aot_autograd (with the registry's decompositions)
-> ATen graph -> wasm partitions (CompiledPartition) + eager remainder. Registered through the
`torch_dynamo_backends` entry point, so `torch.compile(model, backend="wasm")` needs no import.
Inference graphs whose aot_autograd runtime wrappers would have nothing to do (see
_wrappers_are_identity) are handed to Dynamo without them."""
from __future__ import annotations

import logging
from collections import Counter

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._functorch._aot_autograd.schemas import MutationType, OutputType, PlainTensorMeta
from torch.fx import GraphModule
from torch.fx._lazy_graph_module import _LazyGraphModule
from functorch.compile import make_boxed_func

from torch_wasm_backend.lowering.partition import PartitionResult, is_tensor_op, partition_graph
from torch_wasm_backend.lowering.registry import decomposition_table, op_name
from torch_wasm_backend.lowering import ops  # noqa: F401  (fills the registry)
from . import metrics as stats
from .errors import WasmBackendError
from .options import Options
from .partition_runner import CompiledPartition

log = logging.getLogger("torch_wasm_backend")

# Without this Dynamo graph-breaks around nn.LSTM / nn.GRU and runs them in eager outside any graph
# (no fallback would even be reported); with it they are traced and unrolled into ops we lower.
# Process-wide: it applies to other torch.compile backends too (they handle traced RNNs as well).
torch._dynamo.config.allow_rnn = True
# With this on (the default), every call of a compiled frame makes two Dynamo-disabled helper calls
# around its argument-gathering bytecode, to open a profiler span when a profiler runs (~3 us per
# call, measured on a batch-1 MLP whose whole eager forward takes ~27 us). Process-wide like
# allow_rnn: under a profiler, every backend's traces lose the "Pregraph bytecode" and aot_autograd
# "Runtime Wrapper Prologue" spans.
torch._dynamo.config.record_runtime_overhead = False

_CONSTANT_SOURCES = ("_parameters[", "_buffers[")


def _placeholders(gm: GraphModule):
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def _constant_input_indices(gm: GraphModule, example_inputs) -> set[int]:
    """Dynamo inlines nn modules: parameters and buffers arrive as placeholders whose source names
    them (docs/design.md decision 5). Those become constants copied into wasm once."""
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
    on_partition(label, result), if given, sees the PartitionResult first (explain() uses it).
    An internal error while partitioning runs the whole graph in eager (see _whole_graph_in_eager)."""
    original = _copy(gm)  # partitioning rewrites gm in place: this is what eager runs if it fails
    try:
        result = partition_graph(gm, options.min_partition_size)
        top = result.module
        top_inputs = _placeholders(top)
        compiled: dict[str, CompiledPartition] = {}
        lowered_ops: Counter = Counter()
        for node in top.graph.nodes:
            if node.op != "call_module" or node.target not in result.partitions:
                continue
            sub = getattr(top, node.target)
            consts = {k for k, a in enumerate(node.args)
                      if isinstance(a, torch.fx.Node) and a.op == "placeholder"
                      and top_inputs.index(a) in constant_inputs}
            for n in sub.graph.nodes:
                if is_tensor_op(n):
                    lowered_ops[op_name(n.target)] += 1
            compiled[node.target] = CompiledPartition(sub, consts, options, f"{label}/{node.target}")
    except Exception as e:  # a bug of ours, not of the model (Unsupported never gets here)
        return _whole_graph_in_eager(original, label, e, options, on_partition)
    if on_partition is not None:
        on_partition(label, result)
    if options.strict and result.fallback:
        lines = [f"  {node}: {op}: {reason}" for node, (op, reason) in result.fallback.items()]
        raise WasmBackendError(
            "strict mode: these nodes cannot run in wasm:\n" + "\n".join(lines)
            + "\nRemove or replace these ops, or compile without options={'strict': True}.")
    for name, partition in compiled.items():
        delattr(top, name)  # the fused submodule; a plain callable takes its name
        setattr(top, name, partition)
    stats.record_graph(label, result.total_nodes, lowered_ops, result.fallback, len(result.partitions))
    for node, (op, reason) in result.fallback.items():
        log.info("%s: %s (%s) runs in eager: %s", label, node, op, reason)
    # Generate the code now: a lazy GraphModule's forward is a stub that checks for pending
    # recompilation and re-enters nn.Module.__call__ on every call.
    _LazyGraphModule.force_recompile(top)
    return top


def _copy(gm: GraphModule) -> GraphModule:
    """A GraphModule with a copy of gm's graph (nodes and their meta, not the tensors they hold),
    sharing gm's submodules and attributes; its code is generated only if it is used."""
    graph = torch.fx.Graph()
    graph._codegen = gm.graph._codegen
    graph.output(graph.graph_copy(gm.graph, {}))
    return _LazyGraphModule(gm, graph)


def _whole_graph_in_eager(gm: GraphModule, label: str, error: Exception, options: Options,
                          on_partition) -> GraphModule:
    """After an internal error while partitioning: every ATen node of gm runs in eager, recorded in
    stats()["fallback_nodes"] (and so in explain()) with the error's type and message, and the
    traceback logged at WARNING; in strict mode, WasmBackendError chained to the error."""
    problem = (f"internal error while partitioning: {type(error).__name__}: {error} (a bug of "
               "torch_wasm_backend; please report it with this message)")
    if options.strict:
        raise WasmBackendError(f"{label}: {problem}") from error
    log.warning("%s runs in eager: %s", label, problem, exc_info=error)
    nodes = [n for n in gm.graph.nodes if is_tensor_op(n)]
    fallback = {n.name: (op_name(n.target), problem) for n in nodes}
    if on_partition is not None:
        on_partition(label, PartitionResult(gm, [], fallback, len(nodes)))
    stats.record_graph(label, len(nodes), Counter(), fallback, 0)
    _LazyGraphModule.force_recompile(gm)
    return gm


def _wrappers_are_identity(gm: GraphModule, example_inputs, fw_gm: GraphModule) -> bool:
    """True when aot_autograd's runtime wrappers around this (inference) forward graph would only
    pass the arguments through and return the outputs unchanged: no input mutation to copy back,
    no output aliasing an input or an intermediate to regenerate, no duplicated or lifted inputs,
    no effect tokens, tensor subclasses, RNG state or grad-mode change. Reads the metadata that
    aot_autograd itself computed for its wrappers (TracingContext.fw_metadata, set just before it
    calls the forward compiler); anything unexpected answers False, keeping the wrappers."""
    context = torch._guards.TracingContext.try_get()
    meta = getattr(context, "fw_metadata", None)
    if meta is None or len(_placeholders(fw_gm)) != len(example_inputs):
        return False  # inputs were deduplicated, or parameters/tokens/RNG state prepended
    if any(True for _ in gm.parameters()) or any(True for _ in gm.buffers()):
        return False  # aot_autograd passes these as extra leading inputs
    if any(isinstance(a, (list, tuple, dict)) for a in example_inputs):
        return False  # aot_autograd flattened these inputs; the wrapper unflattens each call
    if any(type(a) not in (torch.Tensor, torch.nn.Parameter) for a in example_inputs
           if isinstance(a, torch.Tensor)):
        return False  # tensor subclasses are unwrapped and rewrapped by the wrappers
    try:
        return (all(i.mutation_type == MutationType.NOT_MUTATED for i in meta.input_info)
                and all(o.output_type == OutputType.non_alias for o in meta.output_info)
                and meta.num_intermediate_bases == 0 and not meta.tokens
                and meta.grad_enabled_mutation is None and meta.num_graphsafe_rng_states == 0
                and all(isinstance(m, (int, PlainTensorMeta))
                        for m in (*meta.subclass_inp_meta, *meta.subclass_fw_graph_out_meta)))
    except AttributeError:  # a torch whose metadata changed shape: keep the wrappers
        return False


def _dynamo_input_index(desc) -> int | None:
    """The index of the Dynamo graph input an aot_autograd forward placeholder comes from: a tensor
    subclass parameter (torchao's Int8Tensor weight) arrives as one placeholder per inner tensor
    (qdata, scale), each described by its attribute of the subclass input."""
    while hasattr(desc, "base") and not hasattr(desc, "idx"):
        desc = desc.base
    return getattr(desc, "idx", None)


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
    # Dynamo guards on grad mode and autocast state, so every call of what this returns runs in
    # the mode seen here: without grad, aot_autograd traces an inference graph and its runtime
    # wrapper only switches grad off (already off) and, under autocast, autocast off.
    inference = not torch.is_grad_enabled() and not torch._C._is_any_autocast_enabled()
    unwrapped = []  # the forward to return directly, when its wrappers would do nothing

    def forward_compiler(fw_gm: GraphModule, fw_inputs):
        constants = set()
        for j, node in enumerate(_placeholders(fw_gm)):
            if _dynamo_input_index(node.meta.get("desc")) in dynamo_constants:
                constants.add(j)
        top = compile_aten_graph(fw_gm, constants, opts, f"graph{graph_id}", on_partition)
        # top.forward, not top: nn.Module.__call__ would add ~2 us per call for hooks nobody set.
        if inference and _wrappers_are_identity(gm, example_inputs, fw_gm):
            unwrapped.append(top.forward)
        return make_boxed_func(top.forward)

    def backward_compiler(bw_gm: GraphModule, bw_inputs):
        if opts.strict:
            raise WasmBackendError("strict mode: the backward graph would run in eager (wasm kernels "
                                   "are forward-only); compile under torch.no_grad() or drop strict")
        for node in bw_gm.graph.nodes:
            if node.op == "call_function":
                stats.record_fallback(f"graph{graph_id}/backward", node.name, op_name(node.target),
                                      "backward graphs run in eager")
        return make_boxed_func(bw_gm)

    compiled = aot_autograd(fw_compiler=forward_compiler, bw_compiler=backward_compiler,
                            decompositions=decomposition_table())(gm, example_inputs)
    # Dynamo calls this with the graph's inputs unpacked and reads the outputs by index: the same
    # convention as the forward of the ATen graph (a tuple of outputs).
    return unwrapped[0] if len(unwrapped) == 1 else compiled
