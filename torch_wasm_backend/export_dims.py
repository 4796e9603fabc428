"""Dynamic dimensions for export: one lowering of the torch.export graph serves every size in the
dims' ranges (`dynamic_shapes`), so the file runs any sequence length without Python.

The graph is lowered with tracked sizes (lowering/tracked.py): every size-dependent plan word,
stride and offset remembers its formula, which the exporter writes as a size program
(size_program.py) for the loaders to evaluate. Choices the lowering made from sizes (a size-1
broadcast, a kernel's fast path) are recorded as guards; they hold for part of the range only, so
the range is covered by several variants, each lowered at a size its predecessors' guards reject,
and the loaders pick the first variant whose guards hold. Every point of the range is checked to
be covered (all of them when there are at most MAX_POINTS, else a sample that includes every
value of each dim), and each variant is compared with a full lowering at other sizes it serves
(what escaped tracking would differ there).

Memory is planned once per variant at the largest sizes it serves: the file's memory is fixed and
known at export, and a new size costs only evaluating the programs (no allocation). Constants
computed from sizes (position ids, rotary tables, mask pieces) are made at the largest sizes and
read through views of the call's shape (LoweringContext.at_largest); each must equal the value
made at the actual size, checked at sample sizes."""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import torch

from torch_wasm_backend.lowering.context import LoweringContext
from torch_wasm_backend.lowering.plan import Plan, assign_offsets
from torch_wasm_backend.lowering.registry import Unsupported
from torch_wasm_backend.lowering.state import LoweringState
from torch_wasm_backend.lowering.template import PlanTemplate, TemplateError, _difference, replay
from torch_wasm_backend.lowering.tracked import Recorder, TrackedInt
from .errors import WasmBackendError

MAX_POINTS = 20_000     # size combinations checked one by one; more are sampled
MAX_VARIANTS = 8
MAX_DIM = 1 << 20       # a dim's largest size: memory is planned for it
VERIFY_POINTS = 3       # sizes per variant compared with a full lowering


@dataclass
class Dims:
    """The dynamic dims of an exported graph, in the order of the graph's symbols (a0, a1, ...)."""
    names: list[str]
    lo: list[int]
    hi: list[int]
    example: tuple[int, ...]

    def largest(self) -> tuple[int, ...]:
        return tuple(self.hi)


@dataclass
class Variant:
    plan: Plan                       # lowered with tracked sizes; memory planned at the largest
    guards: dict[str, bool]          # guard source -> required value
    size_constants: list            # (buffer made at the largest sizes, tracked view shape)
    points: list[tuple[int, ...]]    # the sizes it serves among those checked


def dims_of(state: LoweringState, ep, user_dims: dict[int, dict[int, str]], values) -> Dims | None:
    """The graph's dynamic dims with their names (from the Dims the user passed: user_dims maps a
    graph input's index to {axis: name}) and ranges (torch.export's range constraints, which may be
    narrower than asked). None if every size is static."""
    specs = state.specs
    if specs is None:
        raise WasmBackendError("cannot export with dynamic_shapes: the graph's sizes are not determined by "
                               "its inputs' shapes alone")
    if not specs.symbols:
        return None
    names: dict = {}
    for i, kind, d, symbol in specs.binders:
        if kind == "size" and d in user_dims.get(i, {}):
            names.setdefault(symbol, user_dims[i][d])
    for i, kind, d, symbol in specs.binders:  # a Dim without a name (Dim.DYNAMIC): after its input and axis
        if kind == "size":
            names.setdefault(symbol, f"{specs.placeholders[i].name}_dim{d}")
    ranges = {str(k): v for k, v in ep.range_constraints.items()}
    out = Dims([], [], [], specs.symbol_values(values))
    for k, symbol in enumerate(specs.symbols):
        name = names.get(symbol, f"dim{k}")
        r = ranges.get(str(symbol))
        try:
            lo, hi = int(r.lower), int(r.upper)
        except (AttributeError, OverflowError, TypeError, ValueError):  # (no range, or an infinite bound)
            lo, hi = 0, None
        if hi is None or hi > MAX_DIM:
            raise WasmBackendError(
                f"dynamic dim {name!r} has no maximum (or one above {MAX_DIM}); the file plans its memory "
                f"for the largest size: give it one, e.g. Dim({name!r}, min=1, max=512)")
        if name in out.names:
            raise WasmBackendError(f"two dynamic dims are both named {name!r}; give each Dim its own name")
        out.names.append(name)
        out.lo.append(max(lo, 0))
        out.hi.append(hi)
    return out


def _points(dims: Dims) -> list[tuple[int, ...]]:
    """The size combinations checked: all of them, or a sample covering every value of each dim
    (the others at their min, example and max) plus random combinations."""
    ranges = [range(lo, hi + 1) for lo, hi in zip(dims.lo, dims.hi)]
    total = 1
    for r in ranges:
        total *= len(r)
    if total <= MAX_POINTS:
        return list(itertools.product(*ranges))
    points = {dims.example}
    anchors = [tuple(v) for v in (dims.lo, dims.example, dims.hi)]
    for k, r in enumerate(ranges):
        for value in r:
            for anchor in anchors:
                points.add(anchor[:k] + (value,) + anchor[k + 1:])
    rng = random.Random(0)
    while len(points) < MAX_POINTS:
        points.add(tuple(rng.choice(r) for r in ranges))
    return sorted(points)


def _lower_tracked(state, constants, winograd, point, at_largest) -> tuple[Plan, Recorder, LoweringContext]:
    tracked = [TrackedInt(v, f"a{i}") for i, v in enumerate(point)]
    with Recorder() as recorder:
        ctx = LoweringContext(state, state.specs.values_for_symbols(tracked), constants, winograd, at_largest)
        ctx.lower_graph()
    return ctx.plan, recorder, ctx


def lower_variants(state: LoweringState, constants: set[int], winograd: bool,
                   dims: Dims) -> list[Variant]:
    """Variants covering every checked point of the dims' ranges, verified, memory planned."""
    n = len(dims.names)
    largest = dims.largest()

    def at_largest(size) -> int:
        return int(replay(size, n)(*largest))

    points = _points(dims)
    uncovered = [p for p in points if p != dims.example]
    uncovered.insert(0, dims.example)
    variants: list[Variant] = []
    while uncovered:
        if len(variants) == MAX_VARIANTS:
            raise WasmBackendError(
                f"the model lowers differently at more than {MAX_VARIANTS} size ranges of "
                f"{_show_dims(dims)} (e.g. at {_show_point(dims, uncovered[0])}); narrow the dims' ranges")
        point = uncovered[0]
        try:
            plan, recorder, ctx = _lower_tracked(state, constants, winograd, point, at_largest)
        except Unsupported as e:
            raise WasmBackendError(f"cannot export: lowering failed at {_show_point(dims, point)}: {e}. "
                                   "Narrow the dims' ranges (dynamic_shapes) to sizes the model supports. "
                                   "No file was written.") from e
        if recorder.pins:
            raise WasmBackendError(
                f"cannot export {_show_dims(dims)} as dynamic: the lowering uses a size as a fixed number "
                f"({recorder.pins[0]}); export with static shapes (no dynamic_shapes). No file was written.")
        try:
            template = PlanTemplate(plan, n, recorder.guards)
        except TemplateError as e:
            raise WasmBackendError(f"cannot export {_show_dims(dims)} as dynamic: {e}") from e
        served = [p for p in uncovered if _applies(template, p)]
        if point not in served:
            raise WasmBackendError(f"internal error: the lowering at {_show_point(dims, point)} does not "
                                   "satisfy its own guards; please report this")
        served_set = set(served)
        uncovered = [p for p in uncovered if p not in served_set]
        variant = Variant(plan, dict(recorder.guards), ctx.size_constants, served)
        _verify(state, constants, winograd, dims, variant, template, at_largest)
        _assign_offsets_at_largest(variant, n)
        variants.append(variant)
    return variants


def _applies(template: PlanTemplate, point) -> bool:
    try:
        return bool(template.check(*point))
    except ArithmeticError:  # a guard divides by a size that is 0 here: not this variant
        return False


def _verify(state, constants, winograd, dims, variant: Variant, template, at_largest) -> None:
    """The variant instantiated at a few other sizes it serves equals a full lowering there."""
    others = [p for p in variant.points if p != variant.points[0]]
    picks = {others[0], others[-1], others[len(others) // 2]} if others else set()
    for point in sorted(picks)[:VERIFY_POINTS]:
        full, _, _ = _lower_tracked(state, constants, winograd, point, at_largest)
        difference = _difference(template.instantiate(point), full, [])
        if difference:
            raise WasmBackendError(
                f"cannot export {_show_dims(dims)} as dynamic: the lowering at {_show_point(dims, point)} "
                f"differs from the one at {_show_point(dims, variant.points[0])} in a way the size "
                f"tracking missed ({difference}); export with static shapes, and please report this")


def _assign_offsets_at_largest(variant: Variant, n: int) -> None:
    """Arena offsets for the largest size of every buffer over the sizes the variant serves."""
    plan = variant.plan
    buffers = {}
    for _, args in plan.records:
        for v in args.values():
            buf = getattr(v, "buffer", None)
            if buf is not None and not buf.is_constant:
                buffers[id(buf)] = buf
    for ref in plan.inputs + [o.ref for o in plan.outputs]:
        if ref is not None and not ref.buffer.is_constant:
            buffers[id(ref.buffer)] = ref.buffer
    sizes = replay([b.nbytes for b in buffers.values()], n)
    largest = [0] * len(buffers)
    for point in variant.points:
        largest = [max(a, int(b)) for a, b in zip(largest, sizes(*point))]
    for buf, nbytes in zip(buffers.values(), largest):
        buf.nbytes = nbytes
    assign_offsets(plan)


def check_size_constants(variant: Variant, dims: Dims, values_at) -> None:
    """Each constant made at the largest sizes, viewed at a sample of the variant's sizes, equals
    the constant made at that size. values_at(point) -> the graph inputs with user inputs of
    that size."""
    if not variant.size_constants:
        return
    n = len(dims.names)
    largest = values_at(dims.largest())
    made = [buf.make(largest) for buf, _ in variant.size_constants]
    shapes = replay([shape for _, shape in variant.size_constants], n)
    picks = sorted(set(variant.points[:: max(1, len(variant.points) // 16)]) | {variant.points[-1]})
    for point in picks:
        inputs = values_at(point)
        for (buf, _), whole, shape in zip(variant.size_constants, made, shapes(*point)):
            view = whole[tuple(slice(0, s) for s in shape)]
            actual = buf.make(inputs)
            if tuple(view.shape) != tuple(shape) or not torch.equal(view, actual.reshape(view.shape)):
                raise WasmBackendError(
                    f"cannot export {_show_dims(dims)} as dynamic: the value {buf.name.split(':')[0]!r}, "
                    f"computed from sizes, at {_show_point(dims, point)} is not a slice of its value at the "
                    "largest sizes, so the file cannot compute it; export with static shapes, or compute "
                    "it inside the model from an input")


def _show_dims(dims: Dims) -> str:
    return ", ".join(f"{name} in [{lo}, {hi}]" for name, lo, hi in zip(dims.names, dims.lo, dims.hi))


def _show_point(dims: Dims, point) -> str:
    return ", ".join(f"{name}={v}" for name, v in zip(dims.names, point))
