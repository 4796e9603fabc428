"""The int8 patterns between a quantized CNN's convolutions (what X86InductorQuantizer annotates as
int8-in / int8-out: max / average / adaptive average pooling, concat, flatten; and a standalone add
of two dequantized tensors), each ending in a quantize_per_tensor:

    dq(x) ─ max_pool2d | avg_pool2d | adaptive_avg_pool2d (mean over H, W) ─ [views] ─ q
    dq(a), dq(b) ─ add ─ [relu] ─ [views] ─ q
    dq(x_1), ..., dq(x_n) ─ cat ─ [views] ─ q
    dq(x) ─ views (view, reshape, flatten, clone, squeeze, unsqueeze) ─ q

become twb_quant::pool2d / twb_quant::add (lowering/quant_ops.py) on the integer tensors, a cat of
the integer tensors, and the views applied to the integer result. Where q's parameters differ from
an input's, a twb_quant::requantize converts it (a cat input, a flatten between two observers);
where they are equal (the quantizer shares one observer), nothing: quantize(dequantize(x)) is x.
Called by quant_fuse.fuse_quantized_patterns after the conv / linear fusion."""
from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node

from .quant_fuse import Int8Pattern, _act_dequant, _erase_dead, _is_act_quant, _qparams
from .registry import bind, op_name

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed
# Ops that only rearrange or copy their input: re-applied to the integer tensor unchanged.
PASSTHROUGH = {aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.clone.default,
               aten.squeeze.dim, aten.squeeze.dims, aten.unsqueeze.default, aten.flatten.using_ints}


def _params(node: Node) -> tuple:
    """(scale, zero_point, quant_min, quant_max, dtype) of a quantize / dequantize_per_tensor node
    (the two schemas name them alike)."""
    a = bind(node)
    return tuple(a[k] for k in ("scale", "zero_point", "quant_min", "quant_max", "dtype"))


def _new(gm: GraphModule, before: Node, target, args: tuple, val, meta_from: Node, kwargs=None) -> Node:
    with gm.graph.inserting_before(before):
        n = gm.graph.call_function(target, args, kwargs)
    n.meta.update({k: v for k, v in meta_from.meta.items() if k != "val"})
    n.meta["val"] = val
    return n


def _as_out(gm: GraphModule, q: Node, dq: Node) -> Node:
    """dq's integer tensor in q's parameters: itself if they are equal, else requantized."""
    x = dq.args[0]
    out = _params(q)
    if _params(dq) == out:
        return x
    return _new(gm, q, torch.ops.twb_quant.requantize.default, (x, *_qparams(dq)[1:], *out),
                x.meta["val"].to(out[-1]), dq)


def _pool_args(core: Node) -> tuple | None:
    """(mode, dq, kernel, stride, padding, dilation, ceil_mode, count_include_pad, divisor,
    output_size) of a pooling node reading a dequantized tensor, else None."""
    if core.target is operator.getitem and core.args[1] == 0 and \
            core.args[0].target is aten.max_pool2d_with_indices.default and \
            all(u.target is operator.getitem and (u.args[1] == 0 or not u.users) for u in core.args[0].users):
        a = bind(core.args[0])
        return ("max", _act_dequant(a["self"]), a["kernel_size"], a["stride"], a["padding"], a["dilation"],
                a["ceil_mode"], True, 0, [])
    if core.target is aten.avg_pool2d.default:
        a = bind(core)
        return ("avg", _act_dequant(a["self"]), a["kernel_size"], a["stride"], a["padding"], [1, 1],
                a["ceil_mode"], a["count_include_pad"], a["divisor_override"] or 0, [])
    if core.target in (aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default):
        a = bind(core)
        return ("adaptive_avg", _act_dequant(a["self"]), [], [], [], [], False, True, 0, list(a["output_size"]))
    if core.target is aten.mean.dim:
        a = bind(core)
        x = a["self"]
        rank = x.meta["val"].dim() if isinstance(x, Node) else 0
        if rank == 4 and a.get("dtype") is None and sorted(d % 4 for d in a["dim"]) == [2, 3]:
            return ("adaptive_avg", _act_dequant(x), [], [], [], [], False, True, 0, [1, 1])
    return None


def _fuse_one(gm: GraphModule, q: Node) -> Int8Pattern | None:
    views = []
    core = q.args[0]
    while isinstance(core, Node) and core.target in PASSTHROUGH and len(core.users) == 1:
        views.insert(0, core)
        core = core.args[0]
    if not isinstance(core, Node) or len(core.users) != 1:
        return None
    out = _params(q)
    view_names = [op_name(v.target).split("::")[1].split(".")[0] for v in views]
    erase = [q] + views[::-1]
    if (dq := _act_dequant(core)) is not None:
        if not views and _params(dq) == out:
            return None  # an isolated dq -> q pair: the Q/DQ kernels run it
        result, steps, erase = _as_out(gm, q, dq), ["dq"], erase + [dq]
    elif (pool := _pool_args(core)) is not None and pool[1] is not None and pool[1].meta["val"].dim() == 4:
        mode, dq = pool[:2]
        is_mean = core.target is aten.mean.dim
        val = core.meta["val"]
        val = val[0] if isinstance(val, (tuple, list)) else val  # (getitem of max_pool2d_with_indices)
        shape = tuple(dq.meta["val"].shape[:2]) + ((1, 1) if is_mean else tuple(val.shape[2:]))
        args = [list(v) if isinstance(v, (list, tuple)) else v for v in pool[2:]]
        result = _new(gm, q, torch.ops.twb_quant.pool2d.default, (*_qparams(dq), mode, *args, *out),
                      q.meta["val"].new_empty(shape), core)
        if is_mean and tuple(val.shape) != shape:  # mean(keepdim=False): [N, C]
            result = _new(gm, q, aten.view.default, (result, list(val.shape)), val.to(out[-1]), core)
        steps = ["dq", "mean(H, W)" if is_mean else mode + "_pool2d"]
        pooled = [u for u in core.args[0].users if u is not core] + [core.args[0]] if mode == "max" else []
        erase += [core] + pooled + [dq]  # (max: the unused indices' getitem, then max_pool2d_with_indices)
    elif core.target is aten.cat.default:
        a = bind(core)
        dqs = [_act_dequant(t) for t in a["tensors"]]
        if any(d is None for d in dqs):
            return None
        parts = [_as_out(gm, q, d) for d in dqs]
        result = _new(gm, q, aten.cat.default, (parts, a.get("dim", 0)), core.meta["val"].to(out[-1]), core)
        steps, erase = [f"dq x{len(dqs)}", "cat"], erase + [core] + dqs
    else:
        relu = core.target is aten.relu.default
        add = core.args[0] if relu else core
        if not (isinstance(add, Node) and add.target is aten.add.Tensor and len(add.users) == 1) or \
                bind(add).get("alpha", 1) != 1:
            return None
        dqa, dqb = (_act_dequant(add.args[i]) for i in (0, 1))
        if dqa is None or dqb is None:
            return None
        result = _new(gm, q, torch.ops.twb_quant.add.default, (*_qparams(dqa), *_qparams(dqb), relu, *out),
                      core.meta["val"].to(out[-1]), add)
        steps = ["dq, dq", "add"] + (["relu"] if relu else [])
        erase += [core] + ([add] if relu else []) + [dqa, dqb]
    anchor = ((views[0] if views else core) if steps == ["dq"] else
              core.args[0] if core.target is operator.getitem else core).name  # (before the erasing)
    for v in views:
        result = _new(gm, q, v.target, (result, *v.args[1:]), v.meta["val"].to(out[-1]), v, v.kwargs)
    q.replace_all_uses_with(result)
    _erase_dead(gm, list(dict.fromkeys(erase)))  # (x + x, cat([x, x]): one dq twice)
    return Int8Pattern(anchor, True, " -> ".join(steps + view_names + ["q"]), "")


def fuse_between(gm: GraphModule) -> list[Int8Pattern]:
    """Rewrites each pattern of the module docstring in gm, in graph order; returns one
    Int8Pattern per rewritten chain and one per float op still reading a dequantized activation
    (what the int8 kernels do not cover: it runs in float32 between the Q/DQ kernels)."""
    found = [_fuse_one(gm, n) for n in list(gm.graph.nodes)
             if n.target is qd.quantize_per_tensor.default and _is_act_quant(n)]
    found = [p for p in found if p is not None]
    named = set()
    for dq in gm.graph.nodes:
        if _act_dequant(dq) is None:
            continue
        for user in dq.users:
            if user.op != "call_function" or user.name in named or \
                    user.target in (aten.convolution.default, aten.addmm.default) or \
                    getattr(user.target, "namespace", None) in ("quantized_decomposed", "twb_quant") or \
                    any(getattr(i.target, "namespace", None) == "twb_quant" for i in user.all_input_nodes):
                continue  # (a conv / linear, or a float op after a fused one: their rows say it; a Q/DQ node)
            named.add(user.name)
            why = "its output is not quantized" if not any(
                u.target is qd.quantize_per_tensor.default for u in user.users) else "no int8 form for this pattern"
            found.append(Int8Pattern(user.name, False, "", f"{op_name(user.target)} reads a dequantized int8 "
                                     f"tensor and runs in float32 ({why})"))
    return found
