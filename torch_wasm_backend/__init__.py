"""torch_wasm_backend: run PyTorch models on WebAssembly SIMD kernels.

    compiled = torch.compile(model, backend="wasm")   # registered via entry point
    torch_wasm_backend.stats()                        # what ran where, and how long
"""
from .errors import WasmBackendError, WasmOutOfMemory, WasmTrap
from .metrics import reset_stats, stats

__version__ = "0.1.0"
__all__ = ["WasmBackendError", "WasmOutOfMemory", "WasmTrap", "stats", "reset_stats", "__version__"]
