"""The int8 kernels (QUANTIZE, DEQUANTIZE, QPACK, QGEMM, QCONV2D) against PyTorch's own
quantized_decomposed ops, at awkward shapes (K, N, M not multiples of 4/8/16, size 1), activation
zero points 0 / 128 (uint8) and -3 (int8), per-channel and per-tensor weight scales, with and
without bias and ReLU, float32 and uint8/int8 outputs; on 1 thread, and on 2 threads at shapes large
enough for the kernels to split their work (the small ones run inline whatever the thread count).

Tolerances:
- QUANTIZE, DEQUANTIZE, QPACK: exact (the same float32 operations as eager, in the same order).
- The integer accumulator of QGEMM / QCONV2D: exact (checked with scale 1, no bias, float output).
- Requantized integer outputs: within 1 LSB. Eager sums float products (x - zx) * sx * w * sw in
  some order; we sum exact integers and multiply once by sx * sw. The two y differ by float
  rounding only (~1e-6 relative), which moves round(y / scale) across a half-integer boundary at
  most once: 1 LSB, never 2.
- Float outputs: dot_rel(K) (tests/kernels/kernel_testing.py: float32 dot-product error bound)
  relative to sum |x_f * w_f| + |bias|, the error of eager's float dot product (ours is smaller)."""
from __future__ import annotations

import pytest
import torch

from kernels.kernel_testing import assert_exact, dot_rel
from torch_wasm_backend.lowering.ops.elementwise import DTYPE_CODE
from torch_wasm_backend.runtime import get_runtime
from torch_wasm_backend.lowering.ops.conv import winograd_tile_block
from torch_wasm_backend.lowering.ops.quant import (acc_bias, channel_scale, conv_scratch_numel, conv_weight_rows,
                                                   pack_weight, packed_panels_numel, padded_k, qwino_scratch_numel,
                                                   requant_args)

qd = torch.ops.quantized_decomposed
GUARD = 16
# (activation dtype, zero point): uint8 centred / at 0, int8 off-centre.
ACTS = [(torch.uint8, 128), (torch.uint8, 0), (torch.int8, -3)]
RANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127)}


def _put_out(s, numel: int, dtype: torch.dtype, fill: int) -> int:
    """An output of numel elements, every byte `fill`, between zero guard bands; returns its offset."""
    size = torch.tensor([], dtype=dtype).element_size()
    body = torch.full((numel * size,), fill, dtype=torch.uint8)
    guard = torch.zeros(GUARD * size, dtype=torch.uint8)
    return s.put(torch.cat([guard, body, guard])) + GUARD * size


def _read_out(s, ptr: int, numel: int, dtype: torch.dtype) -> torch.Tensor:
    size = torch.tensor([], dtype=dtype).element_size()
    raw = s.get(ptr - GUARD * size, ((numel + 2 * GUARD) * size,), torch.uint8)
    assert not raw[:GUARD * size].any() and not raw[-GUARD * size:].any(), "kernel wrote outside its output"
    return raw[GUARD * size:-GUARD * size].view(dtype)


def _run_twice(s, numel, dtype, run) -> torch.Tensor:
    """Runs a kernel into an output pre-filled with 0x00 and then with 0xA5 bytes: both must agree,
    so every element was written (a pre-fill cannot pass for a result)."""
    results = []
    for fill in (0x00, 0xA5):
        ptr = _put_out(s, numel, dtype, fill)
        run(ptr)
        results.append(_read_out(s, ptr, numel, dtype).clone())
    assert torch.equal(results[0].view(torch.uint8), results[1].view(torch.uint8)), "kernel left elements unwritten"
    return results[0]


def _random_q(shape, dtype) -> torch.Tensor:
    lo, hi = RANGE[dtype]
    return torch.randint(lo, hi + 1, shape, dtype=torch.int32).to(dtype)


# ---- QUANTIZE / DEQUANTIZE -------------------------------------------------------------------
@pytest.mark.parametrize("dtype,zp", ACTS)
@pytest.mark.parametrize("n", [1, 3, 4, 5, 17, 100])
def test_quantize(s1, dtype, zp, n):
    scale = 0.0173
    x = torch.randn(n) * 2
    x[::3] = (torch.randint(-200, 200, x[::3].shape) + 0.5) * scale  # exact halves: round half to even
    x[::7] *= 100  # far outside the range: clamped
    lo, hi = RANGE[dtype]
    ref = qd.quantize_per_tensor.default(x, scale, zp, lo, hi, dtype)
    x_ptr = s1.put(x)
    got = _run_twice(s1, n, dtype, lambda out: s1.record(
        "QUANTIZE", n=n, out_dtype=DTYPE_CODE[dtype], inv_scale=1.0 / scale, zp=zp, qmin=lo, qmax=hi,
        **{"in": x_ptr}, out=out))
    assert torch.equal(got, ref), (got, ref)


@pytest.mark.parametrize("dtype,zp", ACTS)
@pytest.mark.parametrize("shape,axis", [((7,), None), ((1, 5, 3), None), ((5, 3, 2, 3), 0), ((2, 3, 5), 1),
                                        ((3, 1), 1)])
def test_dequantize(s1, dtype, zp, shape, axis):
    x = _random_q(shape, dtype)
    if axis is None:  # per tensor
        scale = 0.031
        ref = qd.dequantize_per_tensor.default(x, scale, zp, *RANGE[dtype], dtype)
        scales, zps, outer, channels, inner = torch.tensor([scale]), torch.tensor([zp]), 1, 1, x.numel()
    else:
        channels = shape[axis]
        scales = torch.rand(channels) * 0.1 + 0.001
        zps = torch.randint(-3, 4, (channels,)) + zp
        ref = qd.dequantize_per_channel.default(x, scales, zps, axis, *RANGE[dtype], dtype)
        outer = int(torch.tensor(shape[:axis]).prod())
        inner = int(torch.tensor(shape[axis + 1:]).prod())
    ptrs = dict(scale=s1.put(scales.float()), zp=s1.put(zps.to(torch.int32)), **{"in": s1.put(x)})
    got = _run_twice(s1, x.numel(), torch.float32, lambda out: s1.record(
        "DEQUANTIZE", outer=outer, channels=channels, inner=inner, in_dtype=DTYPE_CODE[dtype], out=out, **ptrs))
    assert_exact(got.reshape(shape), ref)


# ---- QPACK -------------------------------------------------------------------------------------
def _panels(x: torch.Tensor, kp: int) -> torch.Tensor:
    """QPACK's layout (kernel_abi.def): ceil(cols/4) panels of [kp/8][4][8], zero padded."""
    cols, k = x.shape
    padded = torch.zeros((cols + 3) // 4 * 4, kp, dtype=x.dtype)
    padded[:cols, :k] = x
    return padded.reshape(-1, 4, kp // 8, 8).permute(0, 2, 1, 3).reshape(-1)


@pytest.mark.parametrize("cols,k", [(1, 1), (3, 7), (4, 8), (5, 9), (9, 33)])
def test_qpack(s1, cols, k):
    row_stride = k + 3  # rows of a wider buffer: the pad columns must not be packed
    x = _random_q((cols, row_stride), torch.uint8)
    kp = padded_k(k)
    x_ptr = s1.put(x)
    numel = packed_panels_numel(cols, kp)
    got = _run_twice(s1, numel, torch.uint8, lambda out: s1.record(
        "QPACK", cols=cols, k=k, kp=kp, **{"in": x_ptr}, row_stride=row_stride, out=out))
    assert torch.equal(got, _panels(x[:, :k], kp))


# ---- QGEMM (linear) ----------------------------------------------------------------------------
def _weights(c_out: int, per_channel: bool, shape_rest=()):
    w = _random_q((c_out, *shape_rest), torch.int8)
    w_scale = torch.rand(c_out) * 0.02 + 0.001 if per_channel else torch.full((c_out,), 0.0123)
    return w, w_scale, torch.zeros(c_out, dtype=torch.int64)  # symmetric int8: PT2E's weights


def _outputs(relu: bool):
    """(out_scale, out_zp, qmin, qmax, dtype) cases: float32 output, uint8 and int8 outputs."""
    return [(1.0, 0, 0, 0, torch.float32), (0.05, 0 if relu else 100, 0, 255, torch.uint8),
            (0.04, -5, -128, 127, torch.int8)]


def _check(got: torch.Tensor, ref: torch.Tensor, magnitude: torch.Tensor, k: int) -> None:
    if ref.dtype == torch.float32:
        bound = dot_rel(k) * magnitude
        assert ((got.double() - ref.double()).abs() <= bound).all(), (got, ref)
    else:
        diff = (got.to(torch.int32) - ref.to(torch.int32)).abs()
        assert diff.max() <= 1, f"{int((diff > 1).sum())} outputs off by more than 1 LSB (max {int(diff.max())})"


def _run_qgemm(s, x, x_dtype, x_zp, x_scale, w, w_scale, w_zp, bias, relu, out) -> torch.Tensor:
    m, k = x.shape
    n = w.shape[0]
    packed = pack_weight(w, w_zp)
    kp = packed.shape[1]
    x_panels = s.put(_panels(x, kp))
    ptrs = dict(w=s.put(packed), x=x_panels, acc_bias=s.put(acc_bias(packed, x_zp)),
                scale=s.put(channel_scale(x_scale, w_scale)), bias=s.put(bias) if bias is not None else 0)
    got = _run_twice(s, m * n, out[-1], lambda o: s.record(
        "QGEMM", rows=n, cols=m, kp=kp, x_dtype=DTYPE_CODE[x_dtype], **ptrs, **requant_args(relu, *out), out=o,
        out_stride_i=1, out_stride_j=n))
    return got.reshape(m, n)


@pytest.mark.parametrize("x_dtype,x_zp", ACTS)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 5, 7), (3, 2, 8), (5, 3, 9), (4, 7, 33), (9, 16, 20)])
def test_qgemm_accumulator_exact(s1, x_dtype, x_zp, m, n, k):
    """scale 1, no bias, float output: y is the integer accumulator itself, which must be exact."""
    x = _random_q((m, k), x_dtype)
    w, _, w_zp = _weights(n, True, (k,))
    got = _run_qgemm(s1, x, x_dtype, x_zp, 1.0, w, torch.ones(n), w_zp, None, False, _outputs(False)[0])
    exact = (x.to(torch.int64) - x_zp) @ w.to(torch.int64).t()
    assert torch.equal(got.to(torch.int64), exact)


@pytest.mark.parametrize("x_dtype,x_zp", ACTS)
@pytest.mark.parametrize("m,n,k", [(1, 5, 7), (5, 3, 9), (4, 7, 33), (9, 17, 20)])
@pytest.mark.parametrize("per_channel,with_bias,relu", [(True, True, False), (True, False, True), (False, True, True)])
def test_qgemm_against_pytorch(s1, x_dtype, x_zp, m, n, k, per_channel, with_bias, relu):
    x_scale = 0.021
    x = _random_q((m, k), x_dtype)
    w, w_scale, w_zp = _weights(n, per_channel, (k,))
    bias = torch.randn(n) if with_bias else None
    xf, wf = x.float().sub(x_zp) * x_scale, w.float() * w_scale[:, None]
    magnitude = xf.abs() @ wf.abs().t() + (bias.abs() if bias is not None else 0)
    for out in _outputs(relu):
        ref = torch.ops.twb_quant.linear(x, x_scale, x_zp, w, w_scale, w_zp, bias, relu, *out)
        got = _run_qgemm(s1, x, x_dtype, x_zp, x_scale, w, w_scale, w_zp, bias, relu, out)
        _check(got, ref, magnitude, k)


# ---- QCONV2D -----------------------------------------------------------------------------------
CONVS = [  # (n, c_in, h, w, c_out, groups, kh, kw, stride, padding, dilation)
    (1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1),
    (2, 3, 7, 5, 5, 1, 3, 3, 1, 1, 1),
    (1, 5, 9, 6, 3, 1, 3, 2, 2, 1, 1),
    (1, 4, 8, 7, 6, 2, 3, 3, 1, 2, 2),
    (2, 6, 5, 5, 6, 6, 3, 3, 1, 1, 1),   # depthwise (direct kernel), width not a multiple of 4
    (1, 5, 11, 9, 5, 5, 3, 3, 1, 1, 1),  # depthwise, interior vector loads and border lanes
    (1, 4, 9, 10, 4, 4, 3, 3, 2, 1, 1),  # depthwise, strided
    (1, 3, 8, 9, 3, 3, 3, 2, 1, 2, 2),   # depthwise, dilated, wide padding, non-square kernel
    (1, 3, 7, 37, 3, 3, 3, 3, 2, 1, 1),  # depthwise, stride 2 over >= 16 columns (vector row split), odd pad
    (1, 2, 6, 34, 2, 2, 5, 5, 2, 2, 1),  # depthwise 5x5, stride 2, even pad
    (1, 2, 5, 21, 2, 2, 3, 3, 1, 0, 1),  # depthwise, no padding, 8-pixel blocks and a tail
    (1, 2, 7, 9, 2, 2, 3, 3, 3, 1, 1),   # depthwise, stride 3: the general kernel
    (1, 16, 6, 6, 9, 1, 1, 1, 1, 0, 1),  # pointwise; c_in/groups a multiple of 8: channels-last im2col
    (1, 16, 7, 5, 4, 2, 3, 3, 2, 1, 1),  # 8 channels per group, channels-last, strided
    (2, 24, 5, 6, 4, 1, 3, 2, 1, 2, 2),  # channels-last, dilated, padding wider than the kernel reach
    # the pixels-in-lanes GEMM's edges: 8-column panels, 4-row tiles, k pairs, 512-column blocks
    (1, 1, 5, 7, 1, 1, 1, 1, 1, 0, 1),     # K = 1 (one k pair, zero partner), M = 1, 35 columns
    (1, 3, 25, 23, 7, 1, 1, 1, 1, 0, 1),   # pointwise, K odd, 575 columns: 2 blocks, rows read in place
    (1, 16, 13, 15, 6, 1, 1, 1, 2, 0, 1),  # pointwise, stride 2 (ResNet's downsample)
    (1, 5, 30, 23, 9, 1, 3, 3, 1, 1, 1),   # 3x3, K = 45, 690 columns: 2 blocks
    (1, 12, 9, 11, 6, 3, 1, 1, 1, 0, 1),   # grouped pointwise, 4 channels per group
    # depthwise rows narrower than 32 pixels: widened by vector loads that read into the next row (or
    # byte by byte at the input's end), each row's last block of < 8 pixels requantized as a full one
    (1, 3, 7, 7, 3, 3, 3, 3, 1, 1, 1),     # MobileNetV2's 7x7 planes
    (1, 5, 14, 13, 5, 5, 3, 3, 2, 1, 1),   # stride 2, odd width
    (1, 2, 9, 27, 2, 2, 3, 3, 2, 1, 1),    # stride 2, one 16-byte load and a part of the next
    (1, 17, 6, 6, 40, 1, 1, 1, 1, 0, 1),   # pointwise, full 8-pixel panels and a 4-pixel tail, 10 row tiles
    (1, 2, 5, 23, 2, 2, 3, 3, 1, 1, 1),    # depthwise, rows of 23: two 8-pixel blocks and a 7-pixel one
    # depthwise by tap pairs two output rows at a time: an odd last row alone, 5x5 stride 1 (vertical
    # pairs of rows 1-2 and 3-4), rows of 41 (5 blocks and a 1-pixel tail), zero padding at one end
    (1, 3, 11, 19, 3, 3, 5, 5, 1, 2, 1),
    (1, 2, 9, 41, 2, 2, 3, 3, 1, 1, 1),
    (1, 2, 10, 12, 2, 2, 3, 3, 2, 0, 1),
    (1, 2, 12, 17, 2, 2, 5, 5, 2, 1, 1),
    # planes narrower than a block: a whole 8-byte store from one row would reach past the plane
    # (into the next channel's, or past the output): 2x2, 3x1, 1x3, stride 2 into 2x2, 5x5 into 2x3
    (1, 3, 2, 2, 3, 3, 3, 3, 1, 1, 1),
    (1, 2, 3, 1, 2, 2, 3, 3, 1, 1, 1),
    (1, 2, 1, 3, 2, 2, 3, 3, 1, 1, 1),
    (1, 3, 4, 4, 3, 3, 3, 3, 2, 1, 1),
    (1, 2, 2, 3, 2, 2, 5, 5, 1, 2, 1),
    # stride-2 im2col rows gathered 16 columns at a time (the even bytes of 32), pads at both ends
    (1, 3, 13, 71, 5, 1, 7, 7, 2, 3, 1),   # ResNet's 7x7 stem at an odd width
    (1, 3, 9, 66, 4, 1, 3, 3, 2, 1, 1),    # MobileNet's 3x3 stem at an even width
    (1, 2, 9, 70, 3, 1, 3, 3, 2, 2, 2),    # dilated
]


def _run_qconv(s, x, x_dtype, x_zp, x_scale, w, w_scale, w_zp, bias, cfg, relu, out, res=(None, 1.0, 0)):
    n, c_in, h, wd, c_out, groups, kh, kw, st, pad, dil = cfg
    oh = (h + 2 * pad - dil * (kh - 1) - 1) // st + 1
    ow = (wd + 2 * pad - dil * (kw - 1) - 1) // st + 1
    packed = pack_weight(conv_weight_rows(w), w_zp)
    kp = packed.shape[1]
    ptrs = dict(weight=s.put(packed), acc_bias=s.put(acc_bias(packed, x_zp)),
                scale=s.put(channel_scale(x_scale, w_scale)), bias=s.put(bias) if bias is not None else 0,
                scratch=s.alloc(conv_scratch_numel(c_out // groups, oh * ow, kp)), **{"in": s.put(x)})
    got = _run_twice(s, n * c_out * oh * ow, out[-1], lambda o: s.record(
        "QCONV2D", n=n, c_in=c_in, h=h, w=wd, c_out=c_out, groups=groups, kh=kh, kw=kw, sh=st, sw=st, ph=pad,
        pw=pad, dh=dil, dw=dil, oh=oh, ow=ow, kp=kp, x_dtype=DTYPE_CODE[x_dtype], x_zp=x_zp, **ptrs,
        **requant_args(relu, *out), out=o, res=s.put(res[0]) if res[0] is not None else 0,
        res_dtype=DTYPE_CODE[res[0].dtype] if res[0] is not None else 0, res_scale=res[1], res_zp=res[2]))
    return got.reshape(n, c_out, oh, ow)


def _conv_inputs(cfg, x_dtype, per_channel=True):
    n, c_in, h, wd, c_out, groups, kh, kw = cfg[:8]
    x = _random_q((n, c_in, h, wd), x_dtype)
    w, w_scale, w_zp = _weights(c_out, per_channel, (c_in // groups, kh, kw))
    return x, w, w_scale, w_zp


@pytest.mark.parametrize("x_dtype,x_zp", ACTS + [(torch.uint8, 255)])  # (255: the padding taps at the top)
@pytest.mark.parametrize("cfg", CONVS, ids=str)
def test_qconv2d_accumulator_exact(s1, x_dtype, x_zp, cfg):
    """scale 1, no bias, float output: the accumulator, padding taps included (they read x_zp)."""
    x, w, _, w_zp = _conv_inputs(cfg, x_dtype)
    got = _run_qconv(s1, x, x_dtype, x_zp, 1.0, w, torch.ones(w.shape[0]), w_zp, None, cfg, False,
                     _outputs(False)[0])
    st, pad, dil, groups = cfg[8], cfg[9], cfg[10], cfg[5]
    exact = torch.nn.functional.conv2d((x.double() - x_zp), w.double(), None, st, pad, dil, groups)
    assert torch.equal(got.double(), exact)


@pytest.mark.parametrize("x_dtype,x_zp", ACTS)
@pytest.mark.parametrize("cfg", CONVS, ids=str)
@pytest.mark.parametrize("per_channel,relu", [(True, True), (False, False)])
def test_qconv2d_against_pytorch(s1, x_dtype, x_zp, cfg, per_channel, relu):
    x_scale = 0.017
    x, w, w_scale, w_zp = _conv_inputs(cfg, x_dtype, per_channel)
    bias = torch.randn(w.shape[0])
    st, pad, dil, groups = cfg[8], cfg[9], cfg[10], cfg[5]
    xf, wf = (x.float() - x_zp) * x_scale, w.float() * w_scale[:, None, None, None]
    magnitude = torch.nn.functional.conv2d(xf.abs(), wf.abs(), bias.abs(), st, pad, dil, groups)
    k = w[0].numel()
    for out in _outputs(relu):
        ref = torch.ops.twb_quant.conv2d(x, x_scale, x_zp, w, w_scale, w_zp, bias, [st, st], [pad, pad],
                                         [dil, dil], groups, relu, *out)
        got = _run_qconv(s1, x, x_dtype, x_zp, x_scale, w, w_scale, w_zp, bias, cfg, relu, out)
        _check(got, ref, magnitude, k)


# The 8-pixel requantization (quant.cpp's store8): depthwise rows with 8-pixel blocks and a tail, stride
# 2 over a wide row, and pixels-in-lanes panels over two column blocks.
NO_BIAS_CONVS = [CONVS[8], CONVS[10], CONVS[18]]


@pytest.mark.parametrize("x_dtype,x_zp", ACTS)
@pytest.mark.parametrize("cfg", NO_BIAS_CONVS, ids=str)
def test_qconv2d_without_bias_against_pytorch(s1, x_dtype, x_zp, cfg):
    """No bias: the full-tile path adds a 0.0 bias instead (it changes a -0.0 to +0.0 only, which
    quantizes alike), so quantized outputs stay within 1 LSB of eager's as with a bias."""
    x_scale = 0.017
    x, w, w_scale, w_zp = _conv_inputs(cfg, x_dtype)
    st, pad, dil, groups = cfg[8], cfg[9], cfg[10], cfg[5]
    xf, wf = (x.float() - x_zp) * x_scale, w.float() * w_scale[:, None, None, None]
    magnitude = torch.nn.functional.conv2d(xf.abs(), wf.abs(), None, st, pad, dil, groups)
    for relu in (False, True):
        for out in _outputs(relu)[1:]:   # quantized outputs: the 8-pixel path's
            ref = torch.ops.twb_quant.conv2d(x, x_scale, x_zp, w, w_scale, w_zp, None, [st, st], [pad, pad],
                                             [dil, dil], groups, relu, *out)
            got = _run_qconv(s1, x, x_dtype, x_zp, x_scale, w, w_scale, w_zp, None, cfg, relu, out)
            _check(got, ref, magnitude, w[0].numel())


# The pixels-in-lanes GEMM's shapes: tile edges, K odd, two column blocks, groups.
SPLIT_TILE_CONVS = [CONVS[1], CONVS[2], CONVS[13], CONVS[15], CONVS[16], CONVS[18], CONVS[19]]


@pytest.mark.parametrize("cfg", SPLIT_TILE_CONVS, ids=str)
def test_qconv2d_split_tiles_equal_inlined(s1, cfg):
    """set_qconv_split_tiles (the JS loader's choice: each tile a function of its own) runs the same
    arithmetic as the inlined default: outputs equal bit for bit, float32 and quantized."""
    x_dtype, x_zp, x_scale = torch.uint8, 128, 0.017
    x, w, w_scale, w_zp = _conv_inputs(cfg, x_dtype)
    bias = torch.randn(w.shape[0])
    runtime = get_runtime(2)[0]
    for out in _outputs(False):
        got = {}
        for split in (False, True):
            runtime.set_qconv_split_tiles(split)
            try:
                got[split] = _run_qconv(s1, x, x_dtype, x_zp, x_scale, w, w_scale, w_zp, bias, cfg, False, out)
            finally:
                runtime.set_qconv_split_tiles(False)
        assert torch.equal(got[False], got[True])


RESIDUAL_CONVS = [CONVS[1], CONVS[4], CONVS[5], CONVS[8], CONVS[10],  # im2col, depthwise, channels-last
                  CONVS[20], CONVS[21], CONVS[23]]  # depthwise tails; pointwise 8-pixel panels (store8's residual)


@pytest.mark.parametrize("x_dtype,x_zp", ACTS)
@pytest.mark.parametrize("cfg", RESIDUAL_CONVS, ids=str)
@pytest.mark.parametrize("res_dtype,res_zp", [(torch.uint8, 0), (torch.uint8, 128), (torch.int8, -3)])
def test_qconv2d_residual_against_pytorch(s1, x_dtype, x_zp, cfg, res_dtype, res_zp):
    """conv + dequantized residual -> [relu] -> requantize (PT2E's conv -> add -> [relu] -> q),
    quantized outputs only; the narrowed [qmin, qmax] is how a fused hardtanh (ReLU6) arrives.
    Within 1 LSB: the residual is dequantized and added in float32 as eager does, so the only
    difference left is the conv's own float rounding (test_qconv2d_against_pytorch's bound)."""
    x_scale, res_scale = 0.017, 0.031
    x, w, w_scale, w_zp = _conv_inputs(cfg, x_dtype)
    bias = torch.randn(w.shape[0])
    st, pad, dil, groups = cfg[8], cfg[9], cfg[10], cfg[5]
    shape = torch.ops.twb_quant.conv2d(x, x_scale, x_zp, w, w_scale, w_zp, bias, [st, st], [pad, pad], [dil, dil],
                                       groups, False, 1.0, 0, 0, 0, torch.float32).shape
    res = _random_q(shape, res_dtype)
    xf, wf = (x.float() - x_zp) * x_scale, w.float() * w_scale[:, None, None, None]
    magnitude = torch.nn.functional.conv2d(xf.abs(), wf.abs(), bias.abs(), st, pad, dil, groups)
    for relu, out in [(True, (0.05, 3, 0, 255, torch.uint8)), (False, (0.04, -5, -128, 127, torch.int8)),
                      (False, (0.03, 10, 10, 210, torch.uint8))]:  # the last: ReLU6 at scale 0.03, zp 10
        ref = torch.ops.twb_quant.conv2d(x, x_scale, x_zp, w, w_scale, w_zp, bias, [st, st], [pad, pad],
                                         [dil, dil], groups, relu, *out, res, res_scale, res_zp)
        got = _run_qconv(s1, x, x_dtype, x_zp, x_scale, w, w_scale, w_zp, bias, cfg, relu, out,
                         (res, res_scale, res_zp))
        _check(got, ref, magnitude, w[0].numel())


# ---- threads ------------------------------------------------------------------------------------
def test_threads_split_the_work_to_the_same_result(s1, s2):
    """Shapes past worth_threading (threadpool.h): 2 threads must give exactly 1 thread's output."""
    x_scale, x_zp, out = 0.02, 128, (0.05, 100, 0, 255, torch.uint8)
    x = _random_q((37, 150), torch.uint8)
    w, w_scale, w_zp = _weights(70, True, (150,))
    bias = torch.randn(70)
    one, two = (_run_qgemm(s, x, torch.uint8, x_zp, x_scale, w, w_scale, w_zp, bias, True, out) for s in (s1, s2))
    assert torch.equal(one, two)
    ref = torch.ops.twb_quant.linear(x, x_scale, x_zp, w, w_scale, w_zp, bias, True, *out)
    _check(one, ref, None, 150)
    # + 1600 pixels: 4 column blocks, each thread packing into its own part of scratch; + depthwise:
    # planes split over the threads, rows of 7 ending in whole 8-byte stores where those stay in the plane
    for cfg in [(2, 16, 15, 13, 24, 1, 3, 3, 1, 1, 1), (1, 16, 40, 40, 24, 1, 3, 3, 1, 1, 1),
                (1, 64, 40, 40, 64, 64, 3, 3, 1, 1, 1), (1, 400, 7, 7, 400, 400, 3, 3, 1, 1, 1),
                (1, 300, 14, 14, 300, 300, 3, 3, 2, 1, 1), (1, 40, 21, 21, 40, 40, 5, 5, 2, 2, 1)]:
        x, w, w_scale, w_zp = _conv_inputs(cfg, torch.uint8)
        b = torch.randn(cfg[4])
        one, two = (_run_qconv(s, x, torch.uint8, x_zp, x_scale, w, w_scale, w_zp, b, cfg, True, out)
                    for s in (s1, s2))
        assert torch.equal(one, two)
        st, pad, dil = ([v, v] for v in cfg[8:11])
        ref = torch.ops.twb_quant.conv2d(x, x_scale, x_zp, w, w_scale, w_zp, b, st, pad, dil, cfg[5], True, *out)
        _check(one, ref, None, w[0].numel())



# ---- QCONV2D_WINO (3x3 stride-1 convs by Winograd F(2x2, 3x3) on integers) ------------------------
# Bit-identical to QCONV2D (the same integer accumulator, requantized by the same code): compared
# with torch.equal, every output dtype, with and without bias, ReLU and residual. Shapes:
# (n, c_in, h, w, c_out, padding): odd H / W (partial 2x2 tiles), H or W of 1..3, c_in odd / not a
# multiple of 8 (the (ci, ky, kx) weight order) / a multiple of 8 (channels-last order), c_out not a
# multiple of 4, padding 0 and 1, batch 2 (tiles numbered across images), rows of more than 8
# tiles (the vector input path) and tile groups straddling tile rows and images (the gathered path).
WINO_CONVS = [
    (1, 1, 1, 1, 1, 1),
    (2, 3, 7, 5, 5, 1),
    (1, 5, 1, 9, 6, 1),
    (1, 9, 3, 2, 7, 1),
    (1, 4, 5, 6, 1, 1),
    (1, 12, 9, 11, 6, 0),
    (2, 16, 13, 15, 9, 1),
    (1, 24, 6, 37, 13, 1),
    (1, 16, 4, 4, 10, 0),
    (2, 8, 19, 18, 4, 1),
]


def _run_qwino(s, x, x_dtype, x_zp, x_scale, w, w_scale, w_zp, bias, cfg, relu, out, res=(None, 1.0, 0), block=None):
    n, c_in, h, wd, c_out, pad = cfg
    ph, pw = pad if isinstance(pad, tuple) else (pad, pad)
    oh, ow = h + 2 * ph - 2, wd + 2 * pw - 2
    packed = pack_weight(conv_weight_rows(w), w_zp)
    block = block or winograd_tile_block(n * ((oh + 1) // 2) * ((ow + 1) // 2), c_in)
    ptrs = dict(weight=s.put(packed), acc_bias=s.put(acc_bias(packed, x_zp)),
                scale=s.put(channel_scale(x_scale, w_scale)), bias=s.put(bias) if bias is not None else 0,
                scratch=s.alloc(qwino_scratch_numel(c_in, c_out, block)), **{"in": s.put(x)})
    got = _run_twice(s, n * c_out * oh * ow, out[-1], lambda o: s.record(
        "QCONV2D_WINO", n=n, c_in=c_in, h=h, w=wd, c_out=c_out, ph=ph, pw=pw, oh=oh, ow=ow, kp=packed.shape[1],
        tile_block=block, x_dtype=DTYPE_CODE[x_dtype], x_zp=x_zp, **ptrs, **requant_args(relu, *out), out=o,
        res=s.put(res[0]) if res[0] is not None else 0, res_dtype=DTYPE_CODE[res[0].dtype] if res[0] is not None else 0,
        res_scale=res[1], res_zp=res[2]))
    return got.reshape(n, c_out, oh, ow)


def _as_qconv_cfg(cfg):
    n, c_in, h, wd, c_out, pad = cfg
    return (n, c_in, h, wd, c_out, 1, 3, 3, 1, pad, 1)


@pytest.mark.parametrize("x_dtype,x_zp", ACTS + [(torch.uint8, 255), (torch.int8, 127)])
@pytest.mark.parametrize("cfg", WINO_CONVS, ids=str)
def test_qwino_accumulator_exact(s1, x_dtype, x_zp, cfg):
    """scale 1, no bias, float output: the integer conv sum itself, padding included (d = 0 there);
    extreme weights (-128 everywhere: the largest |U|) in the last output channel."""
    x, w, _, w_zp = _conv_inputs(_as_qconv_cfg(cfg), x_dtype)
    w[-1] = -128
    for block in (None, 8):  # the lowering's tile block, and blocks of one panel
        got = _run_qwino(s1, x, x_dtype, x_zp, 1.0, w, torch.ones(w.shape[0]), w_zp, None, cfg, False,
                         _outputs(False)[0], block=block)
        exact = torch.nn.functional.conv2d(x.double() - x_zp, w.double(), None, 1, cfg[5])
        assert torch.equal(got.double(), exact)


@pytest.mark.parametrize("cfg", [(2, 5, 7, 9, 6, (1, 0)), (1, 16, 6, 11, 5, (0, 1))], ids=str)
def test_qwino_accumulator_exact_with_padding_differing_by_axis(s1, cfg):
    """ph != pw (a conv with padding=(1, 0)): each axis its own padding."""
    x, w, _, w_zp = _conv_inputs(_as_qconv_cfg(cfg[:5] + (0,)), torch.uint8)
    got = _run_qwino(s1, x, torch.uint8, 77, 1.0, w, torch.ones(w.shape[0]), w_zp, None, cfg, False, _outputs(False)[0])
    assert torch.equal(got.double(), torch.nn.functional.conv2d(x.double() - 77, w.double(), None, 1, cfg[5]))


@pytest.mark.parametrize("x_dtype,x_zp", ACTS)
@pytest.mark.parametrize("cfg", WINO_CONVS, ids=str)
def test_qwino_equals_qconv2d(s1, x_dtype, x_zp, cfg):
    """Bit for bit QCONV2D's output (so within 1 LSB of eager's, as test_qconv2d_against_pytorch
    checks for QCONV2D; checked here too): float32 / uint8 / int8 outputs, bias or none, ReLU."""
    x_scale = 0.017
    qcfg = _as_qconv_cfg(cfg)
    x, w, w_scale, w_zp = _conv_inputs(qcfg, x_dtype)
    pad = cfg[5]
    xf, wf = (x.float() - x_zp) * x_scale, w.float() * w_scale[:, None, None, None]
    for bias in (torch.randn(w.shape[0]), None):
        magnitude = torch.nn.functional.conv2d(xf.abs(), wf.abs(), bias.abs() if bias is not None else None, 1, pad)
        for relu in (False, True):
            for out in _outputs(relu):
                want = _run_qconv(s1, x, x_dtype, x_zp, x_scale, w, w_scale, w_zp, bias, qcfg, relu, out)
                got = _run_qwino(s1, x, x_dtype, x_zp, x_scale, w, w_scale, w_zp, bias, cfg, relu, out)
                assert torch.equal(got.view(torch.uint8) if got.dtype != torch.float32 else got,
                                   want.view(torch.uint8) if want.dtype != torch.float32 else want)
                ref = torch.ops.twb_quant.conv2d(x, x_scale, x_zp, w, w_scale, w_zp, bias, [1, 1], [pad, pad],
                                                 [1, 1], 1, relu, *out)
                _check(got, ref, magnitude, w[0].numel())


@pytest.mark.parametrize("x_dtype,x_zp", ACTS)
@pytest.mark.parametrize("cfg", [WINO_CONVS[1], WINO_CONVS[6], WINO_CONVS[7], WINO_CONVS[9]], ids=str)
def test_qwino_residual_equals_qconv2d(s1, x_dtype, x_zp, cfg):
    """conv + dequantized residual -> [relu] -> requantize (ResNet's block ends): QCONV2D's bits."""
    x_scale, res_scale = 0.017, 0.031
    qcfg = _as_qconv_cfg(cfg)
    x, w, w_scale, w_zp = _conv_inputs(qcfg, x_dtype)
    bias = torch.randn(w.shape[0])
    n, _, h, wd, c_out, pad = cfg
    for res_dtype, res_zp in [(torch.uint8, 128), (torch.int8, -3)]:
        res = _random_q((n, c_out, h + 2 * pad - 2, wd + 2 * pad - 2), res_dtype)
        for relu, out in [(True, (0.05, 3, 0, 255, torch.uint8)), (False, (0.04, -5, -128, 127, torch.int8))]:
            want = _run_qconv(s1, x, x_dtype, x_zp, x_scale, w, w_scale, w_zp, bias, qcfg, relu, out,
                              (res, res_scale, res_zp))
            got = _run_qwino(s1, x, x_dtype, x_zp, x_scale, w, w_scale, w_zp, bias, cfg, relu, out,
                             (res, res_scale, res_zp))
            assert torch.equal(got, want)


def test_qwino_threads_split_the_work_to_the_same_result(s1, s2):
    """Past worth_threading: 2 threads give exactly 1 thread's output (and QCONV2D's), over several
    tile blocks (batch 2, 40x40: 800 tiles) and at a ResNet-like 64 channels."""
    x_scale, x_zp, out = 0.02, 128, (0.05, 100, 0, 255, torch.uint8)
    for cfg in [(2, 16, 40, 40, 24, 1), (1, 64, 14, 14, 70, 1)]:
        qcfg = _as_qconv_cfg(cfg)
        x, w, w_scale, w_zp = _conv_inputs(qcfg, torch.uint8)
        bias = torch.randn(w.shape[0])
        one, two = (_run_qwino(s, x, torch.uint8, x_zp, x_scale, w, w_scale, w_zp, bias, cfg, True, out)
                    for s in (s1, s2))
        assert torch.equal(one, two)
        assert torch.equal(one, _run_qconv(s1, x, torch.uint8, x_zp, x_scale, w, w_scale, w_zp, bias, qcfg, True, out))


@pytest.mark.parametrize("cfg", [(1, 64, 7, 7, 70, 1, 1, 1, 1, 0, 1), (1, 16, 25, 40, 22, 1, 1, 1, 1, 0, 1),
                                 (1, 16, 20, 19, 13, 1, 3, 3, 1, 1, 1), (2, 48, 9, 9, 36, 2, 1, 1, 1, 0, 1)], ids=str)
@pytest.mark.parametrize("residual", [False, True])
def test_qconv2d_threads_split_channels_to_the_same_result(s1, s2, cfg, residual):
    """Fewer than 2 column blocks per thread (one block of 49 pixels, two of 1000, a 3x3 conv's one,
    grouped): 2 threads split the output channels (row tiles of 4, the last partial) and must give
    exactly 1 thread's output, within 1 LSB of eager's."""
    x_scale, x_zp, res_scale, res_zp = 0.02, 128, 0.031, 7
    out = (0.05, 100, 0, 255, torch.uint8)
    x, w, w_scale, w_zp = _conv_inputs(cfg, torch.uint8)
    bias = torch.randn(cfg[4])
    st, pad, dil, groups = cfg[8], cfg[9], cfg[10], cfg[5]
    args = [x_scale, x_zp, w, w_scale, w_zp, bias, [st, st], [pad, pad], [dil, dil], groups, True, *out]
    res = (_random_q(torch.ops.twb_quant.conv2d(x, *args).shape, torch.uint8), res_scale, res_zp) if residual \
        else (None, 1.0, 0)
    one, two = (_run_qconv(s, x, torch.uint8, x_zp, x_scale, w, w_scale, w_zp, bias, cfg, True, out, res)
                for s in (s1, s2))
    assert torch.equal(one, two)
    ref = torch.ops.twb_quant.conv2d(x, *args, *res) if residual else torch.ops.twb_quant.conv2d(x, *args)
    _check(one, ref, None, w[0].numel())
