"""aten.convolution (1-D and 2-D, not transposed) -> CONV2D on NCHW. 1-D convs run as 2-D with
height 1. Weights must be constants or are used as given."""
from __future__ import annotations

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..plan import TensorRef, contiguous_strides
from ..registry import register

aten = torch.ops.aten
NR = ABI.gemm_nr


def _check(node):
    if node.args[6]:
        return "transposed convolution"
    spatial = node.args[1].meta["val"].dim() - 2
    if spatial not in (1, 2):
        return f"{spatial}-d convolution (1-d and 2-d supported)"
    if node.args[0].meta["val"].dim() != spatial + 2:
        return "unbatched convolution input"
    return None


def _per_dim(values, nd: int) -> list[int]:
    """ATen may give one value for all spatial dims (e.g. padding=[0] for padding='valid')."""
    values = list(values)
    return values * nd if len(values) == 1 else values


def _as_4d(ref: TensorRef) -> TensorRef:
    if len(ref.shape) == 4:
        return ref
    shape = ref.shape[:2] + (1,) + ref.shape[2:]
    return TensorRef(ref.buffer, shape, contiguous_strides(shape), ref.offset, ref.dtype)


@register(aten.convolution.default, kernels=["CONV2D"], check=_check)
def _convolution(ctx: LoweringContext, node):
    x_arg, w_arg, b_arg, stride, padding, dilation, _t, _op, groups = node.args
    nd = ctx.val(w_arg).dim() - 2
    stride, padding, dilation = (_per_dim(v, nd) for v in (stride, padding, dilation))
    if nd == 1:
        stride, padding, dilation = [1] + list(stride), [0] + list(padding), [1] + list(dilation)
    x = _as_4d(ctx.contiguous(ctx.value(x_arg)))
    w = _as_4d(ctx.contiguous(ctx.value(w_arg)))
    bias = ctx.contiguous(ctx.value(b_arg)) if b_arg is not None else None
    out = ctx.out_for(node)
    out4 = _as_4d(out)
    n, c_in, h, wd = x.shape
    c_out, c_in_g, kh, kw = w.shape
    oh, ow = out4.shape[2:]
    depthwise = c_in_g == 1 and c_out == groups
    scratch = None
    if not depthwise:
        scratch = ctx.new_buffer(((oh * ow + NR - 1) // NR * NR * c_in_g * kh * kw,), name=node.name + "_im2col")
    if out.numel:
        ctx.emit("CONV2D", flops=2.0 * n * c_out * oh * ow * c_in_g * kh * kw, n=n, c_in=c_in, h=h, w=wd,
                 c_out=c_out, groups=groups, kh=kh, kw=kw, sh=stride[0], sw=stride[1], ph=padding[0],
                 pw=padding[1], dh=dilation[0], dw=dilation[1], oh=oh, ow=ow, **{"in": addr(x)},
                 weight=addr(w), bias=addr(bias), out=addr(out), scratch=addr(scratch),
                 act=ABI.unary["IDENTITY"], p0=0.0, p1=0.0)
    return out
