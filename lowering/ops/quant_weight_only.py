"""twb_quant::weight_only_linear (the op lowering/quant_weight_only.py fuses torchao's weight-only
int8 linears into) and its lowering on WOLINEAR: the int8 weight packed at compile time into panels
of 8 output channels, k-major (the order the kernel's inner loop reads: one 8-byte load per k step,
and the float GEMM's packed-B layout once widened), float32 activations, scale and bias read as they
are. Imported by lowering.quant_weight_only when a graph holds the pattern, and by
lowering.ops.register_int8 with the other int8 lowerings."""
from __future__ import annotations

from typing import Optional

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..registry import ALL_DTYPES, Unsupported, register
from .elementwise import contiguous
from .quant import _constant, linear_input

PANEL = ABI.layout["WoPanel"]  # output channels per packed weight panel
SCRATCH_PANELS = ABI.layout["WoScratchPanels"]  # panels widened to float32 per GEMM call (the scratch)
GEMM_ROWS = ABI.layout["WoGemmRows"]  # rows from which the widen + float GEMM path runs


@torch.library.custom_op("twb_quant::weight_only_linear", mutates_args=())
def weight_only_linear(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor,
                       bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x [M, K] float32, w [N, K] int8, scale [N] float32 -> float32 [M, N]: what the replaced
    t / _to_copy / mm / mul / add nodes compute, in their order (the scale multiplies the sum)."""
    y = torch.mm(x, w.t().to(torch.float32)) * scale
    return y if bias is None else y + bias


@weight_only_linear.register_fake
def _(x, w, scale, bias):
    return x.new_empty((x.shape[0], w.shape[0]))


def pack_panels(w: torch.Tensor) -> torch.Tensor:
    """int8 [n, k] -> [ceil(n / 8), k, 8] int8 (rows past n zero), WOLINEAR's weight layout."""
    n, k = w.shape
    panels = -(-n // PANEL)
    padded = torch.zeros((panels * PANEL, k), dtype=torch.int8)
    padded[:n] = w
    return padded.view(panels, PANEL, k).transpose(1, 2).contiguous()


def _check(node):
    x, w = node.args[0].meta["val"], node.args[1].meta["val"]
    if x.dtype != torch.float32 or w.dtype != torch.int8:
        return "weight-only int8 linear with activations other than float32 or weights other than int8"
    return None


@register(torch.ops.twb_quant.weight_only_linear.default, kernels=["WOLINEAR"], check=_check, dtypes=ALL_DTYPES,
          notes="torchao Int8WeightOnlyConfig: int8 w -> mm -> mul(scale) -> add(bias)")
def _weight_only_linear(ctx: LoweringContext, node):
    x_arg, w_arg, s_arg, b_arg = node.args
    w_fn = _constant(ctx, w_arg, "weight")
    n, k = ctx.val(w_arg).shape
    panels = -(-n // PANEL)
    weight = ctx.shared_constant(("int8 weight-only", ctx.structural_key(w_arg)), lambda: ctx.constant(
        lambda ins: pack_panels(w_fn(ins)), (panels, k, PANEL), torch.int8, f"{node.name}_w"))
    scale = contiguous(ctx, ctx.value(s_arg))
    bias = contiguous(ctx, ctx.value(b_arg)) if b_arg is not None else None
    if bias is not None and bias.dtype != torch.float32 or scale.dtype != torch.float32:
        raise Unsupported("weight-only int8 linear with a non-float32 scale or bias")
    x, x_row_stride = linear_input(ctx, x_arg, k)
    m = ctx.val(node).shape[0]
    out = ctx.out_for(node)
    if out.numel == 0:
        return out
    scratch = ctx.new_buffer((SCRATCH_PANELS * PANEL * k,), torch.float32, node.name + "_widened") \
        if m >= GEMM_ROWS and k > 0 else None
    ctx.emit("WOLINEAR", flops=2 * m * n * k, m=m, n=n, k=k, x_stride=x_row_stride,
             x=addr(x), w=addr(weight), scale=addr(scale), bias=addr(bias), scratch=addr(scratch), out=addr(out))
    return out
