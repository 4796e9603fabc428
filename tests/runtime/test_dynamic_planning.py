"""Planning new shapes of a dynamic=True graph: each new length gets a plan from the graph's symbolic
meta values (one generated function per graph, no re-tracing), reuses the partition's size-independent
constants (weights are not folded, packed or uploaded again), and computes what eager computes."""
import pytest
import torch
import torch.nn as nn

import torch_wasm_backend.lowering.lower
import torch_wasm_backend as twb
from helpers import EXACT, MATMUL


@pytest.fixture
def no_retracing(monkeypatch):
    def fail(*_):
        raise AssertionError("re-traced a graph whose symbolic shapes were known")
    monkeypatch.setattr(torch_wasm_backend.lowering.lower, "concrete_values", fail)


def _encoder():
    layer = nn.TransformerEncoderLayer(32, 4, 48, dropout=0.0, batch_first=True, activation="gelu")
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()


def test_many_lengths_in_a_row_match_eager_and_weights_are_uploaded_once(no_retracing):
    model = _encoder()
    compiled = torch.compile(model, backend="wasm", dynamic=True)
    with torch.no_grad():
        x = torch.randn(2, 5, 32)
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
        uploaded = twb.stats()["constant_bytes_uploaded"]
        assert uploaded > 0
        for length in [2, 3, 17, 64, 9, 31, 4, 100, 7]:
            x = torch.randn(2, length, 32)
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)
    s = twb.stats()
    assert s["graphs_compiled"] == 1 and s["eager_partition_calls"] == 0
    assert s["constant_bytes_uploaded"] == uploaded  # nothing size-dependent here: all shared


def test_shared_constants_follow_parameter_changes_at_new_lengths(no_retracing):
    model = _encoder()
    compiled = torch.compile(model, backend="wasm", dynamic=True)
    with torch.no_grad():
        for length in (3, 6):
            compiled(torch.randn(1, length, 32))
        for p in model.parameters():  # in place: the shared weights must be re-uploaded
            p.mul_(0.5)
        for length in (6, 11):
            x = torch.randn(1, length, 32)
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)


def test_plan_cache_stays_bounded_with_dynamic_lengths(no_retracing):
    model = nn.Sequential(nn.Linear(6, 5), nn.GELU()).eval()
    compiled = torch.compile(model, backend="wasm", options={"max_plans_per_partition": 2}, dynamic=True)
    with torch.no_grad():
        for rows in (3, 4, 5, 3, 4, 5, 3, 3):
            x = torch.randn(rows, 6)
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)
    s = twb.stats()
    # LRU of 2 cycling over 3 lengths: every call but the last misses
    assert s["plan_cache_misses"] == 7 and s["plan_cache_hits"] == 1 and s["calls"] == 8


def test_lengths_one_and_zero(no_retracing):
    """Dynamo specializes sizes 0 and 1 (their own graphs); they keep working next to the dynamic one."""
    model = _encoder()
    compiled = torch.compile(model, backend="wasm", dynamic=True)
    with torch.no_grad():
        for length in (5, 1, 7, 0, 1, 9):
            x = torch.randn(2, length, 32)
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)


def test_size_expressions_with_division_and_slicing(no_retracing):
    """Sizes like ceil(s/2) (a strided slice), s//3 and s*s come from the generated evaluator."""
    def f(x):
        n = x.shape[1]
        a = x[:, ::2] * 2.0                       # (s + 1) // 2 rows
        b = x[:, : n // 3].sum(1, keepdim=True)   # s // 3 rows
        c = x.reshape(x.shape[0], -1)[:, : n * 2]  # a view whose size is 2 * s
        return torch.relu(a).sum() + b.mean() * n + c.sum()

    compiled = torch.compile(f, backend="wasm", dynamic=True)
    with torch.no_grad():
        for length in (7, 9, 12, 31, 8):  # (n // 3 == 1 would be specialized: start at 7)
            x = torch.randn(3, length, 5)
            torch.testing.assert_close(compiled(x), f(x), rtol=1e-5, atol=1e-4)
    assert twb.stats()["graphs_compiled"] == 1


def test_generated_evaluator_matches_sympy():
    """_Codegen against sympy itself, on the expression kinds Dynamo produces (and a rational one,
    which must be evaluated whole, not term by term). Each must become Python source, except the
    rational one: a sympy fallback would pin plan templates (lowering/template.py)."""
    import sympy
    from torch.utils._sympy.functions import FloorDiv, Max, Mod
    from torch_wasm_backend.lowering.shapes import Unbound, _Codegen

    s0, s1 = sympy.symbols("s0 s1", integer=True, positive=True)
    exprs = [s0 * s1 + 3, FloorDiv(s0 + 1, 2), Mod(s0 * 7, 5), sympy.Max(s0 - 2, 1), s0**2 - s1,
             sympy.Min(s1, 4) * 64, (s0 * s1) / 2 + s0 / 2, sympy.Integer(-3) * s0 + 100,
             16 * Max(1, FloorDiv(s0, 2)) * Max(1, FloorDiv(s1, 2))]  # (torch's Max: pooled sizes)
    gen = _Codegen()
    evaluate = gen.function([gen._expr(e, whole=True) for e in exprs])
    assert sum(k.startswith("F") for k in gen.env) == 1  # the rational one alone
    for a, b in [(2, 3), (5, 8), (7, 1), (10, 10)]:
        got = evaluate({s0: a, s1: b})
        want = [int(e.subs({s0: a, s1: b})) for e in exprs]
        assert got == want, (a, b)
    with pytest.raises(Unbound):
        evaluate({s0: 2})


def test_exact_ops_at_new_lengths(no_retracing):
    compiled = torch.compile(lambda x: torch.relu(x.transpose(0, 1)).reshape(-1) * 3, backend="wasm",
                             dynamic=True)
    with torch.no_grad():
        for length in (2, 3, 8, 5):
            x = torch.randn(length, 4)
            torch.testing.assert_close(compiled(x), torch.relu(x.t()).reshape(-1) * 3, **EXACT)
