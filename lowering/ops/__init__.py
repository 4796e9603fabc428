"""Op lowerings, one module per family; importing this package fills torch_wasm_backend.lowering.registry.REGISTRY."""
from . import elementwise, matmul, conv, norm, pool, reduce, shape, transformer, masks, index, rnn, decomposed, scatter, quant  # noqa: F401
