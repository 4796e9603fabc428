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

from .tracked import apply


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


class _Codegen:
    """Writes one Python function that evaluates every node's meta value from the symbol bindings:
    each distinct size expression becomes one local variable (computed once per call), each
    distinct TensorSpec one constructor call. A new sequence length then costs one call instead of
    a closure per size (or a FakeTensor pass per node)."""

    def __init__(self):
        self.lines: list[str] = []
        self.env: dict[str, Any] = {"TensorSpec": TensorSpec}
        self.symbols: dict[Any, str] = {}   # sympy symbol -> local variable (bound from b)
        self.exprs: dict[Any, str] = {}     # sympy expression -> local variable (or literal)
        self.specs: dict[tuple, str] = {}   # (size, stride sources, dtype, device) -> local variable

    def _name(self, prefix: str, value: Any) -> str:
        """A global of the generated function holding value."""
        name = f"{prefix}{len(self.env)}"
        self.env[name] = value
        return name

    def size(self, value) -> str:
        """Source for a size (int or SymInt), as a local variable or an int literal."""
        if isinstance(value, int):
            return repr(int(value))
        return self._expr(value.node.expr, whole=True)

    def _expr(self, expr, whole: bool = False) -> str:
        if expr in self.exprs:
            return self.exprs[expr]
        try:
            source = self._source(expr)
        except _NoSource:  # rare (a rational or an unknown function): exact, through sympy
            if not whole:  # a part (say 1/2 in s0/2) is not an int: evaluate the whole size
                raise
            symbols = sorted(expr.free_symbols, key=str)
            for s in symbols:
                self._symbol(s)
            fn = self._name("F", lambda b, evaluate=_sympy_evaluator(expr, symbols, int), symbols=symbols:
                            apply(evaluate, *(b[s] for s in symbols)))
            source = f"{fn}(b)"
        if not source.isidentifier() and not source.isdigit():
            var = f"e{len(self.exprs)}"
            self.lines.append(f"{var} = {source}")
            source = var
        self.exprs[expr] = source
        return source

    def _symbol(self, symbol) -> str:
        if symbol not in self.symbols:
            self.symbols[symbol] = f"v{len(self.symbols)}"
        return self.symbols[symbol]

    def _source(self, expr) -> str:
        if expr.is_Integer:
            return str(int(expr)) if expr >= 0 else f"({int(expr)})"
        if expr.is_Symbol:
            return self._symbol(expr)
        if expr.is_Number:
            raise _NoSource
        args = [self._expr(a) for a in expr.args]
        name = type(expr).__name__
        if isinstance(expr, sympy.Add):
            return " + ".join(args)
        if isinstance(expr, sympy.Mul):
            return " * ".join(args)
        if isinstance(expr, sympy.Pow) and expr.exp.is_Integer and int(expr.exp) >= 0:
            return f"{args[0]} ** {int(expr.exp)}"
        if name in ("FloorDiv", "CleanDiv") and len(args) == 2:  # (IntTrueDiv is a float)
            return f"{args[0]} // {args[1]}"
        if name in ("Mod", "PythonMod") and len(args) == 2:
            return f"{args[0]} % {args[1]}"
        if isinstance(expr, (sympy.Max, sympy.Min)) or name in ("Max", "Min"):  # (torch has its own)
            return f"{name.lower()}({', '.join(args)})"
        raise _NoSource

    def value(self, val) -> str:
        """Source for a node's meta value."""
        if isinstance(val, torch.Tensor):
            key = (tuple(self.size(s) for s in val.shape), tuple(self.size(s) for s in val.stride()),
                   val.dtype, val.device)
            if key not in self.specs:
                shape, strides = (f"({', '.join(k)}{',' if len(k) == 1 else ''})" for k in key[:2])
                var = f"t{len(self.specs)}"
                self.lines.append(f"{var} = TensorSpec({shape}, {strides}, {self._name('D', val.dtype)}, "
                                  f"{self._name('P', val.device)})")
                self.specs[key] = var
            return self.specs[key]
        if isinstance(val, (list, tuple)):
            return f"({''.join(self.value(v) + ', ' for v in val)})"
        if isinstance(val, (torch.SymInt, int)) and not isinstance(val, bool):
            return self.size(val)
        if isinstance(val, torch.SymFloat):  # e.g. an upsample scale: exact, evaluated by sympy
            expr = val.node.expr
            symbols = sorted(expr.free_symbols, key=str)
            for s in symbols:
                self._symbol(s)
            fn = self._name("F", lambda b, evaluate=_sympy_evaluator(expr, symbols, float), symbols=symbols:
                            apply(evaluate, *(b[s] for s in symbols)))
            return f"{fn}(b)"
        return self._name("K", val)

    def function(self, results: list[str]) -> Callable[[dict], list]:
        binds = [f"{var} = b[{self._name('S', symbol)}]" for symbol, var in self.symbols.items()]
        body = ["try:", *(f"    {line}" for line in binds or ["pass"]),
                "except KeyError as e:", "    raise Unbound(str(e.args[0])) from None",
                *self.lines, f"return [{', '.join(results)}]"]
        source = "def evaluate(b):\n" + "".join(f"    {line}\n" for line in body)
        env = dict(self.env, Unbound=Unbound)
        exec(compile(source, "<twb node specs>", "exec"), env)
        return env["evaluate"]


def _sympy_evaluator(expr, symbols, convert):
    """A function of the symbols' values evaluating expr exactly through sympy."""
    return lambda *values: convert(expr.xreplace(dict(zip(symbols, values))))


class _NoSource(Exception):
    """An expression the code generator does not write as Python (evaluated through sympy)."""


class SpecEvaluator:
    """Per graph: the nodes and one generated function evaluating their meta values (TensorSpecs
    and numbers) from the symbols' values. Made once per partition (LoweringState.specs); raises
    Unbound if some node has no meta value."""

    def __init__(self, gm: GraphModule):
        self.nodes: list[Node] = []
        gen = _Codegen()
        results = []
        for node in gm.graph.nodes:
            if node.op == "output":
                continue
            if "val" not in node.meta:
                raise Unbound(f"{node.name} has no meta value")
            self.nodes.append(node)
            results.append(gen.value(node.meta["val"]))
        self.placeholders = [n for n in self.nodes if n.op == "placeholder"]
        self.evaluate = gen.function(results)
        # Where each plain symbol is read from the inputs: (input index, "size"/"stride"/None, dim,
        # symbol); None: the input is the SymInt itself.
        self.binders: list[tuple[int, str | None, int, Any]] = []
        for i, node in enumerate(self.placeholders):
            meta = node.meta["val"]
            if isinstance(meta, torch.SymInt) and meta.node.expr.is_Symbol:
                self.binders.append((i, None, 0, meta.node.expr))
            elif isinstance(meta, torch.Tensor):
                for kind, sizes in (("size", meta.shape), ("stride", meta.stride())):
                    self.binders.extend((i, kind, d, v.node.expr) for d, v in enumerate(sizes)
                                        if isinstance(v, torch.SymInt) and v.node.expr.is_Symbol)

        # The symbols, in the order of a template's arguments (lowering/template.py).
        self.symbols = list(dict.fromkeys(symbol for *_, symbol in self.binders))

    def symbol_values(self, inputs: Sequence[Any]) -> tuple[int, ...]:
        """The symbols' values for these inputs, in self.symbols' order."""
        bindings = self.bind(inputs)
        try:
            return tuple(bindings[s] for s in self.symbols)
        except KeyError as e:
            raise Unbound(f"no input determines {e.args[0]}") from None

    def values_for_symbols(self, values: Sequence[int]) -> dict[Node, Any]:
        """Every node's value with the symbols set to values (which may be tracked ints)."""
        return dict(zip(self.nodes, self.evaluate(dict(zip(self.symbols, values)))))

    def values(self, inputs: Sequence[Any]) -> dict[Node, Any]:
        """Every node's value (TensorSpec, tuple of them, or a number) for these inputs. Raises
        Unbound unless the symbols bound from the inputs reproduce the inputs' shapes."""
        values = dict(zip(self.nodes, self.evaluate(self.bind(inputs))))
        for node, actual in zip(self.placeholders, inputs):
            spec = values[node]
            if isinstance(actual, torch.Tensor) and (spec.shape != tuple(actual.shape) or spec.dtype != actual.dtype):
                raise Unbound(f"input {node.name}: meta {spec.shape} vs actual {tuple(actual.shape)}")
        return values

    def bind(self, inputs: Sequence[Any]) -> dict:
        """The symbols' values for these inputs."""
        bindings = {}
        for i, kind, d, symbol in self.binders:
            actual = inputs[i]
            if kind is None:
                bindings[symbol] = int(actual)
            elif isinstance(actual, torch.Tensor):
                bindings[symbol] = actual.shape[d] if kind == "size" else actual.stride(d)
        return bindings
