"""torch_wasm_backend: run PyTorch models on WebAssembly SIMD kernels.

    compiled = torch.compile(model, backend="wasm")   # registered via entry point
    torch_wasm_backend.stats()                        # what ran where, and how long
    print(torch_wasm_backend.explain(model, *args))   # what will run in wasm, what in eager and why
    torch_wasm_backend.export(model, (x,), "model.wasm")   # one standalone .wasm
    m = torch_wasm_backend.load("model.wasm"); y = m(x)    # run it from Python
"""
import logging as _logging
import os as _os


def _map_checkout_lowering() -> None:
    """In a source checkout lowering/ sits beside this package; a wheel installs it as
    torch_wasm_backend/lowering (pyproject.toml's package-dir). Give the checkout's folder that same
    name, before anything below imports it."""
    import importlib.util
    import sys
    from pathlib import Path
    here = Path(__file__).resolve().parent
    checkout = here.parent / "lowering"
    if (here / "lowering").is_dir() or not (checkout / "__init__.py").is_file():
        return  # installed from a wheel, or not a checkout
    spec = importlib.util.spec_from_file_location(
        f"{__name__}.lowering", checkout / "__init__.py", submodule_search_locations=[str(checkout)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    globals()["lowering"] = module  # as the import system binds a loaded submodule on its parent


_map_checkout_lowering()

from .errors import WasmBackendError, WasmInputError, WasmOutOfMemory, WasmTimeout, WasmTrap
from .explain_report import ExplainReport, explain
from .metrics import reset_stats, stats

# TORCH_WASM_BACKEND_LOG=DEBUG|INFO|WARNING sets the level of the "torch_wasm_backend" logger (and
# gives it a stderr handler if the application configured none).
_level = _os.environ.get("TORCH_WASM_BACKEND_LOG")
if _level:
    _logger = _logging.getLogger("torch_wasm_backend")
    _logger.setLevel(_level.upper())
    if not _logger.handlers and not _logging.getLogger().handlers:
        _handler = _logging.StreamHandler()
        _handler.setFormatter(_logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        _logger.addHandler(_handler)

__version__ = "0.1.0"
__all__ = ["WasmBackendError", "WasmInputError", "WasmOutOfMemory", "WasmTimeout", "WasmTrap", "stats", "reset_stats",
           "explain", "ExplainReport", "export", "load", "__version__"]


def export(model, args, path, **kwargs):
    """See torch_wasm_backend.exporter.export (imported lazily: torch.export is slow to import)."""
    from .exporter import export as _export
    return _export(model, args, path, **kwargs)


def load(path, threads: int = 1, **kwargs):
    """See torch_wasm_backend.exported_model.load."""
    from .exported_model import load as _load
    return _load(path, threads, **kwargs)
