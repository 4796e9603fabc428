"""Tracked sizes: ints and floats that remember how they were computed from a graph's symbolic
sizes, so that one lowering of a dynamic-shape partition can be replayed at other sizes
(lowering/template.py).

A TrackedInt behaves exactly like its concrete value (lowering code needs no changes) and carries
`expr`, Python source for the same value in terms of the symbol variables a0, a1, ... Arithmetic
returns tracked values with the combined source. A comparison or truth test returns the concrete
answer and records it as a guard ("this lowering assumed a0 * 64 >= 8"); a conversion to a plain
number or to text (int(), float(), repr, format) records a pin: the lowering used that exact
value, so its template is only valid where the expression keeps it. Guards and pins are recorded
only while a Recorder is active (the lowering of a template, in this thread).

What escapes tracking silently: a float or bool on the LEFT of an operator (`2.0 * n` runs
float.__mul__, which returns a plain float), and C code that reads the int itself (operator.index,
range(), torch and numpy calls). Lowering code keeps sizes on the int side (flop counts are ints),
and template.py compares each template's first reuse with a full lowering to catch the rest."""
from __future__ import annotations

import math
import operator
import os
import sys
import threading
from typing import Callable

_active = threading.local()


class Recorder:
    """Collects the guards (expression source -> the boolean it must evaluate to) and pins of
    one tracked lowering. Use as a context manager around the lowering."""

    def __init__(self):
        self.guards: dict[str, bool] = {}
        self.pins: list[str] = []  # why the template is only valid at these exact sizes

    def __enter__(self):
        self._outer = getattr(_active, "recorder", None)
        _active.recorder = self
        return self

    def __exit__(self, *exc):
        _active.recorder = self._outer


def _recorder() -> Recorder | None:
    return getattr(_active, "recorder", None)


def pin(reason: str) -> None:
    """The lowering in progress used a size in a way that cannot be replayed (a per-shape constant,
    say): its template must not serve other sizes."""
    recorder = _recorder()
    if recorder is not None:
        recorder.pins.append(reason)


def _source(x) -> str:
    return x.expr if is_tracked(x) else repr(x)


def _wrap(value, expr: str):
    if value.__class__ is int:
        return TrackedInt(value, expr)
    if value.__class__ is float:
        return TrackedFloat(value, expr)
    return value


def _plain(x):
    return x.value if is_tracked(x) else x


def _arith(symbol: str, fn):
    def forward(self, other):
        if not isinstance(other, (int, float)):  # (bools included: they are ints)
            return NotImplemented
        return _wrap(fn(self.value, _plain(other)), f"({self.expr} {symbol} {_source(other)})")

    def reflected(self, other):
        if not isinstance(other, (int, float)):
            return NotImplemented
        return _wrap(fn(_plain(other), self.value), f"({_source(other)} {symbol} {self.expr})")
    return forward, reflected


def _compare(symbol: str, fn):
    def method(self, other):
        if not isinstance(other, (int, float)):
            return NotImplemented
        result = fn(self.value, _plain(other))
        recorder = _recorder()
        if recorder is not None:
            recorder.guards[f"({self.expr} {symbol} {_source(other)})"] = result
        return result
    return method


def _pinning(kind: str, convert):
    def method(self, *args):
        if _recorder() is not None:
            caller = sys._getframe(1)  # where the lowering converted the size, for the log
            pin(f"{kind} of the size {self.expr} = {self.value!r} at "
                f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}")
        return convert(self.value, *args)
    return method


class _TrackedMixin:
    __slots__ = ()

    def __new__(cls, value, expr: str):
        self = super().__new__(cls, value)  # (int's or float's)
        self.value = value
        self.expr = expr
        return self

    __add__, __radd__ = _arith("+", operator.add)
    __sub__, __rsub__ = _arith("-", operator.sub)
    __mul__, __rmul__ = _arith("*", operator.mul)
    __truediv__, __rtruediv__ = _arith("/", operator.truediv)
    __floordiv__, __rfloordiv__ = _arith("//", operator.floordiv)
    __mod__, __rmod__ = _arith("%", operator.mod)
    __pow__, __rpow__ = _arith("**", operator.pow)
    __lt__ = _compare("<", operator.lt)
    __le__ = _compare("<=", operator.le)
    __gt__ = _compare(">", operator.gt)
    __ge__ = _compare(">=", operator.ge)
    __eq__ = _compare("==", operator.eq)
    __ne__ = _compare("!=", operator.ne)

    def __neg__(self):
        return _wrap(-self.value, f"(-{self.expr})")

    def __pos__(self):
        return self

    def __abs__(self):
        return _wrap(abs(self.value), f"abs({self.expr})")

    def __hash__(self):
        return hash(self.value)

    def __bool__(self):
        result = bool(self.value)
        recorder = _recorder()
        if recorder is not None:
            recorder.guards[f"({self.expr} != 0)"] = result
        return result

    def __reduce__(self):  # pickles (and deep-copies) as the plain number
        return (type(self.value), (self.value,))

    __int__ = _pinning("int()", int)
    __float__ = _pinning("float()", float)
    __index__ = _pinning("use as an index", operator.index)
    __repr__ = _pinning("text", repr)
    __str__ = _pinning("text", str)
    __format__ = _pinning("text", format)
    def __round__(self, ndigits=None):
        if ndigits is not None:
            return _wrap(round(self.value, ndigits), f"round({self.expr}, {ndigits!r})")
        return _wrap(round(self.value), f"round({self.expr})")

    def __trunc__(self):
        return _wrap(math.trunc(self.value), f"math.trunc({self.expr})")

    def __floor__(self):
        return _wrap(math.floor(self.value), f"math.floor({self.expr})")

    def __ceil__(self):
        return _wrap(math.ceil(self.value), f"math.ceil({self.expr})")

    def __divmod__(self, other):
        return self // other, self % other

    def __rdivmod__(self, other):
        return other // self, other % self


class TrackedInt(_TrackedMixin, int):
    """An int with the source of how it was computed from the symbols (see the module docstring).

    A sum of ints keeps its terms flat (`terms`; its expr, made when first read, is then
    `sum((t0, t1, t2, ...))` from three terms on): a plan's flop count adds one term per kernel record, and nesting those as
    ((t0 + t1) + t2)... would make a deep graph's template too deeply nested to compile."""

    terms: tuple[str, ...] = ()

    def __getattr__(self, name):  # (only for attributes not set: a sum's expr, made once)
        if name != "expr" or not self.terms:
            raise AttributeError(name)
        terms = self.terms
        self.expr = f"({terms[0]} + {terms[1]})" if len(terms) == 2 else f"sum(({', '.join(terms)},))"
        return self.expr

    def __add__(self, other):
        if not isinstance(other, int):  # a float: the generic (nested) form
            return _TrackedMixin.__add__(self, other)
        return _sum(self.value + _plain(other), _terms(self) + _terms(other))

    def __radd__(self, other):
        if not isinstance(other, int):
            return _TrackedMixin.__radd__(self, other)
        return _sum(_plain(other) + self.value, _terms(other) + _terms(self))

    # Integer-only operators: tracked too, so bit tricks on sizes stay replayable.
    __and__, __rand__ = _arith("&", operator.and_)
    __or__, __ror__ = _arith("|", operator.or_)
    __xor__, __rxor__ = _arith("^", operator.xor)
    __lshift__, __rlshift__ = _arith("<<", operator.lshift)
    __rshift__, __rrshift__ = _arith(">>", operator.rshift)

    def __invert__(self):
        return _wrap(~self.value, f"(~{self.expr})")


def _terms(x) -> tuple[str, ...]:
    """x as the terms of a sum (a tracked sum's own terms, else x's source alone)."""
    return x.terms if isinstance(x, TrackedInt) and x.terms else (_source(x),)


def _sum(value: int, terms: tuple[str, ...]) -> TrackedInt:
    result = int.__new__(TrackedInt, value)
    result.value, result.terms = value, terms  # (expr: see TrackedInt.__getattr__)
    return result


class TrackedFloat(_TrackedMixin, float):
    """A float computed from tracked sizes (a 1 / n scale, an upsampling ratio)."""


# Python functions that tracked expressions call (see apply), by the name the expressions use.
FUNCTIONS: dict[str, Callable] = {}


def apply(fn: Callable, *args):
    """fn(*args), where args may be tracked: then a tracked result whose expression calls fn (for
    sizes that only sympy can evaluate, like a rational upsampling scale)."""
    value = fn(*map(_plain, args))
    if not any(map(is_tracked, args)):
        return value
    name = f"_fn{id(fn)}"
    FUNCTIONS[name] = fn  # (kept alive: generated code refers to it by this name)
    return _wrap(value, f"{name}({', '.join(map(_source, args))})")


def is_tracked(x) -> bool:
    return isinstance(x, (TrackedInt, TrackedFloat))


def holds_tracked(value) -> bool:
    """Whether value is, or (in lists, tuples, dict values) contains, a tracked number."""
    if isinstance(value, (list, tuple)):
        return any(map(holds_tracked, value))
    if isinstance(value, dict):
        return any(map(holds_tracked, value.values()))
    return is_tracked(value)


def plain(x):
    """x's concrete value (x itself if it is not tracked), without recording a pin."""
    return _plain(x)
