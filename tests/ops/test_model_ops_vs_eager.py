"""The ops real architectures needed that had no lowering (issue 11 part 3), against eager at awkward
shapes, in torch.compile and in export: sin / cos (rotary embeddings), gather (BERT's token type
ids), slice_scatter / select_scatter / fill / copy (Swin's shifted-window mask, torch.export's
copies), addcmul (ConvNeXt-V2's GRN), _weight_norm_interface (wav2vec2), 3-d convolution and 3-d
pooling (video models such as r3d_18).

Tolerances (helpers' families, with the reason where it is not the obvious one):
  EXACT           gather, scatters, fill, copy, max / avg pooling (same taps, same order, one divide)
  SINCOS          sin / cos: double-precision reduction + float polynomials, within ~1 ulp of the
                  true value as eager's SLEEF functions are, so results differ by <= 2 ulp of values
                  <= 1: rtol 1e-6 + atol 2.5e-7 (2 ulp of 1.0 is 2.4e-7)
  ADDCMUL         eager's CPU kernel contracts value * t1 * t2 + self into an fma, we round the
                  product first: <= 1 ulp of the product, O(1) values here: rtol 2.5e-7, atol 1e-6
  REDUCTION       conv3d (dot products of K <= 3 * 3 * 7 * 7 = 441, O(1) inputs), adaptive pooling,
                  weight norm (a sum of squares in another order)
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import EXACT, REDUCTION, check_against_eager, compile_wasm

import torch_wasm_backend as twb

aten = torch.ops.aten
NODE = shutil.which("node")
LOADER = Path(twb.__file__).parent / "js" / "loader.mjs"
EXPORT_JS = Path(__file__).parents[1] / "export" / "js"  # tests/export's Node driver
SINCOS = dict(rtol=1e-6, atol=2.5e-7)
ADDCMUL = dict(rtol=2.5e-7, atol=1e-6)
GEMM = REDUCTION


def r(*shape):
    return torch.randn(*shape)


def ints(*shape):
    return torch.randint(-3, 4, shape)


class Mod:
    """A module factory, built after the seed is fixed and put in eval mode (parameters become
    constants of the compiled graph)."""

    def __init__(self, factory):
        self.factory = factory


CASES = []


def case(id, fn, make_inputs, tol=EXACT, lowered=()):
    """lowered: ATen ops that must have run as wasm kernels (not folded into constants)."""
    CASES.append(pytest.param(fn, make_inputs, tol, lowered, id=id))


def specials(*shape, scale=4.0):
    x = r(*shape) * scale
    flat = x.view(-1)
    if flat.numel() >= 8:
        flat[:8] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -3.0, 3.0, 1e-30])
    return x


# ---- sin / cos ---------------------------------------------------------------------------------
case("sin-specials-33", torch.sin, lambda: (specials(33),), SINCOS, ["aten::sin"])
case("cos-specials-5x7", torch.cos, lambda: (specials(5, 7),), SINCOS, ["aten::cos"])
case("sin-cos-noncontig", lambda x: torch.sin(x) + torch.cos(x), lambda: (r(9, 6).t() * 10,), SINCOS)
# near multiples of pi/2 (relative accuracy of tiny results), rotary-sized and huge arguments
# (|x| >= 2^19 take libm's full-range reduction)
case("sin-cos-large-args", lambda x: torch.stack([torch.sin(x), torch.cos(x)]),
     lambda: (torch.cat([torch.arange(-20, 21) * (torch.pi / 2), r(37) * 1e4, r(9) * 1e6,
                         torch.tensor([524287.9, 524288.0, 3e7, -1e30, 3.4e38])]).float(),), SINCOS)
case("sin-int64-promotes", torch.sin, lambda: (ints(4, 5) * 100,), SINCOS, ["aten::sin"])
case("sin-size0", torch.sin, lambda: (r(0, 3),), SINCOS)


def _rotary(x, pos):
    """LLaMA-style rotary embedding with runtime positions: cos/sin of runtime angles (not folded)."""
    d = x.shape[-1]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    ang = pos[..., None].float() * inv_freq
    emb = torch.cat([ang, ang], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * emb.cos() + torch.cat([-x2, x1], -1) * emb.sin()


case("rotary-runtime-positions", _rotary, lambda: (r(2, 7, 6), torch.randint(0, 2048, (2, 7))), SINCOS,
     ["aten::sin", "aten::cos"])
# positions from arange fold to constants at compile time (eager computes them): the same result
case("rotary-arange-folded", lambda x: _rotary(x, torch.arange(x.shape[1])), lambda: (r(2, 9, 10),), SINCOS)

# ---- gather ------------------------------------------------------------------------------------
case("gather-dim1", lambda x, i: torch.gather(x, 1, i), lambda: (r(3, 9), torch.randint(0, 9, (3, 5))), EXACT,
     ["aten::gather"])
case("gather-dim0-smaller-index", lambda x, i: torch.gather(x, 0, i), lambda: (r(5, 7, 3), torch.randint(0, 5, (2, 4, 3))))
case("gather-neg-dim-noncontig", lambda x, i: torch.gather(x, -1, i),
     lambda: (r(4, 6, 17).transpose(0, 1), torch.randint(0, 17, (6, 3, 9))))
case("gather-int32-index", lambda x, i: torch.gather(x, 0, i), lambda: (r(6, 5), torch.randint(0, 6, (3, 5), dtype=torch.int32)))
case("gather-int64-data", lambda x, i: torch.gather(x, 1, i), lambda: (ints(4, 5) * 10**12, torch.randint(0, 5, (4, 8))))
case("gather-bool-data", lambda x, i: torch.gather(x, 0, i), lambda: (torch.rand(7, 3) > 0.5, torch.randint(0, 7, (5, 3))))
case("gather-0dim", lambda x, i: torch.gather(x, 0, i), lambda: (torch.tensor(2.5), torch.tensor(0)))
case("gather-size0-index", lambda x, i: torch.gather(x, 1, i), lambda: (r(3, 4), torch.zeros(3, 0, dtype=torch.int64)))


class _TokenTypes(nn.Module):
    """BERT's embeddings: an int64 buffer of token type ids gathered at the position ids."""

    def __init__(self):
        super().__init__()
        self.register_buffer("token_type_ids", torch.arange(16).remainder(2)[None])
        self.emb = nn.Embedding(2, 5)

    def forward(self, x, pos):
        tt = torch.gather(self.token_type_ids.expand(pos.shape[0], -1), 1, pos)
        return x + self.emb(tt)


case("gather-bert-token-types", Mod(_TokenTypes), lambda: (r(3, 11, 5), torch.randint(0, 16, (3, 11))), EXACT,
     ["aten::gather"])

# ---- slice_scatter / select_scatter / fill / copy ----------------------------------------------
case("slice-scatter-aten", lambda x, s: aten.slice_scatter(x, s, 1, 2, 9, 3), lambda: (r(3, 11, 2), r(3, 3, 2)),
     EXACT, ["aten::slice_scatter"])
case("slice-scatter-negative-bounds", lambda x, s: aten.slice_scatter(x, s, -1, -5, -1), lambda: (r(2, 9), r(2, 4)))
case("select-scatter-aten", lambda x, s: aten.select_scatter(x, s, 0, -2), lambda: (ints(5, 3), ints(3)), EXACT,
     ["aten::select_scatter"])
case("fill-tensor", lambda x, v: aten.fill.Tensor(x, v), lambda: (r(3, 5), torch.tensor(1.25)), EXACT, ["aten::fill.Tensor"])
case("fill-tensor-casts", lambda x, v: aten.fill.Tensor(x, v), lambda: (ints(7), torch.tensor(-2.75)))
case("fill-scalar-bool", lambda x: aten.fill.Scalar(x, True), lambda: (torch.rand(4, 3) > 2,))
case("copy-bcast-cast", lambda x, s: aten.copy(x, s), lambda: (r(4, 5), ints(5)), EXACT, ["aten::copy"])


def _inplace_writes(x, y, v):
    """In-place writes into slices of a runtime tensor: functionalization turns them into
    slice_scatter / select_scatter / fill / copy."""
    x = x.clone()
    x[:, 1:4] = y
    x[2] = 0.5
    x[:, -1].fill_(v)
    x[1, ::2] += 1
    return x


case("inplace-writes", _inplace_writes, lambda: (r(5, 7), r(5, 3), torch.tensor(3.0)))


def _swin_mask(x):
    """Swin's shifted-window attention mask, built with in-place writes into zeros (static: folded)
    and added to a runtime tensor."""
    h, w, ws, s = x.shape[1], x.shape[2], 3, 1
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
        for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    return x + img


case("swin-mask-static", _swin_mask, lambda: (r(2, 7, 7, 1),))


def _swin_mask_runtime(x, base):
    img = base.clone()
    cnt = 0
    for hs in (slice(0, -3), slice(-3, -1), slice(-1, None)):
        for wsl in (slice(0, -3), slice(-3, -1), slice(-1, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    return x + img


case("swin-mask-runtime-base", _swin_mask_runtime, lambda: (r(2, 7, 9, 1), r(1, 7, 9, 1)), EXACT,
     ["aten::slice_scatter"])

# ---- addcmul / weight norm ---------------------------------------------------------------------
case("addcmul-value", lambda x, a, b: torch.addcmul(x, a, b, value=0.5), lambda: (r(3, 7), r(3, 7), r(7)), ADDCMUL)
case("addcmul-bcast-value1", lambda x, a, b: torch.addcmul(x, a, b), lambda: (r(1, 5), r(4, 1), r(4, 5)), ADDCMUL)


class _GRN(nn.Module):
    """ConvNeXt-V2's global response normalization (timm's GlobalResponseNorm, channels last)."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c) * 0.1)
        self.bias = nn.Parameter(torch.randn(c) * 0.1)

    def forward(self, x):
        gx = x.norm(p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return x + torch.addcmul(self.bias, self.weight, x * nx)


case("addcmul-convnextv2-grn", Mod(lambda: _GRN(9)), lambda: (r(2, 5, 3, 9),), REDUCTION)
case("weight-norm-param-dim2", Mod(lambda: nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 6, 5, padding=2), dim=2)),
     lambda: (r(2, 4, 11),), REDUCTION)
case("weight-norm-legacy-dim0", Mod(lambda: nn.utils.weight_norm(nn.Linear(7, 5))), lambda: (r(3, 7),), REDUCTION)
case("weight-norm-runtime", lambda v, g: torch._weight_norm(v, g, 0), lambda: (r(5, 3, 4), r(5, 1, 1)), REDUCTION)
case("weight-norm-runtime-last-dim", lambda v, g: torch._weight_norm(v, g, 2), lambda: (r(3, 4, 5), r(1, 1, 5)), REDUCTION)


# ---- 3-d convolution ---------------------------------------------------------------------------
def conv3d_case(id, args, kwargs, x_shape):
    case(id, Mod(lambda: nn.Conv3d(*args, **kwargs)), lambda: (r(*x_shape),), GEMM, ["aten::convolution"])


conv3d_case("conv3d-basic", (3, 5, 3), dict(padding=1), (1, 3, 5, 7, 6))
conv3d_case("conv3d-r3d-stem", (3, 8, (3, 7, 7)), dict(stride=(1, 2, 2), padding=(1, 3, 3), bias=False), (2, 3, 4, 17, 15))
conv3d_case("conv3d-stride2-rect", (4, 9, (1, 3, 3)), dict(stride=2, padding=(0, 1, 1)), (1, 4, 5, 9, 9))
conv3d_case("conv3d-dilation", (2, 3, 3), dict(dilation=(1, 2, 2), padding=(1, 2, 2)), (1, 2, 3, 9, 8))
conv3d_case("conv3d-groups", (6, 9, 3), dict(groups=3, padding=1), (1, 6, 3, 4, 5))
conv3d_case("conv3d-depthwise", (5, 5, 3), dict(groups=5, padding=1), (2, 5, 4, 5, 3))
conv3d_case("conv3d-pointwise", (16, 33, 1), {}, (1, 16, 2, 3, 5))
conv3d_case("conv3d-kernel-eq-input", (3, 4, 3), {}, (1, 3, 3, 3, 3))
conv3d_case("conv3d-depth1", (3, 4, (1, 3, 3)), dict(padding=(0, 1, 1)), (1, 3, 1, 6, 6))
case("conv3d-runtime-weight", lambda x, w, b: F.conv3d(x, w, b, padding=(0, 1, 2)),
     lambda: (r(1, 3, 4, 6, 5), r(4, 3, 2, 3, 5), r(4)), GEMM, ["aten::convolution"])
case("conv3d-noncontig-input", Mod(lambda: nn.Conv3d(3, 4, 2)), lambda: (r(1, 5, 6, 7, 3).permute(0, 4, 1, 2, 3),), GEMM)
case("conv3d-bn-relu", Mod(lambda: nn.Sequential(nn.Conv3d(3, 8, 3, padding=1, bias=False), nn.BatchNorm3d(8), nn.ReLU())),
     lambda: (r(2, 3, 3, 9, 7),), GEMM)

# ---- 3-d pooling -------------------------------------------------------------------------------
case("max_pool3d-k2", lambda x: F.max_pool3d(x, 2), lambda: (r(1, 3, 4, 8, 8),), EXACT, ["aten::max_pool3d_with_indices"])
case("max_pool3d-r3d-like", lambda x: F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1)), lambda: (specials(2, 3, 3, 9, 8).round(),))
case("max_pool3d-dilation-ceil", lambda x: F.max_pool3d(x, 2, 2, 1, dilation=2, ceil_mode=True), lambda: (r(1, 2, 7, 6, 9),))
case("max_pool3d-indices", lambda x: F.max_pool3d(x, 3, 2, 1, return_indices=True), lambda: (specials(1, 2, 5, 7, 6).round(),))
case("max_pool3d-unbatched", lambda x: F.max_pool3d(x, (2, 1, 3)), lambda: (r(3, 4, 5, 7),))
case("avg_pool3d-k2", lambda x: F.avg_pool3d(x, 2), lambda: (r(1, 3, 4, 8, 6),), EXACT, ["aten::avg_pool3d"])
case("avg_pool3d-pad-include", lambda x: F.avg_pool3d(x, 3, 2, 1), lambda: (r(2, 2, 5, 7, 7),))
case("avg_pool3d-pad-exclude", lambda x: F.avg_pool3d(x, 3, 2, 1, count_include_pad=False), lambda: (r(2, 2, 5, 7, 7),))
case("avg_pool3d-ceil-pad", lambda x: F.avg_pool3d(x, 3, 2, 1, ceil_mode=True), lambda: (r(1, 3, 6, 8, 5),))
case("avg_pool3d-divisor", lambda x: F.avg_pool3d(x, (1, 3, 3), 1, (0, 1, 1), divisor_override=5), lambda: (r(1, 2, 3, 5, 5),))
# (an output of 1 x 1 x 1 becomes a mean before lowering)
case("adaptive_avg_pool3d-1", lambda x: F.adaptive_avg_pool3d(x, 1), lambda: (r(2, 8, 3, 7, 7),), REDUCTION)
case("adaptive_avg_pool3d-rect-from-odd", lambda x: F.adaptive_avg_pool3d(x, (2, 3, 4)), lambda: (r(1, 3, 5, 7, 9),),
     REDUCTION, ["aten::_adaptive_avg_pool3d"])
case("adaptive_avg_pool3d-upsample", lambda x: F.adaptive_avg_pool3d(x, (2, 4, 4)), lambda: (r(2, 1, 3, 3),), REDUCTION)


@pytest.mark.parametrize("fn,make_inputs,tol,lowered", CASES)
def test_op_matches_eager(fn, make_inputs, tol, lowered):
    if isinstance(fn, Mod):
        fn = fn.factory().eval()
    s = check_against_eager(fn, *make_inputs(), tol=tol)
    for op in lowered:
        assert s["lowered_by_op"].get(op, 0) >= 1, (op, s["lowered_by_op"])


def test_sin_cos_join_the_elementwise_map_chain():
    s = check_against_eager(lambda x: torch.sin(x * 3.0) * torch.cos(x * 3.0) + 1.0, r(5, 33), tol=SINCOS)
    assert s["plan_kernels"].get("MAP", 0) >= 1 and "UNARY" not in s["plan_kernels"], s["plan_kernels"]


def test_gather_out_of_range_index_raises_eagers_error():
    """An out-of-range (or negative: torch.gather rejects those) index is an input error: the call
    raises what eager raises for it, and nothing is charged to the partition or rebuilt."""
    import torch_wasm_backend as twb
    f = compile_wasm(lambda x, i: torch.gather(x, 1, i) * 2)
    x = r(3, 4)
    good = torch.tensor([[3, 0], [1, 1], [2, 0]])
    torch.testing.assert_close(f(x, good), torch.gather(x, 1, good) * 2)
    traps = len(twb.stats()["traps"])
    for bad in (torch.tensor([[4, 0], [1, 1], [2, 0]]), torch.tensor([[0, 0], [-1, 1], [2, 0]])):
        with pytest.raises(RuntimeError) as wasm_error:
            f(x, bad)
        with pytest.raises(RuntimeError) as eager_error:
            torch.gather(x, 1, bad)
        assert str(wasm_error.value) == str(eager_error.value)
    assert len(twb.stats()["traps"]) == traps
    torch.testing.assert_close(f(x, good), torch.gather(x, 1, good) * 2)


def test_conv3d_pool3d_in_one_partition():
    """A small r3d-shaped block (conv3d + bn + relu, max pool, conv, adaptive pool, linear) runs
    entirely in wasm, the batch norms folded into the convs and the relus into their epilogues
    (the 1 x 1 x 1 adaptive pool arrives as a mean: REDUCE)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv3d(3, 8, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False), nn.BatchNorm3d(8), nn.ReLU(),
                      nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)), nn.Conv3d(8, 8, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    with torch.no_grad():
        m[1].running_mean.normal_()
        m[1].running_var.uniform_(0.5, 2)
    s = check_against_eager(m, r(2, 3, 5, 19, 17), tol=GEMM)
    assert s["plan_kernels"].get("CONV3D") == 2 and "CHANNEL_AFFINE" not in s["plan_kernels"], s["plan_kernels"]
    assert s["plan_kernels"].get("POOL3D") == 1 and "UNARY" not in s["plan_kernels"], s["plan_kernels"]


# ---- the same ops through torch.export -> .wasm (wasmtime, and Node.js when installed) ----------
class _Video(nn.Module):
    def __init__(self):
        super().__init__()
        self.m = nn.Sequential(nn.Conv3d(3, 8, (3, 5, 5), (1, 2, 2), (1, 2, 2), bias=False), nn.BatchNorm3d(8),
                               nn.ReLU(), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)), nn.Conv3d(8, 8, 3, padding=1),
                               nn.ReLU(), nn.AvgPool3d(2), nn.AdaptiveAvgPool3d((1, 2, 2)), nn.Flatten(), nn.Linear(32, 5))

    def forward(self, x):
        return self.m(x)


class _TextIdioms(nn.Module):
    """What torch.export makes of a text model's idioms: a gather from an int64 buffer (at positions
    computed from the input, so that it is not folded into a constant), rotary-style
    cos/sin of runtime angles, writes into slices of a clone (slice_scatter, select_scatter, fill,
    copy), `.to(...)` (_assert_tensor_metadata), addcmul and a weight-normed linear."""

    def __init__(self):
        super().__init__()
        self.register_buffer("token_type_ids", torch.arange(16).remainder(2)[None])
        self.emb = nn.Embedding(2, 6)
        self.lin = nn.utils.parametrizations.weight_norm(nn.Linear(6, 6), dim=0)
        self.w, self.b = nn.Parameter(torch.randn(6)), nn.Parameter(torch.randn(6))

    def forward(self, x):
        pos = (x[..., 0].abs().clamp(max=3.0) * 5).long()
        h = x + self.emb(torch.gather(self.token_type_ids.expand(x.shape[0], -1), 1, pos))
        ang = x.sum(-1, keepdim=True) * torch.arange(1, 7).float()
        h = h * ang.cos() + h.flip(-1) * ang.sin()
        y = h.clone()
        y[:, 1:3] = x[:, :2] * 2
        y[:, 0] = 0.5
        return self.lin(torch.addcmul(self.b, self.w, y.to(torch.float32)))


# REDUCTION: conv / GEMM sums in another order; in _TextIdioms the angle is a sum (reordered) times
# up to 6 before cos/sin, so its rounding difference reaches the output amplified (seen: 4.2e-6 on
# values up to 3.7).
@pytest.mark.parametrize("name,make,x_shape,ops", [
    ("video", _Video, (2, 3, 4, 17, 15), ["aten::convolution", "aten::max_pool3d_with_indices", "aten::avg_pool3d",
                                           "aten::_adaptive_avg_pool3d"]),
    ("text", _TextIdioms, (2, 7, 6), ["aten::gather", "aten::sin", "aten::cos", "aten::slice_scatter",
                                      "aten::select_scatter", "aten::fill.Tensor", "aten::copy"]),
])
def test_export_runs_the_new_ops(tmp_path, name, make, x_shape, ops):
    from torch_wasm_backend import wasm_file
    torch.manual_seed(0)
    m = make().eval()
    x = r(*x_shape)
    path = tmp_path / f"{name}.wasm"
    twb.export(m, (x,), path)
    lowered = wasm_file.read_metadata(path)["ops"]
    for op in ops:
        assert lowered.get(op, 0) >= 1, (op, lowered)
    model = twb.load(path)
    try:
        got = model(x)
    finally:
        model.close()
    with torch.no_grad():
        expected = m(x)
    torch.testing.assert_close(got, expected, **REDUCTION)
    if NODE is not None:  # the shipped JS loader in Node.js, 2 threads (worker_threads)
        x_file = tmp_path / "x.f32"
        x_file.write_bytes(x.numpy().astype("<f4").tobytes())
        name_in = wasm_file.read_metadata(path)["inputs"][0]["name"]
        run = subprocess.run([NODE, str(EXPORT_JS / "run_model.mjs"), str(LOADER), str(path), "2", str(tmp_path),
                              f"{name_in}={x_file}"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        out_file = json.loads(run.stdout.strip().splitlines()[-1])["outputs"]["output"]
        got_node = torch.from_numpy(np.fromfile(out_file, dtype="<f4").reshape(expected.shape))
        torch.testing.assert_close(got_node, expected, **REDUCTION)


@pytest.mark.parametrize("name", ["sin-cos", "gather", "slice-scatter", "select-scatter", "conv3d", "pool3d"])
def test_dynamic_shapes(name):
    """dynamic=True: one graph over several sizes (plans made from a template at new sizes, or
    lowered again), every size equal to eager."""
    conv = nn.Conv3d(3, 4, 3, padding=1).eval()
    fn, make, tol = {
        "sin-cos": (lambda x: torch.sin(x) * torch.cos(x), lambda n: r(3, n) * 50, SINCOS),
        "gather": (lambda x: torch.gather(x, 1, (x.abs().clamp(max=0.99) * x.shape[1]).long()), lambda n: r(3, n), EXACT),
        "slice-scatter": (lambda x: aten.slice_scatter(x, x[:, 1:3] * 2, 1, 1, 3), lambda n: r(3, n), EXACT),
        "select-scatter": (lambda x: aten.select_scatter(x, x[:, 0] + 1, 1, -1), lambda n: r(3, n), EXACT),
        "conv3d": (conv, lambda n: r(1, 3, n, n + 1, 2 * n), GEMM),
        "pool3d": (lambda x: F.max_pool3d(x, 3, 2, 1) + F.avg_pool3d(x, 2, ceil_mode=True).sum(),
                   lambda n: r(1, 3, n, n + 1, 2 * n), REDUCTION),
    }[name]
    twb.reset_stats()
    compiled = torch.compile(fn, backend="wasm", dynamic=True, options={"strict": True})
    with torch.no_grad():
        for n in (5, 7, 9, 6):
            x = make(n)
            torch.testing.assert_close(compiled(x), fn(x), equal_nan=True, **tol)
    s = twb.stats()
    assert s["lowered_fraction"] == 1.0 and s["eager_partition_calls"] == 0, s["fallback_nodes"]
