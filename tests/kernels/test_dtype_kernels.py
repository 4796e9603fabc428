"""The dtype-generic kernels against torch: CAST (every pair of element types), COMPARE (every op,
several element types, broadcasting), WHERE (1/4/8-byte elements, the SIMD float path and strided
views), INDEX_SELECT (int64/int32 indices, negative indices counted from the end or rejected,
every row width around the vector width, out-of-range indices reported as an input error that
leaves the runtime usable) and CUMSUM. All are exact: conversions, comparisons and copies
have one right answer; CUMSUM accumulates in double exactly like eager's CPU kernel.

Operands are uploaded whole (their storage) with strides, so views are read as views."""
from __future__ import annotations

import pytest
import torch

from kernel_testing import contiguous_strides, pad6
from torch_wasm_backend.lowering.abi import ABI
from torch_wasm_backend.errors import WasmInputError

DT = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
      torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
assert set(DT.values()) == set(ABI.dtype), "a DTYPE was added to the ABI without a test"
SIZES = [0, 1, 3, 4, 5, 7, 8, 9, 17, 33, 1000]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equal values (NaN == NaN)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.is_floating_point:
        return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
    return torch.equal(a, b)


def put_view(s, v: torch.Tensor):
    """Uploads v's storage; returns (address of v's first element, v's strides)."""
    storage = v.untyped_storage()
    base = torch.empty(0, dtype=v.dtype).set_(storage, 0, (max(storage.nbytes() // v.element_size(), 1),))
    return s.put(base) + v.element_size() * v.storage_offset(), tuple(v.stride())


def out_buffer(s, shape, dtype):
    """A contiguous output pre-filled with a value no kernel here writes by accident."""
    fill = True if dtype == torch.bool else 77
    return s.put(torch.full(tuple(shape), fill, dtype=dtype)), contiguous_strides(shape)


def values(dtype, n, int_safe=False):
    if dtype == torch.bool:
        return torch.rand(n) > 0.5
    if dtype.is_floating_point:
        x = torch.randn(n, dtype=dtype) * 100
        if not int_safe and n >= 8:
            x[:8] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 0.5, -0.5, 1e-30])
        return x
    info = torch.iinfo(dtype)
    return torch.randint(max(info.min, -1000), min(info.max, 1000), (n,), dtype=dtype)


def make(dtype, shape):
    return values(dtype, torch.Size(shape).numel()).reshape(shape)


def run_cast(s, x: torch.Tensor, dtype):
    shape = tuple(x.shape)
    pin, sin = put_view(s, x)
    pout, sout = out_buffer(s, shape, dtype)
    s.record("CAST", out_dtype=ABI.dtype[DT[dtype]], in_dtype=ABI.dtype[DT[x.dtype]], size=pad6(shape, 1),
             out_stride=pad6(sout, 0), in_stride=pad6(sin, 0), out=pout, **{"in": pin})
    return s.get(pout, shape, dtype)


@pytest.mark.parametrize("dst", list(DT), ids=lambda d: DT[d])
@pytest.mark.parametrize("src", list(DT), ids=lambda d: DT[d])
def test_cast_pairs(s1, src, dst):
    # float -> int of NaN / inf / out-of-range values is undefined in C++ and differs between
    # torch builds: those values only go to float and bool targets.
    int_target = not dst.is_floating_point and dst != torch.bool
    for n in (0, 1, 5, 17, 1000):
        x = values(src, n, int_safe=int_target)
        if int_target and src.is_floating_point:
            x = x.clamp(-100, 100)
        assert same(run_cast(s1, x, dst), x.to(dst)), (src, dst, n)


def test_cast_strided_and_broadcast(s12):
    x = torch.randn(9, 7, 13)
    view = x.permute(2, 0, 1)[:, ::2]
    assert same(run_cast(s12, view, torch.float64), view.double())
    b = torch.randint(-5, 5, (1, 7, 1)).expand(4, 7, 33)
    assert same(run_cast(s12, b, torch.float32), b.float())
    big = torch.randint(-2**40, 2**40, (64, 3001))
    assert same(run_cast(s12, big, torch.float32), big.float())  # rounds like eager


def test_cast_float_to_int_edges(s1):
    """Truncation toward zero; NaN / out of int64 range give INT64_MIN (x86's answer)."""
    x = torch.tensor([2.7, -2.7, 0.5, -0.5, float("nan"), 1e30, -1e30, 9.2e18])
    got = run_cast(s1, x, torch.int64)
    assert got[:4].tolist() == [2, -2, 0, 0]
    assert got[4:7].tolist() == [-2**63] * 3
    assert got[7].item() == int(torch.tensor(9.2e18).item())


# Values where float -> int conversions part ways: NaN, infinities, each integer type's limits and
# just past them, the int32 / int64 limits (where eager's 32- and 64-bit conversions differ),
# values that wrap, and fractions on both sides of zero.
SPECIAL = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 0.5, -0.5, 0.9999, -0.9999, 1e-30, 1.0, -1.0,
           127.0, 127.9, 128.0, -128.0, -128.9, -129.0, 255.0, 255.9, 256.0, 300.5, -300.5, 32767.0, 32767.9,
           32768.0, -32768.0, -32768.9, -32769.0, 40000.0, -40000.0, 65535.0, 65536.0, 70000.5, 2147483520.0,
           2147483647.0, 2147483648.0, -2147483648.0, -2147483904.0, 3e9, -3e9, 4294967295.0, 4294967296.0,
           24744974549.9, 1e10, -1e10, 9.2e18, 9.223371e18, 9.2233720368547758e18, -9.2233720368547758e18,
           9.3e18, -9.3e18, 1e20, -1e20, 3.4e38, -3.4e38]


@pytest.mark.parametrize("dst", [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8], ids=lambda d: DT[d])
@pytest.mark.parametrize("src", [torch.float32, torch.float64], ids=lambda d: DT[d])
def test_cast_float_to_int_special_values_match_eager(s12, src, dst):
    """NaN, infinities and out-of-range values convert bit-for-bit as eager does on this x86 CPU
    (e.g. int32: -2147483648; int16: the low bits of the 32-bit conversion): the grid alone, the
    grid shuffled into a long tensor (eager's vectorized path) and a strided view of it."""
    grid = torch.tensor(SPECIAL, dtype=torch.float64).to(src)
    long = torch.cat([grid[torch.randperm(len(SPECIAL))] for _ in range(40)])
    for x in (grid, long, long[1::3], long.reshape(-1, len(SPECIAL)).t()):
        got = run_cast(s12, x, dst)
        want = x.to(dst)
        bad = got != want
        assert not bad.any(), f"{x[bad][:5].tolist()} -> {got[bad][:5].tolist()}, eager {want[bad][:5].tolist()}"


CMP = {"EQ": torch.eq, "NE": torch.ne, "LT": torch.lt, "LE": torch.le, "GT": torch.gt, "GE": torch.ge,
       "AND": torch.logical_and, "OR": torch.logical_or, "XOR": torch.logical_xor}
assert set(CMP) == set(ABI.compare), "a COMPARE_OP was added to the ABI without a test"


def run_compare(s, op, a, b):
    shape = tuple(torch.broadcast_shapes(a.shape, b.shape))
    a, b = a.expand(shape), b.expand(shape)
    pa, sa = put_view(s, a)
    pb, sb = put_view(s, b)
    pout, sout = out_buffer(s, shape, torch.bool)
    s.record("COMPARE", op=ABI.compare[op], dtype=ABI.dtype[DT[a.dtype]], size=pad6(shape, 1),
             out_stride=pad6(sout, 0), a_stride=pad6(sa, 0), b_stride=pad6(sb, 0), out=pout, a=pa, b=pb)
    return s.get(pout, shape, torch.bool)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.int32, torch.bool, torch.float64],
                         ids=lambda d: DT[d])
@pytest.mark.parametrize("op", list(CMP))
def test_compare(s1, op, dtype):
    for sa, sb in [((n,), (n,)) for n in SIZES] + [((5, 33), (33,)), ((4, 1, 7), (1, 3, 1)), ((), ())]:
        a, b = make(dtype, sa), make(dtype, sb)
        if sa == sb and a.numel() > 2:
            b.view(-1)[::3] = a.view(-1)[::3]  # equal pairs too
        assert same(run_compare(s1, op, a, b), CMP[op](a, b)), (op, sa, sb)


def run_where(s, c, a, b):
    shape = tuple(torch.broadcast_shapes(c.shape, a.shape, b.shape))
    c, a, b = c.expand(shape), a.expand(shape), b.expand(shape)
    pc, sc = put_view(s, c)
    pa, sa = put_view(s, a)
    pb, sb = put_view(s, b)
    pout, sout = out_buffer(s, shape, a.dtype)
    s.record("WHERE", elem_size=a.element_size(), size=pad6(shape, 1), out_stride=pad6(sout, 0),
             cond_stride=pad6(sc, 0), a_stride=pad6(sa, 0), b_stride=pad6(sb, 0), out=pout, cond=pc, a=pa, b=pb)
    return s.get(pout, shape, a.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bool, torch.int16], ids=lambda d: DT[d])
def test_where(s12, dtype):
    cases = [((n,), (n,), (n,)) for n in SIZES] + [
        ((3, 1, 17), (3, 5, 17), ()), ((17,), (4, 17), (4, 1)), ((1,), (9,), (9,)), ((64, 1001), (1001,), ())]
    for sc, sa, sb in cases:
        c = torch.rand(sc) > 0.5
        a, b = make(dtype, sa), make(dtype, sb)
        assert same(run_where(s12, c, a, b), torch.where(c, a, b)), (sc, sa, sb)


def test_where_strided(s1):
    c = (torch.rand(13, 9) > 0.5).t()
    a = torch.randn(9, 26)[:, ::2]
    b = torch.randn(13, 9).t()
    assert same(run_where(s1, c, a, b), torch.where(c, a, b))


def run_index_select(s, x, dim, idx, negative=True, out=None):
    x = x.contiguous()
    outer, inner = x.shape[:dim].numel(), x.shape[dim + 1:].numel()
    shape = x.shape[:dim] + (idx.numel(),) + x.shape[dim + 1:]
    pout = out if out is not None else out_buffer(s, shape, x.dtype)[0]
    s.record("INDEX_SELECT", outer=outer, src_dim=x.shape[dim], inner=inner, n_idx=idx.numel(),
             idx_dtype=ABI.dtype[DT[idx.dtype]], elem_size=x.element_size(), negative=int(negative),
             **{"in": s.put(x)}, idx=s.put(idx.contiguous()), out=pout)
    return s.get(pout, shape, x.dtype)


@pytest.mark.parametrize("idx_dtype", [torch.int64, torch.int32], ids=["I64", "I32"])
@pytest.mark.parametrize("inner", [1, 3, 4, 8, 17])
def test_index_select(s12, inner, idx_dtype):
    for dtype in (torch.float32, torch.int64, torch.bool):
        for outer, rows, n in [(1, 1, 1), (1, 7, 0), (3, 7, 12), (2, 50, 300)]:
            x = values(dtype, outer * rows * inner).reshape(outer, rows, inner)
            idx = torch.randint(-rows, rows, (n,), dtype=idx_dtype)
            got = run_index_select(s12, x, 1, idx)  # negative indices count from the end (x[:, idx])
            assert same(got, x[:, idx.long()]), (dtype, outer, rows, n)
            idx = torch.randint(0, rows, (n,), dtype=idx_dtype)
            got = run_index_select(s12, x, 1, idx, negative=False)
            assert same(got, x.index_select(1, idx)), (dtype, outer, rows, n)


@pytest.mark.parametrize("negative,bad", [(True, 7), (True, -8), (True, 2**40), (True, -2**40),
                                          (False, 7), (False, -1), (False, -7), (False, 2**40)])
def test_index_select_out_of_range_is_an_input_error(s12, negative, bad):
    """Reported before anything is written (the output keeps its fill) and the runtime stays
    usable: the next record runs."""
    x = torch.randn(7, 4)
    pout, _ = out_buffer(s12, (3, 4), torch.float32)
    with pytest.raises(WasmInputError, match="index out of range"):
        run_index_select(s12, x, 0, torch.tensor([0, bad, 1]), negative=negative, out=pout)
    assert bool((s12.get(pout, (3, 4)) == 77).all())
    assert not s12.runtime.broken
    assert same(run_index_select(s12, x, 0, torch.tensor([6, 0]), negative=negative), x[[6, 0]])


@pytest.mark.parametrize("shape,dim", [((0,), 0), ((1,), 0), ((17,), 0), ((3, 33), 1), ((3, 33), 0),
                                       ((2, 5, 7), 1), ((4, 1000), 1)])
def test_cumsum(s1, shape, dim):
    x = torch.randn(shape)
    outer, inner = x.shape[:dim].numel(), x.shape[dim + 1:].numel()
    pout, _ = out_buffer(s1, shape, torch.float32)
    s1.record("CUMSUM", outer=outer, dim=x.shape[dim], inner=inner, **{"in": s1.put(x)}, out=pout)
    assert same(s1.get(pout, shape), torch.cumsum(x, dim))


@pytest.mark.parametrize("n_dims", [2, 3, 4])
def test_index_nd(s1, n_dims):
    sizes = [3, 5, 2, 4][:n_dims]
    for dtype in (torch.float32, torch.int64):
        for outer, inner, n in [(1, 1, 1), (2, 3, 13), (3, 8, 0), (1, 17, 6)]:
            x = values(dtype, outer * torch.Size(sizes).numel() * inner).reshape(outer, *sizes, inner)
            idx = [torch.randint(-s, s, (n,)) for s in sizes]
            pout, _ = out_buffer(s1, (outer, n, inner), dtype)
            ptrs = [s1.put(i) for i in idx] + [0] * (4 - n_dims)
            s1.record("INDEX_ND", outer=outer, inner=inner, n_idx=n, n_dims=n_dims, src_size=sizes + [1] * (4 - n_dims),
                      elem_size=x.element_size(), **{"in": s1.put(x)}, idx0=ptrs[0], idx1=ptrs[1], idx2=ptrs[2],
                      idx3=ptrs[3], out=pout)
            ref = x[(slice(None), *idx)]
            assert same(s1.get(pout, (outer, n, inner), dtype), ref), (dtype, outer, inner, n)


def test_index_nd_out_of_range_is_an_input_error(s1):
    with pytest.raises(WasmInputError):
        s1.record("INDEX_ND", outer=1, inner=1, n_idx=1, n_dims=2, src_size=[2, 2, 1, 1], elem_size=4,
                  **{"in": s1.put(torch.zeros(4))}, idx0=s1.put(torch.tensor([0])), idx1=s1.put(torch.tensor([2])),
                  idx2=0, idx3=0, out=s1.put(torch.zeros(1)))


INT_OPS = {"ADD": torch.add, "SUB": torch.sub, "MUL": torch.mul, "MAXIMUM": torch.maximum, "MINIMUM": torch.minimum}


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8], ids=lambda d: DT[d])
@pytest.mark.parametrize("op", list(INT_OPS))
def test_int_binary(s1, op, dtype):
    """Exact, with two's complement wrap-around (values near the type's limits)."""
    info = torch.iinfo(dtype)
    for sa, sb in [((n,), (n,)) for n in SIZES] + [((5, 33), (33,)), ((4, 1, 7), (1, 3, 1)), ((), ())]:
        a = torch.randint(info.min, info.max, sa, dtype=dtype)
        b = torch.randint(info.min, info.max, sb, dtype=dtype)
        shape = tuple(torch.broadcast_shapes(a.shape, b.shape))
        ae, be = a.expand(shape), b.expand(shape)
        pa, sta = put_view(s1, ae)
        pb, stb = put_view(s1, be)
        pout, sout = out_buffer(s1, shape, dtype)
        s1.record("INT_BINARY", op=ABI.binary[op], dtype=ABI.dtype[DT[dtype]], size=pad6(shape, 1),
                  out_stride=pad6(sout, 0), a_stride=pad6(sta, 0), b_stride=pad6(stb, 0), out=pout, a=pa, b=pb)
        assert same(s1.get(pout, shape, dtype), INT_OPS[op](a, b)), (op, sa, sb)


@pytest.mark.parametrize("op", ["SUM", "AMAX", "AMIN"])
@pytest.mark.parametrize("cumulative", [0, 1])
def test_int_reduce(s1, op, cumulative):
    ref_fn = {"SUM": (torch.sum, torch.cumsum), "AMAX": (torch.amax, torch.cummax), "AMIN": (torch.amin, torch.cummin)}[op]
    for shape, dim in [((1,), 0), ((17,), 0), ((3, 33), 1), ((3, 33), 0), ((2, 5, 7), 1), ((2, 0, 3), 1)]:
        if op != "SUM" and shape[dim] == 0:
            continue
        x = torch.randint(-2**62, 2**62, shape)
        outer, red, inner = x.shape[:dim].numel(), x.shape[dim], x.shape[dim + 1:].numel()
        out_shape = shape if cumulative else shape[:dim] + shape[dim + 1:]
        pout, _ = out_buffer(s1, out_shape, torch.int64)
        s1.record("INT_REDUCE", op=ABI.reduce[op], cumulative=cumulative, outer=outer, red=red, inner=inner,
                  **{"in": s1.put(x)}, out=pout)
        if cumulative:
            ref = ref_fn[1](x, dim)
            ref = ref if op == "SUM" else ref.values
        else:
            ref = ref_fn[0](x, dim)
        assert same(s1.get(pout, out_shape, torch.int64), ref), (op, shape, dim)


@pytest.mark.parametrize("op", ["AMAX", "AMIN"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64], ids=["F32", "I64"])
def test_arg_reduce(s1, op, dtype):
    """The first extreme wins ties; a NaN counts as the extreme (its first occurrence)."""
    fn = torch.argmax if op == "AMAX" else torch.argmin
    for shape, dim in [((1,), 0), ((17,), 0), ((3, 33), 1), ((3, 33), 0), ((2, 5, 7), 1)]:
        x = torch.randint(-3, 3, shape).to(dtype)  # many ties
        if dtype == torch.float32 and x.numel() > 20:
            x.view(-1)[[5, 9, 40]] = float("nan")
        outer, red, inner = x.shape[:dim].numel(), x.shape[dim], x.shape[dim + 1:].numel()
        out_shape = shape[:dim] + shape[dim + 1:]
        pout, _ = out_buffer(s1, out_shape, torch.int64)
        s1.record("ARG_REDUCE", op=ABI.reduce[op], dtype=ABI.dtype[DT[dtype]], outer=outer, red=red, inner=inner,
                  **{"in": s1.put(x)}, out=pout)
        assert same(s1.get(pout, out_shape, torch.int64), fn(x, dim)), (shape, dim)
