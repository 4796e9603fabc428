"""The index space of elementwise kernels (UNARY, BINARY, MAP, CAST, COMPARE, WHERE...): operands
broadcast to the output's shape, size-1 dims dropped and contiguous dims merged, as the kernels'
`size` / `<operand>_stride` fields. Used by the elementwise lowerings and by fusion (a MAP record
is re-collapsed each time an op joins it)."""
from __future__ import annotations

from .abi import ABI
from .plan import TensorRef
from .registry import Unsupported


def broadcast_strides(ref: TensorRef, shape: tuple[int, ...]) -> list[int]:
    """ref's element strides when broadcast to `shape` (0 on broadcast dims)."""
    pad = len(shape) - len(ref.shape)
    if pad < 0:
        raise Unsupported(f"cannot broadcast {ref.shape} to {shape}")
    strides = [0] * pad
    for size, stride, want in zip(ref.shape, ref.strides, shape[pad:]):
        if size == want:
            strides.append(stride if want != 1 else 0)
        elif size == 1:
            strides.append(0)
        else:
            raise Unsupported(f"cannot broadcast {ref.shape} to {shape}")
    return strides


def collapse(shape, *stride_lists) -> tuple[list[int], list[list[int]]]:
    """Drops size-1 dims and merges adjacent dims that are contiguous in every operand, then pads
    to MAX_DIMS (outermost first). Raises Unsupported if more than MAX_DIMS dims remain."""
    dims = [(s, [st[i] for st in stride_lists]) for i, s in enumerate(shape) if s != 1]
    merged: list[tuple[int, list[int]]] = []
    for size, strides in dims:
        if merged:
            psize, pstrides = merged[-1]
            if all(ps == s * size for ps, s in zip(pstrides, strides)):
                merged[-1] = (psize * size, strides)
                continue
        merged.append((size, strides))
    if len(merged) > ABI.max_dims:
        raise Unsupported(f"elementwise over {len(merged)} non-mergeable dims (max {ABI.max_dims})")
    pad = ABI.max_dims - len(merged)
    sizes = [1] * pad + [m[0] for m in merged]
    out_strides = [[0] * pad + [m[1][k] for m in merged] for k in range(len(stride_lists))]
    return sizes, out_strides


def strided_args(out: TensorRef, **inputs: TensorRef) -> dict:
    """The kernel args shared by every elementwise kernel (UNARY, BINARY, CAST, COMPARE, WHERE...):
    the collapsed index space `size`, `out_stride`/`out`, and `<name>_stride`/`<name>` per input,
    each input broadcast to out's shape."""
    sizes, strides = collapse(out.shape, list(out.strides),
                              *(broadcast_strides(ref, out.shape) for ref in inputs.values()))
    args = {"size": sizes, "out_stride": strides[0], "out": out.addr()}
    for (name, ref), stride in zip(inputs.items(), strides[1:]):
        args[f"{name}_stride"] = stride
        args[name] = ref.addr()
    return args
