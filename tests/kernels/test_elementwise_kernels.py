"""UNARY and BINARY kernels against torch: awkward sizes (SIMD body + every tail length), broadcast
(stride 0) and strided/transposed views on input and output, NaN/inf propagation, and the
accuracy of the vectorized transcendental functions against float64 references.

Tolerances: copies, relu, neg, clamp, affine (one mul then one add, as torch does in float32),
sqrt, rsqrt (1 / sqrt, two correctly rounded ops, as torch's rsqrt) and every BINARY op are IEEE
operations on the same inputs, so they must be bit-exact. The transcendental ops are polynomial
approximations; their bounds (TRANSCENDENTAL_BOUNDS) are stated in float32 ulps of the float64
reference, with an absolute term where the function is computed as x * (1 + f(x)) and f's absolute
error (not its ulp error) is what matters."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernel_testing import (FLT_MIN, INF, NAN, Session, assert_exact, assert_within,
                            contiguous_strides, pad6, ulp32, view_with_nan_holes)
from torch_wasm_backend.lowering.abi import ABI

SIZES = [0, 1, 3, 4, 5, 7, 8, 9, 17, 33, 1000]
EXACT_UNARY = ["IDENTITY", "RELU", "NEG", "SQRT", "RSQRT", "CLAMP", "AFFINE", "HARDSWISH", "HARDSIGMOID",
               "ABS", "RECIPROCAL", "FLOOR", "CEIL", "TRUNC", "ROUND", "LEAKY_RELU"]
PARAMS = {"CLAMP": (-0.5, 0.75), "AFFINE": (1.5, -2.0), "LEAKY_RELU": (0.1, 0.0), "POW": (2.7, 0.0)}

# op -> (ulps, abs_x: extra error per unit |x|, floor: absolute error allowed everywhere).
# Measured maxima (dense sweeps over [-110, 90], [-20, 20], [-1e-3, 1e-3]) in the comments.
TRANSCENDENTAL_BOUNDS = {
    "EXP": (1.5, 0.0, 0.0),          # 0.95 ulp; denormal results within 1 denormal ulp
    "TANH": (2.0, 0.0, 0.0),         # 1.29 ulp
    # 2.47 ulp; below x = -88.7 exp(-x) overflows and the result flushes to 0 (true value is a
    # denormal < FLT_MIN; torch's float32 sigmoid does the same).
    "SIGMOID": (3.0, 0.0, FLT_MIN),
    # 1.92 ulp; x / (1 + exp(-x)) flushes to -0 below x = -88.7 where |silu| < 88.8 * e^-88.7.
    "SILU": (3.0, 0.0, 1e-36),
    # 0.5 x (1 + erf(x/sqrt2)): erf's absolute error (4.2e-7) scaled by |x|/2; measured 1.99e-7 |x|
    # beyond 2 ulp. (Relative error is large in the far negative tail, where 1 + erf cancels.)
    "GELU_ERF": (2.0, 2.5e-7, 0.0),
    # Same shape with tanh's absolute error near -1 (~5e-8): measured 2.7e-8 |x| beyond 2 ulp.
    "GELU_TANH": (2.0, 5e-8, 0.0),
    "LOG": (2.0, 0.0, 0.0),          # Cephes logf
    "ERF": (8.0, 0.0, 4.5e-7),       # the erf_v rational approximation (7 ulp, abs 4.2e-7)
    # exp(p log|x|): the rounding of p log|x| (up to ~4.5 here at p = 2.7) is amplified by exp,
    # so the error grows with |log x|; bound: 2 ulp + 2 ulp per unit of |p log x| (POW_ULPS_PER_LOG).
    "POW": (2.0, 0.0, 0.0),
    # 1.52 ulp over [-20, 20], [-1e4, 1e4] and [1e4, 5.2e5]; 1.0 ulp at float32 multiples of pi/2
    # (the double reduction keeps tiny results accurate); 1.14 ulp beyond 2^19 (libm in double).
    "SIN": (2.0, 0.0, 0.0),
    "COS": (2.0, 0.0, 0.0),
}
POW_ULPS_PER_LOG = 2.0

TORCH_UNARY = {
    "IDENTITY": lambda t, p0, p1: t.clone(),
    "RELU": lambda t, p0, p1: torch.relu(t),
    "GELU_ERF": lambda t, p0, p1: F.gelu(t),
    "GELU_TANH": lambda t, p0, p1: F.gelu(t, approximate="tanh"),
    "SILU": lambda t, p0, p1: F.silu(t),
    "SIGMOID": lambda t, p0, p1: torch.sigmoid(t),
    "TANH": lambda t, p0, p1: torch.tanh(t),
    "EXP": lambda t, p0, p1: torch.exp(t),
    "NEG": lambda t, p0, p1: -t,
    # Correctly rounded float32 sqrt via float64 (exact: 53 >= 2 * 24 + 2 bits). torch 2.x's AVX512
    # float sqrt is not always correctly rounded (~0.7% of inputs off by 1 ulp), the kernel's is.
    "SQRT": lambda t, p0, p1: t.double().sqrt().to(t.dtype),
    # The kernel computes 1 / sqrt(x) with both steps rounded to float32.
    "RSQRT": lambda t, p0, p1: 1.0 / t.double().sqrt().to(t.dtype),
    "CLAMP": lambda t, p0, p1: torch.clamp(t, p0, p1),
    "AFFINE": lambda t, p0, p1: t * p0 + p1,
    "HARDSWISH": lambda t, p0, p1: F.hardswish(t),
    "HARDSIGMOID": lambda t, p0, p1: F.hardsigmoid(t),
    "ABS": lambda t, p0, p1: t.abs(),
    "LOG": lambda t, p0, p1: t.log(),
    "RECIPROCAL": lambda t, p0, p1: t.reciprocal(),
    "ERF": lambda t, p0, p1: torch.erf(t),
    "POW": lambda t, p0, p1: t.pow(p0),
    "FLOOR": lambda t, p0, p1: t.floor(),
    "CEIL": lambda t, p0, p1: t.ceil(),
    "TRUNC": lambda t, p0, p1: t.trunc(),
    "ROUND": lambda t, p0, p1: t.round(),
    "LEAKY_RELU": lambda t, p0, p1: F.leaky_relu(t, p0),
    "SIN": lambda t, p0, p1: t.sin(),
    "COS": lambda t, p0, p1: t.cos(),
}
assert set(TORCH_UNARY) == set(ABI.unary), "a UNARY op was added to the ABI without a test"

TORCH_BINARY = {"ADD": torch.add, "SUB": torch.sub, "MUL": torch.mul, "DIV": torch.div,
                "MAXIMUM": torch.maximum, "MINIMUM": torch.minimum,
                "FLOOR_DIVIDE": lambda a, b: torch.div(a, b, rounding_mode="floor"), "POW": torch.pow}
assert set(TORCH_BINARY) == set(ABI.binary), "a BINARY op was added to the ABI without a test"
EXACT_BINARY = [op for op in ABI.binary if op != "POW"]  # POW: test_binary_pow_accuracy

SPECIALS = [NAN, INF, -INF, 0.0, -0.0, 1e-30, -1e-30, 100.0, -100.0, 88.0, -88.0, 1e30, -1e30,
            3e38, -3e38, 1e-45, -1e-45, FLT_MIN, -1.0]


# ---- runners ------------------------------------------------------------------------------------
def run_unary(s: Session, op: str, x: torch.Tensor, p0=0.0, p1=0.0, out_transposed=False):
    """x: any strided view (its storage is uploaded as is). Output contiguous, or with its last two
    dims swapped in memory."""
    shape = tuple(x.shape)
    ptr, in_strides = s.put_view(x)
    out_strides = _out_strides(shape, out_transposed)
    out = s.out(x.numel())
    s.record("UNARY", op=ABI.unary[op], size=pad6(shape, 1), out_stride=pad6(out_strides, 0),
             in_stride=pad6(in_strides, 0), out=out.ptr, p0=p0, p1=p1, **{"in": ptr})
    return out.read(shape, out_strides)


def run_binary(s: Session, op: str, a: torch.Tensor, b: torch.Tensor, out_transposed=False):
    """a, b: views, broadcast against each other through 0 strides."""
    shape = tuple(torch.broadcast_shapes(a.shape, b.shape))
    a, b = a.expand(shape), b.expand(shape)
    pa, sa = s.put_view(a)
    pb, sb = s.put_view(b)
    out_strides = _out_strides(shape, out_transposed)
    out = s.out(a.numel())
    s.record("BINARY", op=ABI.binary[op], size=pad6(shape, 1), out_stride=pad6(out_strides, 0),
             a_stride=pad6(sa, 0), b_stride=pad6(sb, 0), out=out.ptr, a=pa, b=pb)
    return out.read(shape, out_strides)


def _out_strides(shape, transposed):
    if not transposed or len(shape) < 2:
        return contiguous_strides(shape)
    mem = list(shape[:-2]) + [shape[-1], shape[-2]]
    st = contiguous_strides(mem)
    return st[:-2] + [st[-1], st[-2]]


def unary_input(op: str, shape, scale=3.0, specials=True) -> torch.Tensor:
    x = torch.randn(shape) * scale
    if op in ("SQRT", "RSQRT"):
        x = x.abs()
    flat = x.view(-1)
    if specials and flat.numel() >= 32:
        # Spread over the tensor so they land in SIMD bodies and tails alike.
        sp = torch.tensor(SPECIALS)
        pos = torch.linspace(0, flat.numel() - 1, len(SPECIALS)).long()
        flat[pos] = sp
    return x


def check_unary(op, got, x, p0=0.0, p1=0.0):
    x = x.contiguous()
    if op in TRANSCENDENTAL_BOUNDS:
        check_transcendental(op, got, x, p0)
    else:
        assert_exact(got, TORCH_UNARY[op](x, p0, p1), x)


def check_transcendental(op, got, x, p0=0.0):
    ulps, abs_x, floor = TRANSCENDENTAL_BOUNDS[op]
    ref = TORCH_UNARY[op](x.double(), p0, 0.0)
    if op == "POW":
        ulps = ulps + POW_ULPS_PER_LOG * (p0 * x.double().abs().log()).abs().nan_to_num(0.0, 0.0, 0.0)
    # Where the true value overflows float32, the float32 result must be the rounded one (+-inf).
    ref = torch.where(torch.isinf(ref.float()), ref.float().double(), ref)
    bound = ulps * ulp32(ref) + abs_x * x.double().abs().nan_to_num(posinf=0.0, neginf=0.0) + floor
    assert_within(got, ref, bound, x)


# ---- UNARY --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("op", list(ABI.unary))
def test_unary_contiguous(s1, op, n):
    p0, p1 = PARAMS.get(op, (0.0, 0.0))
    x = unary_input(op, (n,))
    check_unary(op, run_unary(s1, op, x, p0, p1), x, p0, p1)


VIEWS = {
    "transpose": ((6, 9, 10), lambda a: a.permute(2, 0, 1)),
    "step_slice": ((6, 9, 10), lambda a: a[:, ::2, 1::3]),
    "bcast_mid": ((6, 1, 10), lambda a: a.expand(6, 5, 10)),
    "bcast_inner": ((6, 9, 1), lambda a: a.expand(6, 9, 7)),
    "bcast_scalar": ((1,), lambda a: a.expand(3, 17)),
    "6d_permuted": ((2, 1, 3, 4, 1, 5), lambda a: a.permute(5, 1, 3, 0, 4, 2)),
}


@pytest.mark.parametrize("view", list(VIEWS))
@pytest.mark.parametrize("op", list(ABI.unary))
def test_unary_strided_views(s1, op, view):
    p0, p1 = PARAMS.get(op, (0.0, 0.0))
    base_shape, fn = VIEWS[view]
    base = unary_input(op, base_shape, specials=False)
    x = view_with_nan_holes(base, fn)
    check_unary(op, run_unary(s1, op, x, p0, p1), x, p0, p1)


@pytest.mark.parametrize("op", ["IDENTITY", "RELU", "EXP", "AFFINE"])
def test_unary_transposed_output(s12, op):
    p0, p1 = PARAMS.get(op, (0.0, 0.0))
    x = unary_input(op, (3, 37, 41))
    check_unary(op, run_unary(s12, op, x, p0, p1, out_transposed=True), x, p0, p1)
    xt = view_with_nan_holes(unary_input(op, (3, 41, 37)), lambda a: a.transpose(1, 2))
    check_unary(op, run_unary(s12, op, xt, p0, p1, out_transposed=True), xt, p0, p1)


def test_clamp_and_affine_params(s1):
    x = unary_input("CLAMP", (1000,))
    for p0, p1 in [(0.0, 0.0), (-INF, 1.0), (-1.0, INF), (2.0, 1.0)]:  # p0 > p1 gives p1, as torch
        assert_exact(run_unary(s1, "CLAMP", x, p0, p1), torch.clamp(x, p0, p1), x)
    for p0, p1 in [(1.0, 0.0), (-3.0, 0.5), (0.0, 1.0), (1e30, -1e30)]:
        assert_exact(run_unary(s1, "AFFINE", x, p0, p1), x * p0 + p1, x)


def _sweep():
    g = torch.Generator().manual_seed(1)
    return torch.cat([
        torch.linspace(-110, 90, 200001),
        torch.linspace(-20, 20, 400001),
        torch.linspace(-1e-3, 1e-3, 10001),
        # around simd_math.h exp_sat_v's clamps (-87.68, 88.72) and 2^n's ends (n = -126, 128)
        torch.linspace(-89.5, -86.5, 30001),
        torch.linspace(86.5, 89.5, 30001),
        torch.randn(100000, generator=g) * 3,
        torch.tensor(SPECIALS),
        torch.tensor([2.0 ** -130, -(2.0 ** -130), 1e-38, 5.0, -5.0, 5.66, -5.66, 9.0, -9.0, 0.625, -0.625]),
    ]).float()


@pytest.mark.parametrize("op", list(TRANSCENDENTAL_BOUNDS))
def test_transcendental_accuracy(s1, op):
    x = _sweep()
    p0 = PARAMS.get(op, (0.0, 0.0))[0]
    check_transcendental(op, run_unary(s1, op, x, p0), x, p0)


@pytest.mark.parametrize("p", [-3.0, -1.5, 0.25, 1.5, 3.0, 4.0, 7.0, 0.3333])
def test_pow_exponents(s1, p):
    """Odd and even integer powers keep / drop the sign of negative x; non-integer ones give NaN."""
    x = torch.cat([torch.linspace(-30, 30, 20001), torch.tensor([0.0, -0.0, INF, -INF, NAN, 1.0, -1.0])])
    check_transcendental("POW", run_unary(s1, "POW", x, p), x, p)


def test_log_special_values(s1):
    x = torch.tensor([0.0, -0.0, -1.0, INF, -INF, NAN, 1.0, FLT_MIN, 1e-45, 2.0 ** -130])
    got = run_unary(s1, "LOG", x)
    assert got[:7].tolist()[:2] == [-INF, -INF] and got[3].item() == INF and got[6].item() == 0.0
    assert torch.isnan(got[[2, 4, 5]]).all()
    ref = x[7:].double().log()
    assert ((got[7:].double() - ref).abs() <= 2 * ulp32(ref)).all(), (got[7:], ref)


def test_transcendental_exact_limits(s1):
    """Saturation and special values the bounds alone would not pin down."""
    x = torch.tensor([INF, -INF, 0.0, -0.0, 89.0, -104.0, 20.0, -20.0, 1e30, -1e30])
    assert run_unary(s1, "EXP", x).tolist()[:6] == [INF, 0.0, 1.0, 1.0, INF, 0.0]
    assert run_unary(s1, "TANH", x).tolist()[6:] == [1.0, -1.0, 1.0, -1.0]
    assert run_unary(s1, "SIGMOID", x).tolist()[:4] == [1.0, 0.0, 0.5, 0.5]
    # torch's float32 gelu gives NaN at +inf (inf * erf); the exact limit is +inf.
    assert run_unary(s1, "GELU_ERF", x)[0].item() == INF


# ---- BINARY -------------------------------------------------------------------------------------
BINARY_SHAPES = [((n,), (n,)) for n in SIZES] + [
                 ((7,), (1,)), ((1,), (9,)), ((3, 33), (33,)), ((3, 33), (3, 1)),
                 ((4, 1, 5), (1, 6, 1)), ((2, 3, 4, 5, 6, 7), (1, 3, 1, 5, 1, 7)),
                 ((300, 1001), (1001,)), ((300, 1001), (300, 1)), ((), ())]
A_SPECIALS = [NAN, 1.0, INF, 0.0, -INF, 2.0, INF, -0.0, 3e38]
B_SPECIALS = [1.0, NAN, INF, 0.0, 0.0, -0.0, -INF, 0.0, 3e38]


def binary_inputs(sa, sb):
    a, b = torch.randn(sa), torch.randn(sb)
    for t, sp in ((a, A_SPECIALS), (b, B_SPECIALS)):
        if t.numel() >= 32:
            t.view(-1)[torch.linspace(0, t.numel() - 1, len(sp)).long()] = torch.tensor(sp)
        elif t.numel() >= len(sp):
            t.view(-1)[:len(sp)] = torch.tensor(sp)
    return a, b


@pytest.mark.parametrize("shapes", BINARY_SHAPES, ids=lambda s: f"{list(s[0])}x{list(s[1])}")
@pytest.mark.parametrize("op", EXACT_BINARY)
def test_binary_broadcast(s1, op, shapes):
    a, b = binary_inputs(*shapes)
    ref = TORCH_BINARY[op](a, b)
    assert_exact(run_binary(s1, op, a, b), ref)
    assert_exact(run_binary(s1, op, b, a), TORCH_BINARY[op](b, a))
    if ref.dim() >= 2:
        assert_exact(run_binary(s1, op, a, b, out_transposed=True), ref)


@pytest.mark.parametrize("op", EXACT_BINARY)
def test_binary_strided_views(s1, op):
    a = view_with_nan_holes(torch.randn(7, 13, 9), lambda t: t.permute(2, 0, 1))   # [9, 7, 13]
    b = view_with_nan_holes(torch.randn(18, 7, 27), lambda t: t[::2, :, ::2])       # [9, 7, 14]
    b = b[..., :13]
    assert_exact(run_binary(s1, op, a, b), TORCH_BINARY[op](a, b))
    c = view_with_nan_holes(torch.randn(9, 1, 26), lambda t: t[..., ::2])           # broadcast mid
    assert_exact(run_binary(s1, op, a, c, out_transposed=True), TORCH_BINARY[op](a, c))


@pytest.mark.parametrize("op", EXACT_BINARY)
def test_binary_large_threads(s12, op):
    a, b = binary_inputs((64, 1, 3001), (1, 7, 3001))
    assert_exact(run_binary(s12, op, a, b), TORCH_BINARY[op](a, b))


def test_binary_pow_accuracy(s12):
    """Tensor ** tensor: special cases exact (C pow's), else the scalar-exponent POW bound."""
    g = torch.Generator().manual_seed(3)
    a = torch.cat([torch.randn(20000, generator=g) * 8, torch.tensor([0.0, -0.0, 1.0, -1.0, INF, -INF, NAN, 2.0, -2.0, -8.0, 0.5, -1.0, 1.0])])
    b = torch.cat([torch.randn(20000, generator=g) * 4, torch.tensor([-1.0, 3.0, NAN, INF, 0.5, 3.0, 0.0, -INF, 3.0, 1 / 3, INF, -INF, NAN])])
    b[:5000] = b[:5000].round()  # integer exponents: negative bases keep or drop their sign
    got = run_binary(s12, "POW", a, b)
    ref = torch.pow(a.double(), b.double())
    ref = torch.where(torch.isinf(ref.float()), ref.float().double(), ref)
    ulps = 2.0 + POW_ULPS_PER_LOG * (b.double() * a.double().abs().log()).abs().nan_to_num(0.0, 0.0, 0.0)
    assert_within(got, ref, ulps * ulp32(ref) + FLT_MIN, a)
