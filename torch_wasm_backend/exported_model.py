"""Runs an exported .wasm from Python (wasmtime): `load(path)` -> ExportedModel, a callable taking
numpy arrays or torch tensors by position or by name and returning torch tensors.

The file is its own kernel module (it need not match the installed kernels.wasm): it gets its own
engine, shared memory (sized from the metadata) and worker instances. Everything else reuses the
runtime's pieces: the instance wrapper, the raw call path and the shared-memory workaround.
"""
from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

import numpy as np
import torch
import wasmtime

from lowering.abi import ABI
from . import wasm_file
from .errors import WasmBackendError, WasmInputError, WasmTrap
from .runtime import _RUN_PLAN_ERRORS, INPUT_ERROR, PAGE, MAX_PAGES, _Instance, park_worker

log = logging.getLogger("torch_wasm_backend")


def _engine() -> wasmtime.Engine:
    cfg = wasmtime.Config()
    cfg.wasm_threads = True
    cfg.shared_memory = True
    cfg.wasm_simd = True
    return wasmtime.Engine(cfg)


def _as_tensor(value, spec: dict) -> torch.Tensor:
    name, shape = spec["name"], tuple(spec["shape"])
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise WasmBackendError(f"input {name!r}: expected a numpy array or torch tensor, got {type(value).__name__}")
    if value.dtype != torch.float32:
        raise WasmBackendError(f"input {name!r}: dtype {str(value.dtype).replace('torch.', '')}, the model "
                               "takes float32; convert it first (x.float() / x.astype(np.float32))")
    if tuple(value.shape) != shape:
        raise WasmBackendError(f"input {name!r}: shape {list(value.shape)}, the model was exported for "
                               f"{list(shape)}; export again with example inputs of the shape you need")
    if value.device.type != "cpu":
        raise WasmBackendError(f"input {name!r} is on {value.device}; pass CPU tensors")
    return value


class ExportedModel:
    """An exported model instantiated in wasmtime. Not re-entrant: calls are serialized."""

    def __init__(self, data: bytes, source: str = "model", threads: int = 1):
        parsed = wasm_file.parse(data, source)
        self.metadata = meta = parsed.metadata
        self.source = source
        self.input_names = [i["name"] for i in meta["inputs"]]
        self.output_names = [o["name"] for o in meta["outputs"]]
        if meta.get("abi_version") != ABI.version:
            log.info("%s uses kernel ABI %s (this package: %s); it carries its own kernels", source,
                     meta.get("abi_version"), ABI.version)
        engine = _engine()
        try:
            module = wasmtime.Module(engine, data)
        except wasmtime.WasmtimeError as e:
            raise wasm_file.ExportFileError(f"{source} is not a valid wasm module: {str(e).splitlines()[0]}") from e
        mem = meta["memory"]
        self.threads = max(1, int(threads))
        self._stacks_at = mem["static_bytes"]
        need = self._stacks_at + (self.threads - 1) * mem["worker_stack_bytes"]
        pages = max(mem["initial_pages"], -(-need // PAGE))
        # A fixed-size memory: the layout is static, nothing in the kernels grows it.
        self.memory = wasmtime.SharedMemory(engine, wasmtime.MemoryType(wasmtime.Limits(pages, min(pages, MAX_PAGES)), shared=True))
        self.main = _Instance(engine, module, self.memory)
        self._check_module(meta, source)
        n = self.memory.data_len()
        self._bytes = torch.frombuffer((ctypes.c_ubyte * n).from_address(
            ctypes.cast(self.memory.data_ptr(), ctypes.c_void_p).value), dtype=torch.uint8)
        lay = meta["layout"]
        weights = parsed.custom[wasm_file.WEIGHTS_SECTION]
        self._bytes[lay["weights_at"]:lay["weights_at"] + len(weights)] = torch.frombuffer(bytearray(weights), dtype=torch.uint8)
        plan = parsed.custom[wasm_file.PLAN_SECTION]
        self._bytes[lay["plan_at"]:lay["plan_at"] + len(plan)] = torch.frombuffer(bytearray(plan), dtype=torch.uint8)
        self._in_views = [self._view(s) if s["offset"] is not None else None for s in meta["inputs"]]
        self._out_views = [self._view(s) for s in meta["outputs"]]
        self._lock = threading.Lock()
        self.broken: str | None = None
        self._workers: list[threading.Thread] = []
        for worker_id in range(1, self.threads):
            self._start_worker(engine, module, worker_id, mem["worker_stack_bytes"])

    def _check_module(self, meta: dict, source: str) -> None:
        version = self.main.fn["abi_version"]()[0].i32
        heap_base = self.main.fn["heap_base"]()[0].i32
        if version != meta["abi_version"] or heap_base != meta["memory"]["heap_base"]:
            raise wasm_file.ExportFileError(
                f"{source}: its kernels (ABI {version}, heap base {heap_base}) do not match its plan "
                f"(ABI {meta['abi_version']}, heap base {meta['memory']['heap_base']}); the file was "
                "assembled wrongly. Re-export the model.")

    def _view(self, spec: dict) -> torch.Tensor:
        flat = self._bytes.view(torch.float32)
        return flat.as_strided(tuple(spec["shape"]), tuple(spec["strides"]), spec["offset"] // 4)

    def _start_worker(self, engine, module, worker_id: int, stack_bytes: int) -> None:
        inst = _Instance(engine, module, self.memory)
        inst.fn["stackRestore"](self._stacks_at + worker_id * stack_bytes)  # stacks grow down
        inst.fn["pool_register_worker"](1)

        def park():
            try:
                park_worker(inst, worker_id, lambda: None)
            except WasmTrap as e:
                self.broken = f"worker {worker_id} trapped: {e}"

        t = threading.Thread(target=park, name=f"wasm-export-worker-{worker_id}", daemon=True)
        t.start()
        self._workers.append(t)

    # ---- calling ----------------------------------------------------------------------------------
    def _bind(self, args, kwargs) -> list[torch.Tensor]:
        specs = self.metadata["inputs"]
        if len(args) > len(specs):
            raise WasmBackendError(f"{len(args)} inputs given, the model takes {len(specs)}: {self.input_names}")
        bound = dict(zip(self.input_names, args))
        for name, value in kwargs.items():
            if name not in self.input_names:
                raise WasmBackendError(f"unknown input name {name!r}; the model's inputs are {self.input_names}")
            if name in bound:
                raise WasmBackendError(f"input {name!r} given twice (by position and by name)")
            bound[name] = value
        missing = [n for n in self.input_names if n not in bound]
        if missing:
            raise WasmBackendError(f"missing input(s) {missing}; the model's inputs are {self.input_names}")
        return [_as_tensor(bound[s["name"]], s) for s in specs]

    def run(self, inputs: dict) -> dict[str, torch.Tensor]:
        """{input name: array} -> {output name: tensor}."""
        return dict(zip(self.output_names, self._call([], inputs)))

    def __call__(self, *args, **kwargs):
        outs = self._call(args, kwargs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _call(self, args, kwargs) -> list[torch.Tensor]:
        tensors = self._bind(args, kwargs)
        if self.broken:
            raise WasmTrap(f"{self.source}: unusable after an earlier failure ({self.broken}); load it again")
        lay = self.metadata["layout"]
        with self._lock:
            for view, t in zip(self._in_views, tensors):
                if view is not None:
                    view.copy_(t)
            rc = self.main.fn["run_plan"](lay["plan_at"], lay["plan_words"], self.threads, lay["error_at"])[0].i32
            if rc != 0:
                at = int(self._bytes[lay["error_at"]:lay["error_at"] + 4].view(torch.int32)[0])
                message = f"{_RUN_PLAN_ERRORS.get(rc, rc)} at plan word {at}"
                if rc == INPUT_ERROR:  # the caller's inputs, not a fault: the model stays usable
                    raise WasmInputError(f"{self.source}: {message}")
                self.broken = message
                raise WasmTrap(f"{self.source}: {self.broken}")
            return [v.contiguous().clone() if v.is_contiguous() else v.contiguous() for v in self._out_views]

    def close(self) -> None:
        if self._workers:
            self.main.fn["pool_shutdown"]()
            for t in self._workers:
                t.join(timeout=5)
            self._workers = []

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: wasmtime may already be gone
            pass

    def __repr__(self):
        ins = ", ".join(f"{s['name']}{s['shape']}" for s in self.metadata["inputs"])
        outs = ", ".join(f"{s['name']}{s['shape']}" for s in self.metadata["outputs"])
        return f"ExportedModel({self.source}: ({ins}) -> ({outs}), threads={self.threads})"


def load(path, threads: int = 1) -> ExportedModel:
    """Loads an exported .wasm; raises ExportFileError for a foreign, truncated, damaged or
    incompatible file."""
    path = Path(path)
    return ExportedModel(path.read_bytes(), str(path), threads)
