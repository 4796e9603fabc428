"""Fusion: rewriting the record just emitted so that the next op costs no pass over memory.

Two kinds, both bit-equal to running the ops one by one:
- epilogues: an activation (relu, gelu...) after GEMM / CONV2D / CONV2D_WINOGRAD / CONV3D /
  CHANNEL_AFFINE becomes that record's `act` field (fuse_activation); a batch norm after a conv
  rewrites the conv's weights (ops/norm.py, through producing_record);
- elementwise chains: float32 UNARY / BINARY ops that each consume the previous one's only use
  merge into one MAP record, a small register program run in one pass (fuse_into_chain).

The lowerings in ops/ call these; the per-plan state they read (the last chain) lives on the
LoweringContext, which knows nothing of fusion."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.fx import Node

from .abi import ABI
from .plan import TensorRef
from .strided import strided_args
from .tracked import is_tracked

if TYPE_CHECKING:
    from .context import LoweringContext

# ---- epilogues -----------------------------------------------------------------------------------
# Kernels with an activation epilogue, and the arg that holds their output.
EPILOGUE_OUTPUT = {"GEMM": "c", "CONV2D": "out", "CONV2D_WINOGRAD": "out", "CONV3D": "out",
                   "CHANNEL_AFFINE": "out"}
# Activations those epilogues apply (elementwise.h FOR_EACH_UNARY); an op outside this list is
# never fused into an epilogue.
EPILOGUE_OPS = {"RELU", "GELU_ERF", "GELU_TANH", "SILU", "SIGMOID", "TANH", "CLAMP", "HARDSWISH"}


def producing_record(ctx: LoweringContext, arg, outputs: dict[str, str] | None = None) -> tuple[str, dict] | None:
    """The last emitted record if it alone produced arg's whole value and nothing else reads
    that value (arg has this one user): a later op may then rewrite the record in place.
    `outputs` maps the kernels considered to the arg holding their output (default: the
    kernels with an activation epilogue)."""
    if not isinstance(arg, Node) or len(arg.users) != 1 or not ctx.plan.records:
        return None
    ref = ctx.lowered_value(arg)
    kernel, args = ctx.plan.records[-1]
    field = (EPILOGUE_OUTPUT if outputs is None else outputs).get(kernel)
    if field is None or not isinstance(ref, TensorRef) or ref.buffer.is_constant:
        return None
    out = args[field]
    if out.buffer is not ref.buffer or out.byte_offset != 0 or ref.offset != 0 \
            or not ref.is_contiguous() or ref.numel * ref.itemsize != ref.buffer.nbytes:
        return None
    return kernel, args


def fuse_activation(ctx: LoweringContext, arg, act: str, p0: float = 0.0, p1: float = 0.0) -> TensorRef | None:
    """Folds act into the epilogue of the record that produced arg (see producing_record);
    returns arg's value, now activated, or None if it cannot."""
    if act not in EPILOGUE_OPS:
        return None
    found = producing_record(ctx, arg)
    if found is None or found[1]["act"] != ABI.unary["IDENTITY"]:
        return None
    found[1].update(act=ABI.unary[act], p0=p0, p1=p1)
    return ctx.lowered_value(arg)


# ---- elementwise chains fused into one MAP record ------------------------------------------------
_UNARY, _BINARY = 0, 1
MAP_INPUTS = ABI.map_inputs  # registers 0..MAP_INPUTS - 1; instruction i's result is register MAP_INPUTS + i
MAP_MAX_INSTR = ABI.map_max_instr
MAP_IMMEDIATE = ABI.map_immediate  # operand register: the instruction's p0 as a broadcast scalar
_CHAIN_OUTPUTS = {"UNARY": "out", "BINARY": "out", "MAP": "out"}


@dataclass
class Chain:
    """The last float32 UNARY / BINARY / MAP record with what is needed to append one more op:
    its ABI args (the record's own dict, rewritten in place), its output, its inputs as they were
    before collapsing (a new input changes which dims can merge) and its program."""
    args: dict
    out: TensorRef
    inputs: list[TensorRef]
    prog: list[tuple]  # (kind, sub-op, register a, register b, p0, p1)


def fuse_into_chain(ctx: LoweringContext, node, arg, op: str, other=None, arg_first: bool = True,
                    p0: float = 0.0, p1: float = 0.0) -> TensorRef | None:
    """Appends node = op(arg) (unary; or op(arg, other) / op(other, arg) when arg_first is False;
    `other` a TensorRef or a Python number, which becomes an immediate) to the record that produced arg, when that record is the last elementwise one, arg has no
    other user and node's result has arg's shape: the chain then runs as one MAP pass and arg's
    intermediate never goes to memory. Returns node's value (arg's buffer, now holding the
    result) or None when it cannot fuse. The results are bit-equal to separate kernels."""
    chain = ctx.elementwise_chain
    found = producing_record(ctx, arg, _CHAIN_OUTPUTS)
    if chain is None or found is None or found[1] is not chain.args or len(chain.prog) >= MAP_MAX_INSTR:
        return None
    out = chain.out
    v = ctx.val(node)
    if (tuple(v.shape) != out.shape or v.dtype != torch.float32 or out.dtype != torch.float32
            or not out.is_contiguous() or out.offset or out.numel * out.itemsize != out.buffer.nbytes):
        return None
    result_reg = MAP_INPUTS + len(chain.prog) - 1
    inputs = list(chain.inputs)
    if other is None:
        instr = (_UNARY, ABI.unary[op], result_reg, 0, p0, p1)
    else:
        imm = 0.0
        if is_tracked(other):
            return None  # a size: ctx.scalar makes it at each call's sizes (an immediate could not)
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            # rounded to float32 as ctx.scalar rounds it: the same operand the BINARY kernel reads
            other_reg, imm = MAP_IMMEDIATE, float(torch.tensor(float(other), dtype=torch.float32))
        elif not isinstance(other, TensorRef):
            return None
        elif other is out:
            other_reg = result_reg
        elif other.buffer is out.buffer or other.dtype != torch.float32:
            return None  # another view of the intermediate: it is never written to memory
        else:
            if other not in inputs:
                if len(inputs) == MAP_INPUTS:
                    return None
                inputs.append(other)
            other_reg = inputs.index(other)
        a, b = (result_reg, other_reg) if arg_first else (other_reg, result_reg)
        instr = (_BINARY, ABI.binary[op], a, b, imm, 0.0)
    prog = chain.prog + [instr]
    padded = inputs + [None] * (MAP_INPUTS - len(inputs))
    strided = strided_args(out, **{f"in{k}": ref for k, ref in enumerate(inputs)})
    words = []
    for kind, sub_op, ra, rb, q0, q1 in prog:
        words += [kind, sub_op, ra, rb, _f32_bits(q0), _f32_bits(q1)]
    words += [0] * (6 * MAP_MAX_INSTR - len(words))
    chain.args.clear()
    chain.args.update(strided, n_instr=len(prog), prog=words)
    for k, ref in enumerate(padded):
        if ref is None:
            chain.args.update({f"in{k}_stride": [0] * ABI.max_dims, f"in{k}": 0})  # (0: no pointer)
    ctx.plan.records[-1] = ("MAP", chain.args)
    ctx.plan.flops += out.numel
    chain.inputs, chain.prog = inputs, prog
    return out


def _f32_bits(x: float) -> int:
    return struct.unpack("<i", struct.pack("<f", float(x)))[0]


def start_chain(ctx: LoweringContext, out: TensorRef, inputs: list[TensorRef], sub_op: int,
                binary: bool, p0: float = 0.0, p1: float = 0.0) -> None:
    """Notes the UNARY / BINARY record just emitted (computing out from inputs) as the chain a
    next elementwise op may join."""
    instr = (_BINARY, sub_op, 0, len(inputs) - 1, 0.0, 0.0) if binary else (_UNARY, sub_op, 0, 0, p0, p1)
    ctx.elementwise_chain = Chain(ctx.plan.records[-1][1], out, inputs, [instr])
