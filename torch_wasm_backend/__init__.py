"""torch_wasm_backend: run PyTorch models on WebAssembly SIMD kernels.

    compiled = torch.compile(model, backend="wasm")   # registered via entry point
    torch_wasm_backend.stats()                        # what ran where, and how long
    print(torch_wasm_backend.explain(model, *args))   # what will run in wasm, what in eager and why
"""
from .errors import WasmBackendError, WasmOutOfMemory, WasmTrap
from .explain import ExplainReport, explain
from .metrics import reset_stats, stats

__version__ = "0.1.0"
__all__ = ["WasmBackendError", "WasmOutOfMemory", "WasmTrap", "stats", "reset_stats", "explain",
           "ExplainReport", "__version__"]
