"""2-D pooling: max (values only), average, adaptive average -> POOL2D over [planes, h, w]; 3-d
pooling (max with or without indices, average, adaptive average) -> POOL3D over [planes, d, h, w]."""
from __future__ import annotations

import operator

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..registry import register
from .elementwise import contiguous

aten = torch.ops.aten


def _ntuple(v, n: int, default=None) -> tuple:
    """A pooling size argument (an int, a 1-list or an n-list; None or [] for `default`) as n ints."""
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, int):
        return (v,) * n
    return tuple(v) * n if len(v) == 1 else tuple(v[:n])


def emit_pool(ctx: LoweringContext, node, mode: str, kernel=(1, 1), stride=(1, 1), padding=(0, 0),
              dilation=(1, 1), count_include_pad=True, divisor=0, indices=None):
    x = contiguous(ctx, ctx.value(node.args[0]))
    out = ctx.new_buffer(tuple(ctx.vals[node][0].shape if isinstance(ctx.vals[node], tuple)
                               else ctx.vals[node].shape), name=node.name)
    h, w = x.shape[-2:]
    oh, ow = out.shape[-2:]
    planes = 1
    for s in x.shape[:-2]:
        planes *= s
    if out.numel:
        ctx.emit("POOL2D", flops=out.numel * kernel[0] * kernel[1], mode=ABI.pool[mode], planes=planes,
                 h=h, w=w, oh=oh, ow=ow, kh=kernel[0], kw=kernel[1], sh=stride[0], sw=stride[1],
                 ph=padding[0], pw=padding[1], dh=dilation[0], dw=dilation[1],
                 count_include_pad=int(bool(count_include_pad)), divisor=int(divisor or 0),
                 **{"in": addr(x)}, out=addr(out), indices=addr(indices))
    return out


def _indices_used(node) -> bool:
    return any(u.target is operator.getitem and u.args[1] == 1 for u in node.users)


# Values in float32, indices in int64 (only computed when used).
def _float_input(node):
    dtype = node.args[0].meta["val"].dtype
    return None if dtype == torch.float32 else f"dtype {dtype} input (wasm kernels take float32)"


# ---- 3-d pooling (video models) -------------------------------------------------------------------
def emit_pool3d(ctx: LoweringContext, node, mode: str, kernel=(1, 1, 1), stride=(1, 1, 1), padding=(0, 0, 0),
                dilation=(1, 1, 1), count_include_pad=True, divisor=0, indices=None):
    x = contiguous(ctx, ctx.value(node.args[0]))
    v = ctx.vals[node]
    out = ctx.new_buffer(tuple((v[0] if isinstance(v, tuple) else v).shape), name=node.name)
    d, h, w = x.shape[-3:]
    od, oh, ow = out.shape[-3:]
    planes = 1
    for size in x.shape[:-3]:
        planes *= size
    if out.numel:
        ctx.emit("POOL3D", flops=out.numel * kernel[0] * kernel[1] * kernel[2], mode=ABI.pool[mode],
                 planes=planes, d=d, h=h, w=w, od=od, oh=oh, ow=ow, kd=kernel[0], kh=kernel[1], kw=kernel[2],
                 sd=stride[0], sh=stride[1], sw=stride[2], pd=padding[0], ph=padding[1], pw=padding[2],
                 dd=dilation[0], dh=dilation[1], dw=dilation[2], count_include_pad=int(bool(count_include_pad)),
                 divisor=int(divisor or 0), **{"in": addr(x)}, out=addr(out), indices=addr(indices))
    return out


# ---- the lowerings, one set per rank ----------------------------------------------------------------
def _max_pool_args(a: dict, n: int) -> dict:
    kernel = _ntuple(a["kernel_size"], n)
    return dict(kernel=kernel, stride=_ntuple(a["stride"], n, kernel), padding=_ntuple(a["padding"], n, 0),
                dilation=_ntuple(a["dilation"], n, 1))


def _avg_pool_args(a: dict, n: int) -> dict:
    kernel = _ntuple(a["kernel_size"], n)
    return dict(kernel=kernel, stride=_ntuple(a["stride"], n, kernel), padding=_ntuple(a["padding"], n, 0),
                count_include_pad=a["count_include_pad"], divisor=a["divisor_override"] or 0)


def _register_pools(n: int, kernel: str, emit, max_with_indices, max_values, avg, adaptive_avg) -> None:
    """max (with or without indices), average and adaptive average pooling over n spatial dims."""
    @register(max_with_indices, kernels=[kernel], dtypes=(torch.float32, torch.int64), check=_float_input)
    def _max_pool_with_indices(ctx, node):
        indices = None
        if _indices_used(node):
            indices = ctx.new_buffer(tuple(ctx.vals[node][1].shape), torch.int64, node.name + "_indices")
        return emit(ctx, node, "MAX", indices=indices, **_max_pool_args(ctx.args(node), n)), indices

    @register(max_values, kernels=[kernel])
    def _max_pool(ctx, node):
        return emit(ctx, node, "MAX", **_max_pool_args(ctx.args(node), n))

    @register(avg, kernels=[kernel])
    def _avg_pool(ctx, node):
        return emit(ctx, node, "AVG", **_avg_pool_args(ctx.args(node), n))

    @register(*adaptive_avg, kernels=[kernel])
    def _adaptive_avg_pool(ctx, node):
        return emit(ctx, node, "ADAPTIVE_AVG")


_register_pools(2, "POOL2D", emit_pool, aten.max_pool2d_with_indices.default, aten.max_pool2d.default,
                aten.avg_pool2d.default, (aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default))
_register_pools(3, "POOL3D", emit_pool3d, aten.max_pool3d_with_indices.default, aten.max_pool3d.default,
                aten.avg_pool3d.default, (aten._adaptive_avg_pool3d.default, aten.adaptive_avg_pool3d.default))
