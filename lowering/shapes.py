"""Concrete shapes for one input signature, without re-tracing: the graph's own (possibly
symbolic) meta values are evaluated with the symbols bound from the actual inputs. Each symbolic
expression is compiled once into a small Python closure, so a new sequence length costs
microseconds per node instead of a FakeTensor pass."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import reduce
from typing import Any, Callable, Sequence

import sympy
import torch
from torch.fx import GraphModule, Node


@dataclass(frozen=True)
class TensorSpec:
    """What lowering needs to know about a tensor value: shape, strides, dtype."""
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device = torch.device("cpu")

    def stride(self) -> tuple[int, ...]:
        return self.strides

    def dim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return reduce(operator.mul, self.shape, 1)

    @classmethod
    def of(cls, t: torch.Tensor) -> "TensorSpec":
        return cls(tuple(int(s) for s in t.shape), tuple(int(s) for s in t.stride()), t.dtype, t.device)


class Unbound(Exception):
    """A meta value uses a symbol the inputs do not determine (fall back to tracing)."""


def _compile(expr) -> Callable[[dict], int]:
    if isinstance(expr, int) or expr.is_Integer:
        value = int(expr)
        return lambda b: value
    if expr.is_Symbol:
        def lookup(b, s=expr):
            try:
                return b[s]
            except KeyError:
                raise Unbound(str(s)) from None
        return lookup
    args = [_compile(a) for a in expr.args]
    if isinstance(expr, sympy.Add):
        return lambda b: sum(f(b) for f in args)
    if isinstance(expr, sympy.Mul):
        return lambda b: reduce(operator.mul, (f(b) for f in args), 1)
    if isinstance(expr, sympy.Pow) and expr.exp.is_Integer and int(expr.exp) >= 0:
        base, exp = args[0], int(expr.exp)
        return lambda b: base(b) ** exp
    name = type(expr).__name__
    if name in ("FloorDiv", "CleanDiv") and len(args) == 2:  # (IntTrueDiv is a float: slow path)
        return lambda b: args[0](b) // args[1](b)
    if name in ("Mod", "PythonMod") and len(args) == 2:
        return lambda b: args[0](b) % args[1](b)
    if isinstance(expr, sympy.Max):
        return lambda b: max(f(b) for f in args)
    if isinstance(expr, sympy.Min):
        return lambda b: min(f(b) for f in args)
    symbols = sorted(expr.free_symbols, key=str)
    return lambda b: int(expr.xreplace({s: b[s] for s in symbols}))  # rare: slow but exact


_compiled: dict[Any, Callable[[dict], int]] = {}


def _evaluator(value) -> Callable[[dict], int]:
    if isinstance(value, int):
        return lambda b, v=value: v
    expr = value.node.expr
    fn = _compiled.get(expr)
    if fn is None:
        fn = _compiled[expr] = _compile(expr)
    return fn


def _bind(meta, actual, bindings: dict) -> None:
    """Binds the plain symbols of a meta value (tensor sizes/strides or a SymInt) to actual values."""
    if isinstance(meta, torch.SymInt):
        expr = meta.node.expr
        if expr.is_Symbol:
            bindings[expr] = int(actual)
    elif isinstance(meta, torch.Tensor) and isinstance(actual, torch.Tensor):
        for m, a in zip(list(meta.shape) + list(meta.stride()), list(actual.shape) + list(actual.stride())):
            _bind(m, a, bindings)


class _SpecPlan:
    """Per graph: for each node, closures that evaluate its meta value for given bindings."""

    def __init__(self, gm: GraphModule):
        self.nodes: list[tuple[Node, Any]] = []
        for node in gm.graph.nodes:
            if node.op == "output":
                continue
            if "val" not in node.meta:
                raise Unbound(f"{node.name} has no meta value")
            self.nodes.append((node, self._compile_value(node.meta["val"])))

    def _compile_value(self, val):
        if isinstance(val, torch.Tensor):
            sizes = [_evaluator(s) for s in val.shape]
            strides = [_evaluator(s) for s in val.stride()]
            dtype, device = val.dtype, val.device
            return lambda b: TensorSpec(tuple(f(b) for f in sizes), tuple(f(b) for f in strides), dtype, device)
        if isinstance(val, (list, tuple)):
            items = [self._compile_value(v) for v in val]
            return lambda b: tuple(f(b) for f in items)
        if isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool):
            return _evaluator(val)
        if isinstance(val, torch.SymFloat):  # e.g. an upsample scale: exact, evaluated by sympy
            expr = val.node.expr
            symbols = sorted(expr.free_symbols, key=str)

            def evaluate(b, expr=expr, symbols=symbols):
                try:
                    return float(expr.xreplace({s: b[s] for s in symbols}))
                except KeyError as e:
                    raise Unbound(str(e)) from None
            return evaluate
        return lambda b, v=val: v


def concrete_specs(gm: GraphModule, inputs: Sequence[Any]) -> dict[Node, Any]:
    """Every node's value (TensorSpec, tuple of them, or a number) for these inputs. Raises Unbound
    when the graph's meta values cannot be evaluated from the inputs alone."""
    plan = gm.__dict__.get("_twb_spec_plan")
    if plan is None:
        plan = gm.__dict__["_twb_spec_plan"] = _SpecPlan(gm)
    bindings: dict = {}
    placeholders = [n for n, _ in plan.nodes if n.op == "placeholder"]
    for node, actual in zip(placeholders, inputs):
        _bind(node.meta["val"], actual, bindings)
    values = {node: fn(bindings) for node, fn in plan.nodes}
    for node, actual in zip(placeholders, inputs):  # the binding must reproduce the inputs
        spec = values[node]
        if isinstance(actual, torch.Tensor) and (spec.shape != tuple(actual.shape) or spec.dtype != actual.dtype):
            raise Unbound(f"input {node.name}: meta {spec.shape} vs actual {tuple(actual.shape)}")
    return values
