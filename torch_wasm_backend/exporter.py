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
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from torch_wasm_backend.lowering import ops  # noqa: F401  (fills the registry)
from torch_wasm_backend.lowering.abi import ABI
from torch_wasm_backend.lowering.lower import lower_partition
from torch_wasm_backend.lowering.quant_fuse import fuse_quantized_patterns
from torch_wasm_backend.lowering.abi import f32_bits
from torch_wasm_backend.lowering.registry import Unsupported, _is_symbolic_size, decomposition_table, op_name, support_reason
from torch_wasm_backend.lowering.state import LoweringState
from torch_wasm_backend.lowering.tracked import is_tracked, plain
from . import export_dims, size_program, wasm_file
from .errors import WasmBackendError
from .runtime import KERNEL_BUILDS, kernel_heap_base
from .wasm_layer import MAX_PAGES, PAGE, WORKER_STACK

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
    lines, static = [], {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem or _is_symbolic_size(node):
            continue  # (a size: evaluated from the dims, not run)
        reason = support_reason(node, static)
        if reason is not None:
            lines.append(f"{_describe(node)}: {reason}")
    return lines


def _capture(model, args, kwargs, dynamic_shapes) -> ExportedProgram:
    try:
        ep = torch.export.export(model, args, kwargs=kwargs, dynamic_shapes=dynamic_shapes)
    except Exception as e:  # torch.export's own errors are many types; keep the cause attached
        raise WasmBackendError(
            f"torch.export could not capture the model ({type(e).__name__}: {str(e).splitlines()[0]}). "
            "export needs a graph without data-dependent Python control flow (and dynamic_shapes as "
            "torch.export takes them); see the cause above.") from e
    ep = ep.run_decompositions(_export_decompositions())
    _drop_asserts(ep.graph_module)
    return ep


def _drop_asserts(gm: torch.fx.GraphModule) -> None:
    """Removes torch.export's checks of the example's metadata and of size relations (nothing to
    run in wasm: dtypes are fixed by the file, sizes are checked against the dims' ranges by the
    loaders), and the size computations only they used."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and not node.users and "assert" in op_name(node.target) \
                or node.target in _SIZE_CHECKS:
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()


_SIZE_CHECKS = {torch.ops.aten.sym_constrain_range_for_size.default, torch.ops.aten.sym_constrain_range.default}


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


def _output_names(ep: ExportedProgram, n: int) -> tuple[list[str], bool]:
    """The outputs' names, and whether they are the model's own keys: a dict's or ModelOutput's
    keys (nested: 'a.b'), else 'output' for one tensor and output_0, output_1, ... for several."""
    positional = ["output"] if n == 1 else [f"output_{k}" for k in range(n)]
    try:
        tree = torch.utils._pytree.tree_unflatten(list(range(n)), ep.call_spec.out_spec)
        paths, _ = torch.utils._pytree.tree_flatten_with_path(tree)
    except Exception:  # an output structure pytree cannot rebuild: positional names are fine
        return positional, False
    keyed = [".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)
             for path, _ in paths]
    if len(paths) == n and all(any(hasattr(k, "key") or hasattr(k, "name") for k in path) for path, _ in paths) \
            and len(set(keyed)) == n:
        return keyed, True
    return positional, False


def _user_dims(model, args, kwargs, dynamic_shapes, values) -> dict[int, dict[int, str]]:
    """{graph input index: {axis: the name of the Dim the user gave it}}, matched by walking
    dynamic_shapes alongside the arguments (as torch.export does)."""
    from torch.export.dynamic_shapes import _combine_args
    named: dict[int, dict[int, str]] = {}

    def walk(value, spec):
        if isinstance(value, torch.Tensor):
            axes = spec.items() if isinstance(spec, dict) else enumerate(spec or ())
            names = {int(a): d.__name__ for a, d in axes if isinstance(getattr(d, "__name__", None), str)}
            named[id(value)] = names
        elif isinstance(value, (list, tuple)) and isinstance(spec, (list, tuple)):
            for v, s_ in zip(value, spec):
                walk(v, s_)
        elif isinstance(value, dict) and isinstance(spec, dict):
            for k in value.keys() & spec.keys():
                walk(value[k], spec[k])

    combined = _combine_args(model, args, kwargs or {})
    if isinstance(dynamic_shapes, dict):
        for key, spec in dynamic_shapes.items():
            if key in combined:
                walk(combined[key], spec)
    elif isinstance(dynamic_shapes, (list, tuple)):
        walk(list(combined.values()), list(dynamic_shapes))
    return {i: named[id(v)] for i, v in enumerate(values) if id(v) in named}


class _SizeFields:
    """Turns tracked sizes into metadata fields: an int stays an int, a dim's own value becomes its
    name, anything else "#k", program k of the file's size programs (interned by source)."""

    def __init__(self, names: list[str]):
        self.symbols = {f"a{i}": name for i, name in enumerate(names)}
        self.programs: list[list] = []
        self._index: dict[str, int] = {}

    def program(self, source: str) -> int:
        k = self._index.get(source)
        if k is None:
            try:
                tokens = size_program.compile_source(source, self.symbols)
            except size_program.SizeProgramError as e:
                raise WasmBackendError(f"cannot export these dims as dynamic: {e}; export with static "
                                       "shapes (no dynamic_shapes)") from None
            k = self._index[source] = len(self.programs)
            self.programs.append(tokens)
        return k

    def field(self, value):
        if not is_tracked(value):
            return int(value)
        if value.expr in self.symbols:
            return self.symbols[value.expr]
        return f"#{self.program(value.expr)}"

    def fields(self, values) -> list:
        return [self.field(v) for v in values]


def _f32_word(value):
    """An F32 plan field: its bits, or (for a float computed from tracked sizes) a marker the
    encoder turns into an f32 size program."""
    return ("f32", value) if is_tracked(value) else f32_bits(value)


def export(model: torch.nn.Module, args, path, *, kwargs: dict | None = None, dynamic_shapes=None,
           output_names: list[str] | None = None, winograd: bool = True, simd: str = "baseline") -> dict:
    """Exports `model` called on `args` (and `kwargs`) to one standalone .wasm at `path`; returns
    its metadata.

    Inputs are float32, int64, int32, bool, uint8 or int8 tensors, named after forward's parameters. Outputs
    (a tensor, or tuples, lists, dicts, ModelOutputs of them) are named by their keys
    ('last_hidden_state', 'logits') or output_0, output_1, ... Shapes are those of the examples,
    except the dims `dynamic_shapes` declares (torch.export's spelling, e.g.
    {"input_ids": {1: Dim("seq", min=1, max=512)}}): the file then runs every size in their
    ranges (each Dim needs a max: memory is planned for the largest sizes).

    winograd=False runs 3x3 convs by im2col + GEMM instead of Winograd: about 2x slower on those
    layers, but the file stores their raw weights (Winograd's transformed ones are 16/9 larger).

    simd="relaxed" writes the relaxed-SIMD kernels (f32x4.relaxed_madd: a fused multiply-add in GEMM
    and convolution where the CPU has FMA): faster in V8, but it runs only where the engine has
    relaxed SIMD (wasmtime; Chrome/Edge 114+; Node.js 22+, or 20 with --experimental-wasm-relaxed-simd;
    not Safari). The default "baseline" runs on every WebAssembly SIMD engine. Serve both and pick
    with the JS loader's `relaxedSimdSupported()`.

    Raises WasmBackendError, writing nothing, if any node cannot run on the wasm kernels (each is
    listed with op, shapes and source line)."""
    if simd not in KERNEL_BUILDS:
        raise WasmBackendError(f"simd={simd!r}: use one of {', '.join(map(repr, KERNEL_BUILDS))}")
    if not isinstance(args, tuple):
        args = (args,)
    ep = _capture(model, args, kwargs, dynamic_shapes)
    mutated = [s.target for s in ep.graph_signature.output_specs
               if s.kind in (OutputKind.BUFFER_MUTATION, OutputKind.USER_INPUT_MUTATION)]
    if mutated:
        raise WasmBackendError(
            f"the model writes to {mutated} while running (e.g. BatchNorm in training mode updates its "
            "running stats, or a cache is updated in place); an exported model must be a pure function: "
            "call model.eval() before export, and return new tensors instead of writing into buffers")
    gm = ep.graph_module
    fuse_quantized_patterns(gm)  # int8 chains -> int8 ops, as the torch.compile path (partition_graph)
    missing = unsupported_nodes(gm)
    if missing:
        hint = (" The model is in training mode (dropout and friends stay in the graph): call "
                "model.eval() first." if getattr(model, "training", False) else "")
        raise WasmBackendError(
            f"cannot export: {len(missing)} node(s) have no wasm kernel:\n  " + "\n  ".join(missing)
            + "\nReplace these ops in the model (or add them to lowering/ops), then export again."
            + hint + " No file was written.")
    values, constants, input_names = _graph_inputs(ep, args, kwargs)
    for name, i in input_names:
        if _dtype_name(values[i].dtype) not in wasm_file.DTYPES:
            raise WasmBackendError(f"input {name!r} is {_dtype_name(values[i].dtype)}; exported models take "
                                   f"{', '.join(wasm_file.DTYPES)} tensors (convert it before export)")
    dims = None
    state = LoweringState(gm)  # the one graph's lowering state, for every lowering of it below
    if dynamic_shapes is not None:
        dims = export_dims.dims_of(state, ep, _user_dims(model, args, kwargs, dynamic_shapes, values), values)
    if dims is None:
        variants = [export_dims.Variant(_lower_static(state, values, constants, winograd, args), {}, [], [()])]
        names, values_at = [], None
    else:
        variants = export_dims.lower_variants(state, constants, winograd, dims)
        names, values_at = dims.names, _values_at(state, values, constants)
        for variant in variants:
            export_dims.check_size_constants(variant, dims, values_at)
    sizes = _SizeFields(names)

    heap_base = kernel_heap_base(simd)
    kernel_bytes = KERNEL_BUILDS[simd].read_bytes()

    # ---- fixed memory layout: [error word | weights | arena | plan] -----------------------------
    error_at = _align(heap_base)
    weights_at = error_at + ALIGN
    blob = bytearray()
    constant_addrs: dict[int, int] = {}
    by_content: dict[bytes, int] = {}  # identical constants (e.g. the same scalar) stored once
    largest_values = values_at(dims.largest()) if dims else values
    for variant in variants:
        made_at_largest = {id(buf) for buf, _ in variant.size_constants}
        for buf in variant.plan.constants:
            if id(buf) in constant_addrs:
                continue
            data = buf.make(largest_values if id(buf) in made_at_largest else values).numpy().tobytes()
            key = hashlib.sha256(data).digest() + len(data).to_bytes(8, "little")
            if key not in by_content:
                by_content[key] = weights_at + len(blob)
                blob += data + b"\0" * (_align(len(data)) - len(data))
            constant_addrs[id(buf)] = by_content[key]
    arena_at = _align(weights_at + len(blob))
    arena_bytes = max(v.plan.arena_size for v in variants)

    plan_words: list[int] = []
    entries = []
    for variant in variants:
        plan = variant.plan
        words = plan.encode(arena_at, constant_addrs, word=lambda v: v, f32_word=_f32_word)
        patches = []
        for k, w in enumerate(words):
            if type(w) is tuple:  # an F32 field computed from sizes
                patches.append([k, sizes.program(f"f32bits({w[1].expr})")])
                words[k] = f32_bits(plain(w[1]))
            elif is_tracked(w):
                patches.append([k, sizes.program(w.expr)])
                words[k] = int(plain(w))
        terms = [src if want else f"not {src}" for src, want in variant.guards.items()]

        def view(ref, strides):
            return {"offset": sizes.field(plan.address(ref, arena_at, constant_addrs)), "strides": sizes.fields(strides)}

        entries.append({
            "when": sizes.program(" and ".join(terms)) if terms else None,
            "plan_offset": len(plan_words), "plan_words": len(words), "patches": patches,
            "sources": _record_sources(plan),
            "inputs": [None if plan.inputs[i] is None else view(plan.inputs[i], plan.inputs[i].strides)
                       for _, i in input_names],
            "outputs": [view(o.ref, o.ref.strides) for o in plan.outputs]})
        plan_words += [w if w < 2**31 else w - 2**32 for w in words]
    plan_at = _align(arena_at + arena_bytes)
    static_bytes = _align(plan_at + 4 * max(e["plan_words"] for e in entries))
    if static_bytes + WORKER_STACK > MAX_PAGES * PAGE:
        raise WasmBackendError(
            f"the model needs {static_bytes / 2**30:.2f} GiB of wasm memory (weights {len(blob) / 2**30:.2f} GiB, "
            f"activations {arena_bytes / 2**30:.2f} GiB); wasm32 addresses 4 GiB at most. Export a smaller "
            "model or smaller example inputs (batch size, sequence length, the dims' max).")

    first = variants[0].plan
    inputs = [{"name": name, "dtype": _dtype_name(values[i].dtype), "shape": sizes.fields(first.inputs[i].shape
              if first.inputs[i] is not None else values[i].shape)} for name, i in input_names]
    by_name = False
    if output_names is None:
        output_names, by_name = _output_names(ep, len(first.outputs))
    if len(output_names) != len(first.outputs):
        raise WasmBackendError(f"output_names has {len(output_names)} names; the model returns "
                               f"{len(first.outputs)} tensors")
    outputs = [{"name": n, "dtype": _dtype_name(spec.ref.dtype), "shape": sizes.fields(spec.shape)}
               for n, spec in zip(output_names, first.outputs)]
    for entry in outputs:
        if entry["dtype"] not in wasm_file.DTYPES:
            raise WasmBackendError(f"output {entry['name']!r} is {entry['dtype']}; exported models return "
                                   f"{', '.join(wasm_file.DTYPES)} tensors (convert it in the model)")

    def refuse(where, problem):  # (what the loaders would refuse: say so now, write nothing)
        raise WasmBackendError(f"cannot export these dims as dynamic: size program {where} {problem}; "
                               "export with static shapes (no dynamic_shapes), and please report this")
    size_program.check(sizes.programs, {name: None for name in names}, refuse)

    from . import __version__
    metadata = {
        "producer": {"name": "torch_wasm_backend", "version": __version__, "torch": torch.__version__},
        "abi_version": ABI.version,
        "simd": simd,
        "model": type(model).__name__,
        "dims": {name: {"min": lo, "max": hi} for name, lo, hi in zip(names, dims.lo, dims.hi)} if dims else {},
        "inputs": inputs,
        "outputs": outputs,
        "outputs_by_name": by_name,
        "exprs": sizes.programs,
        "variants": entries,
        "memory": {"heap_base": heap_base, "static_bytes": static_bytes,
                   "initial_pages": max(MIN_PAGES, -(-static_bytes // PAGE)),
                   "worker_stack_bytes": WORKER_STACK},
        "layout": {"error_at": error_at, "weights_at": weights_at, "weights_bytes": len(blob),
                   "arena_at": arena_at, "arena_bytes": arena_bytes, "plan_at": plan_at,
                   "plan_words": len(plan_words)},
        "ops": dict(sorted(Counter(first.aten_ops).items())),
        "kernel_calls": dict(sorted(Counter(op for op, _ in first.records).items())),
        "flops": int(plain(first.flops)),
    }
    data = wasm_file.build(kernel_bytes, metadata, np.asarray(plan_words, dtype="<i4").tobytes(), bytes(blob))
    path = Path(path)
    _write_file_atomically(path, data)
    log.info("exported %s: %d bytes (%d of weights, %d kernel calls, %d variants)", path, len(data), len(blob),
             len(first.records), len(variants))
    return wasm_file.parse(data, str(path)).metadata


# The kernels that report an input error (an index out of range: kernels_cpp/dtype_ops.cpp).
_CHECKS_INPUTS = {"INDEX_SELECT", "INDEX_ND", "GATHER"}


def _record_sources(plan) -> list:
    """[[first plan word, "op at source line"], ...] for the records that can report an input error
    (an index out of range), so that a loader can say where it was found. File names only: a
    shipped model should not carry the exporting machine's paths."""
    sources, at = [], 0
    for (kernel, _), node in zip(plan.records, plan.record_nodes):
        if node is not None and kernel in _CHECKS_INPUTS:
            where = re.sub(r'File "[^"]*?([^/\\"]+)"', r'File "\1"', _source_line(node))
            sources.append([at, f"{op_name(node.target)} at {where}"[:wasm_file.MAX_SOURCE_CHARS]])
        at += 2 + ABI.ops[kernel].n_words
    return sources


def _lower_static(state, values, constants, winograd, args):
    try:
        return lower_partition(state, values, constants, winograd=winograd)
    except Unsupported as e:
        raise WasmBackendError(f"cannot export: lowering failed for the example shapes "
                               f"({_shapes(list(args))}): {e}. No file was written.") from e
    except Exception as e:  # a bug of ours, not of the model: say so, with the cause attached
        raise WasmBackendError(f"cannot export: internal error while lowering ({type(e).__name__}: {e}); "
                               "a bug of torch_wasm_backend, please report it with this message. "
                               "No file was written.") from e


def _values_at(state, values, constants):
    """values_at(sizes) -> the graph inputs with each user input replaced by zeros of its shape at
    those dim sizes (what constants computed from sizes are made from)."""
    specs = state.specs
    placeholders = [n for n in state.gm.graph.nodes if n.op == "placeholder"]

    def values_at(point):
        vals = specs.values_for_symbols(list(point))
        return [v if i in constants or not isinstance(v, torch.Tensor)
                else torch.zeros(tuple(vals[placeholders[i]].shape), dtype=v.dtype)
                for i, v in enumerate(values)]
    return values_at


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
