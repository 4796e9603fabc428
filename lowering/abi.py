"""Reads the kernel ABI from kernels_cpp/kernel_abi.def (the single declaration shared with the C++
kernels and, through scripts/gen_js_abi.py, the JS loader) and encodes plan records from keyword
arguments. Imports nothing but the standard library (the generator loads it on its own)."""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

ABI_FILE = Path(__file__).resolve().parent.parent / "kernels_cpp" / "kernel_abi.def"

_FIELD = re.compile(r"(ARG|PTR|F32|ARR)\((\w+)(?:,\s*(\d+))?\)")


@dataclass(frozen=True)
class Field:
    kind: str  # ARG, PTR, F32 or ARR
    name: str
    length: int  # words


@dataclass(frozen=True)
class OpSpec:
    name: str
    code: int
    fields: tuple[Field, ...]

    @cached_property
    def n_words(self) -> int:
        return sum(f.length for f in self.fields)


def _strip_comments(text: str) -> str:
    """The declarations: without comments and the preprocessor lines (the C++ macro defaults)."""
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines() if not line.lstrip().startswith("#"))


class KernelAbi:
    """Everything the .def declares: version, constants, sub-op enums and plan ops."""

    def __init__(self, path: Path = ABI_FILE):
        text = _strip_comments(path.read_text())
        self.version = int(re.search(r"ABI_VERSION\((\d+)\)", text).group(1))
        self.max_dims = int(re.search(r"MAX_DIMS\((\d+)\)", text).group(1))
        # layout constants shared with the kernels (packed constants, scratch sizes): name -> value
        self.layout: dict[str, int] = {name: int(v) for name, v in re.findall(r"\bLAYOUT\((\w+),\s*(\d+)\)", text)}
        self.gemm_nr = self.layout["GemmNR"]
        limits = re.search(r"MAP_LIMITS\((\d+),\s*(\d+),\s*(\d+)\)", text)
        # MAP: most instructions, input registers, the operand register meaning "the scalar p0"
        self.map_max_instr, self.map_inputs, self.map_immediate = (int(g) for g in limits.groups())
        # run_plan's error codes: name -> code, and code -> message
        self.run_error: dict[str, int] = {}
        self.run_error_message: dict[int, str] = {}
        for name, code, message in re.findall(r'\bRUN_ERROR\((\w+),\s*(-?\d+),\s*"([^"]*)"\)', text):
            self.run_error[name] = int(code)
            self.run_error_message[int(code)] = message
        # The functions a host calls: name -> (param types, result types), all i32.
        self.kernel_exports: dict[str, tuple[list[str], list[str]]] = {
            name: (["i32"] * int(params), ["i32"] * int(results))
            for name, params, results in re.findall(r"\bKERNEL_EXPORT\((\w+),\s*(\d+),\s*(\d+)\)", text)}
        self.unary = self._enum(text, "UNARY_OP")
        self.binary = self._enum(text, "BINARY_OP")
        self.reduce = self._enum(text, "REDUCE_OP")
        self.pool = self._enum(text, "POOL_MODE")
        self.compare = self._enum(text, "COMPARE_OP")
        self.dtype = self._enum(text, "DTYPE")
        self.ops: dict[str, OpSpec] = {}
        for m in re.finditer(r"\bOP\((\w+),\s*(\d+),(.*)\)\s*$", text, re.MULTILINE):
            fields = tuple(
                Field(kind, name, int(n) if n else 1) for kind, name, n in _FIELD.findall(m.group(3))
            )
            self.ops[m.group(1)] = OpSpec(m.group(1), int(m.group(2)), fields)

    @staticmethod
    def _enum(text: str, macro: str) -> dict[str, int]:
        return {n: int(c) for n, c in re.findall(rf"\b{macro}\((\w+),\s*(\d+)\)", text)}

    def encode(self, op: str, /, **args) -> list[int]:
        """One plan record [code, n_args, args...]; raises on a missing or unknown argument."""
        words: list[int] = []
        self.encode_into(words, op, args)
        return words

    def encode_into(self, words: list[int], op: str, args: dict,
                    resolve: Callable[[Any], Any] = lambda v: v, word: Callable[[Any], Any] = int,
                    f32_word: Callable[[Any], Any] | None = None) -> None:
        """Appends op's record to words; resolve(value) turns each non-int argument (a symbolic
        pointer, say) into an int first. word / f32_word make the final word of an int / F32 field
        (the exporter passes functions that keep tracked sizes, lowering/tracked.py, as they are).
        (A plan encodes hundreds of records per new input signature: this is the hot path.)"""
        spec = self.ops[op]
        if len(args) != len(spec.fields) or not all(f.name in args for f in spec.fields):
            unknown = set(args) - {f.name for f in spec.fields}
            if unknown:
                raise TypeError(f"{op}: unknown kernel arguments {sorted(unknown)}")
            missing = next(f.name for f in spec.fields if f.name not in args)
            raise TypeError(f"{op}: missing kernel argument {missing!r}")
        words += (spec.code, spec.n_words)
        for f in spec.fields:
            value = args[f.name]
            if f.kind == "ARR":
                value = list(value)
                if len(value) != f.length:
                    raise ValueError(f"{op}.{f.name}: expected {f.length} values, got {len(value)}")
                words.extend(v if type(v) is int else word(resolve(v)) for v in value)
            elif f.kind == "F32":
                words.append(f32_bits(value) if f32_word is None else f32_word(value))
            else:
                words.append(value if type(value) is int else word(resolve(value)))


_F32, _F32_BITS = struct.Struct("<f"), struct.Struct("<i")


def f32_bits(value) -> int:
    """The plan word of an F32 field: the int32 bits of float32(value)."""
    return _F32_BITS.unpack(_F32.pack(float(value)))[0]
ABI = KernelAbi()
