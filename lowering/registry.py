"""The one op registry: for each ATen overload, its support check (a reason or None), its lowering
(node -> kernel records) or its decomposition, and the kernels it uses. The partitioner, the
coverage report, the docs table and the tests all read REGISTRY; there is no other support list."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import torch
from torch.fx import Node

from .walk import inputs_first

SUPPORTED_DTYPES = (torch.float32,)
# Every dtype a wasm buffer can hold (bool as one byte, like torch). Views, copies, casts, masks and
# index ops take these; arithmetic kernels stay float32.
ALL_DTYPES = (torch.float32, torch.float64, torch.int64, torch.int32, torch.int16, torch.int8,
              torch.uint8, torch.bool)


class Unsupported(Exception):
    """A node (or a shape of it) the wasm kernels cannot run; the message is the reason."""


@dataclass
class OpEntry:
    target: object
    lower: Callable | None          # lower(ctx, node) -> TensorRef | tuple | None
    check: Callable[[Node], str | None] | None = None
    decompose: Callable | None = None  # applied by aot_autograd before partitioning
    kernels: tuple[str, ...] = ()
    dtypes: tuple[torch.dtype, ...] = SUPPORTED_DTYPES
    notes: str = ""
    promotes: bool = False  # inputs of any dtype: the lowering converts them to the output's dtype
    view: bool = False      # the output is a view of the first input: no kernel, no copy

    @property
    def name(self) -> str:
        return op_name(self.target)


REGISTRY: dict[object, OpEntry] = {}


def op_name(target) -> str:
    name = _op_names.get(target)
    if name is None:  # (cached: lowering counts every node it lowers by op name)
        if target is operator.getitem:
            name = "getitem"
        else:
            name = str(getattr(target, "name", lambda: target)()) if hasattr(target, "name") else str(target)
        _op_names[target] = name
    return name


_op_names: dict = {}


def register(*targets, kernels=(), check=None, dtypes=SUPPORTED_DTYPES, notes="", promotes=False, view=False):
    """Decorator: registers `lower` for every target overload. promotes: tensor inputs may have any
    of ALL_DTYPES (type promotion: the lowering casts them); `dtypes` then constrains the output.
    view: the ops return a view of their input (the partitioner does not count them as compute)."""
    def wrap(lower):
        for t in targets:
            if t in REGISTRY:
                raise ValueError(f"{op_name(t)} registered twice")
            REGISTRY[t] = OpEntry(t, lower, check, None, tuple(kernels), tuple(dtypes), notes, promotes, view)
        return lower
    return wrap


def is_view_op(target) -> bool:
    """Whether target is registered as a view (no kernel, no copy)."""
    entry = REGISTRY.get(target)
    return entry is not None and entry.view


def bind(node: Node) -> dict[str, object]:
    """node's arguments by name, as its op's schema names them: the positional and keyword ones it
    has, and the schema's default for each one it leaves out (an argument without a default that
    is left out is absent). Lowerings read arguments through this (LoweringContext.args), so none
    has to know which ones a graph passes positionally."""
    schema = _schemas.get(node.target)
    if schema is None:
        schema = _schemas[node.target] = tuple(
            (a.name, a.default_value if a.has_default_value() else _REQUIRED)
            for a in node.target._schema.arguments)
    bound = dict(zip((name for name, _ in schema), node.args))
    bound.update(node.kwargs)
    for name, default in schema[len(node.args):]:
        if name not in bound and default is not _REQUIRED:
            bound[name] = default
    return bound


_schemas: dict = {}  # op overload -> ((argument name, default or _REQUIRED), ...)
_REQUIRED = object()


def register_decomposition(target, notes=""):
    """Decorator: `fn` rewrites `target` into registered ops before partitioning."""
    def wrap(fn):
        REGISTRY[target] = OpEntry(target, None, None, fn, (), SUPPORTED_DTYPES, notes)
        return fn
    return wrap


def _tensor_vals(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensor_vals(v)


def _foldable_target(target) -> bool:
    """An ATen op that gives the same result for the same inputs (safe to run at compile time)."""
    if not isinstance(target, torch._ops.OpOverload):
        return target is operator.getitem
    return torch.Tag.nondeterministic_seeded not in target.tags and not target._schema.is_mutable


def is_static(node: Node, static: dict[Node, bool]) -> bool:
    """Whether node's value depends on no tensor input of the graph: factories (arange, ones, full,
    ...) and deterministic ops over them, with sizes that may come from the input signature. The
    lowering computes such nodes at compile time (per plan) into constants, whatever op or dtype
    they are, so the partitioner accepts them (e.g. a causal mask tril(ones(t, t))).
    static: the answers so far for this graph (the caller's, filled in here); the producers are
    visited with an explicit stack, not by recursion, so a graph thousands of ops deep is fine."""
    for top in inputs_first(node, static.__contains__, _static_inputs):
        static[top] = _static_given_inputs(top, static)
    return static[node]


def _foldable_on_cpu(node: Node) -> bool:
    on_cpu = all(v.device.type == "cpu" for v in _tensor_vals(node.meta.get("val")))
    return node.op == "call_function" and _foldable_target(node.target) and on_cpu


def _static_inputs(node: Node) -> list[Node]:
    """The inputs whose being static decides node's (tensor-valued ones)."""
    if not _foldable_on_cpu(node):
        return []
    return [a for a in node.all_input_nodes if isinstance(a.meta.get("val"), (torch.Tensor, list, tuple))]


def _static_given_inputs(node: Node, static: dict[Node, bool]) -> bool:
    """is_static(node), with is_static of its tensor inputs already in static."""
    if not _foldable_on_cpu(node):
        return node.op == "get_attr"  # a tensor constant of the graph
    for arg in node.all_input_nodes:
        if isinstance(arg.meta.get("val"), (torch.Tensor, list, tuple)):
            if not static[arg]:
                return False
        elif arg.op == "call_function" and not _is_symbolic_size(arg):
            return False
    return True


def _is_symbolic_size(node: Node) -> bool:
    """A node computing a Python number from sizes (sym_size, arithmetic on them)."""
    return isinstance(node.meta.get("val"), (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool))


def support_reason(node: Node, static: dict[Node, bool]) -> str | None:
    """Why this node cannot run in wasm, or None if it can (as far as dtypes and the op's own check
    can tell before concrete shapes are known). static: is_static's answers for this graph so far
    (one dict per graph, kept by the caller)."""
    if node.op != "call_function":
        return None
    if is_static(node, static):
        return None
    return kernel_reason(node)


def kernel_reason(node: Node) -> str | None:
    """Why this node cannot run on a kernel (None if it can), even where it could be folded."""
    entry = REGISTRY.get(node.target)
    if entry is None or entry.lower is None:
        return f"no wasm lowering for {op_name(node.target)}"
    out = node.meta.get("val")
    if isinstance(out, (list, tuple)):  # multi-output op: only the outputs someone uses matter
        used = {u.args[1] for u in node.users if u.target is operator.getitem}
        out = [v for i, v in enumerate(out) if i in used]
    values = [(v, entry.dtypes) for v in _tensor_vals(out)]
    for arg in node.all_input_nodes:
        values.extend((v, ALL_DTYPES if entry.promotes else entry.dtypes) for v in _tensor_vals(arg.meta.get("val")))
    for v, allowed in values:
        if v.dtype not in allowed:
            names = "/".join(str(d).replace("torch.", "") for d in entry.dtypes)
            return f"dtype {str(v.dtype).replace('torch.', '')} (wasm kernels take {names})"
        if v.device.type != "cpu":
            return f"device {v.device} (wasm runs CPU tensors)"
        if v.dim() > 6:
            return f"{v.dim()}-d tensor (at most 6 dims)"
    if entry.check is not None:
        return entry.check(node)
    return None


def decomposition_table() -> dict:
    return {t: e.decompose for t, e in REGISTRY.items() if e.decompose is not None}
