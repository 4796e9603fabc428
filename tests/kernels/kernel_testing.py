"""Helpers for the kernel-level tests: run single ABI records through the real runtime
(torch_wasm_backend.kernel_call.KernelSession) on torch tensors, with guard bands around every
buffer so out-of-bounds reads (NaN guards poison the result) and writes (a sentinel that must
survive) are caught, and error bounds stated in float32 ulps or as multiples of eps * magnitude."""
from __future__ import annotations

import numpy as np
import torch

from torch_wasm_backend.lowering.abi import ABI
from torch_wasm_backend.kernel_call import KernelSession

MAX_DIMS = ABI.max_dims
NR = ABI.gemm_nr
EPS = 2.0 ** -24  # float32 unit roundoff (half an ulp of 1.0)
FLT_MIN = float(np.finfo(np.float32).tiny)
GUARD = 16  # floats of guard band on each side of every buffer
SENTINEL = -7.25  # written into output guard bands; a kernel must never overwrite it
NAN = float("nan")
INF = float("inf")


class Session(KernelSession):
    """KernelSession with guard bands, strided-view upload and a record runner whose keyword
    arguments may include `op` (the sub-op field of UNARY/BINARY/REDUCE)."""

    def scope(self) -> "Session":
        """A fresh session on the same runtime and thread count, for one case of a loop: closing it
        frees its buffers right away (the allocator's free() gets slow with thousands live)."""
        return Session(threads=self.threads, runtime=self.runtime)

    def record(self, name: str, /, **args) -> None:
        words = ABI.encode(name, **args)
        offset = self.alloc(4 * len(words))
        self.runtime.memory.write_words(offset, words)
        self.runtime.run(offset, len(words), self.threads)

    def put_guarded(self, t: torch.Tensor) -> int:
        """Uploads a contiguous float tensor between NaN guard bands; returns the data offset."""
        t = t.detach().float().contiguous().reshape(-1)
        pad = torch.full((GUARD,), NAN)
        return self.put(torch.cat([pad, t, pad])) + 4 * GUARD

    def put_view(self, v: torch.Tensor) -> tuple[int, tuple[int, ...]]:
        """Uploads the whole storage under a strided view; returns (offset of v[0...], strides)
        so a kernel reads exactly the elements the view sees (stride 0 = broadcast)."""
        storage = v.untyped_storage()
        base = torch.empty(0, dtype=v.dtype).set_(storage, 0, (storage.nbytes() // v.element_size(),))
        return self.put_guarded(base) + 4 * v.storage_offset(), tuple(v.stride())

    def out(self, numel: int, fill: float = NAN, init: torch.Tensor | None = None) -> "OutBuffer":
        return OutBuffer(self, numel, fill, init)


class OutBuffer:
    """An output region pre-filled with `fill` (NaN by default: an element the kernel forgets to
    write stays NaN), or with `init`, between SENTINEL guard bands."""

    def __init__(self, s: Session, numel: int, fill: float = NAN, init: torch.Tensor | None = None):
        self.s, self.numel = s, numel
        body = torch.full((numel,), fill) if init is None else init.float().reshape(-1)
        assert body.numel() == numel
        guard = torch.full((GUARD,), SENTINEL)
        self.base = s.put(torch.cat([guard, body, guard]))
        self.ptr = self.base + 4 * GUARD

    def flat(self) -> torch.Tensor:
        whole = self.s.get(self.base, (self.numel + 2 * GUARD,))
        lo, hi = whole[:GUARD], whole[GUARD + self.numel:]
        assert bool((lo == SENTINEL).all()) and bool((hi == SENTINEL).all()), \
            "kernel wrote outside its output buffer"
        return whole[GUARD:GUARD + self.numel]

    def read(self, shape, strides=None) -> torch.Tensor:
        flat = self.flat()
        if strides is None:
            return flat.reshape(tuple(shape))
        return flat.as_strided(tuple(shape), tuple(strides))


def pad6(values, fill):
    values = list(values)
    assert len(values) <= MAX_DIMS
    return [fill] * (MAX_DIMS - len(values)) + values


def contiguous_strides(shape) -> list[int]:
    strides, acc = [], 1
    for d in reversed(list(shape)):
        strides.append(acc)
        acc *= d
    return strides[::-1]


def view_with_nan_holes(base: torch.Tensor, view_fn) -> torch.Tensor:
    """view_fn(base), after setting every element of base the view does not see to NaN: a kernel
    that walks the wrong strides picks up NaN."""
    idx = view_fn(torch.arange(base.numel()).reshape(base.shape)).reshape(-1)
    seen = torch.zeros(base.numel(), dtype=torch.bool)
    seen[idx] = True
    base.view(-1)[~seen] = NAN
    return view_fn(base)


# ---- comparisons --------------------------------------------------------------------------------
def ulp32(ref: torch.Tensor) -> torch.Tensor:
    """float32 ulp at |ref| (spacing; 2^-149 below the normal range), as float64."""
    r = ref.detach().double().abs().float().numpy()
    return torch.from_numpy(np.spacing(r).astype(np.float64))


def _fmt(got, ref, bad, bound=None, x=None, limit=5):
    idx = bad.nonzero()[:limit].tolist()
    lines = []
    for i in idx:
        i = tuple(i)
        line = f"  at {i}: got {got[i].item()!r} want {ref[i].item()!r}"
        if x is not None:
            line += f" (x={x[i].item()!r})"
        if bound is not None:
            line += f" bound {bound[i].item():.3g}"
        lines.append(line)
    return f"{int(bad.sum())} of {bad.numel()} elements off:\n" + "\n".join(lines)


def assert_same_specials(got, ref, x=None):
    """NaN exactly where ref has NaN; infinities exactly equal."""
    got, ref = got.double(), ref.double()
    assert got.shape == ref.shape, (got.shape, ref.shape)
    bad = torch.isnan(got) != torch.isnan(ref)
    bad |= torch.isinf(ref) & (got != ref)
    bad |= torch.isinf(got) & (got != ref)
    assert not bad.any(), "NaN/inf mismatch: " + _fmt(got, ref, bad, x=x)


def assert_exact(got, ref, x=None):
    """Bit-for-bit value equality (NaN matches NaN; +0 and -0 compare equal)."""
    got, ref = got.double(), ref.double()
    assert_same_specials(got, ref, x)
    bad = ~(torch.isnan(ref) | (got == ref))
    assert not bad.any(), "not exact: " + _fmt(got, ref, bad, x=x)


def assert_within(got, ref, bound, x=None):
    """|got - ref| <= bound elementwise (bound a tensor or scalar), specials exact."""
    got, ref = got.double(), ref.double()
    assert_same_specials(got, ref, x)
    bound = torch.as_tensor(bound, dtype=torch.float64).expand(ref.shape)
    finite = torch.isfinite(ref)
    err = (got - ref).abs()
    bad = finite & ~(err <= bound)
    assert not bad.any(), "outside bound: " + _fmt(got, ref, bad, bound, x)


def dot_rel(k: int) -> float:
    """Error bound of a length-k float32 dot product plus a bias, relative to sum |a_i b_i| + |bias|:
    the worst case (k + 2) * EPS for any summation order while that is below 1e-5 (k ~ 166), then
    1e-5 (blocked sums' errors grow ~ sqrt(k), far below the worst case)."""
    return min(k + 2, 1e-5 / EPS) * EPS


def assert_bits_equal(a: torch.Tensor, b: torch.Tensor):
    assert a.shape == b.shape
    ai, bi = a.contiguous().view(torch.int32), b.contiguous().view(torch.int32)
    diff = ai != bi
    assert not diff.any(), f"{int(diff.sum())} elements differ bitwise, first at {diff.nonzero()[0].tolist()}"
