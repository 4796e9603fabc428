"""The fused int8 ops that lowering/quant_fuse.py puts in place of PT2E's dq -> conv/linear ->
[add dq(r)] -> [relu/hardtanh] -> [q] chains, and lowering/quant_fuse_between.py in place of the
pool / add / requantize chains between them: torch.library custom ops whose eager implementation runs exactly the ops they
replace, so a fused node that cannot run in wasm (say its weight is not a constant) runs in eager
with eager's numbers. (Defining them costs ~45 ms: imported only for quantized graphs.)"""
from __future__ import annotations

from typing import Optional

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers quantized_decomposed)

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed
_QRANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127)}


def _finish(y: torch.Tensor, relu: bool, out_scale: float, out_zp: int, out_qmin: int, out_qmax: int,
            out_dtype: torch.dtype) -> torch.Tensor:
    if relu:
        y = torch.relu(y)
    if out_dtype == torch.float32:
        return y
    return qd.quantize_per_tensor.default(y, out_scale, out_zp, out_qmin, out_qmax, out_dtype)


def _dequantized(x, x_scale, x_zp, w, w_scale, w_zp):
    lo, hi = _QRANGE[x.dtype]
    xf = qd.dequantize_per_tensor.default(x, x_scale, x_zp, lo, hi, x.dtype)
    wf = qd.dequantize_per_channel.default(w, w_scale, w_zp, 0, -128, 127, torch.int8)
    return xf, wf


@torch.library.custom_op("twb_quant::linear", mutates_args=())
def q_linear(x: torch.Tensor, x_scale: float, x_zp: int, w: torch.Tensor, w_scale: torch.Tensor,
             w_zp: torch.Tensor, bias: Optional[torch.Tensor], relu: bool, out_scale: float, out_zp: int,
             out_qmin: int, out_qmax: int, out_dtype: torch.dtype) -> torch.Tensor:
    """x [M, K] uint8/int8 (per-tensor), w [N, K] int8 (per-channel) -> [M, N] of out_dtype
    (float32: no output quantization): what the replaced dq/addmm/relu/q nodes compute."""
    xf, wf = _dequantized(x, x_scale, x_zp, w, w_scale, w_zp)
    y = torch.mm(xf, wf.t()) if bias is None else torch.addmm(bias, xf, wf.t())
    return _finish(y, relu, out_scale, out_zp, out_qmin, out_qmax, out_dtype)


@q_linear.register_fake
def _(x, x_scale, x_zp, w, w_scale, w_zp, bias, relu, out_scale, out_zp, out_qmin, out_qmax, out_dtype):
    return x.new_empty((x.shape[0], w.shape[0]), dtype=out_dtype)


@torch.library.custom_op("twb_quant::conv2d", mutates_args=())
def q_conv2d(x: torch.Tensor, x_scale: float, x_zp: int, w: torch.Tensor, w_scale: torch.Tensor,
             w_zp: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int], padding: list[int],
             dilation: list[int], groups: int, relu: bool, out_scale: float, out_zp: int, out_qmin: int,
             out_qmax: int, out_dtype: torch.dtype, res: Optional[torch.Tensor] = None, res_scale: float = 1.0,
             res_zp: int = 0) -> torch.Tensor:
    """NCHW x uint8/int8 (per-tensor), w [c_out, c_in/groups, kh, kw] int8 (per-channel) -> NCHW
    of out_dtype, plus dequantize(res) (uint8/int8, the output's shape) before relu and
    requantization if given: what the replaced dq/convolution/add/relu/q nodes compute."""
    xf, wf = _dequantized(x, x_scale, x_zp, w, w_scale, w_zp)
    y = aten.convolution.default(xf, wf, bias, stride, padding, dilation, False, [0, 0], groups)
    if res is not None:
        y = y + qd.dequantize_per_tensor.default(res, res_scale, res_zp, *_QRANGE[res.dtype], res.dtype)
    return _finish(y, relu, out_scale, out_zp, out_qmin, out_qmax, out_dtype)


@q_conv2d.register_fake
def _(x, x_scale, x_zp, w, w_scale, w_zp, bias, stride, padding, dilation, groups, relu, out_scale, out_zp,
      out_qmin, out_qmax, out_dtype, res=None, res_scale=1.0, res_zp=0):
    n, _, h, wd = x.shape
    kh, kw = w.shape[2:]
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return x.new_empty((n, w.shape[0], oh, ow), dtype=out_dtype)


# ---- the int8 ops between convolutions (lowering/quant_fuse_between.py) ---------------------------
def _dq(x: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
    return qd.dequantize_per_tensor.default(x, scale, zp, *_QRANGE[x.dtype], x.dtype)


@torch.library.custom_op("twb_quant::requantize", mutates_args=())
def q_requantize(x: torch.Tensor, x_scale: float, x_zp: int, out_scale: float, out_zp: int, out_qmin: int,
                 out_qmax: int, out_dtype: torch.dtype) -> torch.Tensor:
    """quantize(dequantize(x)) with other output parameters (a concat input, a flatten between two
    observers)."""
    return _finish(_dq(x, x_scale, x_zp), False, out_scale, out_zp, out_qmin, out_qmax, out_dtype)


@torch.library.custom_op("twb_quant::add", mutates_args=())
def q_add(a: torch.Tensor, a_scale: float, a_zp: int, b: torch.Tensor, b_scale: float, b_zp: int, relu: bool,
          out_scale: float, out_zp: int, out_qmin: int, out_qmax: int, out_dtype: torch.dtype) -> torch.Tensor:
    """quantize([relu](dequantize(a) + dequantize(b))), broadcasting a and b."""
    return _finish(_dq(a, a_scale, a_zp) + _dq(b, b_scale, b_zp), relu, out_scale, out_zp, out_qmin, out_qmax,
                   out_dtype)


@torch.library.custom_op("twb_quant::pool2d", mutates_args=())
def q_pool2d(x: torch.Tensor, x_scale: float, x_zp: int, mode: str, kernel_size: list[int], stride: list[int],
             padding: list[int], dilation: list[int], ceil_mode: bool, count_include_pad: bool, divisor: int,
             output_size: list[int], out_scale: float, out_zp: int, out_qmin: int, out_qmax: int,
             out_dtype: torch.dtype) -> torch.Tensor:
    """quantize(pool(dequantize(x))), pool by mode: "max" (max_pool2d), "avg" (avg_pool2d; divisor 0:
    none) or "adaptive_avg" (adaptive_avg_pool2d to output_size; also a mean over H and W)."""
    xf = _dq(x, x_scale, x_zp)
    if mode == "max":
        y = aten.max_pool2d_with_indices.default(xf, kernel_size, stride, padding, dilation, ceil_mode)[0]
    elif mode == "avg":
        y = aten.avg_pool2d.default(xf, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor or None)
    else:
        y = aten._adaptive_avg_pool2d.default(xf, output_size)
    return _finish(y, False, out_scale, out_zp, out_qmin, out_qmax, out_dtype)


# (Every op above has a meta implementation: the eager code computes the fake result too.)
q_requantize.register_fake(q_requantize._init_fn)
q_add.register_fake(q_add._init_fn)
q_pool2d.register_fake(q_pool2d._init_fn)
