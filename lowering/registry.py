"""The one op registry: for each ATen overload, its support check (a reason or None), its lowering
(node -> kernel records) or its decomposition, and the kernels it uses. The partitioner, the
coverage report, the docs table and the tests all read REGISTRY; there is no other support list."""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.fx import Node

SUPPORTED_DTYPES = (torch.float32,)


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

    @property
    def name(self) -> str:
        return op_name(self.target)


REGISTRY: dict[object, OpEntry] = {}


def op_name(target) -> str:
    if target is operator.getitem:
        return "getitem"
    return str(getattr(target, "name", lambda: target)()) if hasattr(target, "name") else str(target)


def register(*targets, kernels=(), check=None, dtypes=SUPPORTED_DTYPES, notes=""):
    """Decorator: registers `lower` for every target overload."""
    def wrap(lower):
        for t in targets:
            if t in REGISTRY:
                raise ValueError(f"{op_name(t)} registered twice")
            REGISTRY[t] = OpEntry(t, lower, check, None, tuple(kernels), tuple(dtypes), notes)
        return lower
    return wrap


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


def support_reason(node: Node) -> str | None:
    """Why this node cannot run in wasm, or None if it can (as far as dtypes and the op's own check
    can tell before concrete shapes are known)."""
    if node.op != "call_function":
        return None
    entry = REGISTRY.get(node.target)
    if entry is None or entry.lower is None:
        return f"no wasm lowering for {op_name(node.target)}"
    out = node.meta.get("val")
    if isinstance(out, (list, tuple)):  # multi-output op: only the outputs someone uses matter
        used = {u.args[1] for u in node.users if u.target is operator.getitem}
        out = [v for i, v in enumerate(out) if i in used]
    values = list(_tensor_vals(out))
    for arg in node.all_input_nodes:
        values.extend(_tensor_vals(arg.meta.get("val")))
    for v in values:
        if v.dtype not in entry.dtypes:
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
