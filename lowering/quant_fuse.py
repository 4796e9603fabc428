"""Recognizes the int8 patterns of PT2E-quantized graphs (torchao's prepare_pt2e / convert_pt2e, e.g.
with X86InductorQuantizer) in an ATen graph and replaces each with one fused op that lowers to an
int8 kernel (lowering/ops/quant.py):

    dequantize_per_tensor(x_q) ─┐
    dequantize_per_channel(w_q) ─┴─ convolution / t + addmm (+ views) ─ [relu] ─ [quantize_per_tensor]

becomes `twb_quant::conv2d` / `twb_quant::linear` on the integer tensors (lowering/quant_ops.py),
with an int8/uint8 output when a quantize_per_tensor ends the chain and a float32 output otherwise.
Everything else (isolated quantize / dequantize nodes) is left to the elementwise Q/DQ lowerings.
All of it (custom ops, lowerings: ~60 ms of imports) is loaded when a graph first holds
quantized_decomposed nodes."""
from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed  # (exists once a quantized graph does: see ops.register_int8)
QUANT_DTYPES = (torch.uint8, torch.int8)


# ---- pattern matching ---------------------------------------------------------------------------
def _act_dequant(arg) -> Node | None:
    """arg if it is dequantize_per_tensor(x_q, scale, zp, ...) with Python-number parameters."""
    if not (isinstance(arg, Node) and arg.target is qd.dequantize_per_tensor.default):
        return None
    x, scale, zp, _, _, dtype = arg.args[:6]
    if dtype not in QUANT_DTYPES or not isinstance(scale, float) or not isinstance(zp, int):
        return None
    if arg.kwargs.get("out_dtype") not in (None, torch.float32):
        return None
    return arg


def _weight_dequant(arg) -> Node | None:
    """arg if it is dequantize_per_channel(w_q int8, scales, zero_points, axis=0, -128, 127, int8)."""
    if not (isinstance(arg, Node) and arg.target is qd.dequantize_per_channel.default):
        return None
    w, scales, zps, axis, qmin, qmax, dtype = arg.args[:7]
    if dtype != torch.int8 or axis != 0 or not all(isinstance(a, Node) for a in (w, scales, zps)):
        return None
    if (qmin, qmax) != (-128, 127) or arg.kwargs.get("out_dtype") not in (None, torch.float32):
        return None
    return arg


def _sole_user(node: Node) -> Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _output_chain(node: Node, allow_view: bool):
    """Follows node's single-user chain through at most one relu (and, for linear, one view) to an
    optional quantize_per_tensor. Returns (relu, view or None, quantize or None, last node)."""
    relu = view = quant = None
    last = node
    while (user := _sole_user(last)) is not None:
        if user.target is aten.relu.default and relu is None:
            relu = user
        elif user.target is aten.view.default and allow_view and view is None:
            view = user
        elif user.target is qd.quantize_per_tensor.default and _is_act_quant(user):
            quant = user
        else:
            break
        last = user
        if quant is not None:
            break
    return relu, view, quant, last


def _is_act_quant(node: Node) -> bool:
    _, scale, zp, qmin, qmax, dtype = node.args[:6]
    return dtype in QUANT_DTYPES and isinstance(scale, float) and isinstance(zp, int) \
        and isinstance(qmin, int) and isinstance(qmax, int)


def _out_params(quant: Node | None) -> tuple:
    if quant is None:
        return 1.0, 0, 0, 0, torch.float32
    _, scale, zp, qmin, qmax, dtype = quant.args[:6]
    return scale, zp, qmin, qmax, dtype


def _erase_dead(gm: GraphModule, nodes) -> None:
    for n in nodes:
        if n is not None and not n.users:
            gm.graph.erase_node(n)


def _replace(gm: GraphModule, anchor: Node, last: Node, target, args: tuple, val, view_sizes=None) -> Node:
    """Inserts target(*args) before last (meta val `val`; anchor's source info), viewed to
    view_sizes if given, and redirects last's users to it."""
    with gm.graph.inserting_before(last):
        fused = gm.graph.call_function(target, args)
        fused.meta.update({k: v for k, v in anchor.meta.items() if k != "val"})
        fused.meta["val"] = val
        result = fused
        if view_sizes is not None:
            result = gm.graph.call_function(aten.view.default, (fused, view_sizes))
            result.meta.update({k: v for k, v in last.meta.items() if k != "val"})
            result.meta["val"] = last.meta["val"]
    last.replace_all_uses_with(result)
    return fused


def _fuse_conv(gm: GraphModule, conv: Node) -> bool:
    x_arg, w_arg, bias, stride, padding, dilation, transposed, output_padding, groups = conv.args
    dq_x, dq_w = _act_dequant(x_arg), _weight_dequant(w_arg)
    if dq_x is None or dq_w is None or transposed or len(stride) != 2 or any(output_padding):
        return False
    relu, _, quant, last = _output_chain(conv, allow_view=False)
    out = _out_params(quant)
    x_q, x_scale, x_zp = dq_x.args[:3]
    w_q, w_scale, w_zp = dq_w.args[:3]
    val = conv.meta["val"].to(out[-1])
    _replace(gm, conv, last, torch.ops.twb_quant.conv2d.default,
             (x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, list(stride), list(padding), list(dilation),
              groups, relu is not None, *out), val)
    _erase_dead(gm, [quant, relu, conv, dq_w, dq_x])
    return True


def _fuse_addmm(gm: GraphModule, addmm: Node) -> bool:
    if addmm.kwargs.get("alpha", 1) != 1 or addmm.kwargs.get("beta", 1) != 1:
        return False
    bias, a, b = addmm.args
    in_view = a if isinstance(a, Node) and a.target is aten.view.default and len(a.users) == 1 else None
    dq_x = _act_dequant(in_view.args[0] if in_view is not None else a)
    t = b if isinstance(b, Node) and b.target is aten.t.default else None
    dq_w = _weight_dequant(t.args[0]) if t is not None else None
    if dq_x is None or dq_w is None:
        return False
    relu, out_view, quant, last = _output_chain(addmm, allow_view=True)
    out = _out_params(quant)
    x_q, x_scale, x_zp = dq_x.args[:3]
    w_q, w_scale, w_zp = dq_w.args[:3]
    if in_view is not None:  # [..., K] -> [M, K] on the integer tensor instead of the float one
        with gm.graph.inserting_before(addmm):
            x_q = gm.graph.call_function(aten.view.default, (x_q, in_view.args[1]))
            x_q.meta.update({k: v for k, v in in_view.meta.items() if k != "val"})
            x_q.meta["val"] = in_view.meta["val"].to(dq_x.args[5])
    val = addmm.meta["val"].to(out[-1])
    _replace(gm, addmm, last, torch.ops.twb_quant.linear.default,
             (x_q, x_scale, x_zp, w_q, w_scale, w_zp, bias, relu is not None, *out), val,
             view_sizes=out_view.args[1] if out_view is not None else None)
    _erase_dead(gm, [quant, relu, out_view, addmm, t, dq_w, in_view, dq_x])
    return True


def fuse_quantized_patterns(gm: GraphModule) -> int:
    """Rewrites gm in place (see the module docstring); returns how many patterns were fused."""
    if not any(getattr(n.target, "namespace", None) == "quantized_decomposed" for n in gm.graph.nodes):
        return 0
    from .ops import register_int8
    register_int8()
    from .quant_dynamic import fuse_dynamic_linears  # (PT2E's dynamic config: issue #15 part 2)
    fused = fuse_dynamic_linears(gm)
    for node in list(gm.graph.nodes):  # (a fusion erases only its own chain, never another anchor)
        if node.target is aten.convolution.default:
            fused += _fuse_conv(gm, node)
        elif node.target is aten.addmm.default:
            fused += _fuse_addmm(gm, node)
    if fused:
        gm.graph.lint()
        gm.recompile()
    return fused
