"""Dynamic int8 linear: the pattern PT2E's dynamic config (X86InductorQuantizer with
get_default_x86_inductor_quantization_config(is_dynamic=True)) leaves around every linear,

    choose_qparams.tensor(x) ─ getitem 0, 1 (scale, zero point: chosen at run time from x's range)
    quantize_per_tensor.tensor(x, scale, zp) ─ dequantize_per_tensor.tensor ─┐
    dequantize_per_channel(w_q int8) ─ t ────────────────────────────────────┴─ [view] ─ addmm / mm

becomes one `twb_quant::dynamic_linear` node on the float activation, whose eager implementation
runs exactly the ops it replaces, and which lowers to QDYNPACK + QGEMM_DYN (ops/quant_dynamic.py).
Linears that share an input (attention's Q, K and V) share one choose_qparams in the graph; each
fused node quantizes its input again (same result; a pass over the activation, next to a GEMM that
reads it n times). Imported when a graph first holds quantized_decomposed nodes (quant_fuse.py)."""
from __future__ import annotations

import operator
from typing import Optional

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers quantized_decomposed)
from torch.fx import GraphModule, Node

from .quant_fuse import QUANT_DTYPES, Int8Pattern, _erase_dead, _weight_dequant

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed


@torch.library.custom_op("twb_quant::dynamic_linear", mutates_args=())
def dynamic_linear(x: torch.Tensor, qmin: int, qmax: int, eps: float, dtype: torch.dtype, w: torch.Tensor,
                   w_scale: torch.Tensor, w_zp: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x [M, K] float32, quantized per tensor with parameters chosen from its range at run time
    (uint8/int8 in [qmin, qmax]); w [N, K] int8 per channel -> float32 [M, N]: what the replaced
    choose_qparams / quantize / dequantize / addmm nodes compute."""
    scale, zp = qd.choose_qparams.tensor(x, qmin, qmax, eps, dtype)
    xq = qd.quantize_per_tensor.tensor(x, scale, zp, qmin, qmax, dtype)
    xf = qd.dequantize_per_tensor.tensor(xq, scale, zp, qmin, qmax, dtype)
    wf = qd.dequantize_per_channel.default(w, w_scale, w_zp, 0, -128, 127, torch.int8)
    return torch.mm(xf, wf.t()) if bias is None else torch.addmm(bias, xf, wf.t())


@dynamic_linear.register_fake
def _(x, qmin, qmax, eps, dtype, w, w_scale, w_zp, bias):
    return x.new_empty((x.shape[0], w.shape[0]))


def _dynamic_act(arg) -> tuple | None:
    """(x, qmin, qmax, eps, dtype) if arg is dequantize_per_tensor.tensor of quantize_per_tensor.tensor
    of x with the scale / zero point of choose_qparams.tensor(x) and the same range and dtype."""
    if not (isinstance(arg, Node) and arg.target is qd.dequantize_per_tensor.tensor):
        return None
    if arg.kwargs.get("out_dtype") not in (None, torch.float32):
        return None
    xq, scale, zp, qmin, qmax, dtype = arg.args[:6]
    if not (isinstance(xq, Node) and xq.target is qd.quantize_per_tensor.tensor):
        return None
    x = xq.args[0]
    if tuple(xq.args[1:6]) != (scale, zp, qmin, qmax, dtype) or dtype not in QUANT_DTYPES:
        return None
    if not all(isinstance(p, Node) and p.target is operator.getitem for p in (scale, zp)):
        return None
    choose = scale.args[0]
    if (scale.args[1], zp.args[0], zp.args[1]) != (0, choose, 1) or choose.target is not qd.choose_qparams.tensor:
        return None
    if tuple(choose.args[:3]) != (x, qmin, qmax) or choose.args[4] != dtype:
        return None
    if x.meta["val"].dtype != torch.float32:
        return None
    return x, qmin, qmax, choose.args[3], dtype


def _fuse_addmm(gm: GraphModule, addmm: Node) -> list[Node] | None:
    """Replaces one addmm (or mm: a linear without bias) of the pattern; returns the activation
    nodes it leaves (erased once no other linear uses them), or None when addmm is not one."""
    if addmm.kwargs.get("alpha", 1) != 1 or addmm.kwargs.get("beta", 1) != 1:
        return None
    bias, a, b = addmm.args if addmm.target is aten.addmm.default else (None, *addmm.args)
    in_view = a if isinstance(a, Node) and a.target is aten.view.default and len(a.users) == 1 else None
    dq_x = in_view.args[0] if in_view is not None else a
    act = _dynamic_act(dq_x)
    t = b if isinstance(b, Node) and b.target is aten.t.default else None
    dq_w = _weight_dequant(t.args[0]) if t is not None else None
    if act is None or dq_w is None:
        return None
    x, qmin, qmax, eps, dtype = act
    w_q, w_scale, w_zp = dq_w.args[:3]
    with gm.graph.inserting_before(addmm):
        if in_view is not None:  # [..., K] -> [M, K] on the float input, as before on its dequantized copy
            x = gm.graph.call_function(aten.view.default, (x, in_view.args[1]))
            x.meta.update(in_view.meta)
        fused = gm.graph.call_function(torch.ops.twb_quant.dynamic_linear.default,
                                       (x, qmin, qmax, eps, dtype, w_q, w_scale, w_zp, bias))
        fused.meta.update(addmm.meta)
    addmm.replace_all_uses_with(fused)
    _erase_dead(gm, [addmm, t, dq_w, in_view])
    quantize = dq_x.args[0]
    scale, zp = quantize.args[1:3]
    return [dq_x, quantize, scale, zp, scale.args[0]]


def fuse_dynamic_linears(gm: GraphModule) -> list[Int8Pattern]:
    """Rewrites gm's dynamic int8 linears in place (module docstring); returns one record per fused
    linear (explain lists them). The caller lints and recompiles gm."""
    fused, leftovers = [], []
    for node in list(gm.graph.nodes):
        if node.target in (aten.addmm.default, aten.mm.default) and (left := _fuse_addmm(gm, node)) is not None:
            fused.append(Int8Pattern(node.name, True, "choose_qparams -> q -> dq -> linear -> float32 out", ""))
            leftovers.append(left)
    for left in leftovers:  # (in order dq, quantize, getitems, choose_qparams: users before producers)
        _erase_dead(gm, [n for n in left if not n._erased])  # (shared by linears fused before)
    return fused
