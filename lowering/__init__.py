"""FX/ATen graph -> Plan: op registry, partitioning, memory planning, plan encoding.

This package knows ops, shapes, layouts and memory; it never imports torch_wasm_backend or wasmtime.
"""
