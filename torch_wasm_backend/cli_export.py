"""The `info` and `run` commands for exported .wasm files (see __main__)."""
from __future__ import annotations

import os

import numpy as np

from . import wasm_file


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _shape(shape: list) -> str:
    """[1, 'seq', 32] -> [1, seq, 32]; a dim computed from dims ('#3') shows as '?'."""
    return "[" + ", ".join(str(d) if not isinstance(d, str) or not d.startswith("#") else "?" for d in shape) + "]"


def info_text(path) -> str:
    """A description of the file (its metadata is validated, nothing runs)."""
    meta = wasm_file.read_metadata(path)
    lay, mem, prod = meta["layout"], meta["memory"], meta["producer"]
    lines = [f"{path}: {_mib(os.path.getsize(path))}, exported from {meta.get('model', '?')} by "
             f"{prod['name']} {prod['version']} (torch {prod.get('torch', '?')}), format "
             f"{meta['format_version']}, kernel ABI {meta['abi_version']}, "
             + ("relaxed-SIMD kernels (needs an engine with relaxed SIMD; not Safari)"
                if meta.get("simd") == "relaxed" else "baseline SIMD kernels (any WebAssembly SIMD engine)"),
             f"content hash: {meta.get('content_hash')} (not checked by info)"]
    if meta["dims"]:
        lines.append("dynamic dims: " + ", ".join(f"{name} in [{r['min']}, {r['max']}]" for name, r in meta["dims"].items())
                     + f" ({len(meta['variants'])} plan variant(s); memory planned for the largest sizes)")
    lines.append("inputs:")
    lines += [f"  {s['name']}: {s['dtype']}{_shape(s['shape'])}" for s in meta["inputs"]]
    lines.append("outputs" + (" (returned by name):" if meta["outputs_by_name"] else ":"))
    lines += [f"  {s['name']}: {s['dtype']}{_shape(s['shape'])}" for s in meta["outputs"]]
    lines.append(f"weights: {_mib(lay['weights_bytes'])}; activations arena: {_mib(lay['arena_bytes'])}; "
                 f"plan: {lay['plan_words']} words; memory: {mem['initial_pages']} pages "
                 f"({_mib(mem['initial_pages'] * 65536)}) + {_mib(mem['worker_stack_bytes'])} per extra thread")
    lines.append(f"work: {meta['flops'] / 1e6:.2f} MFLOP per run" + (" (at the example sizes)" if meta["dims"] else ""))
    lines.append("ATen ops: " + ", ".join(f"{k} x{v}" for k, v in meta["ops"].items()))
    lines.append("kernel calls: " + ", ".join(f"{k} x{v}" for k, v in meta["kernel_calls"].items()))
    return "\n".join(lines) + "\n"


def _pairs(items: list[str], names: list[str], what: str) -> dict[str, str]:
    """['a.npy', 'y=b.npy'] -> {name: file}: positional entries fill the names in order."""
    out, positional = {}, iter(names)
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not file:
            name, file = next(positional, None), item
            if name is None:
                raise ValueError(f"more --{what} files than the model has {what}s ({names})")
        elif name not in names:
            raise ValueError(f"unknown {what} name {name!r}; the model's {what}s are {names}")
        out[name] = file
    return out


def run_model(path, inputs: list[str], outputs: list[str], threads: int, timeout_ms: float | None = None) -> str:
    from .exported_model import load
    with load(path, threads=threads, timeout_ms=timeout_ms) as model:
        arrays = {name: np.load(file) for name, file in _pairs(inputs, model.input_names, "input").items()}
        results = model.run(arrays)
    targets = _pairs(outputs, model.output_names, "output")
    lines = []
    for name, tensor in results.items():
        if name in targets:
            np.save(targets[name], tensor.numpy())
            lines.append(f"{name}: {list(tensor.shape)} -> {targets[name]}")
        else:
            a = tensor.numpy()
            lines.append(f"{name}: {list(a.shape)} min {a.min():.6g} max {a.max():.6g} mean {a.mean():.6g}")
    return "\n".join(lines) + "\n"
