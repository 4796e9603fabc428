"""registry.bind: lowerings read a node's arguments by schema name, whether the graph passes them
positionally or as keywords, with the schema's defaults for the ones it leaves out. Checked against
torch's own normalizer (torch.fx.operator_schemas.normalize_function), which binds the same way
but names the first argument `input` where the schema says `self`."""
import pytest
import torch
from torch.fx import Graph
from torch.fx.operator_schemas import normalize_function

from torch_wasm_backend.lowering import ops  # noqa: F401  (fills the registry)
from torch_wasm_backend.lowering.registry import REGISTRY, bind, is_view_op

aten = torch.ops.aten

# (op, positional arguments after the input, keyword arguments): calls the lowerings read
# arguments from, written partly as keywords.
CALLS = [
    (aten.add.Tensor, ("y",), {"alpha": 2}),
    (aten.avg_pool2d.default, ([3, 3],), {"stride": [2, 2], "count_include_pad": False}),
    (aten.max_pool2d_with_indices.default, ([2, 2], [1, 1]), {"dilation": [2, 2]}),
    (aten.addmm.default, ("y", "z"), {"beta": 0.5}),
    (aten.linear.default, ("y",), {}),
    (aten.div.Tensor_mode, ("y",), {"rounding_mode": "floor"}),
    (aten.clamp.default, (), {"max": 3.0}),
    (aten.hardtanh.default, (-2.0,), {}),
    (aten.gelu.default, (), {"approximate": "tanh"}),
    (aten.slice_scatter.default, ("y",), {"dim": 1, "end": 4}),
    (aten.cat.default, (), {"dim": 1}),
    (aten.tril.default, (), {"diagonal": -1}),
    (aten.sum.dim_IntList, ([1],), {"dtype": torch.float32}),
    (aten._to_copy.default, (), {"dtype": torch.int64}),
]


def _node(graph, op, args, kwargs):
    names = {n: graph.placeholder(n) for n in ("x", "y", "z")}
    first = [names["x"], names["y"]] if op is aten.cat.default else names["x"]
    args = tuple(names.get(a, a) if isinstance(a, str) else a for a in args)
    return graph.call_function(op, (first, *args), kwargs)


@pytest.mark.parametrize("op, args, kwargs", CALLS, ids=[str(c[0]) for c in CALLS])
def test_bind_matches_torch_normalize_function(op, args, kwargs):
    assert op in REGISTRY  # (a call the lowerings really read)
    node = _node(Graph(), op, args, kwargs)
    expected = normalize_function(op, node.args, node.kwargs, normalize_to_only_use_kwargs=True).kwargs
    first = op._schema.arguments[0].name
    expected = {(first if k == "input" else k): v for k, v in expected.items()}
    assert bind(node) == expected


def test_positional_and_keyword_calls_bind_alike():
    graph = Graph()
    positional = _node(graph, aten.avg_pool2d.default, ([3, 3], [2, 2], [1, 1], False, False, None), {})
    keywords = graph.call_function(aten.avg_pool2d.default, (positional.args[0],), dict(
        kernel_size=[3, 3], stride=[2, 2], padding=[1, 1], ceil_mode=False, count_include_pad=False,
        divisor_override=None))
    assert bind(positional) == bind(keywords)


def test_views_are_recorded_in_the_registry():
    assert all(is_view_op(t) for t in (aten.view.default, aten.permute.default, aten.slice.Tensor))
    assert not any(is_view_op(t) for t in (aten.clone.default, aten.cat.default, aten.add.Tensor))
