"""The Plan: what one partition runs in one call into wasm. Kernel records with symbolic pointers,
the buffers they touch (arena intermediates, inputs, outputs, constants), and their arena offsets
(assign_offsets: liveness -> offsets). Knows nothing about wasmtime: the runtime supplies base addresses."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .abi import ABI

ALIGN = 64


@dataclass(eq=False)
class Buffer:
    """A region of wasm memory: in the plan's arena, or a constant uploaded once."""
    nbytes: int
    make: Callable[[Sequence[torch.Tensor]], torch.Tensor] | None = None  # constants only
    name: str = ""
    per_shape: bool = False  # a constant made from this plan's sizes: owned by the plan, not shared

    @property
    def is_constant(self) -> bool:
        return self.make is not None


@dataclass(frozen=True, eq=False)
class TensorRef:
    """A strided float32 (or other dtype) view into a Buffer; offset and strides in elements."""
    buffer: Buffer
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0
    dtype: torch.dtype = torch.float32

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    def is_contiguous(self) -> bool:
        return self.numel == 0 or _contiguous_ignoring_ones(self)

    def addr(self, extra_elements: int = 0) -> "Addr":
        return Addr(self.buffer, (self.offset + extra_elements) * self.itemsize)


def _contiguous_ignoring_ones(ref: TensorRef) -> bool:
    expected = 1
    for size, stride in reversed(list(zip(ref.shape, ref.strides))):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


@dataclass(frozen=True)
class Addr:
    """A symbolic pointer: byte_offset into buffer, resolved to an address at encode time."""
    buffer: Buffer
    byte_offset: int = 0


@dataclass
class OutputSpec:
    ref: TensorRef
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # the strides eager would give; the runtime returns that layout


@dataclass
class Plan:
    records: list[tuple[str, dict]] = field(default_factory=list)
    record_nodes: list = field(default_factory=list)  # the graph node each record was lowered from (or None)
    inputs: list[TensorRef | None] = field(default_factory=list)  # None: constant or unused input
    constant_inputs: list[int] = field(default_factory=list)       # guarded by identity + version
    outputs: list[OutputSpec] = field(default_factory=list)
    constants: list[Buffer] = field(default_factory=list)
    arena_offsets: dict[int, int] = field(default_factory=dict)    # id(buffer) -> byte offset
    arena_size: int = 0
    aten_ops: Counter = field(default_factory=Counter)             # ATen op name -> nodes lowered
    flops: int = 0
    from_template: bool = False  # built from a plan template (lowering/template.py), not lowered

    def address(self, where: "Addr | TensorRef", arena_base: int, constant_addrs: dict[int, int]):
        """The absolute byte address in wasm memory of an Addr or a TensorRef's first element: its
        buffer's place (a constant's own, or the arena's base + the buffer's offset in it) + its
        byte offset. The one place a buffer's address is computed (plans, host views, exported
        views); a tracked size in the offset stays symbolic for the exporter."""
        if isinstance(where, TensorRef):
            where = where.addr()
        b = where.buffer
        base = constant_addrs[id(b)] if b.is_constant else arena_base + self.arena_offsets[id(b)]
        return base + where.byte_offset

    def encode(self, arena_base: int, constant_addrs: dict[int, int], **words) -> list[int]:
        """The int32 words of the plan, with every Addr resolved to an absolute byte address.
        words: ABI.encode_into's word / f32_word (the exporter keeps tracked sizes symbolic)."""
        def resolve(value):
            return self.address(value, arena_base, constant_addrs) if isinstance(value, Addr) else value

        words_out: list[int] = []
        for op, args in self.records:
            ABI.encode_into(words_out, op, args, resolve, **words)
        return words_out


def assign_offsets(plan: Plan) -> None:
    """Assigns arena offsets to non-constant buffers by liveness (first to last record that
    touches them; inputs live from the start, outputs to the end): greedy by size, lowest offset
    that does not overlap a buffer alive at the same time."""
    spans: dict[int, list] = {}  # id(buffer) -> [first, last, buffer]; records come in time order

    def touch(buf: Buffer, t: int):
        span = spans.get(id(buf))
        if span is None:
            spans[id(buf)] = [t, t, buf]
        else:
            span[1] = t

    for ref in plan.inputs:
        if ref is not None and not ref.buffer.is_constant:
            touch(ref.buffer, -1)
    for t, (_, args) in enumerate(plan.records):
        for v in args.values():
            if v.__class__ is Addr and v.buffer.make is None:  # (not is_constant: hot loop)
                touch(v.buffer, t)
    for out in plan.outputs:
        if not out.ref.buffer.is_constant:
            touch(out.ref.buffer, len(plan.records))
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    size_total = 0
    for b, (start, end, buf) in sorted(spans.items(), key=lambda item: (-item[1][2].nbytes, item[1][0])):
        size = max(ALIGN, (buf.nbytes + ALIGN - 1) // ALIGN * ALIGN)
        clashes = sorted([(o, s) for o, s, f, l in placed if f <= end and start <= l])
        offset = 0
        for o, s in clashes:
            if offset + size <= o:
                break
            offset = max(offset, o + s)
        placed.append((offset, size, start, end))
        plan.arena_offsets[b] = offset
        size_total = max(size_total, offset + size)
    plan.arena_size = size_total
