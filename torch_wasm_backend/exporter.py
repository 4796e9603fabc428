"""AOT export: model -> torch.export -> the registry's decompositions -> the same lowering and Plan
as torch.compile -> one standalone .wasm (kernel module + plan + weights + metadata, see wasm_file).

All addresses are fixed at export time: above the kernel module's heap base come an error word, the
weights, the arena (inputs, intermediates and outputs live in it, placed by the Plan's liveness
plan) and the plan words. A loader only copies weights and plan words to their offsets, writes
inputs, calls run_plan and reads outputs; worker stacks go above `memory.static_bytes`.
"""
from __future__ import annotations

import hashlib
import logging
import operator
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from lowering import ops  # noqa: F401  (fills the registry)
from lowering.abi import ABI
from lowering.lower import lower_partition
from lowering.registry import Unsupported, decomposition_table, op_name, support_reason
from . import wasm_file
from .errors import WasmBackendError
from .runtime import MAX_PAGES, PAGE, WASM_PATH, WORKER_STACK, get_runtime

log = logging.getLogger("torch_wasm_backend")

ALIGN = 64
# The kernel module declares 256 initial pages (Makefile INITIAL_MEMORY=16MB); an imported memory
# may not be smaller than that.
MIN_PAGES = 256


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _shapes(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{list(value.shape)}:{_dtype_name(value.dtype)}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_shapes(v) for v in value) + ")"
    return repr(value)


_TORCH_DIR = str(Path(torch.__file__).resolve().parent)


def _source_line(node) -> str:
    """Where the node comes from: the innermost frame of the user's code in its stack trace
    ('File "m.py", line 12, in forward: <code>'; torch's own frames only if there is no other),
    and the submodule that ran it (e.g. "module 'encoder.layers.0.dropout' (Dropout)")."""
    trace = (node.meta.get("stack_trace") or "").strip().splitlines()
    frames = []
    for i, line in enumerate(trace):
        line = line.strip()
        if line.startswith("File "):
            code = trace[i + 1].strip() if i + 1 < len(trace) and not trace[i + 1].strip().startswith("File ") else ""
            frames.append((line, code))
    user = [f for f in frames if _TORCH_DIR not in f[0]]
    where = "source line unknown"
    if user or frames:
        line, code = (user or frames)[-1]
        where = f"{line}: {code}" if code else line
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        name = getattr(cls, "__name__", None) or str(cls).rsplit(".", 1)[-1]
        where += f"; module '{path}' ({name})"
    return where


def _describe(node) -> str:
    ins = ", ".join(_shapes(a.meta.get("val")) for a in node.all_input_nodes)
    return f"{node.name} = {op_name(node.target)}({ins}) -> {_shapes(node.meta.get('val'))}  [{_source_line(node)}]"


def unsupported_nodes(gm: torch.fx.GraphModule) -> list[str]:
    """One line per node the registry cannot lower (op, shapes, reason, source line)."""
    lines = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        reason = support_reason(node)
        if reason is not None:
            lines.append(f"{_describe(node)}: {reason}")
    return lines


def _capture(model, args, kwargs) -> ExportedProgram:
    try:
        ep = torch.export.export(model, args, kwargs=kwargs)
    except Exception as e:  # torch.export's own errors are many types; keep the cause attached
        raise WasmBackendError(
            f"torch.export could not capture the model ({type(e).__name__}: {str(e).splitlines()[0]}). "
            "export needs a graph without data-dependent Python control flow; see the cause above.") from e
    return ep.run_decompositions(_export_decompositions())


def _export_decompositions() -> dict:
    """The ATen that aot_autograd gives the torch.compile path: every CompositeImplicitAutograd op
    (conv2d, linear, ...) decomposed, then the registry's own decompositions on top. A plain dict
    would keep the CIA ops that torch.export preserves by default, which the registry lowers only in
    their decomposed form. (torch.export.decomp_utils helpers: private, stable in torch 2.13-2.14.)"""
    from torch.export.decomp_utils import _collect_all_valid_cia_ops, _get_decomp_for_cia
    table = {op: _get_decomp_for_cia(op) for op in _collect_all_valid_cia_ops()}
    table.update(decomposition_table())
    return table


def _graph_inputs(ep: ExportedProgram, args, kwargs):
    """Values of the graph placeholders in order, the constant indices, and the user input names
    (tensors only: a Python number torch.export kept as a placeholder is baked in as it was)."""
    user_values = iter(torch.utils._pytree.tree_leaves((args, kwargs or {})))
    values, constants, names = [], set(), []
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            value = next(user_values)
            if isinstance(value, torch.Tensor):
                names.append((spec.arg.name, len(values)))
            values.append(value)
            continue
        if spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            tensor = ep.state_dict[spec.target] if spec.target in ep.state_dict else ep.constants[spec.target]
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            tensor = ep.constants[spec.target]
        else:
            raise WasmBackendError(f"graph input {spec.arg.name} of kind {spec.kind.name} cannot be exported "
                                   "to wasm (only tensors, parameters and buffers)")
        constants.add(len(values))
        values.append(tensor.detach())
    return values, constants, names


def _output_names(ep: ExportedProgram, n: int) -> list[str]:
    """'output' for one tensor; the keys for a dict (nested: 'a.b'); else output_0, output_1, ..."""
    if n == 1:
        return ["output"]
    names = [f"output_{k}" for k in range(n)]
    try:
        tree = torch.utils._pytree.tree_unflatten(list(range(n)), ep.call_spec.out_spec)
        paths, _ = torch.utils._pytree.tree_flatten_with_path(tree)
    except Exception:  # an output structure pytree cannot rebuild: positional names are fine
        return names
    keyed = [".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
             for path, _ in paths]
    if all(any(hasattr(k, "key") or hasattr(k, "name") for k in path) for path, _ in paths) \
            and len(set(keyed)) == n:
        return keyed
    return names


def export(model: torch.nn.Module, args, path, *, kwargs: dict | None = None,
           output_names: list[str] | None = None, winograd: bool = True) -> dict:
    """Exports `model` called on `args` to one standalone .wasm at `path`; returns its metadata.

    winograd=False runs 3x3 convs by im2col + GEMM instead of Winograd: about 2x slower on those
    layers, but the file stores their raw weights (Winograd's transformed ones are 16/9 larger).

    Shapes are fixed to those of `args` (float32 tensors). Raises WasmBackendError, writing nothing,
    if any node cannot run on the wasm kernels (each is listed with op, shapes and source line)."""
    if not isinstance(args, tuple):
        args = (args,)
    ep = _capture(model, args, kwargs)
    mutated = [s.target for s in ep.graph_signature.output_specs
               if s.kind in (OutputKind.BUFFER_MUTATION, OutputKind.USER_INPUT_MUTATION)]
    if mutated:
        raise WasmBackendError(
            f"the model writes to {mutated} while running (e.g. BatchNorm in training mode updates its "
            "running stats); an exported model must be a pure function: call model.eval() before export")
    gm = ep.graph_module
    missing = unsupported_nodes(gm)
    if missing:
        hint = (" The model is in training mode (dropout and friends stay in the graph): call "
                "model.eval() first." if getattr(model, "training", False) else "")
        raise WasmBackendError(
            f"cannot export: {len(missing)} node(s) have no wasm kernel:\n  " + "\n  ".join(missing)
            + "\nReplace these ops in the model (or add them to lowering/ops), then export again."
            + hint + " No file was written.")
    values, constants, input_names = _graph_inputs(ep, args, kwargs)
    try:
        plan = lower_partition(gm, values, constants, winograd=winograd)
    except Unsupported as e:
        raise WasmBackendError(f"cannot export: lowering failed for the example shapes "
                               f"({_shapes(list(args))}): {e}. No file was written.") from e
    except Exception as e:  # a bug of ours, not of the model: say so, with the cause attached
        raise WasmBackendError(f"cannot export: internal error while lowering ({type(e).__name__}: {e}); "
                               "a bug of torch_wasm_backend, please report it with this message. "
                               "No file was written.") from e

    runtime, _ = get_runtime(1)
    heap_base = runtime.main.fn["heap_base"]()[0].i32
    kernel_bytes = WASM_PATH.read_bytes()

    # ---- fixed memory layout ------------------------------------------------------------------
    error_at = _align(heap_base)
    weights_at = error_at + ALIGN
    blob = bytearray()
    constant_addrs: dict[int, int] = {}
    by_content: dict[bytes, int] = {}  # identical constants (e.g. the same scalar) stored once
    for buf in plan.constants:
        data = buf.make(values).numpy().tobytes()
        key = hashlib.sha256(data).digest() + len(data).to_bytes(8, "little")
        if key not in by_content:
            by_content[key] = weights_at + len(blob)
            blob += data + b"\0" * (_align(len(data)) - len(data))
        constant_addrs[id(buf)] = by_content[key]
    arena_at = _align(weights_at + len(blob))
    words = plan.encode(arena_at, constant_addrs)
    plan_at = _align(arena_at + plan.arena_size)
    static_bytes = _align(plan_at + 4 * len(words))
    if static_bytes + WORKER_STACK > MAX_PAGES * PAGE:
        raise WasmBackendError(
            f"the model needs {static_bytes / 2**30:.2f} GiB of wasm memory (weights {len(blob) / 2**30:.2f} GiB, "
            f"activations {plan.arena_size / 2**30:.2f} GiB); wasm32 addresses 4 GiB at most. Export a smaller "
            "model or smaller example inputs (batch size, sequence length).")

    def view(ref, strides):
        base = constant_addrs[id(ref.buffer)] if ref.buffer.is_constant \
            else arena_at + plan.arena_offsets[id(ref.buffer)]
        return {"offset": base + ref.offset * ref.itemsize, "strides": list(strides)}

    inputs = []
    for name, i in input_names:
        v, ref = values[i], plan.inputs[i]
        entry = {"name": name, "shape": list(v.shape), "dtype": _dtype_name(v.dtype)}
        entry.update(view(ref, ref.strides) if ref is not None else {"offset": None, "strides": None})
        inputs.append(entry)
    if output_names is None:
        output_names = _output_names(ep, len(plan.outputs))
    if len(output_names) != len(plan.outputs):
        raise WasmBackendError(f"output_names has {len(output_names)} names; the model returns "
                               f"{len(plan.outputs)} tensors")
    outputs = [{"name": n, "shape": list(spec.shape), "dtype": _dtype_name(spec.ref.dtype),
                **view(spec.ref, spec.ref.strides)} for n, spec in zip(output_names, plan.outputs)]
    for entry in inputs + outputs:
        if entry["dtype"] != "float32":
            raise WasmBackendError(f"{entry['name']} is {entry['dtype']}; exported models take and "
                                   "return float32 tensors only (convert with .float() before export)")

    from . import __version__
    metadata = {
        "producer": {"name": "torch_wasm_backend", "version": __version__, "torch": torch.__version__},
        "abi_version": ABI.version,
        "model": type(model).__name__,
        "inputs": inputs,
        "outputs": outputs,
        "memory": {"heap_base": heap_base, "static_bytes": static_bytes,
                   "initial_pages": max(MIN_PAGES, -(-static_bytes // PAGE)),
                   "worker_stack_bytes": WORKER_STACK},
        "layout": {"error_at": error_at, "weights_at": weights_at, "weights_bytes": len(blob),
                   "arena_at": arena_at, "arena_bytes": plan.arena_size, "plan_at": plan_at,
                   "plan_words": len(words)},
        "ops": dict(sorted(Counter(plan.aten_ops).items())),
        "kernel_calls": dict(sorted(Counter(op for op, _ in plan.records).items())),
        "flops": plan.flops,
    }
    data = wasm_file.build(kernel_bytes, metadata, np.asarray(words, dtype="<i4").tobytes(), bytes(blob))
    path = Path(path)
    _write_file_atomically(path, data)
    log.info("exported %s: %d bytes (%d of weights, %d kernel calls)", path, len(data), len(blob), len(plan.records))
    return wasm_file.parse(data, str(path)).metadata


def _umask() -> int:
    """The process umask. Linux reports it in /proc (reading it with os.umask means setting it,
    process-wide, for an instant in which another thread's new file would get the wrong mode)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _write_file_atomically(path: Path, data: bytes) -> None:
    """Write `path` through a new temp file in the same folder (mkstemp: O_EXCL, so a file or
    symlink planted at a predictable name is never followed) and a rename, so a half-written model
    never appears under the real name; the temp file is removed on any error. The file gets the
    mode a plain open() would give it (mkstemp makes it 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
