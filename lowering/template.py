"""Plan templates for dynamic shapes: a partition whose graph has symbolic sizes is lowered once,
with its sizes tracked (lowering/tracked.py); the result becomes two generated Python functions:
one checks the guards the lowering recorded (which kernel, which fast path, which broadcast), one
rebuilds the plan's records, buffers, inputs and outputs from the symbols' values. A new input
shape then costs a guard check, one call of the builder and assigning offsets - not a lowering.

Safety: a size used in a way that cannot be replayed (a constant computed in Python from sizes, a
conversion to a plain number) pins the template: that partition goes back to lowering each shape.
A size can also leave the tracking silently (C code reading an int subclass as a plain int), so a
template's first reuse is compared with a full lowering at that shape; a difference, too, sends
the partition back to lowering each shape. Either way the answers stay right; only planning is
slower, and the log (INFO) says why."""
from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any, Callable, Sequence

import torch

from .plan import Addr, Buffer, OutputSpec, Plan, TensorRef, assign_offsets
from .state import LoweringState
from .tracked import FUNCTIONS, Recorder, TrackedInt, is_tracked

log = logging.getLogger("torch_wasm_backend")

MAX_TEMPLATES = 4  # per partition: sizes that cross a guard (a fast path's threshold) get another


class TemplateError(Exception):
    """The tracked plan cannot be turned into a template (the message says why)."""


class PlanTemplate:
    """One tracked lowering, compiled: check(*symbols) -> bool, instantiate(symbols) -> Plan."""

    def __init__(self, plan: Plan, n_symbols: int, guards: dict[str, bool]):
        self.verified = False
        self._constant_inputs = list(plan.constant_inputs)
        self._aten_ops = Counter(plan.aten_ops)
        self._record_nodes = list(plan.record_nodes)
        terms = [src if want else f"not {src}" for src, want in guards.items()] or ["True"]
        self.check: Callable[..., bool] = _function(_BuilderSource(), " and ".join(terms), n_symbols)
        gen = _BuilderSource()
        records = "[" + ", ".join(f"({kernel!r}, {gen.value(args)})" for kernel, args in plan.records) + "]"
        inputs = gen.value(plan.inputs)
        outputs = "[" + ", ".join(f"OutputSpec({gen.value(o.ref)}, {gen.value(o.shape)}, "
                                  f"{gen.value(o.strides)})" for o in plan.outputs) + "]"
        flops = gen.value(plan.flops)
        constants = gen.value(plan.constants)
        self._build = _function(gen, f"{records}, {inputs}, {outputs}, {constants}, {flops}", n_symbols)
        self.n_guards = len(guards)

    def instantiate(self, symbols: Sequence[int]) -> Plan:
        records, inputs, outputs, constants, flops = self._build(*symbols)
        plan = Plan(records=records, record_nodes=list(self._record_nodes), inputs=inputs,
                    constant_inputs=list(self._constant_inputs),
                    outputs=outputs, constants=constants, aten_ops=Counter(self._aten_ops), flops=flops,
                    from_template=True)
        assign_offsets(plan)
        return plan


def replay(value, n_symbols: int) -> Callable[..., Any]:
    """A function of the symbols' values (a0, a1, ...) that recomputes value: its tracked numbers
    by their formulas, lists, tuples and dicts element by element, any other object as it is.
    (Constants made from sizes use it: LoweringContext.at_call_sizes.)"""
    gen = _BuilderSource(opaque=True)
    return _function(gen, gen.value(value), n_symbols)


def _function(gen: "_BuilderSource", result: str, n_symbols: int) -> Callable[..., Any]:
    """Compiles `def f(a0, a1, ...): <gen's lines>; return <result>`."""
    params = ", ".join(f"a{i}" for i in range(n_symbols))
    body = "".join(f"    {line}\n" for line in gen.lines)
    env: dict[str, Any] = dict(gen.env, **FUNCTIONS, math=math, Addr=Addr, Buffer=Buffer,
                               TensorRef=TensorRef, OutputSpec=OutputSpec)
    try:
        exec(compile(f"def f({params}):\n{body}    return {result}\n", "<twb plan template>", "exec"), env)
    except (SyntaxError, RecursionError, MemoryError) as e:  # an expression nested too deep
        raise TemplateError(f"generated code does not compile: {e}") from None
    return env["f"]


class _BuilderSource:
    """Writes Python source that rebuilds values holding tracked sizes (a plan's records, buffers,
    inputs and outputs; a constant's shape): each distinct size expression and each arena buffer
    becomes one local variable; constants and dtypes are globals. opaque: other objects are
    passed through as globals too (else they are an error: a plan holds nothing else)."""

    def __init__(self, opaque: bool = False):
        self.opaque = opaque
        self.lines: list[str] = []
        self.env: dict[str, Any] = {}
        self._exprs: dict[str, str] = {}
        self._buffers: dict[int, str] = {}
        self._globals: dict[int, str] = {}

    def _global(self, obj) -> str:
        name = self._globals.get(id(obj))
        if name is None:
            name = self._globals[id(obj)] = f"G{len(self._globals)}"
            self.env[name] = obj
        return name

    def value(self, v) -> str:
        if is_tracked(v):
            name = self._exprs.get(v.expr)
            if name is None:
                name = self._exprs[v.expr] = f"e{len(self._exprs)}"
                self.lines.append(f"{name} = {v.expr}")
            return name
        cls = v.__class__
        if cls is int or cls is bool or v is None:
            return int.__repr__(v) if cls is int else repr(v)
        if cls is float:
            return float.__repr__(v) if math.isfinite(v) else self._global(v)
        if cls is Addr:
            return f"Addr({self._buffer(v.buffer)}, {self.value(v.byte_offset)})"
        if cls is TensorRef:
            return (f"TensorRef({self._buffer(v.buffer)}, {self.value(v.shape)}, {self.value(v.strides)}, "
                    f"{self.value(v.offset)}, {self._global(v.dtype)})")
        if isinstance(v, list):
            return "[" + ", ".join(map(self.value, v)) + "]"
        if isinstance(v, tuple):
            return "(" + "".join(self.value(x) + ", " for x in v) + ")"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k!r}: {self.value(x)}" for k, x in v.items()) + "}"
        if cls is Buffer:
            return self._buffer(v)
        if cls is str or isinstance(v, torch.dtype) or self.opaque:
            return self._global(v)
        raise TemplateError(f"a plan holds a {cls.__name__} ({v!r:.60}), which the template cannot rebuild")

    def _buffer(self, buf: Buffer) -> str:
        if buf.is_constant and not buf.per_shape:  # shared: the same objects in every plan
            return self._global(buf)
        name = self._buffers.get(id(buf))
        if name is None:  # arena buffers and per-shape constants: new ones, sized for the shape
            nbytes = self.value(buf.nbytes)
            make = self._global(buf.make) if buf.is_constant else "None"
            name = self._buffers[id(buf)] = f"b{len(self._buffers)}"
            self.lines.append(f"{name} = Buffer({nbytes}, {make}, {buf.name!r}, {buf.per_shape})")
        return name


class _PartitionTemplates:
    """The templates of one partition (per set of constant inputs and conv choice)."""

    def __init__(self):
        self.templates: list[PlanTemplate] = []
        self.disabled: str | None = None  # why this partition lowers every shape


def plan_from_template(state: LoweringState, inputs: Sequence[Any], key, lower_specs: Callable[[dict], Plan],
                       ) -> Plan | None:
    """A plan for these inputs from the partition's templates (making one if none applies), or
    None when the graph has no symbolic sizes or its templates are disabled: the caller then
    lowers. lower_specs(node specs) lowers the partition for the given node values."""
    specs = state.specs
    if specs is None or not specs.symbols:
        return None
    templates = state.templates.get(key)
    if templates is None:
        templates = state.templates[key] = _PartitionTemplates()
    if templates.disabled:
        return None
    values = specs.symbol_values(inputs)
    for template in templates.templates:
        try:
            applies = template.check(*values)
        except ArithmeticError:  # a guard divides by a size that is 0 here: not this template
            applies = False
        if applies:
            plan = template.instantiate(values)
            if not template.verified:
                difference = _difference(plan, lower_specs(specs.values(inputs)), inputs)
                if difference:
                    _disable(templates, f"its template differs from a full lowering: {difference}")
                    return None
                template.verified = True
            return plan
    if len(templates.templates) >= MAX_TEMPLATES:
        return None  # sizes cross more thresholds than we keep templates for: lower this one
    tracked = [TrackedInt(v, f"a{i}") for i, v in enumerate(values)]
    specs.values(inputs)  # (raises Unbound if the symbols do not reproduce the inputs)
    with Recorder() as recorder:
        tracked_plan = lower_specs(specs.values_for_symbols(tracked))
    if recorder.pins:
        _disable(templates, f"its lowering cannot be replayed at other sizes ({recorder.pins[0]})")
    try:
        template = PlanTemplate(tracked_plan, len(values), recorder.guards)
    except TemplateError as e:
        _disable(templates, str(e))
        return None
    if not templates.disabled:
        templates.templates.insert(0, template)
        log.debug("dynamic shapes: plan template %d of a partition made, %d guards",
                  len(templates.templates), template.n_guards)
    return template.instantiate(values)


def _disable(templates: _PartitionTemplates, reason: str) -> None:
    templates.disabled = reason
    templates.templates.clear()
    log.info("dynamic shapes: this partition lowers each new shape, because %s", reason)


def template_status(state: LoweringState) -> list[str]:
    """For tests and diagnostics: per template set, 'disabled: <why>' or '<n> templates'."""
    out = []
    for templates in state.templates.values():
        out.append(f"disabled: {templates.disabled}" if templates.disabled else
                   f"{len(templates.templates)} templates, {sum(t.verified for t in templates.templates)} verified")
    return out


def _difference(a: Plan, b: Plan, inputs: Sequence[Any]) -> str | None:
    """Where two plans for these inputs differ (None if they are the same program with the same
    per-shape constants)."""
    ca, cb = _canonical(a), _canonical(b)
    for part in ("records", "inputs", "outputs", "constants", "buffers"):
        xa, xb = ca[part], cb[part]
        if len(xa) != len(xb):
            return f"{part}: {len(xa)} vs {len(xb)}"
        for i, (x, y) in enumerate(zip(xa, xb)):
            if x != y:
                return f"{part}[{i}]: {x} vs {y}"
    if a.flops != b.flops:
        return f"flops {a.flops} vs {b.flops}"
    for x, y in zip(a.constants, b.constants):
        # Equal names of shared constants mean equal values; constants made from sizes (per-shape
        # ones, or a size-valued scalar that the plain lowering saw as a number) are compared made.
        if x.per_shape or y.per_shape or x.name != y.name:
            if not _same_tensor(x.make(inputs), y.make(inputs)):
                return f"constant {x.name} vs {y.name} at these sizes"
    return None


def _canonical(plan: Plan) -> dict:
    buffers: dict[int, int] = {}
    sizes: list[int] = []
    constants = {id(c): i for i, c in reversed(list(enumerate(plan.constants)))}  # first index

    def canon(v):
        if isinstance(v, Buffer):
            if v.is_constant:
                return ("const", constants.get(id(v)), v.nbytes)
            if id(v) not in buffers:
                buffers[id(v)] = len(buffers)
                sizes.append(v.nbytes)
            return ("buf", buffers[id(v)])
        if isinstance(v, Addr):
            return (canon(v.buffer), v.byte_offset)
        if isinstance(v, TensorRef):
            return (canon(v.buffer), tuple(v.shape), tuple(v.strides), v.offset, v.dtype)
        if isinstance(v, (list, tuple)):
            return tuple(canon(x) for x in v)
        if isinstance(v, float) and math.isnan(v):
            return "nan"
        return v

    records = [(k, tuple((name, canon(x)) for name, x in args.items())) for k, args in plan.records]
    return {"records": records, "inputs": [canon(r) for r in plan.inputs],
            "outputs": [(canon(o.ref), tuple(o.shape), tuple(o.strides)) for o in plan.outputs],
            "constants": [canon(c) for c in plan.constants], "buffers": sizes}


def _same_tensor(x: torch.Tensor, y: torch.Tensor) -> bool:
    if x.shape != y.shape or x.dtype != y.dtype:
        return False
    return torch.equal(x, y) or (x.is_floating_point()
                                 and torch.allclose(x, y, rtol=0.0, atol=0.0, equal_nan=True))


__all__ = ["PlanTemplate", "plan_from_template", "replay", "template_status"]
