"""Size expressions of an exported model with dynamic dimensions: how every size-dependent plan word,
stride, offset and guard is computed from the dims' values (e.g. `seq`), as small stack programs
stored in the file's metadata ("exprs") and evaluated by the loaders (this module for Python,
torch_wasm_backend/js/core.mjs for JS: keep the two in step) when a call brings new sizes.

A program is a JSON list of tokens in postfix order:
    a number                    push it
    "$name"                     push the value of dim `name`
    "#k"                        push the value of program k (an earlier one: k < this program's index)
    + - * // % / ** min max < <= > >= == != and or     pop b, pop a, push (a op b)
    neg abs not floor ceil trunc round f32              pop a, push op(a)
Integers are exact (Python semantics: // and % round toward minus infinity); `/` gives a float;
comparisons and `and`/`or`/`not` give 0 or 1; `f32` gives the int32 bits of float32(a) (a plan word
holding a float computed from sizes, such as 1/seq). The exporter writes the programs from the
Python source of tracked sizes (lowering/tracked.py) with `compile_source`.
"""
from __future__ import annotations

import ast
import math
import struct

BINARY = ("+", "-", "*", "//", "%", "/", "**", "min", "max", "<", "<=", ">", ">=", "==", "!=", "and", "or")
UNARY = ("neg", "abs", "not", "floor", "ceil", "trunc", "round", "f32")
MAX_TOKENS = 1 << 22  # all programs of one file together
MAX_POWER = 64        # exponent bound of **: sizes never need more, and a hostile file gets no bignum


class SizeProgramError(Exception):
    """A size expression the loaders cannot evaluate (the exporter names the dim that needs it)."""


_BIN_AST = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Mod: "%", ast.Div: "/",
            ast.Pow: "**"}
_CMP_AST = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_CALLS = {"abs": "abs", "round": "round", "math.floor": "floor", "math.ceil": "ceil", "math.trunc": "trunc",
          "f32bits": "f32"}


def compile_source(source: str, symbol_names: dict[str, str]) -> list:
    """Postfix tokens for a Python expression over the symbol variables (a0, a1, ...: symbol_names
    maps them to dim names)."""
    try:
        tree = ast.parse(source, mode="eval").body
    except (SyntaxError, RecursionError) as e:
        raise SizeProgramError(f"unparsable size expression ({e})") from None
    out: list = []
    _emit(tree, symbol_names, out)
    return out


def _emit(node, names: dict[str, str], out: list) -> None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        if isinstance(node.value, float) and not math.isfinite(node.value):
            raise SizeProgramError(f"the constant {node.value!r}")
        out.append(int(node.value) if type(node.value) is bool else node.value)
    elif isinstance(node, ast.Name) and node.id in names:
        out.append("$" + names[node.id])
    elif isinstance(node, ast.BinOp) and type(node.op) in _BIN_AST:
        _emit(node.left, names, out)
        _emit(node.right, names, out)
        out.append(_BIN_AST[type(node.op)])
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        _emit(node.operand, names, out)
        if not isinstance(node.op, ast.UAdd):
            out.append("neg" if isinstance(node.op, ast.USub) else "not")
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMP_AST:
        _emit(node.left, names, out)
        _emit(node.comparators[0], names, out)
        out.append(_CMP_AST[type(node.ops[0])])
    elif isinstance(node, ast.BoolOp):
        _emit(node.values[0], names, out)
        for value in node.values[1:]:
            _emit(value, names, out)
            out.append("and" if isinstance(node.op, ast.And) else "or")
    elif isinstance(node, ast.Call) and not node.keywords:
        name = ast.unparse(node.func)
        args = node.args
        if name == "sum" and len(args) == 1 and isinstance(args[0], (ast.Tuple, ast.List)) and args[0].elts:
            _fold(args[0].elts, "+", names, out)
        elif name in ("min", "max") and args:
            _fold(args, name, names, out)
        elif name in _CALLS and len(args) == 1:
            _emit(args[0], names, out)
            out.append(_CALLS[name])
        else:
            raise SizeProgramError(f"a call of {name}() in a size expression")
    else:
        raise SizeProgramError(f"the size expression part {ast.unparse(node)[:80]!r}")


def _fold(values, op: str, names, out: list) -> None:
    _emit(values[0], names, out)
    for value in values[1:]:
        _emit(value, names, out)
        out.append(op)


def check(programs, dims: dict, fail) -> None:
    """Validates the programs of a file (untrusted): known tokens, dims and earlier references only,
    a stack that never underflows and ends with one value, bounded size. fail(where, problem) raises."""
    if not isinstance(programs, list):
        fail("exprs", "is not a JSON list")
    total = 0
    for k, program in enumerate(programs):
        where = f"exprs[{k}]"
        if not isinstance(program, list) or not program:
            fail(where, "is not a non-empty JSON list")
        total += len(program)
        if total > MAX_TOKENS:
            fail("exprs", f"hold more than {MAX_TOKENS} tokens")
        depth = 0
        for token in program:
            if type(token) in (int, float):
                if type(token) is float and not math.isfinite(token):
                    fail(where, f"holds the number {token!r}")
                if type(token) is int and abs(token) > 2**53:
                    fail(where, f"holds the integer {token}, outside +-2**53")
                depth += 1
            elif isinstance(token, str) and token[:1] == "$" and token[1:] in dims:
                depth += 1
            elif isinstance(token, str) and token[:1] == "#" and token[1:].isdigit() and int(token[1:]) < k:
                depth += 1
            elif token in BINARY:
                depth -= 1
                if depth < 1:
                    fail(where, f"pops an empty stack at {token!r}")
            elif token in UNARY:
                if depth < 1:
                    fail(where, f"pops an empty stack at {token!r}")
            else:
                fail(where, f"holds the unknown token {str(token)[:40]!r}")
        if depth != 1:
            fail(where, f"leaves {depth} values on the stack, not 1")


def evaluate(programs: list, dims: dict[str, int]) -> list:
    """The value of every program for these dim values (programs already checked)."""
    values: list = []
    for program in programs:
        stack: list = []
        for token in program:
            kind = type(token)
            if kind is int or kind is float:
                stack.append(token)
            elif token[0] == "$":
                stack.append(dims[token[1:]])
            elif token[0] == "#" and token[1:].isdigit():
                stack.append(values[int(token[1:])])
            elif token in _UNARY_FN:
                stack.append(_UNARY_FN[token](stack.pop()))
            else:
                b = stack.pop()
                stack.append(_binary(token, stack.pop(), b))
        values.append(stack[0])
    return values


def _binary(op: str, a, b):
    if op in ("//", "%", "/") and b == 0:
        raise SizeProgramError("a size expression divides by zero")
    if op == "**" and not (type(b) is int and 0 <= b <= MAX_POWER):
        raise SizeProgramError(f"a size expression raises to the power {b!r}")
    return _BINARY_FN[op](a, b)


_BINARY_FN = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "//": lambda a, b: a // b,
    "%": lambda a, b: a % b, "/": lambda a, b: a / b, "**": lambda a, b: a ** b, "min": min, "max": max,
    "<": lambda a, b: int(a < b), "<=": lambda a, b: int(a <= b), ">": lambda a, b: int(a > b),
    ">=": lambda a, b: int(a >= b), "==": lambda a, b: int(a == b), "!=": lambda a, b: int(a != b),
    "and": lambda a, b: int(bool(a) and bool(b)), "or": lambda a, b: int(bool(a) or bool(b)),
}
_F32, _I32 = struct.Struct("<f"), struct.Struct("<i")
_UNARY_FN = {
    "neg": lambda a: -a, "abs": abs, "not": lambda a: int(not a), "floor": math.floor, "ceil": math.ceil,
    "trunc": math.trunc, "round": round, "f32": lambda a: _I32.unpack(_F32.pack(a))[0],
}


def resolve(value, dims: dict[str, int], exprs: list):
    """A metadata size field's value: an int as it is, "#k" program k's value, a name its dim's."""
    if type(value) is int:
        return value
    if value[0] == "#":
        return exprs[int(value[1:])]
    return dims[value]

