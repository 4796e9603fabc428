"""The int8 recipes the int8 kernels are built for, as a user of torchao 0.18 runs them:
torch.export -> prepare_pt2e with X86InductorQuantizer -> calibration -> convert_pt2e.

- static (default config): uint8 per-tensor activations with scales fixed by calibration, int8
  symmetric per-channel weights; its dq -> conv/linear -> [relu] -> q chains run on int8 kernels
  (lowering/quant_fuse.py).
- dynamic (`dynamic=True`: the config's is_dynamic=True): linears only; each activation is
  quantized per tensor with a scale and zero point chosen from its own range at every call, int8
  per-channel weights, float32 outputs. For transformers: no calibration data needed, and the
  GEMMs still run on the int8 kernel (lowering/quant_dynamic.py).

The result compiles with backend="wasm" and exports. torchao is not a dependency of this package:
`pip install torchao==0.18.0`."""
from __future__ import annotations

from typing import Iterable

import torch


def _one_partition_per_call(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """gm with each call of a module that forward() calls more than once named apart in its
    nn_module_stack (fqn "layer1.0.relu" -> "layer1.0.relu@1" on the second call, as export names
    the stack entry's key).

    Why: the quantizer groups nodes into source partitions by the innermost module's fqn, so the two
    calls of torchvision's BasicBlock.relu (after bn1 and after the residual add) become one
    partition with two outputs, and X86InductorQuantizer's conv+add+relu matcher raises "Input
    partition has more than one output node" on ResNet-18. Only this metadata changes."""
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if stack:
            key, (fqn, cls) = list(stack.items())[-1]
            call = key.rpartition("@")[2] if "@" in key else ""
            if call.isdigit() and not fqn.endswith("@" + call):
                stack[key] = (f"{fqn}@{call}", cls)
    return gm


# torch_fn names of the functional activations X86InductorQuantizer fuses into a conv as their modules.
_FUNCTIONAL_ACTIVATIONS = ("relu", "relu_", "hardtanh", "hardtanh_")


def _functional_activations_as_sources(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """gm with each F.relu / F.hardtanh node given the source_fn_stack entry (name, F.relu) that
    torch.export no longer records.

    Why: the quantizer finds conv -> relu by source partitions; without source_fn_stack, torch's
    get_source_partitions compares the "function.relu" string of the torch_fn metadata with the
    function F.relu (never equal) and falls back to the innermost module (GoogLeNet's BasicConv2d,
    not a ReLU). So a functional relu after a conv goes unmatched, the conv's output unquantized,
    and every max pool and cat after it float32 (GoogLeNet: all 13 pools and 9 cats). Only this
    metadata changes."""
    for node in gm.graph.nodes:
        torch_fn = node.meta.get("torch_fn")
        if node.op == "call_function" and "source_fn_stack" not in node.meta and torch_fn and \
                torch_fn[1].partition(".")[2] in _FUNCTIONAL_ACTIVATIONS:
            # Keyed by the node's own (unique) name: torch_fn's name can repeat another call's (an
            # nn.ReLU's relu and the next torch.relu both came out 'relu_1'), which would make the two
            # one partition with two outputs, and the quantizer raise.
            node.meta["source_fn_stack"] = [(node.name, getattr(torch.nn.functional, torch_fn[1].partition(".")[2]))]
    return gm


def quantize_pt2e(model: torch.nn.Module, example_inputs: tuple, calibration: Iterable[tuple] | None = None,
                  dynamic_shapes=None, dynamic: bool = False) -> torch.fx.GraphModule:
    """model quantized to int8. calibration: batches of inputs (tuples) the observers see; default:
    8 batches of standard normal noise shaped like example_inputs' float tensors, the others as
    given (fine for tests and benchmarks, not for accuracy: calibrate on real data); a dynamic model runs them too but keeps no
    activation ranges. dynamic_shapes: as torch.export.export's (without it the quantized module
    accepts only the example's shapes). dynamic: quantize the linears' activations at run time
    (module docstring) instead of with calibrated scales."""
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    except ImportError as e:
        raise ImportError("quantize_pt2e needs torchao: pip install torchao==0.18.0") from e
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_dynamic=dynamic))
    exported = torch.export.export(model.eval(), tuple(example_inputs), dynamic_shapes=dynamic_shapes).module()
    # Nodes whose results nothing uses (a transformers model's pooler when only its hidden states
    # are returned) make X86InductorQuantizer fail (IndexError in _get_output_nodes_of_partitions).
    exported.graph.eliminate_dead_code()
    exported.recompile()
    prepared = prepare_pt2e(_functional_activations_as_sources(_one_partition_per_call(exported)), quantizer)
    if calibration is None:  # (integer inputs, e.g. token ids, are kept: noise would be no ids)
        calibration = [tuple(torch.randn_like(x) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                             for x in example_inputs) for _ in range(8)]
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    return convert_pt2e(prepared)
