"""mm / addmm / bmm / linear -> GEMM on a packed B. Constant B (weights) is packed once at compile
time; a runtime B (attention scores, values) is packed by the PACK_B kernel."""
from __future__ import annotations

import torch

from ..abi import ABI
from ..context import LoweringContext, addr
from ..plan import TensorRef
from ..registry import Unsupported, bind, register
from .elementwise import contiguous, emit_binary

aten = torch.ops.aten
NR = ABI.gemm_nr


def pack_b(b: torch.Tensor) -> torch.Tensor:
    """[..., K, N] -> [..., ceil(N/NR), K, NR], zero padded: the GEMM kernel's B panel layout."""
    *batch, k, n = b.shape
    panels = (n + NR - 1) // NR
    padded = torch.zeros(*batch, k, panels * NR, dtype=torch.float32)
    padded[..., :n] = b
    return padded.reshape(*batch, k, panels, NR).transpose(-3, -2).contiguous()


def packed_numel(k: int, n: int) -> int:
    return (n + NR - 1) // NR * NR * k


def _packed_b(ctx: LoweringContext, b_arg, transpose: bool, batch: int, k: int, n: int) -> TensorRef:
    """B as packed panels: folded from constants when possible, else packed at run time."""
    fold = ctx.const_fn(b_arg)
    if fold is not None and ctx.at_largest is not None and ctx.size_dependent(b_arg):
        fold = None  # export with dynamic dims: panels of a size-dependent B are not a slice of the
        #              largest ones (LoweringContext.at_largest), so PACK_B packs its view at run time
    if fold is not None:
        cache = ctx.packed_b
        key = (ctx.structural_key(b_arg), transpose, batch, k, n)
        if key in cache:
            return cache[key]

        def make(ins):
            b = fold(ins).float()
            return pack_b(b.transpose(-1, -2) if transpose else b)
        shape = (batch, packed_numel(k, n)) if batch > 1 else (packed_numel(k, n),)
        per_shape = ctx.size_dependent(b_arg)
        name = f"{getattr(b_arg, 'name', 'b')}_packed{'_t' if transpose else ''}"
        if per_shape:
            cache[key] = ctx.constant(make, shape, name=name, per_shape=True, replayable=True)
        else:
            cache[key] = ctx.shared_constant(("packed",) + key, lambda: ctx.constant(make, shape, name=name))
        return cache[key]
    b = ctx.value(b_arg)
    if transpose:
        b = TensorRef(b.buffer, b.shape[:-2] + (b.shape[-1], b.shape[-2]),
                      b.strides[:-2] + (b.strides[-1], b.strides[-2]), b.offset, b.dtype)
    out = ctx.new_buffer((batch, packed_numel(k, n)), name="b_packed")
    if k * n:
        ctx.emit("PACK_B", flops=batch * k * n, batch=batch, k=k, n=n, b=addr(b),
                 stride_k=b.strides[-2], stride_n=b.strides[-1],
                 b_batch_stride=b.strides[0] if batch > 1 else 0, out=addr(out))
    return out


def _rows(ctx: LoweringContext, a: TensorRef) -> TensorRef:
    """A with unit column stride and a single row stride over its leading dims."""
    if a.shape[-1] > 1 and a.strides[-1] != 1:
        a = contiguous(ctx, a)
    dims = [(s, st) for s, st in zip(a.shape[:-1], a.strides[:-1]) if s > 1]
    if any(outer[1] != inner[1] * inner[0] for outer, inner in zip(dims, dims[1:])):
        a = contiguous(ctx, a)
    return a


def row_stride(a: TensorRef, k: int) -> int:
    """Stride between consecutive rows of A (its leading dims flattened, batch dim excluded)."""
    for size, stride in zip(reversed(a.shape[:-1]), reversed(a.strides[:-1])):
        if size > 1:
            return stride
    return max(k, 1)


def emit_gemm(ctx: LoweringContext, a: TensorRef, b_packed: TensorRef, out: TensorRef, batch: int,
              m: int, n: int, k: int, bias: TensorRef | None = None, bias_mode: int = 0,
              a_batch_stride: int = 0, act: str = "IDENTITY", p0=0.0, p1=0.0) -> TensorRef:
    if m == 0 or n == 0 or batch == 0:
        return out
    lda = row_stride(a, k)
    ctx.emit("GEMM", flops=2 * batch * m * n * k, batch=batch, m=m, n=n, k=k, a=addr(a), lda=lda,
             a_batch_stride=a_batch_stride, b_packed=addr(b_packed),
             b_batch_stride=packed_numel(k, n) if batch > 1 else 0, c=addr(out), ldc=n,
             c_batch_stride=m * n, bias=addr(bias), bias_mode=bias_mode, act=ABI.unary[act], p0=p0, p1=p1)
    return out


def _bias_mode(ctx: LoweringContext, bias_arg, m: int, n: int):
    """(bias ref, mode) when bias broadcasts along rows as a [n] vector, else None."""
    v = ctx.val(bias_arg)
    if v.dim() == 1 and v.shape[0] == n or v.dim() == 2 and v.shape[0] == 1 and v.shape[1] == n:
        ref = contiguous(ctx, ctx.value(bias_arg))
        return ref, 1
    return None


def _matmul_2d(ctx, node, a_arg, b_arg, bias_arg=None, b_transposed=False):
    a = _rows(ctx, ctx.value(a_arg))
    *lead, k = a.shape
    m = 1
    for s in lead:
        m *= s
    out = ctx.out_for(node)
    n = out.shape[-1]
    b_packed = _packed_b(ctx, b_arg, b_transposed, 1, k, n)
    bias, mode = (None, 0)
    extra_bias = None
    if bias_arg is not None:
        found = _bias_mode(ctx, bias_arg, m, n)
        if found:
            bias, mode = found
        else:
            extra_bias = ctx.value(bias_arg)
    emit_gemm(ctx, a, b_packed, out, 1, m, n, k, bias, mode)
    if extra_bias is not None:
        emit_binary(ctx, "ADD", out, extra_bias, out)
    return out


def _alpha_beta_check(node):
    args = bind(node)
    for name in ("alpha", "beta"):
        if isinstance(args[name], (complex, torch.fx.Node)):
            return f"addmm with a {type(args[name]).__name__} {name}"
    return None


@register(aten.mm.default, kernels=["GEMM", "PACK_B"])
def _mm(ctx, node):
    return _matmul_2d(ctx, node, node.args[0], node.args[1])


@register(aten.addmm.default, kernels=["GEMM", "PACK_B", "BINARY"], check=_alpha_beta_check)
def _addmm(ctx, node):
    """beta * bias + alpha * (a @ b); beta = 0 ignores bias entirely (NaN included), as eager."""
    a = ctx.args(node)
    alpha, beta = a["alpha"], a["beta"]
    if alpha == 1 and beta == 1:
        return _matmul_2d(ctx, node, a["mat1"], a["mat2"], bias_arg=a["self"])
    out = _matmul_2d(ctx, node, a["mat1"], a["mat2"])
    if alpha != 1:
        emit_binary(ctx, "MUL", out, ctx.scalar(float(alpha)), out)
    if beta != 0:
        bias = ctx.value(a["self"])
        if beta != 1:
            bias = emit_binary(ctx, "MUL", bias, ctx.scalar(float(beta)), ctx.new_buffer(bias.shape, name=node.name + "_beta"))
        emit_binary(ctx, "ADD", out, bias, out)
    return out


@register(aten.linear.default, kernels=["GEMM", "PACK_B"])
def _linear(ctx, node):
    a = ctx.args(node)
    return _matmul_2d(ctx, node, a["input"], a["weight"], bias_arg=a["bias"], b_transposed=True)


@register(aten.bmm.default, kernels=["GEMM", "PACK_B"])
def _bmm(ctx, node):
    a = ctx.value(node.args[0])
    if a.shape[-1] > 1 and a.strides[-1] != 1:
        a = contiguous(ctx, a)
    batch, m, k = a.shape
    out = ctx.out_for(node)
    n = out.shape[-1]
    b_packed = _packed_b(ctx, node.args[1], False, batch, k, n)
    return emit_gemm(ctx, a, b_packed, out, batch, m, n, k, a_batch_stride=a.strides[0] if batch > 1 else 0)


__all__ = ["emit_gemm", "pack_b", "packed_numel", "Unsupported"]
