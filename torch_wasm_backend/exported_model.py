"""Runs an exported .wasm from Python (wasmtime): `load(path)` -> ExportedModel, a callable taking
numpy arrays or torch tensors by position or by name and returning torch tensors.

The file is its own kernel module (it need not match the installed kernels.wasm): it gets its own
shared memory (sized from the metadata) and wasm_layer.Pool (main instance and workers), on the
process's engine with epoch interruption. wasm_layer.py does the wasmtime part (memory, instances,
workers, raw calls, deadlines, run_plan's errors); this module adds what is the file's own: its
validation, metadata, plan variants by input sizes, and input binding.

A file is untrusted input. Before anything runs, wasm_file.parse validates the metadata against
the file's own layout, and the module must import exactly `env.memory` and export the kernel
functions with their signatures. Loading (start function, `_initialize`) and every call run under a
time limit (wasmtime epoch interruption; `timeout_ms`, default 10 s). Every failure is an
ExportFileError / WasmTrap / WasmTimeout (all WasmBackendError).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import wasmtime

from torch_wasm_backend.lowering.abi import ABI
from . import size_program, wasm_file, wasm_layer
from .errors import WasmBackendError, WasmInputError, WasmTimeout, WasmTrap
from .wasm_layer import KERNEL_EXPORTS, MAX_PAGES, PAGE, SHUTDOWN_SECONDS, Memory, PlanInputError, Pool

log = logging.getLogger("torch_wasm_backend")

DEFAULT_TIMEOUT_MS = 10_000
MAX_THREADS = 256

_modules_lock = threading.Lock()
# Compiled modules by sha256 of their bytes: loading the same model again (or another export with
# the same kernels) skips the seconds of compilation. In memory only; a few entries.
_modules: OrderedDict[str, wasmtime.Module] = OrderedDict()
MODULE_CACHE_ENTRIES = 4
SIZES_KEPT = 8  # input signatures whose patched plan and views a model keeps


def _compile(engine: wasmtime.Engine, module_bytes: bytes, source: str) -> wasmtime.Module:
    key = hashlib.sha256(module_bytes).hexdigest()
    with _modules_lock:
        if key in _modules:
            _modules.move_to_end(key)
            return _modules[key]
    try:
        module = wasmtime.Module(engine, module_bytes)
    except wasmtime.WasmtimeError as e:
        raise wasm_file.ExportFileError(f"{source} is not a valid wasm module: {str(e).splitlines()[0]}") from e
    _check_interface(module, source)
    with _modules_lock:
        _modules[key] = module
        while len(_modules) > MODULE_CACHE_ENTRIES:
            _modules.popitem(last=False)
    return module


def _kind(ty) -> str:
    if isinstance(ty, wasmtime.MemoryType):
        return "a shared memory" if ty.is_shared else "an unshared memory"
    return {wasmtime.FuncType: "a function", wasmtime.GlobalType: "a global",
            wasmtime.TableType: "a table"}.get(type(ty), type(ty).__name__)


def _check_interface(module: wasmtime.Module, source: str) -> None:
    """Exactly one import, env.memory (shared); the kernel exports with the right signatures."""
    imports = [(i.module, i.name, i.type) for i in module.imports]
    if len(imports) != 1 or imports[0][:2] != ("env", "memory") or not isinstance(imports[0][2], wasmtime.MemoryType) \
            or not imports[0][2].is_shared:
        listed = ", ".join(f"{m}.{n} ({_kind(t)})" for m, n, t in imports[:5]) or "nothing"
        raise wasm_file.ExportFileError(
            f"{source} imports {listed}; an exported model may import exactly one thing, the shared memory "
            "env.memory. Refusing to load it: it was not written by torch_wasm_backend.export (re-export the model)")
    exports = {e.name: e.type for e in module.exports}
    for name, (params, results) in KERNEL_EXPORTS.items():
        ty = exports.get(name)
        if not isinstance(ty, wasmtime.FuncType) or [str(t) for t in ty.params] != params \
                or [str(t) for t in ty.results] != results:
            raise wasm_file.ExportFileError(
                f"{source}: its module lacks the kernel function {name}({', '.join(params)}) -> "
                f"({', '.join(results)}); it was not written by torch_wasm_backend.export: re-export the model")


@contextlib.contextmanager
def _loading(source: str, what: str, timeout_s: float | None):
    """Turns any failure of instantiating/initializing the file's module into ExportFileError."""
    try:
        yield
    except (wasmtime.WasmtimeError, wasmtime.Trap, WasmTrap) as e:
        text = wasm_layer.one_line(str(e))
        if "interrupt" in text and timeout_s is not None:
            raise wasm_file.ExportFileError(
                f"{source}: {what} did not finish within the load time limit ({timeout_s * 1e3:.0f} ms); "
                "the file's start function or _initialize runs too long or loops forever. Re-export the "
                "model, or pass a larger timeout_ms if the file is trusted") from e
        raise wasm_file.ExportFileError(f"{source}: {what} failed ({text}); the file is damaged or "
                                        "not a torch_wasm_backend export: re-export it") from e


_TORCH_DTYPES = {"float32": torch.float32, "int64": torch.int64, "int32": torch.int32, "bool": torch.bool,
                 "uint8": torch.uint8, "int8": torch.int8}  # (uint8 / int8: quantized models' integer tensors)


def _as_tensor(value, spec: dict) -> torch.Tensor:
    """value as a CPU tensor of the input's dtype (an int32 tensor for an int64 input is widened:
    nothing is lost), or a WasmBackendError naming the problem."""
    name, want = spec["name"], _TORCH_DTYPES[spec["dtype"]]
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise WasmBackendError(f"input {name!r}: expected a numpy array or torch tensor, got {type(value).__name__}")
    if value.device.type != "cpu":
        raise WasmBackendError(f"input {name!r} is on {value.device}; pass CPU tensors")
    if value.dtype != want:
        if not (want == torch.int64 and value.dtype == torch.int32):
            have = str(value.dtype).replace("torch.", "")
            raise WasmBackendError(f"input {name!r}: dtype {have}, the model takes {spec['dtype']}; convert it "
                                   f"first (x.to(torch.{spec['dtype']}) / x.astype(np.{spec['dtype'].replace('bool', 'bool_')}))")
        value = value.to(want)
    if value.dim() != len(spec["shape"]):
        raise WasmBackendError(f"input {name!r}: {value.dim()} dims (shape {list(value.shape)}), the model "
                               f"takes {len(spec['shape'])}: {spec['shape']}")
    return value


class _Sizes:
    """What one input signature needs: the variant of the plan, its words with the size-dependent
    ones patched, and the concrete input/output views (checked against the file's regions)."""

    def __init__(self, variant: int, words: bytes, n_words: int, inputs: list, outputs: list):
        self.variant, self.words, self.n_words = variant, words, n_words
        self.inputs, self.outputs = inputs, outputs


def bind_dims(meta: dict, shapes: list[tuple[int, ...]], source: str) -> dict[str, int]:
    """The dims' values from the inputs' shapes; a WasmBackendError names a fixed dim of the wrong
    size, a dim out of its range, or two inputs that disagree on a dim."""
    dims: dict[str, int] = {}
    seen: dict[str, str] = {}
    for spec, shape in zip(meta["inputs"], shapes):
        for axis, (want, have) in enumerate(zip(spec["shape"], shape)):
            where = f"input {spec['name']!r} dim {axis}"
            if type(want) is int:
                if have != want:
                    raise WasmBackendError(
                        f"{source}: {where} is {have}, the model was exported for {want} there (shape "
                        f"{spec['shape']}); export with that dim in dynamic_shapes to vary it")
            elif want in meta["dims"]:
                r = meta["dims"][want]
                if want in dims and dims[want] != have:
                    raise WasmBackendError(f"{source}: {where} is {have} but {seen[want]} is {dims[want]}: both are "
                                           f"dim {want!r} and must be equal")
                if not r["min"] <= have <= r["max"]:
                    raise WasmBackendError(f"{source}: {where} (dim {want!r}) is {have}, outside its range "
                                           f"[{r['min']}, {r['max']}] given at export")
                dims[want], seen[want] = have, where
    return dims


class ExportedModel:
    """An exported model instantiated in wasmtime. Not re-entrant: calls are serialized. A context
    manager; close() (or dropping the last reference) stops its worker threads."""

    def __init__(self, data: bytes, source: str = "model", threads: int = 1,
                 timeout_ms: float | None = DEFAULT_TIMEOUT_MS):
        parsed = wasm_file.parse(data, source)
        self.metadata = meta = parsed.metadata
        self.source = source
        self.input_names = [i["name"] for i in meta["inputs"]]
        self.output_names = [o["name"] for o in meta["outputs"]]
        if meta["abi_version"] != ABI.version:
            log.info("%s uses kernel ABI %s (this package: %s); it carries its own kernels", source,
                     meta["abi_version"], ABI.version)
        if type(threads) is not int or not 1 <= threads <= MAX_THREADS:
            raise WasmBackendError(f"threads={threads!r}: pass an integer from 1 to {MAX_THREADS}")
        if timeout_ms is not None and not (isinstance(timeout_ms, (int, float)) and timeout_ms > 0):
            raise WasmBackendError(f"timeout_ms={timeout_ms!r}: pass a positive number of milliseconds, or None for no limit")
        self.timeout_s = None if timeout_ms is None else timeout_ms / 1e3
        engine = wasm_layer.engine(epoch_interruption=True)
        module = _compile(engine, data[:parsed.module_end], source)
        mem = meta["memory"]
        self.threads = threads
        self._stacks_at = mem["static_bytes"]
        need = self._stacks_at + (self.threads - 1) * mem["worker_stack_bytes"]
        if need > MAX_PAGES * PAGE:
            raise WasmBackendError(f"{source} with threads={threads} needs {need / 2**30:.2f} GiB of memory "
                                   "(wasm32: 4 GiB at most); use fewer threads")
        pages = max(mem["initial_pages"], -(-need // PAGE))
        # A fixed-size memory: the layout is static, nothing in the kernels grows it.
        self.memory = Memory(engine, pages, pages)
        with _loading(source, "instantiating its module", self.timeout_s):
            self._pool = Pool(engine, module, self.memory, load_limit_s=self.timeout_s,
                              thread_name="wasm-export-worker")
        # The pool, not self: its threads must not keep the model alive.
        self._finalizer = weakref.finalize(self, self._pool.shutdown, SHUTDOWN_SECONDS)
        self._check_module(meta, source)
        lay = meta["layout"]
        weights = parsed.custom[wasm_file.WEIGHTS_SECTION]
        if weights:
            self.memory.write_bytes(lay["weights_at"], weights)
        self._plan = parsed.custom[wasm_file.PLAN_SECTION]
        self._sizes: OrderedDict[tuple, _Sizes] = OrderedDict()  # by input shapes, most recent last
        self._plan_in_memory: _Sizes | None = None
        self._lock = threading.Lock()
        self._check_extremes()
        for worker_id in range(1, self.threads):
            with _loading(source, f"starting worker {worker_id}", self.timeout_s):
                self._pool.start_worker(worker_id, self._stacks_at + worker_id * mem["worker_stack_bytes"],
                                        self.timeout_s)
        log.debug("loaded %s (%d threads, time limit %s ms)", source, threads, timeout_ms)

    def _check_module(self, meta: dict, source: str) -> None:
        main = self._pool.main
        with _loading(source, "reading its ABI version", self.timeout_s):
            version = main.fn["abi_version"]()[0].i32
            heap_base = main.fn["heap_base"]()[0].i32
        if version != meta["abi_version"] or heap_base != meta["memory"]["heap_base"]:
            raise wasm_file.ExportFileError(
                f"{source}: its kernels (ABI {version}, heap base {heap_base}) do not match its plan "
                f"(ABI {meta['abi_version']}, heap base {meta['memory']['heap_base']}); the file was "
                "assembled wrongly. Re-export the model.")

    @property
    def broken(self) -> str | None:
        return self._pool.broken

    def _view(self, spec: dict) -> torch.Tensor:
        return self.memory.view(spec["offset"], spec["shape"], _TORCH_DTYPES[spec["dtype"]], spec["strides"])

    def _check_extremes(self) -> None:
        """A dynamic file's views are checked for each call's sizes; check the extremes of the dims'
        ranges at load, so that a damaged file fails here."""
        meta = self.metadata
        for pick in ("max", "min") if meta["dims"] else ():
            dims = {name: r[pick] for name, r in meta["dims"].items()}
            values = size_program.evaluate(meta["exprs"], dims)
            shapes = tuple(tuple(size_program.resolve(v, dims, values) for v in spec["shape"]) for spec in meta["inputs"])
            try:
                self._sizes_for(shapes)
            except wasm_file.ExportFileError:
                raise
            except WasmBackendError:  # (derived dims may rule an extreme out)
                pass

    def _sizes_for(self, shapes: tuple) -> _Sizes:
        """The plan and views for these input shapes (the last few are kept)."""
        found = self._sizes.get(shapes)
        if found is not None:
            self._sizes.move_to_end(shapes)
            return found
        meta = self.metadata
        dims = bind_dims(meta, shapes, self.source)
        try:
            values = size_program.evaluate(meta["exprs"], dims)
        except (size_program.SizeProgramError, OverflowError, ValueError) as e:
            raise wasm_file.ExportFileError(f"{self.source}: its size programs fail at {dims} ({e}); the file is "
                                            "damaged: re-export it") from e
        chosen = next((j for j, v in enumerate(meta["variants"])
                       if v["when"] is None or values[v["when"]] == 1), None)
        if chosen is None:
            raise wasm_file.ExportFileError(f"{self.source}: no plan variant serves the sizes {dims}; the file "
                                            "is damaged: re-export it")
        inputs, outputs = wasm_file.views_at(meta, chosen, dims, values)
        wasm_file.check_views(meta, inputs, outputs, self.source)
        variant = meta["variants"][chosen]
        start = 4 * variant["plan_offset"]
        words = np.zeros(variant["plan_words"], dtype="<i4")
        if len(words):
            words[:] = np.frombuffer(self._plan, dtype="<i4", count=len(words), offset=start)
        for word, program in variant["patches"]:
            value = values[program]
            if type(value) is not int or not -2**31 <= value < 2**32:
                raise wasm_file.ExportFileError(f"{self.source}: plan word {word} evaluates to {value!r} at {dims}, "
                                                "not an int32; the file is damaged: re-export it")
            words[word] = value - 2**32 if value >= 2**31 else value
        for spec, shape in zip(inputs, shapes):
            if spec["shape"] != list(shape):  # (a derived dim: its program disagrees with the input)
                raise WasmBackendError(f"{self.source}: input {spec['name']!r} has shape {list(shape)}; at {dims} "
                                       f"the model takes {spec['shape']}")
        found = _Sizes(chosen, words.tobytes(), variant["plan_words"],
                       [self._view(t) if t["offset"] is not None else None for t in inputs],
                       [self._view(t) for t in outputs])
        self._sizes[shapes] = found
        while len(self._sizes) > SIZES_KEPT:
            self._sizes.popitem(last=False)
        return found

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
        """The outputs: a dict {name: tensor} if the model returned a dict or ModelOutput, else one
        tensor or a tuple of them."""
        outs = self._call(args, kwargs)
        if self.metadata["outputs_by_name"]:
            return dict(zip(self.output_names, outs))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _call(self, args, kwargs) -> list[torch.Tensor]:
        tensors = self._bind(args, kwargs)
        pool, lay = self._pool, self.metadata["layout"]
        if not self._finalizer.alive:
            raise WasmBackendError(f"{self.source}: the model was closed; load it again")
        with self._lock:
            if pool.broken:
                raise WasmTrap(f"{self.source}: unusable after an earlier failure ({pool.broken}); load it again")
            sizes = self._sizes_for(tuple(tuple(t.shape) for t in tensors))
            if self._plan_in_memory is not sizes and sizes.words:
                self.memory.write_bytes(lay["plan_at"], sizes.words)
                self._plan_in_memory = sizes
            for view, t in zip(sizes.inputs, tensors):
                if view is not None:
                    view.copy_(t)
            try:
                pool.run_plan(lay["plan_at"], sizes.n_words, self.threads, lay["error_at"], self.timeout_s)
            except PlanInputError as e:  # the caller's inputs, not a fault: the model stays usable
                where = wasm_file.source_of_word(self.metadata["variants"][sizes.variant], e.word)
                raise WasmInputError(f"{self.source}: {e}" + (f", in {where}" if where else "")) from e
            except WasmTimeout as e:
                raise WasmTimeout(f"{self.source}: the call {e} (timeout_ms); load the model again") from e
            except WasmTrap as e:
                raise WasmTrap(f"{self.source}: {e}") from e
            return [v.contiguous().clone() if v.is_contiguous() else v.contiguous() for v in sizes.outputs]

    def close(self) -> None:
        """Stops the worker threads (also done when the model is garbage-collected)."""
        with self._lock:
            self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        ins = ", ".join(f"{s['name']}{s['shape']}" for s in self.metadata["inputs"])
        outs = ", ".join(f"{s['name']}{s['shape']}" for s in self.metadata["outputs"])
        return f"ExportedModel({self.source}: ({ins}) -> ({outs}), threads={self.threads})"


def load(path, threads: int = 1, timeout_ms: float | None = DEFAULT_TIMEOUT_MS) -> ExportedModel:
    """Loads an exported .wasm; raises ExportFileError for a foreign, truncated, damaged, hostile or
    incompatible file. `timeout_ms` limits loading (start function, _initialize) and each call
    (WasmTimeout; the model must then be loaded again); None: no limit. Use it as a context
    manager or call close() to stop its threads at once (dropping it does so too)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise wasm_file.ExportFileError(f"cannot read {path}: {e.strerror or e}") from e
    return ExportedModel(data, str(path), threads, timeout_ms)
