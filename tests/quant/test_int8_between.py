"""The int8 ops between convolutions (lowering/quant_fuse_between.py: QADD, QPOOL2D, QREQUANT and
integer cat / views) against PyTorch running the same quantized_decomposed graph eagerly: functions
of uint8 / int8 tensors written as a PT2E-converted graph holds them (dequantize_per_tensor -> op ->
quantize_per_tensor), compiled strict with backend="wasm", at awkward shapes (odd H / W, channels not
a multiple of 16, rows with a 16-element tail, size-1 dims, broadcasting, ceil_mode, padding,
dilation, windows that reach past the input, rows wider than QPOOL2D's 4096-byte row buffer), zero
points 0 / 128 / 255 (uint8) and -128 / 0 / 5 (int8), on 1 thread and on 2 at shapes large enough to
split; then a quantize_pt2e-quantized Inception-style net, compiled and exported, and explain's rows.

Tolerances: exact (torch.equal) for all but adaptive average pooling. The kernels compute eager's
float32 operations in eager's order (dequantize, add / relu / max / window sum, divide, quantize:
kernel_abi.def), so add, requantize, cat, views and max pooling (max commutes with the increasing
dequantization) are bit-identical, and so is avg_pool2d, whose NCHW CPU kernel sums each window
row-major as QPOOL2D does. Adaptive average pooling (and mean over H, W, which is how
adaptive_avg_pool2d(x, 1) reaches the backend) within 1 LSB: eager's mean reduces in a vectorized
order we do not reproduce, and a sum that differs in its last float bit moves round(y / scale) by
one when y / scale sits on a rounding half (frequent here: a mean of integers with a shared scale
lands on k + 0.5 whenever the count is even)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers quantized_decomposed)

import torch_wasm_backend as twb
from helpers import assert_ran_in_wasm, compile_wasm
from test_int8_models import assert_matches, expose_quantized, teacher_forced
from torch_wasm_backend.quantize import quantize_pt2e

qd = torch.ops.quantized_decomposed
RANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127)}


def _q(x: torch.Tensor, scale: float, zp: int, dtype: torch.dtype) -> torch.Tensor:
    return qd.quantize_per_tensor(x, scale, zp, *RANGE[dtype], dtype)


def _dq(x: torch.Tensor, scale: float, zp: int) -> torch.Tensor:
    return qd.dequantize_per_tensor(x, scale, zp, *RANGE[x.dtype], x.dtype)


def _random_q(shape, dtype) -> torch.Tensor:
    lo, hi = RANGE[dtype]
    return torch.randint(lo, hi + 1, shape, dtype=torch.int32).to(dtype)


def _run(fn, *inputs, kernel: str | tuple, threads: int = 1, max_lsb: int = 0) -> None:
    """fn compiled strict vs eager: integer outputs within max_lsb, every node in wasm, and `kernel`
    (or each of a tuple) among the kernels the plan ran (the pattern was recognized, not run as
    float32 between Q/DQ kernels)."""
    twb.reset_stats()
    expected = fn(*inputs)
    got = compile_wasm(fn, threads=threads)(*inputs)
    assert got.dtype == expected.dtype and got.shape == expected.shape, (got.shape, expected.shape)
    diff = (got.int() - expected.int()).abs()
    assert diff.max() <= max_lsb, f"{int((diff > max_lsb).sum())} of {diff.numel()} off by up to {int(diff.max())}"
    s = twb.stats()
    assert_ran_in_wasm(s)
    for k in (kernel,) if isinstance(kernel, str) else kernel:
        assert s["plan_kernels"].get(k, 0) >= 1, dict(s["plan_kernels"])
    assert not any(op.startswith("quantized_decomposed::") for op in s["lowered_by_op"]), dict(s["lowered_by_op"])


# ---- add --------------------------------------------------------------------------------------
# (a shape, b shape): same shape with a 16-element tail, broadcast along rows / channels / both,
# a per-channel b, size-1 dims.
ADD_SHAPES = [((1, 19, 1, 33), (1, 19, 1, 33)), ((2, 3, 5, 7), (3, 1, 7)), ((2, 20, 1, 1), (2, 20, 9, 9)),
              ((4, 37), (37,)), ((2, 3, 40), (2, 3, 1)), ((1,), (5, 1))]
# (dtype, scale, zero point) of a, b, out; relu
ADD_PARAMS = [((torch.uint8, 0.02, 128), (torch.uint8, 0.03, 0), (torch.uint8, 0.04, 255), False),
              ((torch.int8, 0.05, -128), (torch.uint8, 0.011, 255), (torch.int8, 0.02, 5), True),
              ((torch.int8, 0.013, 0), (torch.int8, 0.013, 0), (torch.uint8, 0.026, 128), True)]


@pytest.mark.parametrize("shapes", ADD_SHAPES)
@pytest.mark.parametrize("params", ADD_PARAMS)
def test_add(shapes, params):
    (ad, as_, az), (bd, bs, bz), (od, os_, oz), relu = params

    def fn(a, b):
        y = _dq(a, as_, az) + _dq(b, bs, bz)
        return _q(torch.relu(y) if relu else y, os_, oz, od)
    a, b = _random_q(shapes[0], ad), _random_q(shapes[1], bd)
    a.view(-1)[0], b.view(-1)[0] = RANGE[ad][1], RANGE[bd][1]  # a sum past the output range: clamped
    _run(fn, a, b, kernel="QADD")


def test_add_of_a_tensor_with_itself():
    def fn(a):
        x = _dq(a, 0.02, 100)
        return _q(x + x, 0.05, 3, torch.uint8)
    _run(fn, _random_q((3, 17, 5), torch.uint8), kernel="QADD")


# ---- requantize: cat inputs and views between two observers ----------------------------------------
@pytest.mark.parametrize("dim", [1, -1])
def test_cat_requantizes_inputs_whose_parameters_differ(dim):
    """Inputs of other scales / zero points / types than the output's are requantized; the one with
    the output's own parameters is copied as it is."""
    def fn(a, b, c):
        return _q(torch.cat([_dq(a, 0.02, 128), _dq(b, 0.05, -3), _dq(c, 0.03, 7)], dim), 0.03, 7, torch.uint8)
    _run(fn, _random_q((2, 3, 5, 9), torch.uint8), _random_q((2, 3, 5, 9), torch.int8),
         _random_q((2, 3, 5, 9), torch.uint8), kernel="QREQUANT")


def test_cat_with_shared_parameters_is_an_integer_cat():
    def fn(a, b):
        return _q(torch.cat([_dq(a, 0.02, 0), _dq(b, 0.02, 0)], 1), 0.02, 0, torch.uint8)
    a, b = _random_q((1, 5, 3, 3), torch.uint8), _random_q((1, 11, 3, 3), torch.uint8)
    twb.reset_stats()
    assert torch.equal(compile_wasm(fn)(a, b), fn(a, b))
    s = twb.stats()
    assert s["lowered_by_op"].get("aten::cat") == 1 and "QREQUANT" not in s["plan_kernels"], dict(s["lowered_by_op"])
    assert not any(op.startswith("quantized_decomposed::") for op in s["lowered_by_op"])


@pytest.mark.parametrize("view", ["flatten", "view_clone", "none"])
def test_views_between_two_observers(view):
    """dq -> flatten (-> clone: eval dropout) -> q with other parameters (MobileNetV2's classifier
    input), and a bare dq -> q requantization."""
    def fn(x):
        y = _dq(x, 0.017, 131)
        y = {"flatten": lambda t: t.flatten(1), "view_clone": lambda t: t.view(2, -1).clone(), "none": lambda t: t}[view](y)
        return _q(y, 0.021, 3, torch.int8)
    _run(fn, _random_q((2, 37, 3, 1), torch.uint8), kernel="QREQUANT")


# ---- pooling ------------------------------------------------------------------------------------
# (input shape, kernel, stride, padding, dilation, ceil_mode)
MAX_POOLS = [((1, 3, 17, 15), 3, 2, 1, 1, False),   # ResNet's stem pool at odd sizes
             ((2, 19, 8, 33), 2, 2, 0, 1, True),    # 16-column tail, ceil_mode
             ((1, 5, 7, 9), 3, 2, 1, 1, True),      # ceil_mode with padding: a last window at the edge
             ((1, 2, 2, 2), 3, 1, 1, 1, False),     # kernel larger than the input
             ((1, 1, 1, 1), 1, 1, 0, 1, False),     # size 1
             ((1, 3, 9, 10), 3, 1, 1, 2, False),    # dilation
             ((1, 2, 3, 4100), (2, 3), (1, 2), (0, 1), 1, False),  # rows wider than the row buffer
             ((1, 3, 9, 75), 3, 2, 1, 1, False),    # 16-window vector blocks, stride 2, and edges
             ((1, 2, 5, 53), (2, 5), 1, (1, 2), 2, True)]  # stride 1, dilated, ceil_mode


# Each config with one (dtype, zero point) in turn, the first with all four.
MAX_CASES = [(cfg, dz) for i, cfg in enumerate(MAX_POOLS) for j, dz in enumerate(
    [(torch.uint8, 128), (torch.int8, -128), (torch.uint8, 0), (torch.int8, 5)]) if i == 0 or i % 4 == j]


@pytest.mark.parametrize("cfg,dtype_zp", MAX_CASES, ids=[f"{c[0]}-{dz[0]}-{dz[1]}" for c, dz in MAX_CASES])
def test_max_pool(cfg, dtype_zp):
    shape, k, s, p, d, ceil = cfg
    dtype, zp = dtype_zp

    def fn(x):
        y = torch.nn.functional.max_pool2d(_dq(x, 0.02, zp), k, s, p, d, ceil_mode=ceil)
        return _q(y, 0.02, zp, dtype)
    _run(fn, _random_q(shape, dtype), kernel="QPOOL2D")


@pytest.mark.parametrize("width", [11, 45])
def test_max_pool_requantized(width):
    """Other output parameters than the input's (a quantizer that does not share the observer);
    width 45: 16-window vector blocks too."""
    def fn(x):
        return _q(torch.nn.functional.max_pool2d(_dq(x, 0.02, 3), 2), 0.07, 200, torch.uint8)
    _run(fn, _random_q((1, 4, 9, width), torch.int8), kernel="QPOOL2D")


# (input shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_POOLS = [((1, 3, 17, 15), 2, 2, 0, False, True, None),
             ((2, 19, 7, 9), 3, 2, 1, True, True, None),
             ((2, 19, 7, 9), 3, 2, 1, True, False, None),
             ((1, 5, 6, 5), (3, 2), (1, 2), (1, 0), False, True, 5),
             ((1, 2, 1, 1), 1, 1, 0, False, True, None)]


@pytest.mark.parametrize("cfg", AVG_POOLS)
@pytest.mark.parametrize("dtype,zp", [(torch.uint8, 255), (torch.int8, 0)])
def test_avg_pool(cfg, dtype, zp):
    shape, k, s, p, ceil, include_pad, divisor = cfg

    def fn(x):
        y = torch.nn.functional.avg_pool2d(_dq(x, 0.013, zp), k, s, p, ceil, include_pad, divisor)
        return _q(y, 0.013, zp, dtype)
    _run(fn, _random_q(shape, dtype), kernel="QPOOL2D")


@pytest.mark.parametrize("shape,size", [((2, 19, 7, 5), 1), ((1, 33, 4, 4), 1), ((1, 3, 7, 5), (3, 2)),
                                        ((1, 2, 1, 1), 1)])
@pytest.mark.parametrize("flatten", [False, True])
def test_adaptive_avg_pool(shape, size, flatten):
    """adaptive_avg_pool2d (to 1x1 it reaches the backend as mean over H, W: keepdim, or not when
    followed by flatten) within 1 LSB (module docstring)."""
    def fn(x):
        y = torch.nn.functional.adaptive_avg_pool2d(_dq(x, 0.02, 128), size)
        return _q(y.flatten(1) if flatten else y, 0.02, 128, torch.uint8)
    _run(fn, _random_q(shape, torch.uint8), kernel="QPOOL2D", max_lsb=1)


def test_threads_split_the_work_to_the_same_result():
    """Shapes large enough for QADD / QPOOL2D / QREQUANT to split over 2 threads: still exact."""
    def fn(a, b):
        y = torch.relu(_dq(a, 0.02, 128) + _dq(b, 0.03, 0))
        m = torch.nn.functional.max_pool2d(_dq(_q(y, 0.04, 0, torch.uint8), 0.04, 0), 3, 2, 1)
        return torch.cat([_q(m, 0.04, 0, torch.uint8), _q(_dq(b[:, :, ::2, ::2], 0.03, 0), 0.04, 0, torch.uint8)], 1)
    a, b = _random_q((2, 32, 64, 64), torch.uint8), _random_q((2, 32, 64, 64), torch.int8)
    _run(fn, a, b, kernel=("QADD", "QPOOL2D", "QREQUANT"), threads=2)


# ---- a quantized Inception-style CNN ---------------------------------------------------------------
class InceptionNet(nn.Module):
    """GoogLeNet's shapes in miniature, with functional relu as torchvision's BasicConv2d: a stem conv,
    a ceil_mode max pool, a block of four branches (1x1, 3x3, 5x5, max pool -> 1x1) concatenated,
    an average pool, a 1x1 conv, adaptive average pooling, flatten, dropout and a linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.b1, self.b3, self.b5, self.bp = (nn.Conv2d(8, c, k, padding=k // 2) for c, k in ((5, 1), (7, 3), (3, 5), (4, 1)))
        self.mix = nn.Conv2d(19, 24, 1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2, ceil_mode=True)
        x = torch.cat([F.relu(self.b1(x)), F.relu(self.b3(x)), F.relu(self.b5(x)),
                       F.relu(self.bp(F.max_pool2d(x, 3, 1, 1)))], 1)
        x = F.relu(self.mix(F.avg_pool2d(x, 2, ceil_mode=True)))
        return self.fc(self.drop(F.adaptive_avg_pool2d(x, 1).flatten(1)))


@pytest.fixture(scope="module")
def inception():
    """(quantized InceptionNet with its int8 activations as extra outputs, input, conv + linear
    layers, the converted GraphModule)."""
    pytest.importorskip("torchao", reason="quantize_pt2e needs torchao (pip install torchao==0.18.0)")
    torch.manual_seed(0)
    x = torch.randn(1, 3, 19, 17)
    converted = quantize_pt2e(InceptionNet(), (x,))
    gm = copy.deepcopy(converted)
    expose_quantized(gm)
    return gm, x, 7, converted


def test_inception_style_cnn_runs_on_int8_kernels(inception):
    """Every pool, the cat and the flatten of the quantized net are int8 patterns (explain lists
    them, nothing reads a dequantized tensor in float32), no float pooling or cat is left, and every
    int8 activation is within 1 LSB of eager's, layer by layer (test_int8_models.teacher_forced:
    fed eager's inputs, each layer is held to its own rounding; the mean of adaptive pooling can
    differ by 1 LSB, module docstring)."""
    gm, x, layers, converted = inception
    report = twb.explain(converted, x)
    assert report.lowered_fraction == 1.0 and all(p.fused for p in report.int8), str(report)
    patterns = [p.pattern for p in report.int8]
    assert patterns.count("dq -> max_pool2d -> q") == 2 and "dq x4 -> cat -> q" in patterns, patterns
    assert {"dq -> avg_pool2d -> q", "dq -> mean(H, W) -> q", "dq -> view -> clone -> q"} <= set(patterns), patterns
    twb.reset_stats()
    with torch.no_grad():
        expected = gm(x)
        got = compile_wasm(teacher_forced(gm))(x, *expected[1:])
    assert_matches(gm, got, expected, layers)
    s = twb.stats()
    assert_ran_in_wasm(s)
    assert not any(op in s["lowered_by_op"] for op in ("aten::max_pool2d_with_indices", "aten::avg_pool2d",
                                                        "aten::mean.dim")), dict(s["lowered_by_op"])
    assert s["plan_kernels"]["QPOOL2D"] == 4


def test_inception_style_cnn_exports(inception, tmp_path):
    """The exported file (in wasmtime) runs the same int8 kernels: outputs bit-equal to the
    compiled model's."""
    _, x, _, converted = inception
    path = tmp_path / "inception_int8.wasm"
    twb.export(converted, (x,), str(path))
    loaded = twb.load(str(path))
    assert loaded.metadata["kernel_calls"].get("QPOOL2D") == 4
    with torch.no_grad():
        assert torch.equal(loaded(x), compile_wasm(converted)(x))


def test_explain_names_float_ops_between_qdq():
    """An op with no int8 form between a dequantize and a quantize (here sigmoid) runs in float32
    between the Q/DQ kernels, and explain says so next to the int8 patterns it found."""
    def fn(x):
        y = _dq(x, 0.02, 128)
        return _q(torch.sigmoid(y), 1 / 256, 0, torch.uint8), _q(torch.nn.functional.max_pool2d(y, 2), 0.02, 128, torch.uint8)
    report = twb.explain(fn, _random_q((1, 3, 6, 6), torch.uint8))
    rows = {(n.fused, n.pattern, n.reason.split(" (")[0]) for n in report.int8}
    assert rows == {(True, "dq -> max_pool2d -> q", ""),
                    (False, "", "aten::sigmoid reads a dequantized int8 tensor and runs in float32")}, rows


class ModuleThenFunctionalRelu(nn.Module):
    """An nn.ReLU followed by torch.relu calls, as benchmarks/model_zoo.py's ResNet blocks: export
    named the module's relu and the first torch.relu alike ('relu_1' in torch_fn), which made
    quantize_pt2e's restored metadata one partition with two outputs (the quantizer raised)."""

    def __init__(self):
        super().__init__()
        self.stem, self.act = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.conv1, self.conv2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = self.act(self.stem(x))
        y = torch.relu(self.conv1(x))
        return torch.relu(self.conv2(y) + x)


def test_module_relu_then_functional_relus_quantize_and_run_on_int8_kernels():
    pytest.importorskip("torchao", reason="quantize_pt2e needs torchao (pip install torchao==0.18.0)")
    torch.manual_seed(0)
    x = torch.randn(1, 3, 9, 11)
    converted = quantize_pt2e(ModuleThenFunctionalRelu(), (x,))
    report = twb.explain(converted, x)
    assert report.lowered_fraction == 1.0 and len(report.int8) == 3 and all(p.fused for p in report.int8), str(report)
    with torch.no_grad():
        expected = converted(x)
        got = compile_wasm(converted)(x)
    # float output after an int8 chain: within one output LSB's worth (the README's stated tolerance
    # for float outputs of quantized graphs); the int8 activations are checked layer by layer elsewhere.
    scale = (expected.abs().max() / 127).item()
    torch.testing.assert_close(got, expected, atol=scale, rtol=0)
