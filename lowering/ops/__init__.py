"""Op lowerings, one module per family; importing this package fills torch_wasm_backend.lowering.registry.REGISTRY."""
from . import elementwise, matmul, conv, norm, pool, reduce, shape, transformer, masks, index, rnn, decomposed, scatter  # noqa: F401


def register_int8() -> None:
    """Registers the int8 lowerings (ops/quant.py, ops/quant_between.py, ops/quant_dynamic.py,
    ops/quant_weight_only.py; imported on first need, see there), so the registry (and the ops table
    made from it) is the same whichever graphs ran before."""
    from . import quant, quant_between, quant_dynamic, quant_weight_only  # noqa: F401
