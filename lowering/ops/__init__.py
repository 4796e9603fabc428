"""Op lowerings, one module per family; importing this package fills torch_wasm_backend.lowering.registry.REGISTRY."""
from . import elementwise, matmul, conv, norm, pool, reduce, shape, transformer, masks, index, rnn, decomposed, scatter  # noqa: F401


def register_int8() -> None:
    """Registers the int8 lowerings (ops/quant.py, ops/quant_between.py, ops/quant_dynamic.py; imported on first need,
    see there)."""
    from . import quant, quant_between, quant_dynamic  # noqa: F401
