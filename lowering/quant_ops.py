"""The fused int8 ops that lowering/quant_fuse.py puts in place of PT2E's dq -> conv/linear ->
[add dq(r)] -> [relu/hardtanh] -> [q] chains: torch.library custom ops whose eager implementation runs exactly the ops they
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
