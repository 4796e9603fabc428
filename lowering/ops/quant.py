"""Quantized (int8) ops: PyTorch's quantized_decomposed quantize / dequantize nodes as elementwise
kernels (QUANTIZE, DEQUANTIZE), and the fused int8 linear / conv2d ops that lowering/quant_fuse.py
makes of PT2E's dq -> linear/conv -> [add dq] -> [relu/hardtanh] -> q chains, on the int8 GEMM (QPACK + QGEMM, QCONV2D).

Weights are packed at compile time: int8 rows [c_out, kp] with their zero points subtracted (kp:
K rounded up to the GEMM's 8-deep k blocks, zero padded), the activation zero point folded into a
per-channel int32 term (-x_zp * row sum), and x_scale * w_scale[c] as one float32 per channel.

Imported by lowering.ops.register_int8() only (quantized_decomposed and the custom ops cost ~110 ms
of imports at startup, measured): when a graph first holds quantized_decomposed nodes, by the ops
table, and by the tests."""
from __future__ import annotations

import torch

from ..context import LoweringContext, addr
from ..abi import ABI
from ..plan import TensorRef
from .. import quant_ops  # noqa: F401  (defines twb_quant::linear / conv2d)
from ..quant_fuse import QUANT_DTYPES
from ..registry import ALL_DTYPES, Unsupported, bind, register
from .conv import winograd_fits, winograd_tile_block
from .elementwise import DTYPE_CODE, contiguous

K_BLOCK = ABI.layout["QgemmKBlock"]   # QGEMM's k step (one i32x4.dot_i16x8_s over 8 widened elements)
PANEL = ABI.layout["QgemmCols"]       # columns per QPACK panel


def padded_k(k: int) -> int:
    return (k + K_BLOCK - 1) // K_BLOCK * K_BLOCK


def packed_panels_numel(cols: int, kp: int) -> int:
    """Bytes of QPACK / im2col panels for `cols` columns."""
    return (cols + PANEL - 1) // PANEL * PANEL * kp


def pack_weight(w: torch.Tensor, zero_points: torch.Tensor) -> torch.Tensor:
    """int8 weight [c_out, ...] minus its per-channel zero points -> int8 rows [c_out, kp]."""
    rows = w.reshape(w.shape[0], -1).to(torch.int32) - zero_points.reshape(-1, 1).to(torch.int32)
    if rows.numel() and (rows.min() < -128 or rows.max() > 127):
        raise Unsupported("int8 weight whose values minus zero point leave [-128, 127] (asymmetric "
                          "weights); quantize weights symmetrically (PT2E's default)")
    out = torch.zeros(rows.shape[0], padded_k(rows.shape[1]), dtype=torch.int8)
    out[:, :rows.shape[1]] = rows.to(torch.int8)
    return out


def conv_weight_rows(w: torch.Tensor) -> torch.Tensor:
    """A conv weight [c_out, c_in/g, kh, kw] with its k in QCONV2D's order: (ky, kx, ci) when c_in/g
    is a multiple of 8 (the kernel's channels-last im2col), else (ci, ky, kx)."""
    return w.permute(0, 2, 3, 1) if w.shape[1] % K_BLOCK == 0 else w


def conv_scratch_numel(c_out_g: int, out_pixels: int, kp: int) -> int:
    """Bytes of QCONV2D's scratch: im2col panels widened to int16 (QconvCols pixels a panel, kp int16
    a pixel), then one group's weight rows widened to int16 (in tiles of QconvRows rows)."""
    cols, rows = ABI.layout["QconvCols"], ABI.layout["QconvRows"]
    return 2 * -(-out_pixels // cols) * cols * kp + 2 * -(-c_out_g // rows) * rows * kp


# (QCONV2D_WINO's tile_block comes from the float rule, winograd_tile_block: whole GEMM panels of
# GemmNR tiles, which must be whole int8 panels of QconvCols tiles too)
assert ABI.gemm_nr % ABI.layout["QconvCols"] == 0
QWINO_MAX_CIN = ABI.layout["QwinoMaxCin"]  # QCONV2D_WINO's sums (c_in * 4 * 9 * 255 * 128) must fit in int32


def qwino_scratch_numel(c_in: int, c_out: int, tile_block: int) -> int:
    """Bytes of QCONV2D_WINO's scratch (kernel_abi.def): int16 U [16 chunks][16][4][cp] and V
    [16][tile_block][cp], int32 M [16][co4][tile_block], each of the 16 components 64 bytes apart
    more (QwinoSkewBytes), and 16 bytes of slack."""
    co4 = -(-c_out // ABI.layout["QconvRows"]) * ABI.layout["QconvRows"]
    cp = c_in + c_in % 2
    return 32 * 16 * ABI.layout["QconvRows"] * cp + 32 * tile_block * cp + 64 * co4 * tile_block + 19 * 16 * ABI.layout["QwinoSkewBytes"] + 16


def acc_bias(packed: torch.Tensor, x_zp: int) -> torch.Tensor:
    """-x_zp * sum_k w[c, k]: the activation zero point's share of each channel's accumulator."""
    return (-int(x_zp) * packed.to(torch.int32).sum(1)).to(torch.int32)


def channel_scale(x_scale: float, w_scale: torch.Tensor) -> torch.Tensor:
    """x_scale * w_scale[c], from the float32 values eager multiplies by, rounded once."""
    x32 = torch.tensor(x_scale, dtype=torch.float32).double()
    return (x32 * w_scale.float().double()).float()


REQUANT = ("relu", "out_scale", "out_zp", "out_qmin", "out_qmax", "out_dtype")  # fused ops' argument names


def requant_args(relu: bool, out_scale: float, out_zp: int, out_qmin: int, out_qmax: int,
                 out_dtype: torch.dtype) -> dict:
    """QGEMM / QCONV2D requantization fields; inv_out_scale = 1.0 / scale in double, as eager."""
    quantized = out_dtype != torch.float32
    return dict(relu=int(relu), out_dtype=DTYPE_CODE[out_dtype],
                inv_out_scale=1.0 / out_scale if quantized else 1.0, out_zp=out_zp if quantized else 0,
                qmin=out_qmin if quantized else 0, qmax=out_qmax if quantized else 0)


# ---- quantize / dequantize ------------------------------------------------------------------
def _qd():
    return torch.ops.quantized_decomposed


def _register_qdq() -> None:
    qd = _qd()

    def number_params(node, first: int = 1) -> str | None:
        if not all(isinstance(a, (int, float)) for a in node.args[first:first + 4]):
            return "quantization parameters given as tensors (per-tensor .tensor overloads)"
        return None

    def quantize_check(node):
        if node.args[5] not in QUANT_DTYPES:
            return f"quantize to {node.args[5]} (wasm kernels take uint8/int8)"
        if node.args[0].meta["val"].dtype != torch.float32:
            return "quantize of a non-float32 tensor"
        return number_params(node)

    @register(qd.quantize_per_tensor.default, kernels=["QUANTIZE"], check=quantize_check, dtypes=ALL_DTYPES)
    def _quantize(ctx: LoweringContext, node):
        _, scale, zp, qmin, qmax, dtype = node.args[:6]
        x = contiguous(ctx, ctx.value(node.args[0]))
        out = ctx.out_for(node)
        if out.numel:
            ctx.emit("QUANTIZE", flops=out.numel, n=out.numel, out_dtype=DTYPE_CODE[dtype],
                     inv_scale=1.0 / scale, zp=zp, qmin=qmin, qmax=qmax, **{"in": addr(x)}, out=addr(out))
        return out

    def dequantize_check(node, dtype_index: int):
        if node.args[dtype_index] not in QUANT_DTYPES:
            return "dequantize of a type other than uint8/int8"
        if node.meta["val"].dtype != torch.float32:
            return "dequantize to a type other than float32"
        return None

    def emit_dequantize(ctx, node, outer, channels, inner, scale: TensorRef, zp: TensorRef):
        x = contiguous(ctx, ctx.value(node.args[0]))
        out = ctx.out_for(node)
        if out.numel:
            ctx.emit("DEQUANTIZE", flops=out.numel, outer=outer, channels=channels, inner=inner,
                     in_dtype=DTYPE_CODE[x.dtype], **{"in": addr(x)}, scale=addr(scale), zp=addr(zp),
                     out=addr(out))
        return out

    def per_tensor_check(node):
        return dequantize_check(node, 5) or number_params(node)

    @register(qd.dequantize_per_tensor.default, kernels=["DEQUANTIZE"], check=per_tensor_check, dtypes=ALL_DTYPES)
    def _dequantize_per_tensor(ctx: LoweringContext, node):
        scale, zp = float(node.args[1]), int(node.args[2])
        scale_ref = ctx.scalar(scale)
        zp_ref = ctx.scalar(zp, torch.int32)
        return emit_dequantize(ctx, node, 1, 1, ctx.val(node).numel(), scale_ref, zp_ref)

    def per_channel_check(node):
        return dequantize_check(node, 6)

    @register(qd.dequantize_per_channel.default, kernels=["DEQUANTIZE"], check=per_channel_check, dtypes=ALL_DTYPES)
    def _dequantize_per_channel(ctx: LoweringContext, node):
        x_arg, scales, zps, axis = node.args[:4]
        shape = ctx.val(x_arg).shape
        axis = axis % len(shape)
        outer = 1
        for s in shape[:axis]:
            outer *= s
        inner = 1
        for s in shape[axis + 1:]:
            inner *= s
        scale_ref = contiguous(ctx, ctx.value(scales))
        if scale_ref.dtype != torch.float32:
            raise Unsupported("dequantize_per_channel with non-float32 scales")
        if zps is None:
            zp_ref = ctx.constant(lambda ins: torch.zeros(shape[axis], dtype=torch.int32), (shape[axis],),
                                  torch.int32, f"{node.name}_zp")
        else:
            fold = ctx.const_fn(zps)
            if fold is None:
                raise Unsupported("dequantize_per_channel with zero points computed at run time")
            zp_ref = ctx.constant(lambda ins: fold(ins).to(torch.int32), (shape[axis],), torch.int32,
                                  f"{node.name}_zp")
        return emit_dequantize(ctx, node, outer, shape[axis], inner, scale_ref, zp_ref)


_register_qdq()


# ---- fused int8 linear / conv2d ---------------------------------------------------------------
def _constant(ctx: LoweringContext, arg, what: str):
    fold = ctx.const_fn(arg)
    if fold is None:
        raise Unsupported(f"int8 {what} computed at run time (the int8 kernels pack it at compile time)")
    return fold


def _packed_operands(ctx: LoweringContext, node, x_zp: int):
    """(weight rows, acc_bias, channel scale, bias) constants of a fused node (weights packed once
    per partition, shared by its plans)."""
    a = ctx.args(node)
    x_scale, w_arg, ws_arg, wz_arg, b_arg = (a[k] for k in ("x_scale", "w", "w_scale", "w_zp", "bias"))
    w_fn, ws_fn, wz_fn = (_constant(ctx, a, name) for a, name in
                          ((w_arg, "weight"), (ws_arg, "weight scale"), (wz_arg, "weight zero point")))
    w_val = ctx.val(w_arg)
    c_out = w_val.shape[0]
    k = w_val.numel() // c_out if c_out else 0
    key = ("int8", ctx.structural_key((w_arg, ws_arg, wz_arg)), x_zp, float(x_scale))
    rows = conv_weight_rows if w_val.dim() == 4 else (lambda w: w)
    weight = ctx.shared_constant(key + ("w",), lambda: ctx.constant(
        lambda ins: pack_weight(rows(w_fn(ins)), wz_fn(ins)), (c_out, padded_k(k)), torch.int8, f"{node.name}_w"))
    bias_i32 = ctx.shared_constant(key + ("acc_bias",), lambda: ctx.constant(
        lambda ins: acc_bias(pack_weight(w_fn(ins), wz_fn(ins)), x_zp), (c_out,), torch.int32,
        f"{node.name}_acc_bias"))
    scale = ctx.shared_constant(key + ("scale",), lambda: ctx.constant(
        lambda ins: channel_scale(x_scale, ws_fn(ins)), (c_out,), torch.float32, f"{node.name}_scale"))
    bias = contiguous(ctx, ctx.value(b_arg)) if b_arg is not None else None
    if bias is not None and bias.dtype != torch.float32:
        raise Unsupported("int8 linear/conv with a non-float32 bias")
    return weight, bias_i32, scale, bias, k


def _fused_check(node):
    a = bind(node)
    if a["x"].meta["val"].dtype not in QUANT_DTYPES or a["w"].meta["val"].dtype != torch.int8:
        return "int8 op with activations other than uint8/int8 or weights other than int8"
    if a.get("res") is not None and (a["res"].meta["val"].dtype not in QUANT_DTYPES or a["out_dtype"] == torch.float32):
        return "int8 conv + residual add with a residual other than uint8/int8 or a float32 output"
    return None


def linear_input(ctx: LoweringContext, x_arg, k: int) -> tuple[TensorRef, int]:
    """An int8 linear's activation [m, k] with unit column stride (copied if it has none) and its row
    stride (k for a single row), as QPACK, QDYNPACK and WOLINEAR read it."""
    x = ctx.value(x_arg)
    if x.strides[-1] != 1 and x.shape[-1] > 1:
        x = contiguous(ctx, x)
    return x, (x.strides[0] if x.shape[0] > 1 else k)


@register(torch.ops.twb_quant.linear.default, kernels=["QPACK", "QGEMM"], check=_fused_check, dtypes=ALL_DTYPES,
          notes="PT2E dq -> linear -> [relu] -> [q]")
def _q_linear(ctx: LoweringContext, node):
    a = ctx.args(node)
    x_arg, x_zp = a["x"], a["x_zp"]
    weight, bias_i32, scale, bias, k = _packed_operands(ctx, node, x_zp)
    x, x_row_stride = linear_input(ctx, x_arg, k)
    m, n = ctx.val(node).shape
    kp = weight.shape[1]
    out = ctx.out_for(node)
    if out.numel == 0:
        return out
    packed = ctx.new_buffer((packed_panels_numel(m, kp),), torch.uint8, node.name + "_xpack")
    ctx.emit("QPACK", flops=m * k, cols=m, k=k, kp=kp, **{"in": addr(x)},
             row_stride=x_row_stride, out=addr(packed))
    ctx.emit("QGEMM", flops=2 * m * n * k, rows=n, cols=m, kp=kp, x_dtype=DTYPE_CODE[x.dtype], w=addr(weight),
             x=addr(packed), acc_bias=addr(bias_i32), scale=addr(scale), bias=addr(bias),
             **requant_args(*(a[k] for k in REQUANT)), out=addr(out), out_stride_i=1, out_stride_j=n)
    return out


@register(torch.ops.twb_quant.conv2d.default, kernels=["QCONV2D", "QCONV2D_WINO"], check=_fused_check, dtypes=ALL_DTYPES,
          notes="PT2E dq -> conv2d -> [add dq] -> [relu | hardtanh] -> [q]")
def _q_conv2d(ctx: LoweringContext, node):
    a = ctx.args(node)
    x_arg, x_zp, stride, padding, dilation, groups = (
        a[k] for k in ("x", "x_zp", "stride", "padding", "dilation", "groups"))
    weight, bias_i32, scale, bias, k = _packed_operands(ctx, node, x_zp)
    x = contiguous(ctx, ctx.value(x_arg))
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = ctx.val(a["w"]).shape
    out = ctx.out_for(node)
    oh, ow = out.shape[2:]
    kp = weight.shape[1]
    if out.numel == 0:
        return out
    res = contiguous(ctx, ctx.value(a["res"])) if a["res"] is not None else None
    common = dict(n=n, c_in=c_in, h=h, w=w, c_out=c_out, ph=padding[0], pw=padding[1], oh=oh, ow=ow, kp=kp,
                  x_dtype=DTYPE_CODE[x.dtype], x_zp=x_zp, **{"in": addr(x)}, weight=addr(weight),
                  acc_bias=addr(bias_i32), scale=addr(scale), bias=addr(bias),
                  **requant_args(*(a[k] for k in REQUANT)), out=addr(out), res=addr(res),
                  res_dtype=DTYPE_CODE[res.dtype] if res is not None else 0, res_scale=a["res_scale"],
                  res_zp=a["res_zp"])
    if c_in <= QWINO_MAX_CIN and winograd_fits(ctx, (c_out, c_in // groups, kh, kw), out.shape, stride, dilation,
                                               groups):
        block = winograd_tile_block(n * ((oh + 1) // 2) * ((ow + 1) // 2), c_in)
        scratch = ctx.new_buffer((qwino_scratch_numel(c_in, c_out, block),), torch.uint8, node.name + "_wino")
        ctx.emit("QCONV2D_WINO", flops=2 * n * c_out * oh * ow * k, tile_block=block, scratch=addr(scratch), **common)
        return out
    scratch = ctx.new_buffer((conv_scratch_numel(c_out // groups, oh * ow, kp),), torch.uint8,
                             node.name + "_im2col")
    ctx.emit("QCONV2D", flops=2 * n * c_out * oh * ow * k, groups=groups, kh=kh, kw=kw, sh=stride[0],
             sw=stride[1], dh=dilation[0], dw=dilation[1], scratch=addr(scratch), **common)
    return out
