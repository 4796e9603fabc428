"""The dynamic int8 linear (lowering/quant_dynamic.py's twb_quant::dynamic_linear) on the int8 GEMM:
QDYNPACK quantizes the float activation with parameters chosen from its range at run time into int16
panels of 4 rows minus its zero point, QGEMM_DYN multiplies them by the weight packed at compile time (int8,
zero points subtracted, in panels of 8 output features with k pairs side by side: kernels_cpp/
quant_dynamic.cpp says why) and writes float32 with the bias fused.

Compile-time constants per weight (shared by a partition's plans): the packed panels and the
per-channel scales in float32. Imported by lowering.ops.register_int8() only."""
from __future__ import annotations

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..quant_dynamic import dynamic_linear  # noqa: F401  (defines twb_quant::dynamic_linear)
from ..quant_fuse import QUANT_DTYPES
from ..registry import ALL_DTYPES, Unsupported, register
from .elementwise import contiguous
from .quant import _constant, linear_input, pack_weight

PANEL_ROWS = ABI.layout["QdynFeatures"]   # output features per weight panel
PANEL_TOKENS = ABI.layout["QdynTokens"]   # activation rows per QDYNPACK panel


def pair_k(k: int) -> int:
    """k rounded up to a whole number of the GEMM's k pairs."""
    return k + k % 2


def pack_dynamic_weight(w: torch.Tensor, zero_points: torch.Tensor) -> torch.Tensor:
    """int8 weight [n, k] minus its per-channel zero points -> QGEMM_DYN's panels, flat int8
    [ceil(n/8)][kp/2][8][2] (rows past n and k past k zero)."""
    n, k = w.shape
    kp = pair_k(k)
    rows = torch.zeros(-(-n // PANEL_ROWS) * PANEL_ROWS, kp, dtype=torch.int8)
    rows[:n, :k] = pack_weight(w, zero_points)[:, :k]
    return rows.view(-1, PANEL_ROWS, kp // 2, 2).permute(0, 2, 1, 3).contiguous().view(-1)


def _check(node):
    x, w = node.args[0].meta["val"], node.args[5].meta["val"]
    if x.dtype != torch.float32 or w.dtype != torch.int8 or node.args[4] not in QUANT_DTYPES:
        return "dynamic int8 linear with activations other than float32 or weights other than int8"
    if x.shape[-1] == 0:
        return "dynamic int8 linear over k = 0 (choose_qparams of an empty tensor)"
    return None


@register(torch.ops.twb_quant.dynamic_linear.default, kernels=["QDYNPACK", "QGEMM_DYN"], check=_check,
          dtypes=ALL_DTYPES, notes="PT2E dynamic: choose_qparams -> q -> dq -> linear")
def _dynamic_linear(ctx: LoweringContext, node):
    x_arg, qmin, qmax, eps, _dtype, w_arg, ws_arg, wz_arg, b_arg = node.args  # (the dtype only sets qmin, qmax)
    w_fn, ws_fn, wz_fn = (_constant(ctx, a, name) for a, name in
                          ((w_arg, "weight"), (ws_arg, "weight scale"), (wz_arg, "weight zero point")))
    n, k = ctx.val(w_arg).shape
    kp = pair_k(k)
    key = ("int8 dynamic", ctx.structural_key((w_arg, ws_arg, wz_arg)))
    weight = ctx.shared_constant(key + ("w",), lambda: ctx.constant(
        lambda ins: pack_dynamic_weight(w_fn(ins), wz_fn(ins)), (-(-n // PANEL_ROWS) * PANEL_ROWS * kp,), torch.int8,
        f"{node.name}_w"))
    w_scale = ctx.shared_constant(key + ("w_scale",), lambda: ctx.constant(
        lambda ins: ws_fn(ins).float(), (n,), torch.float32, f"{node.name}_w_scale"))
    bias = contiguous(ctx, ctx.value(b_arg)) if b_arg is not None else None
    if bias is not None and bias.dtype != torch.float32:
        raise Unsupported("dynamic int8 linear with a non-float32 bias")
    x, x_row_stride = linear_input(ctx, x_arg, k)
    m = ctx.val(node).shape[0]
    out = ctx.out_for(node)
    if out.numel == 0:
        return out
    packed = ctx.new_buffer((-(-m // PANEL_TOKENS) * PANEL_TOKENS * kp,), torch.int16, node.name + "_xq")
    qparams = ctx.new_buffer((2,), torch.int32, node.name + "_qparams")  # [scale float32, zp int32]
    ctx.emit("QDYNPACK", flops=3 * m * k, cols=m, k=k, kp=kp, row_stride=x_row_stride,
             qmin=qmin, qmax=qmax, eps=eps, **{"in": addr(x)}, qparams=addr(qparams), out=addr(packed))
    ctx.emit("QGEMM_DYN", flops=2 * m * n * k, rows=n, cols=m, kp=kp, w=addr(weight), x=addr(packed),
             qparams=addr(qparams), w_scale=addr(w_scale), bias=addr(bias), out=addr(out))
    return out
