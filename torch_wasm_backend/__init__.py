"""torch_wasm_backend: run PyTorch models on WebAssembly SIMD kernels.

    compiled = torch.compile(model, backend="wasm")   # registered via entry point
    torch_wasm_backend.stats()                        # what ran where, and how long
    torch_wasm_backend.export(model, (x,), "model.wasm")   # one standalone .wasm
    m = torch_wasm_backend.load("model.wasm"); y = m(x)    # run it from Python
"""
from .errors import WasmBackendError, WasmOutOfMemory, WasmTrap
from .metrics import reset_stats, stats

__version__ = "0.1.0"
__all__ = ["WasmBackendError", "WasmOutOfMemory", "WasmTrap", "stats", "reset_stats", "export", "load",
           "__version__"]


def export(model, args, path, **kwargs):
    """See torch_wasm_backend.exporter.export (imported lazily: torch.export is slow to import)."""
    from .exporter import export as _export
    return _export(model, args, path, **kwargs)


def load(path, threads: int = 1):
    """See torch_wasm_backend.exported_model.load."""
    from .exported_model import load as _load
    return _load(path, threads)
