"""Ops rewritten before partitioning by PyTorch's own decompositions (torch._decomp), each into ops
our kernels run exactly as eager composes them (elementwise, reductions, views, copies). An op whose
decomposition would leave an unsupported op behind stays out of this list."""
from __future__ import annotations

import torch
from torch._decomp import get_decompositions

from ..registry import register_decomposition

aten = torch.ops.aten

ADOPTED = {
    aten.logsumexp.default: "amax, masked_fill, exp, sum, log (PyTorch's decomposition)",
    aten.glu.default: "split, sigmoid, mul (PyTorch's decomposition)",
    aten.baddbmm.default: "bmm, mul, add (PyTorch's decomposition)",
    aten.linalg_vector_norm.default: "abs/pow, sum, amax, sqrt (PyTorch's decomposition)",
    aten.pixel_shuffle.default: "view, permute, clone (PyTorch's decomposition)",
    aten.pixel_unshuffle.default: "view, permute, clone (PyTorch's decomposition)",
    aten.roll.default: "slices and cat (PyTorch's decomposition)",
    aten.repeat.default: "expand and clone (PyTorch's decomposition)",
    aten._prelu_kernel.default: "gt, mul, where (PyTorch's decomposition)",
    aten.clamp_min.default: "clamp (PyTorch's decomposition)",
    aten.clamp_max.default: "clamp (PyTorch's decomposition)",
    # self + (value * t1) * t2, eager's order; eager's CPU kernel contracts the last multiply-add
    # into an fma, so results may differ by 1 ulp of the product
    aten.addcmul.default: "mul, mul, add (PyTorch's decomposition)",
    # weight / its norm except dim; with parameters (wav2vec2) the lowering folds it to a constant
    aten._weight_norm_interface.default: "norm (abs/pow, sum, sqrt), div, mul (PyTorch's decomposition)",
}

_table = get_decompositions(list(ADOPTED))
for _target, _notes in ADOPTED.items():
    if _target in _table:
        register_decomposition(_target, notes=_notes)(_table[_target])
