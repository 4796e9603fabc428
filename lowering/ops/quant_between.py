"""Lowerings of the int8 ops between convolutions (lowering/quant_fuse_between.py makes them):
twb_quant::requantize -> QREQUANT, twb_quant::add -> QADD, twb_quant::pool2d -> QPOOL2D
(kernels_cpp/quant_elementwise.cpp). Imported by lowering.ops.register_int8() with ops/quant.py."""
from __future__ import annotations

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..quant_fuse import QUANT_DTYPES
from ..registry import ALL_DTYPES, bind, register
from ..strided import strided_args
from .elementwise import DTYPE_CODE, contiguous
from .pool import _avg_pool_args, _max_pool_args
from .quant import REQUANT, requant_args


def _out_args(a: dict, relu: bool = False) -> dict:
    """The quantize fields of QREQUANT / QADD / QPOOL2D (requant_args' without relu unless asked)."""
    args = requant_args(relu, *(a[k] for k in REQUANT[1:]))
    if "relu" not in a:
        del args["relu"]
    return args


def _int8_inputs(*names: str):
    def check(node):
        a = bind(node)
        if any(a[n].meta["val"].dtype not in QUANT_DTYPES for n in names) or a["out_dtype"] not in QUANT_DTYPES:
            return "int8 op on tensors other than uint8/int8"
        return None
    return check


@register(torch.ops.twb_quant.requantize.default, kernels=["QREQUANT"], check=_int8_inputs("x"), dtypes=ALL_DTYPES,
          notes="PT2E dq -> [views] -> q with other parameters (a concat input, flatten between observers)")
def _q_requantize(ctx: LoweringContext, node):
    a = ctx.args(node)
    x = ctx.value(a["x"])
    out = ctx.out_for(node)
    if out.numel:
        ctx.emit("QREQUANT", flops=out.numel, in_dtype=DTYPE_CODE[x.dtype], in_scale=a["x_scale"], in_zp=a["x_zp"],
                 **_out_args(a), **strided_args(out, **{"in": x}))
    return out


@register(torch.ops.twb_quant.add.default, kernels=["QADD"], check=_int8_inputs("a", "b"), dtypes=ALL_DTYPES,
          notes="PT2E dq, dq -> add -> [relu] -> q (broadcasting)")
def _q_add(ctx: LoweringContext, node):
    a = ctx.args(node)
    x, y = ctx.value(a["a"]), ctx.value(a["b"])
    out = ctx.out_for(node)
    if out.numel:
        ctx.emit("QADD", flops=3 * out.numel, a_dtype=DTYPE_CODE[x.dtype], a_scale=a["a_scale"], a_zp=a["a_zp"],
                 b_dtype=DTYPE_CODE[y.dtype], b_scale=a["b_scale"], b_zp=a["b_zp"], **_out_args(a, a["relu"]),
                 **strided_args(out, a=x, b=y))
    return out


_MODES = {"max": "MAX", "avg": "AVG", "adaptive_avg": "ADAPTIVE_AVG"}


@register(torch.ops.twb_quant.pool2d.default, kernels=["QPOOL2D"], check=_int8_inputs("x"), dtypes=ALL_DTYPES,
          notes="PT2E dq -> max_pool2d, avg_pool2d or adaptive_avg_pool2d (mean over H, W) -> q")
def _q_pool2d(ctx: LoweringContext, node):
    a = ctx.args(node)
    x = contiguous(ctx, ctx.value(a["x"]))
    out = ctx.out_for(node)
    mode = a["mode"]
    window = dict(kernel=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1), count_include_pad=True, divisor=0)
    if mode == "max":
        window.update(_max_pool_args(a, 2))
    elif mode == "avg":
        window.update(_avg_pool_args(dict(a, divisor_override=a["divisor"]), 2))
    h, w = x.shape[-2:]
    oh, ow = out.shape[-2:]
    if out.numel:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (window[k] for k in ("kernel", "stride", "padding", "dilation"))
        ctx.emit("QPOOL2D", flops=out.numel * kh * kw if mode != "adaptive_avg" else x.numel,
                 mode=ABI.pool[_MODES[mode]], planes=x.numel // (h * w), h=h, w=w, oh=oh, ow=ow, kh=kh, kw=kw,
                 sh=sh, sw=sw, ph=ph, pw=pw, dh=dh, dw=dw, count_include_pad=int(bool(window["count_include_pad"])),
                 divisor=int(window["divisor"]), in_dtype=DTYPE_CODE[x.dtype], in_scale=a["x_scale"],
                 in_zp=a["x_zp"], **_out_args(a), **{"in": addr(x)}, out=addr(out))
    return out
