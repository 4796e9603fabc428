"""A plan record with a sub-op code the ABI does not declare (a damaged or hand-edited plan) traps;
it must not silently write nothing, which would leave the output buffer's old contents as the answer."""
import pytest
import torch

from torch_wasm_backend.lowering.abi import ABI
from torch_wasm_backend.errors import WasmTrap
from torch_wasm_backend.kernel_call import KernelSession
from torch_wasm_backend.runtime import Runtime

SIX = [1] * 6


@pytest.fixture
def session():
    runtime = Runtime(1)  # its own: a trap leaves a runtime unusable
    with KernelSession(1, runtime) as s:
        yield s


UNKNOWN = 999


def _records(s):
    x, out = s.put(torch.ones(4)), s.empty((4,))
    strides = [1] + [0] * 5
    size = [4] + [1] * 5
    return {
        "UNARY": dict(op=UNKNOWN, size=size, out_stride=strides, in_stride=strides, out=out, **{"in": x}, p0=0.0, p1=0.0),
        "BINARY": dict(op=UNKNOWN, size=size, out_stride=strides, a_stride=strides, b_stride=strides, out=out, a=x, b=x),
        "REDUCE": dict(op=UNKNOWN, outer=1, red=4, inner=1, **{"in": x}, out=out),
        "CHANNEL_AFFINE": dict(outer=1, channels=4, inner=1, **{"in": x}, out=out, scale=x, shift=x, act=UNKNOWN, p0=0.0, p1=0.0),
        "POOL2D": dict(mode=UNKNOWN, planes=1, h=2, w=2, oh=1, ow=1, kh=2, kw=2, sh=1, sw=1, ph=0, pw=0, dh=1, dw=1,
                       count_include_pad=1, divisor=0, **{"in": x}, out=out, indices=0),
        "QPOOL2D": dict(mode=UNKNOWN, planes=1, h=2, w=2, oh=1, ow=1, kh=2, kw=2, sh=1, sw=1, ph=0, pw=0, dh=1, dw=1,
                        count_include_pad=1, divisor=0, in_dtype=ABI.dtype["U8"], in_scale=1.0, in_zp=0,
                        out_dtype=ABI.dtype["U8"], inv_out_scale=1.0, out_zp=0, qmin=0, qmax=255, **{"in": x}, out=out),
    }


@pytest.mark.parametrize("op", ["UNARY", "BINARY", "REDUCE", "CHANNEL_AFFINE", "POOL2D", "QPOOL2D"])
def test_unknown_sub_op_traps(session, op):
    args = _records(session)[op]
    assert set(args) == {f.name for f in ABI.ops[op].fields}
    with pytest.raises(WasmTrap):
        session.run(op, **args)


def test_unknown_gemm_activation_traps(session):
    a, b, c = session.put(torch.ones(8)), session.put(torch.ones(64)), session.empty((8,))
    with pytest.raises(WasmTrap):
        session.run("GEMM", batch=1, m=1, n=8, k=8, a=a, lda=8, a_batch_stride=0, b_packed=b, b_batch_stride=0,
                    c=c, ldc=8, c_batch_stride=0, bias=0, bias_mode=0, act=UNKNOWN, p0=0.0, p1=0.0)
