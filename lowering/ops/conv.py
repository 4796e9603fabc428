"""aten.convolution (1-D and 2-D; transposed as a direct conv) -> CONV2D on NCHW, or CONV2D_WINOGRAD
for 3x3 stride-1 convs with a constant weight and enough channels and output tiles. 1-D convs run
as 2-D with height 1. 3-D convs (not transposed) -> CONV3D on NCDHW. Weights must be constants or
are used as given."""
from __future__ import annotations

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..plan import TensorRef, contiguous_strides
from ..registry import register
from .elementwise import contiguous, emit_copy

aten = torch.ops.aten
NR = ABI.gemm_nr


# Winograd F(2x2, 3x3) filter transform (kernels_cpp/conv_winograd.cpp applies B^T and A^T).
WINOGRAD_G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)


def winograd_weight(w: torch.Tensor) -> torch.Tensor:
    """The CONV2D_WINOGRAD weight of a [c_out, c_in, 3, 3] filter: U = G w G^T per channel pair,
    in float64 then rounded once, laid out [16, c_out, c_in] (component 4 * row + col)."""
    u = WINOGRAD_G @ w.double() @ WINOGRAD_G.T
    return u.permute(2, 3, 0, 1).reshape(16, w.shape[0], w.shape[1]).float()


# When a conv runs as CONV2D_WINOGRAD: 3x3, stride 1, dilation 1, groups 1, a constant weight, at
# least WINOGRAD_MIN_CHANNELS input and output channels and WINOGRAD_MIN_TILES 2x2 output tiles in
# the batch. Measured per layer (1 and 2 threads): 1.2-1.5x faster than im2col + GEMM at 8-16
# channels, ~2x at ResNet-18's 64-512; but 0.6x with 1 tile (e.g. 512 channels at 2x2): with few
# tiles both stream their weights, and the transformed weight is 16/9 larger. Tile blocks: one
# block's transformed input, 16 * c_in * tile_block floats, is kept near WINOGRAD_BLOCK_FLOATS
# (512 KiB, L2) so it stays in cache between the kernel's phases (1 thread: block size within
# noise from 256 KiB to 1 MiB; 2 threads: larger blocks, fewer barriers, ~5% faster).
WINOGRAD_MIN_CHANNELS = 8
WINOGRAD_MIN_TILES = 8
WINOGRAD_BLOCK_FLOATS = 128 * 1024
WINOGRAD_MIN_BLOCK = 16


def conv_weight(ctx: LoweringContext, kind: str, make, weight_shape, name: str) -> TensorRef:
    """The constant weight operand of a `kind` conv record, from make(ins) -> the [c_out, c_in/g,
    kh, kw] filter: as is for CONV2D, transformed (winograd_weight) for CONV2D_WINOGRAD."""
    if kind == "CONV2D_WINOGRAD":
        return ctx.constant(lambda ins: winograd_weight(make(ins)), (16, *weight_shape[:2]), name=name + "_wino")
    return ctx.constant(make, weight_shape, name=name)


def refold_weight(ctx: LoweringContext, kind: str, record: dict, make, weight_shape, name: str) -> None:
    """Points a conv record at a new constant filter (make(ins), e.g. with a batch norm folded in),
    dropping the record's own transformed weight (a raw weight is the caller's to drop: it may
    have other users)."""
    old = record["weight"].buffer
    record["weight"] = conv_weight(ctx, kind, make, weight_shape, name).addr()
    if kind == "CONV2D_WINOGRAD":
        ctx.plan.constants = [b for b in ctx.plan.constants if b is not old]


def winograd_tile_block(tiles: int, c_in: int) -> int:
    """Tiles per block: at most ~WINOGRAD_BLOCK_FLOATS of transformed input, whole panels, and the
    tiles spread evenly over the blocks (no thin last block: its GEMMs would run at low efficiency)."""
    most = max(WINOGRAD_MIN_BLOCK, WINOGRAD_BLOCK_FLOATS // (16 * c_in) // NR * NR)
    per_block = -(-tiles // -(-tiles // most))  # ceil(tiles / number of blocks)
    return (per_block + NR - 1) // NR * NR


def _emit_winograd(ctx: LoweringContext, node, x: TensorRef, w_fn, bias, out: TensorRef, padding) -> None:
    n, c_in, h, wd = x.shape
    c_out = out.shape[1]
    oh, ow = out.shape[2:]
    block = winograd_tile_block(n * ((oh + 1) // 2) * ((ow + 1) // 2), c_in)
    weight = conv_weight(ctx, "CONV2D_WINOGRAD", w_fn, (c_out, c_in, 3, 3), node.name + "_weight")
    scratch = ctx.new_buffer((16 * (c_in + c_out) * block,), name=node.name + "_winograd")
    ctx.emit("CONV2D_WINOGRAD", flops=2 * n * c_out * oh * ow * c_in * 9, n=n, c_in=c_in, h=h, w=wd,
             c_out=c_out, ph=padding[0], pw=padding[1], oh=oh, ow=ow, tile_block=block, **{"in": addr(x)},
             weight=addr(weight), bias=addr(bias), out=addr(out), scratch=addr(scratch),
             act=ABI.unary["IDENTITY"], p0=0.0, p1=0.0)


def winograd_fits(ctx: LoweringContext, w_shape, out_shape, stride, dilation, groups) -> bool:
    """The shape half of the rule above (int8's QCONV2D_WINO takes it too): a 3x3, stride-1,
    dilation-1, groups-1 filter, enough channels and tiles, and Winograd allowed (export's winograd=)."""
    if not ctx.winograd or groups != 1 or len(w_shape) != 4 or tuple(w_shape[2:]) != (3, 3):
        return False
    tiles = out_shape[0] * ((out_shape[2] + 1) // 2) * ((out_shape[3] + 1) // 2)
    return (list(stride) == [1, 1] and list(dilation) == [1, 1] and tiles >= WINOGRAD_MIN_TILES
            and min(w_shape[0], w_shape[1]) >= WINOGRAD_MIN_CHANNELS)


def _use_winograd(ctx: LoweringContext, node, w_arg, stride, dilation, groups, transposed) -> bool:
    return (not transposed and winograd_fits(ctx, ctx.val(w_arg).shape, ctx.val(node).shape, stride, dilation, groups)
            and ctx.const_fn(w_arg) is not None)


def _check(node):
    spatial = node.args[1].meta["val"].dim() - 2
    if spatial not in (1, 2, 3):
        return f"{spatial}-d convolution (1-d, 2-d and 3-d supported)"
    if spatial == 3 and node.args[6]:
        return "transposed 3-d convolution"
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


def _transposed_as_direct(ctx: LoweringContext, node, x: TensorRef, w_arg, stride, padding, dilation,
                          output_padding, groups):
    """A transposed convolution is the direct convolution, stride 1, of the input spread out by
    `stride` (zeros between pixels) and padded by d*(k-1)-p on each side (+ output_padding on the
    right; negative amounts crop), with the weight flipped spatially and its in/out channels
    swapped per group. The spread input is built by a fill + one strided copy; the weight
    transform is folded at compile time (or is one strided copy for a runtime weight). The direct
    conv does stride^2 times the useful multiply-adds (zeros): correct first, a dedicated
    col2im kernel would be the faster path. Returns (spread input, direct weight)."""
    fold = ctx.const_fn(w_arg)
    wv = ctx.val(w_arg)
    if wv.dim() == 3:  # 1-d: [c_in, c_out/g, k] -> height 1
        c_in, c_out_g, kh, kw = wv.shape[0], wv.shape[1], 1, wv.shape[2]
    else:
        c_in, c_out_g, kh, kw = wv.shape
    c_in_g = c_in // groups
    direct_shape = (groups * c_out_g, c_in_g, kh, kw)
    if fold is not None:
        def direct_weight(ins):
            w = fold(ins).reshape(c_in, c_out_g, kh, kw)
            w = w.reshape(groups, c_in_g, c_out_g, kh, kw).transpose(1, 2)
            return w.reshape(direct_shape).flip(2, 3)

        weight = ctx.constant(direct_weight, direct_shape, name=node.name + "_wt")
    else:
        # A runtime weight: the same transform as one strided copy, through a 5-d view
        # [groups, c_out/g, c_in/g, kh, kw] with negative strides on the flipped kernel dims.
        w = contiguous(ctx, ctx.value(w_arg))
        st = (c_in_g * c_out_g * kh * kw, kh * kw, c_out_g * kh * kw, -kw, -1)
        view = TensorRef(w.buffer, (groups, c_out_g, c_in_g, kh, kw), st,
                         w.offset + (kh - 1) * kw + (kw - 1), w.dtype)
        weight = ctx.new_buffer(direct_shape, name=node.name + "_wt")
        emit_copy(ctx, view, TensorRef(weight.buffer, view.shape, contiguous_strides(view.shape), 0, weight.dtype))
    n, _, h, wd = x.shape
    spread = []
    for size, k, s, p, d, op in zip((h, wd), (kh, kw), stride, padding, dilation, output_padding):
        left = d * (k - 1) - p
        right = left + op
        spread.append((size, s, left, right, (size - 1) * s + 1 + left + right))
    (h_, sh, lh, rh, H), (w_, sw, lw, rw, W) = spread
    buf = ctx.new_buffer((n, c_in, max(H, 0), max(W, 0)), name=node.name + "_spread")
    if buf.numel:
        emit_copy(ctx, ctx.scalar(0.0), buf)
        # input pixel (i, j) lands at (lh + i*sh, lw + j*sw); keep those inside the buffer
        def kept(size, s, left, total):
            first = 0 if left >= 0 else (-left + s - 1) // s
            last = size - 1
            while last >= first and left + last * s >= total:
                last -= 1
            return first, max(last - first + 1, 0)
        fi, ni = kept(h_, sh, lh, H)
        fj, nj = kept(w_, sw, lw, W)
        if ni and nj:
            bs = buf.strides
            dst = TensorRef(buf.buffer, (n, c_in, ni, nj), (bs[0], bs[1], bs[2] * sh, bs[3] * sw),
                            (lh + fi * sh) * bs[2] + (lw + fj * sw) * bs[3], buf.dtype)
            xs = x.strides
            src = TensorRef(x.buffer, (n, c_in, ni, nj), xs, x.offset + fi * xs[2] + fj * xs[3], x.dtype)
            emit_copy(ctx, src, dst)
    return buf, weight


# CONV3D's vol2col scratch: about 16 MB (threads fill it with several column blocks at once), at
# least 64 panels; the whole vol2col of r3d_18's first 3x3x3 layer at 16 x 112 x 112 would be 350 MB.
CONV3D_SCRATCH_FLOATS = 4 * 1024 * 1024
CONV3D_MIN_SCRATCH_PANELS = 64


def _emit_conv3d(ctx: LoweringContext, node, x_arg, w_arg, b_arg, stride, padding, dilation, groups):
    x = contiguous(ctx, ctx.value(x_arg))
    w = contiguous(ctx, ctx.value(w_arg))
    bias = contiguous(ctx, ctx.value(b_arg)) if b_arg is not None else None
    out = ctx.out_for(node)
    n, c_in, d, h, wd = x.shape
    c_out, c_in_g, kd, kh, kw = w.shape
    od, oh, ow = out.shape[2:]
    k = c_in_g * kd * kh * kw
    panels = min((od * oh * ow + NR - 1) // NR, max(CONV3D_MIN_SCRATCH_PANELS, -(-CONV3D_SCRATCH_FLOATS // (k * NR))))
    scratch = ctx.new_buffer((panels * NR * k,), name=node.name + "_vol2col")
    if out.numel:
        ctx.emit("CONV3D", flops=2 * n * c_out * od * oh * ow * k, n=n, c_in=c_in, d=d, h=h, w=wd, c_out=c_out,
                 groups=groups, kd=kd, kh=kh, kw=kw, sd=stride[0], sh=stride[1], sw=stride[2], pd=padding[0],
                 ph=padding[1], pw=padding[2], dd=dilation[0], dh=dilation[1], dw=dilation[2], od=od, oh=oh,
                 ow=ow, **{"in": addr(x)}, weight=addr(w), bias=addr(bias), out=addr(out),
                 scratch=addr(scratch), scratch_panels=panels, act=ABI.unary["IDENTITY"], p0=0.0, p1=0.0)
    return out


@register(aten.convolution.default, kernels=["CONV2D", "CONV2D_WINOGRAD", "CONV3D"], check=_check)
def _convolution(ctx: LoweringContext, node):
    x_arg, w_arg, b_arg, stride, padding, dilation, transposed, output_padding, groups = node.args
    nd = ctx.val(w_arg).dim() - 2
    stride, padding, dilation = (_per_dim(v, nd) for v in (stride, padding, dilation))
    if nd == 3:
        return _emit_conv3d(ctx, node, x_arg, w_arg, b_arg, stride, padding, dilation, groups)
    output_padding = _per_dim(output_padding, nd)
    if nd == 1:
        stride, padding, dilation = [1] + list(stride), [0] + list(padding), [1] + list(dilation)
        output_padding = [0] + list(output_padding)
    x = _as_4d(contiguous(ctx, ctx.value(x_arg)))
    if _use_winograd(ctx, node, w_arg, stride, dilation, groups, transposed):
        bias = contiguous(ctx, ctx.value(b_arg)) if b_arg is not None else None
        out = ctx.out_for(node)
        if out.numel:
            _emit_winograd(ctx, node, x, ctx.const_fn(w_arg), bias, out, padding)
        return out
    if transposed:
        x, w = _transposed_as_direct(ctx, node, x, w_arg, stride, padding, dilation, output_padding, groups)
        stride, padding = [1, 1], [0, 0]
    else:
        w = _as_4d(contiguous(ctx, ctx.value(w_arg)))
    bias = contiguous(ctx, ctx.value(b_arg)) if b_arg is not None else None
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
        ctx.emit("CONV2D", flops=2 * n * c_out * oh * ow * c_in_g * kh * kw, n=n, c_in=c_in, h=h, w=wd,
                 c_out=c_out, groups=groups, kh=kh, kw=kw, sh=stride[0], sw=stride[1], ph=padding[0],
                 pw=padding[1], dh=dilation[0], dw=dilation[1], oh=oh, ow=ow, **{"in": addr(x)},
                 weight=addr(w), bias=addr(bias), out=addr(out), scratch=addr(scratch),
                 act=ABI.unary["IDENTITY"], p0=0.0, p1=0.0)
    return out
