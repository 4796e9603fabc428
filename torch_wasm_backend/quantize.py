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


def quantize_pt2e(model: torch.nn.Module, example_inputs: tuple, calibration: Iterable[tuple] | None = None,
                  dynamic_shapes=None, dynamic: bool = False) -> torch.fx.GraphModule:
    """model quantized to int8. calibration: batches of inputs (tuples) the observers see; default:
    8 batches of standard normal noise shaped like example_inputs (fine for tests and benchmarks,
    not for accuracy: calibrate on real data); a dynamic model runs them too but keeps no
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
    prepared = prepare_pt2e(exported, quantizer)
    if calibration is None:
        calibration = [tuple(torch.randn_like(x) for x in example_inputs) for _ in range(8)]
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    return convert_pt2e(prepared)
