"""Recognizes the int8 patterns of PT2E-quantized graphs (torchao's prepare_pt2e / convert_pt2e, e.g.
with X86InductorQuantizer) in an ATen graph and replaces each with one fused op that lowers to an
int8 kernel (lowering/ops/quant.py):

    dequantize_per_tensor(x_q) ─┐                                    dequantize_per_tensor(r_q) ─┐
    dequantize_per_channel(w_q) ─┴─ convolution / t + addmm (+ views) ───── [add (conv only)] ───┴─
        ─ [relu | hardtanh (ReLU6)] ─ [quantize_per_tensor]

becomes `twb_quant::conv2d` / `twb_quant::linear` on the integer tensors (lowering/quant_ops.py),
with an int8/uint8 output when a quantize_per_tensor ends the chain and a float32 output otherwise
(the residual add and hardtanh fuse only into a quantized output: see Chain).
Then lowering/quant_fuse_between.py rewrites the int8 pools, adds, concats and views between them.
Everything else (isolated quantize / dequantize nodes) is left to the elementwise Q/DQ lowerings.
Before all of it, lowering/quant_weight_only.py fuses torchao's weight-only int8 linears (int8
weights cast to float32 for an mm: no quantized_decomposed nodes), on any graph.
All of it (custom ops, lowerings: ~60 ms of imports) is loaded when a graph first holds
quantized_decomposed nodes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.fx import GraphModule, Node

from .registry import bind, op_name

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed  # (exists once a quantized graph does: see ops.register_int8)
QUANT_DTYPES = (torch.uint8, torch.int8)


# ---- pattern matching ---------------------------------------------------------------------------
def _act_dequant(arg) -> Node | None:
    """arg if it is dequantize_per_tensor(x_q, scale, zp, ...) with Python-number parameters."""
    if not (isinstance(arg, Node) and arg.target is qd.dequantize_per_tensor.default):
        return None
    a = bind(arg)
    if a["dtype"] not in QUANT_DTYPES or not isinstance(a["scale"], float) or not isinstance(a["zero_point"], int):
        return None
    return arg if a.get("out_dtype") in (None, torch.float32) else None


def _weight_dequant(arg) -> Node | None:
    """arg if it is dequantize_per_channel(w_q int8, scales, zero_points, axis=0, -128, 127, int8)."""
    if not (isinstance(arg, Node) and arg.target is qd.dequantize_per_channel.default):
        return None
    a = bind(arg)
    if a["dtype"] != torch.int8 or a["axis"] != 0 or \
            not all(isinstance(a[k], Node) for k in ("input", "scales", "zero_points")):
        return None
    if (a["quant_min"], a["quant_max"]) != (-128, 127) or a.get("out_dtype") not in (None, torch.float32):
        return None
    return arg


def _qparams(dq: Node) -> tuple:
    """(integer tensor, scale(s), zero point(s)) of a dequantize_per_tensor / _per_channel node (its
    schema's first three arguments)."""
    a = bind(dq)
    return a["input"], a["scales" if "scales" in a else "scale"], a["zero_points" if "zero_points" in a else "zero_point"]


def _sole_user(node: Node) -> Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _residual(add: Node, conv_out: Node) -> Node | None:
    """The dequantize_per_tensor node that add(conv_out, dq(r)) (either order, alpha 1, same
    shape: no broadcasting) adds to the conv's output, else None."""
    a = bind(add)
    if a.get("alpha", 1) != 1:
        return None
    other = a["other"] if a["self"] is conv_out else a["self"] if a["other"] is conv_out else None
    dq = _act_dequant(other)
    if dq is None or dq is conv_out or dq.meta["val"].shape != conv_out.meta["val"].shape:
        return None
    return dq


class Chain:
    """What follows a conv / linear on its single-user chain, each optional: add(·, dq(r)) (conv
    only, first), one view (linear only), relu or hardtanh, quantize_per_tensor (last).
    Without a final quantize it stops before an add or hardtanh: those fuse only into a quantized
    output (there the residual is added before requantization, and hardtanh(lo, hi) is a clamp to
    [q(lo), q(hi)]: quantization is monotone)."""

    def __init__(self, node: Node, allow_view: bool, allow_add: bool):
        self.add = self.residual = self.view = self.act = self.quant = None
        last = node
        while (user := _sole_user(last)) is not None:
            t = user.target
            if t is aten.add.Tensor and allow_add and last is node and (res := _residual(user, node)) is not None:
                self.add, self.residual = user, res
            elif t is aten.view.default and allow_view and self.view is None:
                self.view = user
            elif t in (aten.relu.default, aten.hardtanh.default) and self.act is None:
                self.act = user
            elif t is qd.quantize_per_tensor.default and _is_act_quant(user):
                self.quant = user
            else:
                break
            last = user
            if self.quant is not None:
                break
        if self.quant is None and (self.add is not None or (self.act is not None and self.act.target is aten.hardtanh.default)):
            self.add = self.residual = self.act = self.view = None
            last = node
        self.last = last

    @property
    def relu(self) -> bool:
        return self.act is not None and self.act.target is aten.relu.default

    def out_params(self) -> tuple:
        """(out_scale, out_zp, out_qmin, out_qmax, out_dtype): float32 (and unused numbers) without a
        quantize; a hardtanh narrows [qmin, qmax] to its bounds' quantized values."""
        if self.quant is None:
            return 1.0, 0, 0, 0, torch.float32
        a = bind(self.quant)
        scale, zp, qmin, qmax, dtype = (a[k] for k in ("scale", "zero_point", "quant_min", "quant_max", "dtype"))
        if self.act is not None and self.act.target is aten.hardtanh.default:
            h = bind(self.act)
            qmin, qmax = max(qmin, _quantized(h["min_val"], scale, zp)), min(qmax, _quantized(h["max_val"], scale, zp))
        return scale, zp, qmin, qmax, dtype

    def residual_params(self) -> tuple:
        """(r_q, r_scale, r_zp) of the residual add, (None, 1.0, 0) without one."""
        return _qparams(self.residual) if self.residual is not None else (None, 1.0, 0)

    def nodes(self) -> list:
        return [self.quant, self.act, self.view, self.add]


def _quantized(v: float, scale: float, zp: int) -> int:
    """round_half_even(v * (1 / scale)) + zp as eager's quantize_per_tensor computes it (float32
    multiply by float32(1.0 / scale)), unclamped. (numpy: this runs under partitioning's fake mode.)"""
    return int(np.rint(np.float32(v) * np.float32(1.0 / scale))) + zp


def _is_act_quant(node: Node) -> bool:
    a = bind(node)
    return a["dtype"] in QUANT_DTYPES and isinstance(a["scale"], float) and \
        all(isinstance(a[k], int) for k in ("zero_point", "quant_min", "quant_max"))


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


@dataclass
class Int8Pattern:
    """One conv / linear / pool / add / cat / view of a quantized graph as fuse_quantized_patterns
    saw it (explain lists them): the int8 pattern it became, or why it stayed float."""
    node: str       # the convolution / addmm / pooling / add / cat node (a view chain: its first view)
    fused: bool
    pattern: str    # fused: e.g. "dq -> conv2d -> add(dq) -> relu -> q"; else ""
    reason: str     # not fused: why; fused: what of the chain stayed float ("" if nothing)


def _describe(kind: str, chain: Chain) -> str:
    steps = ["dq", kind] + (["add(dq)"] if chain.add is not None else []) + \
        ([op_name(chain.act.target).split("::")[1].split(".")[0]] if chain.act is not None else []) + \
        (["q"] if chain.quant is not None else ["float32 out"])
    return " -> ".join(steps)


def _float_rest(chain: Chain) -> str:
    """What reads the fused op's output in float32 when the chain ends without a quantize."""
    if chain.quant is not None:
        return ""
    users = list(chain.last.users)
    if len(users) != 1:
        return f"{len(users)} nodes read the float32 output (a fused chain continues through one)"
    user = users[0]
    if user.target in (aten.add.Tensor, aten.hardtanh.default):
        return (f"{user.name} stays float32: {op_name(user.target)} fuses only when a quantize_per_tensor "
                "follows it (the quantizer left this output unquantized)")
    if user.op == "output":
        return ""
    return (f"{user.name} ({op_name(user.target)}) runs in float32: the quantizer left this output unquantized "
            "(no quantize_per_tensor after the conv / linear)")


def _fuse_conv(gm: GraphModule, conv: Node) -> Int8Pattern | None:
    a = bind(conv)
    dq_x, dq_w = _act_dequant(a["input"]), _weight_dequant(a["weight"])
    if dq_x is None and dq_w is None:
        return None  # a float conv, not part of a quantized pattern
    if dq_x is None or dq_w is None:
        return Int8Pattern(conv.name, False, "", _unfused_operands(dq_x, dq_w))
    if a["transposed"] or len(a["stride"]) != 2 or any(a["output_padding"]):
        return Int8Pattern(conv.name, False, "", "not a 2-d convolution (transposed or 1-d/3-d): no int8 kernel")
    chain = Chain(conv, allow_view=False, allow_add=True)
    rest = _float_rest(chain)
    out = chain.out_params()
    val = chain.last.meta["val"].to(out[-1])
    _replace(gm, conv, chain.last, torch.ops.twb_quant.conv2d.default,
             (*_qparams(dq_x), *_qparams(dq_w), a["bias"], list(a["stride"]), list(a["padding"]),
              list(a["dilation"]), a["groups"], chain.relu, *out, *chain.residual_params()), val)
    _erase_dead(gm, chain.nodes() + [conv, dq_w, dq_x, chain.residual])
    return Int8Pattern(conv.name, True, _describe("conv2d", chain), rest)


def _unfused_operands(dq_x, dq_w) -> str:
    if dq_x is None:
        return "its input is not a dequantize_per_tensor of uint8/int8 with number scale / zero point"
    return ("its weight is not a dequantize_per_channel of a constant int8 tensor on axis 0 with range "
            "[-128, 127] (per-tensor or asymmetric weights have no int8 path yet)")


def _fuse_addmm(gm: GraphModule, addmm: Node) -> Int8Pattern | None:
    bias, a, b = addmm.args
    in_view = a if isinstance(a, Node) and a.target is aten.view.default and len(a.users) == 1 else None
    dq_x = _act_dequant(in_view.args[0] if in_view is not None else a)
    t = b if isinstance(b, Node) and b.target is aten.t.default else None
    dq_w = _weight_dequant(t.args[0]) if t is not None else None
    if dq_x is None and dq_w is None:
        return None
    if dq_x is None or dq_w is None:
        return Int8Pattern(addmm.name, False, "", _unfused_operands(dq_x, dq_w))
    if addmm.kwargs.get("alpha", 1) != 1 or addmm.kwargs.get("beta", 1) != 1:
        return Int8Pattern(addmm.name, False, "", "addmm with alpha or beta other than 1")
    chain = Chain(addmm, allow_view=True, allow_add=False)
    rest = _float_rest(chain)
    out = chain.out_params()
    x_q, x_scale, x_zp = _qparams(dq_x)
    if in_view is not None:  # [..., K] -> [M, K] on the integer tensor instead of the float one
        with gm.graph.inserting_before(addmm):
            x_q = gm.graph.call_function(aten.view.default, (x_q, in_view.args[1]))
            x_q.meta.update({k: v for k, v in in_view.meta.items() if k != "val"})
            x_q.meta["val"] = in_view.meta["val"].to(dq_x.args[5])
    val = addmm.meta["val"].to(out[-1])
    _replace(gm, addmm, chain.last, torch.ops.twb_quant.linear.default,
             (x_q, x_scale, x_zp, *_qparams(dq_w), bias, chain.relu, *out), val,
             view_sizes=chain.view.args[1] if chain.view is not None else None)
    _erase_dead(gm, chain.nodes() + [addmm, t, dq_w, in_view, dq_x])
    return Int8Pattern(addmm.name, True, _describe("linear", chain), rest)


def fuse_quantized_patterns(gm: GraphModule) -> list[Int8Pattern]:
    """Rewrites gm in place (see the module docstring); returns each conv / linear that reads a
    quantized operand, fused or not (and why not)."""
    from .quant_weight_only import fuse_weight_only_linears  # (torchao's Int8WeightOnlyConfig: no Q/DQ nodes)
    weight_only = fuse_weight_only_linears(gm)
    if not any(getattr(n.target, "namespace", None) == "quantized_decomposed" for n in gm.graph.nodes):
        if any(p.fused for p in weight_only):
            gm.graph.lint()
            gm.recompile()
        return weight_only
    from .ops import register_int8
    register_int8()
    from .quant_dynamic import fuse_dynamic_linears  # (PT2E's dynamic config: issue #15 part 2)
    seen = weight_only + fuse_dynamic_linears(gm)
    for node in list(gm.graph.nodes):  # (a fusion erases only its own chain, never another anchor)
        if node.target is aten.convolution.default:
            seen.append(_fuse_conv(gm, node))
        elif node.target is aten.addmm.default:
            seen.append(_fuse_addmm(gm, node))
    from .quant_fuse_between import fuse_between  # pools, add, cat, views: after the convs took their dqs
    seen = [p for p in seen if p is not None] + fuse_between(gm)
    if any(p.fused for p in seen):
        gm.graph.lint()
        gm.recompile()
    return seen
