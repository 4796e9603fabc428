"""On-disk cache of the compiled (native) kernel module, so a new process skips Cranelift.

Location: $TORCH_WASM_BACKEND_CACHE_DIR, else $XDG_CACHE_HOME/torch_wasm_backend, else
~/.cache/torch_wasm_backend; TORCH_WASM_BACKEND_CACHE_DIR=off disables it. An entry is keyed by the
module's sha256, the wasmtime version, the engine settings and the host CPU's features. Writes are
atomic (temp file + rename), so concurrent processes never see half an entry. Each entry starts
with a header and the sha256 of its payload: a truncated, corrupted or foreign entry is detected
before wasmtime sees it, logged, deleted and rebuilt."""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import tempfile
from importlib.metadata import version
from pathlib import Path

import wasmtime

log = logging.getLogger("torch_wasm_backend")

MAGIC = b"TWBCACHE1\n"
ENV = "TORCH_WASM_BACKEND_CACHE_DIR"


def cache_dir() -> Path | None:
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "none") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torch_wasm_backend"


def _cpu_features() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cache_key(module_bytes: bytes, engine_settings: str) -> str:
    h = hashlib.sha256()
    for part in (hashlib.sha256(module_bytes).hexdigest(), version("wasmtime"), engine_settings,
                 platform.machine(), _cpu_features()):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


def load_module(engine: wasmtime.Engine, module_bytes: bytes, engine_settings: str) -> tuple[wasmtime.Module, str]:
    """The compiled module and where it came from: "cache", "compiled+cached" or "compiled"."""
    directory = cache_dir()
    if directory is None:
        return wasmtime.Module(engine, module_bytes), "compiled"
    path = directory / f"kernels-{cache_key(module_bytes, engine_settings)}.cwasm"
    if path.exists():
        try:
            data = path.read_bytes()
            if not data.startswith(MAGIC):
                raise ValueError("bad header")
            digest, payload = data[len(MAGIC):len(MAGIC) + 32], data[len(MAGIC) + 32:]
            if hashlib.sha256(payload).digest() != digest:
                raise ValueError("checksum mismatch (truncated or corrupted)")
            return wasmtime.Module.deserialize(engine, payload), "cache"
        except (OSError, ValueError, wasmtime.WasmtimeError) as e:
            log.warning("ignoring compile cache entry %s (%s); rebuilding it", path, e)
            try:
                path.unlink()
            except OSError:
                pass
    module = wasmtime.Module(engine, module_bytes)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        payload = bytes(module.serialize())
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".cwasm")
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + hashlib.sha256(payload).digest() + payload)
        os.replace(tmp, path)
        return module, "compiled+cached"
    except OSError as e:
        log.warning("could not write the compile cache in %s (%s); continuing without it", directory, e)
        return module, "compiled"
