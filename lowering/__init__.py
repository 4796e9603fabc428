"""FX/ATen graph -> Plan: op registry, partitioning, lowering, fusion, arena offsets, plan encoding.

This package knows ops, shapes, layouts and memory; it imports nothing else of torch_wasm_backend and
never wasmtime. Imported as torch_wasm_backend.lowering: a wheel installs this folder there
(pyproject.toml's package-dir), a checkout maps it at import (torch_wasm_backend/__init__.py).
"""
