"""Plan templates (lowering/template.py, lowering/tracked.py): a dynamic-shape partition is lowered
once, and new shapes are rebuilt from the template without lowering. Checked: answers equal eager
at every shape; no lowering after the template's verification; guards that pick another kernel make
a second template; per-shape constants (arange, masks) follow the sizes and are freed with their
plan; and the safety nets: a size that leaks out of tracking is caught by the verification, a size
used in Python in a way that cannot be replayed pins the partition to lowering each shape."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_wasm_backend.lowering.context
import torch_wasm_backend.lowering.strided
import torch_wasm_backend as twb
import torch_wasm_backend.partition_runner as partition_runner
from helpers import MATMUL, allocations_made
from torch_wasm_backend.lowering.template import template_status
from torch_wasm_backend.lowering.tracked import Recorder, TrackedFloat, TrackedInt


@pytest.fixture
def lowerings(monkeypatch):
    """Counts LoweringContexts made (one per lowering of a partition, tracked or not)."""
    count = [0]
    init = torch_wasm_backend.lowering.context.LoweringContext.__init__

    def counted(self, *args, **kwargs):
        count[0] += 1
        init(self, *args, **kwargs)
    monkeypatch.setattr(torch_wasm_backend.lowering.context.LoweringContext, "__init__", counted)
    return count


def _status(partitions):
    return [s for p in partitions for s in template_status(p.lowering)]


def _encoder():
    layer = nn.TransformerEncoderLayer(32, 4, 48, dropout=0.0, batch_first=True, activation="gelu")
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()


def test_new_lengths_are_built_from_the_template_without_lowering(partitions, lowerings):
    model = _encoder()
    compiled = torch.compile(model, backend="wasm", dynamic=True)
    lengths = [5, 17, 3, 64, 9, 31, 2, 100]
    with torch.no_grad():
        for i, length in enumerate(lengths):
            x = torch.randn(2, length, 32)
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)
            if i == 1:  # the template (length 5) and its verification at length 17
                lowered = lowerings[0]
    assert lowerings[0] == lowered == 2
    s = twb.stats()
    assert s["plans_from_template"] == len(lengths) and s["plans_lowered"] == 0
    assert s["eager_partition_calls"] == 0 and s["graphs_compiled"] == 1
    assert _status(partitions) == ["1 templates, 1 verified"]


class _CausalAttention(nn.Module):
    """Position embeddings from arange(L) and a tril(ones(L, L)) mask: constants of each length."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.position = nn.Embedding(128, 16)

    def forward(self, x):
        length = x.shape[1]
        x = x + self.position(torch.arange(length))
        q, k, v = self.qkv(x).chunk(3, -1)
        mask = torch.ones(length, length, dtype=torch.bool).tril()
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(16)
        return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v


def test_per_length_constants_follow_the_length_and_are_freed_with_their_plan(partitions):
    model = _CausalAttention().eval()
    compiled = torch.compile(model, backend="wasm", options={"max_plans_per_partition": 2}, dynamic=True)
    runtime, _ = partition_runner.get_runtime(1, False)
    in_use = {}
    with torch.no_grad(), allocations_made(runtime) as live:
        x = torch.randn(1, 6, 16)
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
        for step, length in enumerate([9, 30, 4, 77, 12, 50, 7, 90, 11, 64, 9, 30]):
            x = torch.randn(1, length, 16)
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)
            in_use[step] = sum(live.values())
    assert _status(partitions) == ["1 templates, 1 verified"]
    assert twb.stats()["plans_lowered"] == 0
    # The LRU keeps two plans, each with its own mask and position table: after steps 1 and 11 it
    # holds the same two lengths, so the same bytes, unless evicted plans left constants behind.
    assert in_use[11] == in_use[1], in_use


def test_per_length_constants_made_from_weights_follow_weight_updates():
    """The position table (embedding rows 0..L-1) is made from a weight for each length. After an
    in-place update every length, loaded or not, must see the new weights."""
    model = _CausalAttention().eval()
    compiled = torch.compile(model, backend="wasm", dynamic=True)
    xs = {length: torch.randn(1, length, 16) for length in (9, 30, 12)}
    with torch.no_grad():
        for x in xs.values():
            compiled(x)
        model.position.weight.mul_(-2.0)
        model.qkv.bias.add_(0.5)
        for length in (9, 30, 12, 9):
            torch.testing.assert_close(compiled(xs[length]), model(xs[length]), **MATMUL)


class _ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv(x)))).mean((2, 3))


def test_sizes_that_cross_a_kernel_threshold_get_their_own_template(partitions):
    """Winograd needs >= 8 output tiles: 4x4 images (4 tiles) run im2col + GEMM, larger ones
    Winograd. The guard recorded by the first lowering sends the other sizes to a second template."""
    model = _ConvNet().eval()
    compiled = torch.compile(model, backend="wasm", dynamic=True)
    with torch.no_grad():
        for size in [4, 20, 3, 33, 6, 12]:
            x = torch.randn(1, 3, size, size)
            torch.testing.assert_close(compiled(x), model(x), **MATMUL)
    kernels = twb.stats()["plan_kernels"]
    assert kernels.get("CONV2D_WINOGRAD") and kernels.get("CONV2D")
    assert _status(partitions) == ["2 templates, 2 verified"]


def test_a_size_that_escapes_tracking_is_caught_by_the_verification(partitions, monkeypatch):
    """A lowering bug that bakes a size into a record (here: elementwise sizes copied through
    operator.index, which returns a plain int without telling anyone) must not give wrong answers
    at other lengths: the template's first reuse differs from a full lowering and is dropped."""
    collapse = torch_wasm_backend.lowering.strided.collapse

    def leaky(shape, *strides):
        sizes, strides = collapse(shape, *strides)
        return [int.__index__(s) for s in sizes], strides
    monkeypatch.setattr(torch_wasm_backend.lowering.strided, "collapse", leaky)
    compiled = torch.compile(lambda x: torch.relu(x) * 3, backend="wasm", dynamic=True)
    for length in [3, 5, 9, 17]:
        x = torch.randn(length, 4)
        torch.testing.assert_close(compiled(x), torch.relu(x) * 3, rtol=0, atol=0)
    [status] = _status(partitions)
    assert status.startswith("disabled: its template differs from a full lowering: records[0]")
    assert twb.stats()["plans_lowered"] >= 2


def test_a_constant_that_does_not_follow_the_sizes_is_caught_by_the_verification(partitions, monkeypatch):
    """The same safety net for per-shape constants: if zeros_like's constant kept the first
    shape's sizes, the template's first reuse would make a wrong-sized constant; the verification
    makes both and compares them, and the partition goes back to lowering each shape."""
    monkeypatch.setattr(torch_wasm_backend.lowering.context.LoweringContext, "at_call_sizes", lambda self, value: lambda ins: value)

    def f(x):
        return (x * 2 + torch.zeros_like(x)).relu()
    compiled = torch.compile(f, backend="wasm", dynamic=True)
    for rows in [3, 5, 9]:
        x = torch.randn(rows, 4)
        torch.testing.assert_close(compiled(x), f(x), rtol=0, atol=0)
    [status] = _status(partitions)
    assert status == ("disabled: its template differs from a full lowering: constant zeros_like:float32 vs "
                      "zeros_like:float32 at these sizes")


def test_constants_made_from_sizes_follow_the_sizes(partitions):
    """zeros_like(x) / new_ones(x, (n, 2)) make a constant from sizes: replayed at each shape."""
    def f(x):
        return (x * 2 + torch.zeros_like(x)).relu() + x.new_ones((x.shape[0], 1)) * 3
    compiled = torch.compile(f, backend="wasm", dynamic=True)
    for rows in [3, 5, 9, 17]:
        x = torch.randn(rows, 4)
        torch.testing.assert_close(compiled(x), f(x), rtol=0, atol=0)
    assert _status(partitions) == ["1 templates, 1 verified"]
    assert twb.stats()["plans_lowered"] == 0


def test_a_size_used_as_a_plain_number_pins_the_partition_to_lowering(partitions, monkeypatch, caplog):
    """A lowering that turns a size into a plain number (here: int() on the elementwise sizes)
    cannot be replayed at other sizes: the partition lowers each shape, and the log says where."""
    collapse = torch_wasm_backend.lowering.strided.collapse

    def converting(shape, *strides):
        sizes, strides = collapse(shape, *strides)
        return [int(s) for s in sizes], strides
    monkeypatch.setattr(torch_wasm_backend.lowering.strided, "collapse", converting)
    compiled = torch.compile(lambda x: torch.relu(x) * 3, backend="wasm", dynamic=True)
    with caplog.at_level("INFO", logger="torch_wasm_backend"):
        for rows in [3, 5, 9]:
            x = torch.randn(rows, 4)
            torch.testing.assert_close(compiled(x), torch.relu(x) * 3, rtol=0, atol=0)
    [status] = _status(partitions)
    assert status.startswith("disabled: its lowering cannot be replayed at other sizes (int() of the size")
    assert "test_plan_templates.py" in status  # where the size was converted
    assert "lowers each new shape" in caplog.text
    assert twb.stats()["plans_lowered"] == 2 and twb.stats()["plans_from_template"] == 1


def test_sizes_used_as_numbers_and_index_tables_follow_the_sizes(partitions):
    """x * x.shape[0] (a size as a scalar operand), group norm (sizes as op arguments) and nearest
    upsampling (an index table computed from the sizes) are all replayed by the template."""
    def f(x):
        y = F.group_norm(x * x.shape[2], 2)
        return F.interpolate(y, scale_factor=2, mode="nearest").relu()
    compiled = torch.compile(f, backend="wasm", dynamic=True)
    for size in [3, 5, 9, 4, 7]:
        x = torch.randn(1, 4, size, size + 1)
        torch.testing.assert_close(compiled(x), f(x), **MATMUL)
    # (Dynamo compiles this function twice: its first graph specializes something at size 3.)
    assert _status(partitions)[-1] == "1 templates, 1 verified"
    assert not any(s.startswith("disabled") for s in _status(partitions))
    assert twb.stats()["plans_lowered"] == 0


def test_tracked_ints_record_how_they_were_computed():
    a, b = TrackedInt(12, "a0"), TrackedInt(5, "a1")
    with Recorder() as recorder:
        size = max(2 * a + b % 3, 8) // 4
        assert size == 6 and size.__class__ is TrackedInt
        assert eval(size.expr, {"a0": 30, "a1": 7}) == max(2 * 30 + 7 % 3, 8) // 4
        assert (0 + a).expr == "(0 + a0)"                      # a plain int on the left is tracked
        assert isinstance(a / 8, TrackedFloat) and math.ceil(a / 8) == 2
        assert eval(math.ceil(a / 8).expr, {"a0": 17, "math": math}) == 3
        q, r = divmod(a, 5)
        assert (q.expr, r.expr) == ("(a0 // 5)", "(a0 % 5)")
        assert not recorder.pins
        int(a)
        f"{b}"
    assert "(((2 * a0) + (a1 % 3)) < 8)" in recorder.guards
    assert recorder.guards["(((2 * a0) + (a1 % 3)) < 8)"] is False
    assert [p.split(" at ")[0] for p in recorder.pins] == ["int() of the size a0 = 12", "text of the size a1 = 5"]


def test_tracked_ints_outside_a_recording_are_plain_numbers():
    a = TrackedInt(3, "a0")
    assert a == 3 and hash(a) == hash(3) and int(a) == 3 and f"{a}" == "3" and [0, 1, 2, 3][a] == 3
    import copy
    import pickle
    assert pickle.loads(pickle.dumps(a)).__class__ is int and copy.deepcopy(a).__class__ is int
