"""The per-call path: inference graphs handed to Dynamo without aot_autograd's runtime wrappers
(only when those would do nothing), and CompiledPartition's replay of the previous call."""
import pytest
import torch
import torch.nn as nn

import torch_wasm_backend as twb
from torch_wasm_backend.backend import wasm_backend
from helpers import MATMUL, assert_ran_in_wasm


def _returned_callables(fn, *args, grad: bool = False):
    """Compiles fn through wasm_backend and returns what the backend gave Dynamo."""
    returned = []

    def backend(gm, example_inputs):
        returned.append(wasm_backend(gm, example_inputs))
        return returned[-1]

    torch._dynamo.reset()
    with torch.set_grad_enabled(grad):
        torch.compile(fn, backend=backend)(*args)
    return returned


def _is_direct(compiled) -> bool:
    """The ATen graph's own forward (a bound GraphModule method), not aot_autograd's wrapper."""
    return isinstance(getattr(compiled, "__self__", None), torch.fx.GraphModule)


def test_only_graphs_whose_wrappers_do_nothing_skip_them():
    x = torch.randn(3, 4)
    assert _is_direct(*_returned_callables(lambda a: (a * 2).relu(), x))
    assert not _is_direct(*_returned_callables(lambda a: (a * 2).relu(), x, grad=True))

    def mutates(a):
        a.add_(1)
        return a * 2

    assert not _is_direct(*_returned_callables(mutates, x.clone()))
    assert not _is_direct(*_returned_callables(lambda a: (a.view(-1), a * 2), x))


def test_inference_graph_with_input_mutation_mutates_like_eager():
    def f(a):
        a.mul_(2)
        return a + 1

    compiled = torch.compile(f, backend="wasm")
    x = torch.randn(5, 3)
    y = x.clone()
    with torch.no_grad():
        for _ in range(3):  # the later calls replay the first one's plan
            torch.testing.assert_close(compiled(x), f(y))
            torch.testing.assert_close(x, y)
    assert_ran_in_wasm(twb.stats())


def test_inference_graph_returning_a_view_of_its_input_aliases_it():
    compiled = torch.compile(lambda a: (a.t(), a * 2), backend="wasm")
    x = torch.randn(4, 6)
    with torch.no_grad():
        view, doubled = compiled(x)
    assert view.data_ptr() == x.data_ptr() and view.shape == (6, 4)
    x.add_(1)
    torch.testing.assert_close(view, x.t())
    torch.testing.assert_close(doubled, (x - 1) * 2)


def test_outputs_of_repeated_calls_are_independent_tensors():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    compiled = torch.compile(model, backend="wasm")
    x1, x2 = torch.randn(1, 8), torch.randn(1, 8)
    with torch.no_grad():
        out1 = compiled(x1)
        kept = out1.clone()
        out2 = compiled(x2)
    assert out1.data_ptr() != out2.data_ptr()
    torch.testing.assert_close(out1, kept, rtol=0, atol=0)
    torch.testing.assert_close(out2, model(x2), **MATMUL)


def test_replayed_calls_notice_new_strides_shapes_and_weights():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    compiled = torch.compile(model, backend="wasm", dynamic=False)
    with torch.no_grad():
        x = torch.randn(4, 6)
        for _ in range(3):
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)
        xt = torch.randn(6, 4).t()  # same shape, other strides: Dynamo recompiles or we re-plan
        torch.testing.assert_close(compiled(xt), model(xt), **MATMUL)
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
        model[0].weight.mul_(-1)  # in place: the replay must see the new version and re-upload
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
        model[2].bias = nn.Parameter(torch.randn(3))  # replaced: the replay must see a new tensor
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
    s = twb.stats()
    assert s["eager_partition_calls"] == 0 and s["calls"] == 9


def test_a_replaced_and_freed_parameter_is_never_confused_with_its_successor():
    # Dropping the old parameter lets CPython give its id (and address) to the next tensor of the
    # same size, whose version is 0 again: only an identity check on held tensors notices.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5)).eval()
    compiled = torch.compile(model, backend="wasm")
    x = torch.randn(2, 6)
    with torch.no_grad():
        for _ in range(6):
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)
            model[0].weight = None
            model[0].weight = nn.Parameter(torch.randn(5, 6))
    assert twb.stats()["eager_partition_calls"] == 0


@pytest.mark.parametrize("first_grad", [False, True])
def test_grad_mode_switch_recompiles_and_backward_still_works(first_grad):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    compiled = torch.compile(model, backend="wasm")
    x = torch.randn(3, 4)
    for grad in (first_grad, not first_grad, first_grad):
        xg = x.clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            out = compiled(xg)
        assert out.requires_grad == grad
        torch.testing.assert_close(out, model(x), **MATMUL)
        if grad:
            out.sum().backward()
            got = xg.grad
            xe = x.clone().requires_grad_()
            model(xe).sum().backward()
            torch.testing.assert_close(got, xe.grad, **MATMUL)
    assert twb.stats()["graphs_compiled"] == 2
