"""Weight-only int8 linear: the pattern torchao's Int8WeightOnlyConfig (quantize_(model,
Int8WeightOnlyConfig())) leaves around every linear once torch.export / torch.compile unwrap its
Int8Tensor weight into int8 data [N, K] and a float32 scale [N, 1] (symmetric: the zero point is
unused),

    w_q int8 ─ t ─ _to_copy(float32) ─┐
    x [M, K] ─────────────────────────┴─ mm ─ mul(scale [N]) ─ [view [..., N]] ─ [add(bias [N])]

becomes one `twb_quant::weight_only_linear` node (defined with its lowering in
ops/quant_weight_only.py, imported only when a graph holds the pattern: defining a custom op costs
~90 ms), whose eager implementation runs exactly the ops it replaces, on WOLINEAR: the weights stay int8 in memory
instead of being cast to a float32 copy at every call for a float32 GEMM. A cast int8 weight feeding
an mm in any other way stays as it was (explain names it: a float32 GEMM on the cast copy)."""
from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from .quant_fuse import Int8Pattern, _erase_dead, _replace

aten = torch.ops.aten


def _val(arg):
    return arg.meta.get("val") if isinstance(arg, Node) else None


def _is_channel_vector(arg, n: int) -> bool:
    """Whether arg is a float32 tensor of shape [n] (a per-output-channel scale or bias)."""
    v = _val(arg)
    return isinstance(v, torch.Tensor) and v.dtype == torch.float32 and tuple(v.shape) == (n,)


def _cast_int8_weight(b) -> Node | None:
    """The int8 [N, K] node w if b is _to_copy(t(w), dtype=float32) (torchao's weight cast)."""
    if not (isinstance(b, Node) and b.target is aten._to_copy.default):
        return None
    if b.kwargs.get("dtype") != torch.float32 or set(b.kwargs) - {"dtype", "layout", "device"}:
        return None
    t = b.args[0]
    if not (isinstance(t, Node) and t.target is aten.t.default):
        return None
    w = _val(t.args[0])
    return t.args[0] if isinstance(w, torch.Tensor) and w.dtype == torch.int8 and w.dim() == 2 else None


def _single_user(node: Node, target) -> Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].target is target else None


def _other_operand(binary: Node, node: Node):
    """binary's operand that is not node (None if both are, or binary takes keyword args)."""
    if binary.kwargs or len(binary.args) != 2 or binary.args[0] is binary.args[1]:
        return None
    return binary.args[1] if binary.args[0] is node else binary.args[0]


def _fuse_mm(gm: GraphModule, mm: Node, w: Node) -> Int8Pattern:
    """Fuses the pattern at mm (whose weight operand is w's float32 cast), or says why not."""
    x, cast = mm.args
    n = _val(w).shape[0]
    if _val(x).dtype != torch.float32:
        return Int8Pattern(mm.name, False, "", "int8 weight cast to float32 for an mm of non-float32 activations")
    mul = _single_user(mm, aten.mul.Tensor)
    scale = _other_operand(mul, mm) if mul is not None else None
    if not _is_channel_vector(scale, n):
        return Int8Pattern(mm.name, False, "", "int8 weight cast to float32 for an mm not followed by a "
                           "per-output-channel scale: runs as a float32 GEMM on the cast copy")
    view = _single_user(mul, aten.view.default)
    add = _single_user(view if view is not None else mul, aten.add.Tensor)
    bias = _other_operand(add, view if view is not None else mul) if add is not None else None
    if not _is_channel_vector(bias, n):
        add = bias = None
    last = add if add is not None else mul
    _replace(gm, mm, last, torch.ops.twb_quant.weight_only_linear.default, (x, w, scale, bias),
             mm.meta["val"], view_sizes=view.args[1] if add is not None and view is not None else None)
    dead = [add, view, mul, mm, cast, cast.args[0]] if add is not None else [mul, mm, cast, cast.args[0]]
    _erase_dead(gm, dead)
    steps = "int8 w -> float32 x @ w.t() -> mul(scale)" + (" -> add(bias)" if bias is not None else "")
    return Int8Pattern(mm.name, True, steps + " (weight-only int8)", "")


def fuse_weight_only_linears(gm: GraphModule) -> list[Int8Pattern]:
    """Rewrites gm's weight-only int8 linears in place (module docstring); returns one record per
    mm reading a cast int8 weight, fused or not. The caller lints and recompiles gm."""
    found = [(n, w) for n in gm.graph.nodes
             if n.target is aten.mm.default and (w := _cast_int8_weight(n.args[1])) is not None]
    if not found:
        return []
    from .ops import quant_weight_only  # noqa: F401  (defines the op, registers its lowering)
    return [_fuse_mm(gm, mm, w) for mm, w in found]
