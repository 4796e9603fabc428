"""A user's bad input is the user's error, not wasm's: out-of-range (and, where eager rejects them,
negative) indices raise eager's own error (IndexError; RuntimeError for a 3-d index_select: the
same type and message as eager), rebuild nothing and are never charged to the
partition (it stays in wasm after more bad calls than max_failures). Float -> int casts of NaN,
infinities and out-of-range values give eager's bits."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import torch_wasm_backend as twb
from torch_wasm_backend import runtime

from helpers import EXACT


def raises_like_eager(fn, *args):
    """pytest.raises for the exception type and message eager raises for fn(*args)."""
    with pytest.raises(Exception) as info:
        fn(*args)
    assert info.type in (IndexError, RuntimeError)
    return pytest.raises(info.type, match=f"^{re.escape(str(info.value))}$")


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 5)
        self.proj = nn.Linear(5, 3)

    def forward(self, ids):
        return self.proj(self.emb(ids)).relu()


@pytest.mark.parametrize("dynamic", [False, True])
def test_embedding_out_of_range_and_negative_ids_raise_eagers_index_error(partitions, dynamic):
    model = Embed().eval()
    max_failures = 2
    compiled = torch.compile(model, backend="wasm", dynamic=dynamic, options={"max_failures": max_failures})
    good = torch.tensor([[0, 9, 3, 3, 7]])
    with torch.no_grad():
        torch.testing.assert_close(compiled(good), model(good), rtol=1e-5, atol=1e-6)
        rt, _ = runtime.get_runtime()
        bad_ids = [10, -1, -10, 2**40, -2**40]
        for _ in range(max_failures + 1):
            for bad in bad_ids:
                ids = good.clone()
                ids[0, 2] = bad
                with raises_like_eager(model, ids):
                    compiled(ids)
        # Still in wasm, on the same runtime, nothing charged.
        torch.testing.assert_close(compiled(good), model(good), rtol=1e-5, atol=1e-6)
    assert runtime.get_runtime()[0] is rt and not rt.broken
    assert all(p.failures == 0 and p.disabled_reason is None for p in partitions)
    s = twb.stats()
    assert s["traps"] == [] and s["calls"] == 2
    assert s["eager_partition_calls"] == s["input_errors"] == (max_failures + 1) * len(bad_ids)  # each bad call, visible


def test_index_select_rejects_negative_indices_like_eager():
    def f(x, i):
        return x.index_select(1, i) * 2

    compiled = torch.compile(f, backend="wasm")
    x = torch.randn(3, 7, 5)
    with torch.no_grad():
        ok = torch.tensor([6, 0, 6])
        torch.testing.assert_close(compiled(x, ok), f(x, ok), **EXACT)
        for bad in ([0, -1, 2], [7, 0, 0], [-7, 1, 1]):
            i = torch.tensor(bad)
            with raises_like_eager(f, x, i):
                compiled(x, i)
        for dtype in (torch.int32, torch.int64):  # both index widths, after the errors
            torch.testing.assert_close(compiled(x, ok.to(dtype)), f(x, ok.to(dtype)), **EXACT)
    s = twb.stats()
    assert s["traps"] == [] and s["calls"] == 3


def test_advanced_indexing_counts_negative_indices_from_the_end_and_rejects_out_of_range():
    def one(x, i):
        return x[i] + 1

    def two(x, i, j):  # two runtime index tensors: INDEX_ND
        return x[:, i, j] + 1

    c1, c2 = torch.compile(one, backend="wasm"), torch.compile(two, backend="wasm")
    x = torch.randn(6, 5, 4)
    with torch.no_grad():
        i = torch.tensor([-1, -6, 0, 5, -3])
        torch.testing.assert_close(c1(x, i), one(x, i), **EXACT)
        j, k = torch.tensor([-5, 4, -1]), torch.tensor([-4, 3, 0])
        torch.testing.assert_close(c2(x, j, k), two(x, j, k), **EXACT)
        for bad in (6, -7):
            b = torch.tensor([0, bad, 1, 2, 3])
            with raises_like_eager(one, x, b):
                c1(x, b)
        for bj, bk in (([0, 5, 1], [0, 0, 0]), ([0, 0, 0], [0, -5, 0])):
            bj, bk = torch.tensor(bj), torch.tensor(bk)
            with raises_like_eager(two, x, bj, bk):
                c2(x, bj, bk)
        torch.testing.assert_close(c1(x, i), one(x, i), **EXACT)
    assert twb.stats()["traps"] == []


def test_input_error_does_not_disturb_other_models_on_the_runtime():
    """The runtime is not rebuilt: another model's weights stay uploaded (no re-upload)."""
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    c_mlp = torch.compile(mlp, backend="wasm")
    emb = Embed().eval()
    c_emb = torch.compile(emb, backend="wasm")
    x, ids = torch.randn(2, 8), torch.tensor([[1, 2]])
    with torch.no_grad():
        c_mlp(x), c_emb(ids)
        uploaded = twb.stats()["constant_bytes_uploaded"]
        for _ in range(5):
            with pytest.raises(IndexError):
                c_emb(torch.tensor([[1, 99]]))
            torch.testing.assert_close(c_mlp(x), mlp(x), rtol=1e-5, atol=1e-6)
    assert twb.stats()["constant_bytes_uploaded"] == uploaded


# NaN, infinities, limits of each integer type and just past them, the int32 / int64 limits
# (where eager's 32- and 64-bit conversions differ), wrapping values, fractions around zero.
SPECIAL = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 0.5, -0.5, 0.99, -0.99, 1.0, -1.0, 127.5, 128.0,
           -128.5, -129.0, 255.5, 256.0, 300.5, -300.5, 32767.5, 32768.0, -32768.5, -32769.0, 40000.0, -40000.0,
           65536.0, 70000.5, 2147483520.0, 2147483648.0, -2147483648.0, -2147483904.0, 3e9, -3e9, 4294967296.0,
           1e10, -1e10, 9.2e18, 9.3e18, -9.3e18, 1e20, -1e20, 3.4e38, -3.4e38]


@pytest.mark.parametrize("src", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("dst", [torch.int32, torch.int16, torch.int8, torch.uint8, torch.int64],
                         ids=["i32", "i16", "i8", "u8", "i64"])
def test_float_to_int_casts_of_special_values_match_eager(src, dst):
    def f(x):
        return x.to(dst) * 1

    compiled = torch.compile(f, backend="wasm", options={"strict": True})
    grid = torch.tensor(SPECIAL, dtype=torch.float64).to(src)
    x = torch.cat([grid, grid.flip(0), grid[::2]]).reshape(1, -1).expand(3, -1).contiguous()  # odd sizes
    with torch.no_grad():
        got, want = compiled(x), f(x)
    assert got.dtype == want.dtype
    bad = got != want
    assert not bad.any(), f"{x[bad][:6].tolist()} -> {got[bad][:6].tolist()}, eager {want[bad][:6].tolist()}"
    assert twb.stats()["eager_partition_calls"] == 0


class IdsAsFloats(nn.Module):
    """An exported model takes float32 inputs: token ids arrive as floats."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def forward(self, ids):
        # (ids.long() leaves torch.export's _assert_tensor_metadata node, which has no lowering)
        return self.emb(torch.ops.aten._to_copy(ids, dtype=torch.int64)) * 2


def test_exported_model_raises_an_index_error_and_stays_usable(tmp_path):
    model = IdsAsFloats().eval()
    ids = torch.tensor([[1.0, 9.0, 0.0]])
    twb.export(model, (ids,), tmp_path / "m.wasm")
    exported = twb.load(tmp_path / "m.wasm")
    with torch.no_grad():
        torch.testing.assert_close(exported(ids), model(ids), **EXACT)
        for bad in (10.0, -1.0):
            with pytest.raises(IndexError, match="index out of range"):
                exported(torch.tensor([[1.0, bad, 0.0]]))
        torch.testing.assert_close(exported(ids), model(ids), **EXACT)  # not broken by bad input
