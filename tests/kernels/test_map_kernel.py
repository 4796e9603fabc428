"""MAP (a chain of UNARY / BINARY ops fused into one pass) against the same ops run as separate
UNARY / BINARY kernels: the chain must give the same bits (it runs the same row functions on
float32 intermediates), at inner lengths around its 256-element chunk, with broadcast, strided and
transposed operands, an immediate operand, and on two threads. Malformed programs trap."""
from __future__ import annotations

import struct

import pytest
import torch

from kernel_testing import Session, assert_exact, pad6, view_with_nan_holes
from torch_wasm_backend.lowering.abi import ABI
from test_elementwise_kernels import _out_strides, run_binary, run_unary
from torch_wasm_backend.errors import WasmTrap

IMM = ABI.map_immediate  # operand register: the instruction's p0


def _bits(x: float) -> int:
    return struct.unpack("<i", struct.pack("<f", x))[0]


# r3 = a * b; r4 = r3 + 0.5; r5 = gelu(r4); r6 = r5 - c; r7 = max(r6, r3); r8 = exp(r7);
# r9 = clamp(r8, -1, 2); r10 = r9 / a: 8 instructions, every input, an immediate, reuse of r3.
CHAIN = [("B", "MUL", 0, 1, 0.0, 0.0), ("B", "ADD", 3, IMM, 0.5, 0.0), ("U", "GELU_ERF", 4, 0, 0.0, 0.0),
         ("B", "SUB", 5, 2, 0.0, 0.0), ("B", "MAXIMUM", 6, 3, 0.0, 0.0), ("U", "EXP", 7, 0, 0.0, 0.0),
         ("U", "CLAMP", 8, 0, -1.0, 2.0), ("B", "DIV", 9, 0, 0.0, 0.0)]


def encode(chain):
    words = []
    for kind, op, ra, rb, p0, p1 in chain:
        code = ABI.unary[op] if kind == "U" else ABI.binary[op]
        words += [0 if kind == "U" else 1, code, ra, rb, _bits(p0), _bits(p1)]
    return words + [0] * (6 * ABI.map_max_instr - len(words))


def run_map(s: Session, chain, inputs, out_transposed=False, n_instr=None):
    shape = tuple(torch.broadcast_shapes(*(t.shape for t in inputs)))
    args = {}
    for k in range(ABI.map_inputs):
        if k < len(inputs):
            ptr, st = s.put_view(inputs[k].expand(shape))
            args.update({f"in{k}": ptr, f"in{k}_stride": pad6(st, 0)})
        else:
            args.update({f"in{k}": 0, f"in{k}_stride": [0] * 6})
    out_strides = _out_strides(shape, out_transposed)
    numel = 1
    for d in shape:
        numel *= d
    out = s.out(numel)
    s.record("MAP", n_instr=len(chain) if n_instr is None else n_instr, size=pad6(shape, 1),
             out_stride=pad6(out_strides, 0), out=out.ptr, prog=encode(chain), **args)
    return out.read(shape, out_strides)


def run_separately(s: Session, chain, inputs):
    shape = tuple(torch.broadcast_shapes(*(t.shape for t in inputs)))
    regs = [t.expand(shape) for t in inputs] + [None] * (ABI.map_inputs - len(inputs))
    for kind, op, ra, rb, p0, p1 in chain:
        if kind == "U":
            regs.append(run_unary(s, op, regs[ra], p0, p1))
        else:
            a = torch.full(shape, p0) if ra == IMM else regs[ra]
            b = torch.full(shape, p0) if rb == IMM else regs[rb]
            regs.append(run_binary(s, op, a, b))
    return regs[-1]


SHAPES = [((1,), (1,), (1,)), ((255,), (255,), (1,)), ((256,), (1,), (256,)), ((257,), (257,), (257,)),
          ((5, 1, 257), (1, 3, 257), (257,)), ((3, 1000), (3, 1), (1000,)), ((0, 7), (0, 7), (7,)),
          ((2, 3, 5, 1, 7, 9), (1, 3, 1, 4, 7, 9), (9,))]


@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: "x".join(str(list(t)) for t in s))
def test_chain_matches_separate_kernels(s1, shapes):
    inputs = [torch.randn(sh) for sh in shapes]
    assert_exact(run_map(s1, CHAIN, inputs), run_separately(s1, CHAIN, inputs))


def test_strided_inputs_and_transposed_output(s1):
    a = view_with_nan_holes(torch.randn(7, 13, 9), lambda t: t.permute(2, 0, 1))  # [9, 7, 13]
    b = view_with_nan_holes(torch.randn(18, 7, 26), lambda t: t[::2, :, ::2])     # [9, 7, 13]
    c = torch.randn(9, 1, 13)
    want = run_separately(s1, CHAIN, [a, b, c])
    assert_exact(run_map(s1, CHAIN, [a, b, c]), want)
    assert_exact(run_map(s1, CHAIN, [a, b, c], out_transposed=True), want)


def test_exact_chain_matches_torch(s12):
    """Only IEEE operations: bit-equal to eager torch too; one input, two threads' worth of work."""
    chain = [("B", "MUL", 0, IMM, 2.0, 0.0), ("B", "SUB", IMM, 3, 1.5, 0.0), ("U", "RELU", 4, 0, 0.0, 0.0),
             ("B", "MUL", 5, 0, 0.0, 0.0)]
    x = torch.randn(64, 3001)
    assert_exact(run_map(s12, chain, [x]), torch.relu(1.5 - x * 2.0) * x)


@pytest.mark.parametrize("bad", ["forward_register", "no_instructions", "too_many"])
def test_malformed_program_traps(bad):
    from torch_wasm_backend.runtime import get_runtime
    runtime, _ = get_runtime(2)
    with Session(threads=1, runtime=runtime) as s:
        x = [torch.randn(8)]
        with pytest.raises(WasmTrap):
            if bad == "forward_register":
                run_map(s, [("U", "RELU", 4, 0, 0.0, 0.0)], x)
            else:
                run_map(s, CHAIN, x, n_instr=0 if bad == "no_instructions" else ABI.map_max_instr + 1)


def test_sin_cos_chain_matches_separate_kernels(s1):
    """Rotary embeddings' x * cos(a) + y * sin(a) as one MAP: the same bits as separate kernels,
    the huge-argument (libm) lanes included."""
    chain = [("U", "COS", 0, 0, 0.0, 0.0), ("B", "MUL", 3, 1, 0.0, 0.0), ("U", "SIN", 0, 0, 0.0, 0.0),
             ("B", "MUL", 5, 2, 0.0, 0.0), ("B", "ADD", 4, 6, 0.0, 0.0)]
    a = torch.randn(5, 257) * 100
    a.view(-1)[::37] = 1e7  # beyond 2^19
    inputs = [a, torch.randn(5, 257), torch.randn(257)]
    assert_exact(run_map(s1, chain, inputs), run_separately(s1, chain, inputs))
