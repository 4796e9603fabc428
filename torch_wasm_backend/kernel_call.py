"""Runs single kernel records on torch tensors, without the lowering: used by the kernel tests and
the kernel benchmarks (GEMM vs the peak loop)."""
from __future__ import annotations

import torch

from torch_wasm_backend.lowering.abi import ABI
from .runtime import Runtime, get_runtime


class KernelSession:
    """Allocates wasm buffers for tensors, runs records, reads results; frees everything on close."""

    def __init__(self, threads: int = 1, runtime: Runtime | None = None):
        self.runtime = runtime or get_runtime(threads)[0]
        self.threads = threads
        self._allocated: list[int] = []
        self._plan: tuple[int, int] | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def alloc(self, nbytes: int) -> int:
        offset = self.runtime.allocator.alloc(max(nbytes, 4))
        self._allocated.append(offset)
        return offset

    def put(self, t: torch.Tensor) -> int:
        """Copies t (made contiguous) into wasm memory; returns its byte offset."""
        t = t.contiguous()
        offset = self.alloc(t.numel() * t.element_size())
        if t.numel():
            self.runtime.memory.write(offset, t)
        return offset

    def empty(self, shape, dtype=torch.float32, fill: float = float("nan")) -> int:
        """A buffer pre-filled with NaN, so a kernel that forgets to write an element is caught."""
        return self.put(torch.full(tuple(shape), fill, dtype=dtype))

    def get(self, offset: int, shape, dtype=torch.float32) -> torch.Tensor:
        return self.runtime.memory.view(offset, tuple(shape), dtype).clone()

    def prepare(self, op: str, /, repeat: int = 1, **args) -> None:
        """Encodes one record (`repeat` copies of it in one plan, so a benchmark of a short kernel
        is not dominated by the call into wasm) and keeps it, so run() can repeat it."""
        words = list(ABI.encode(op, **args)) * repeat
        offset = self.alloc(4 * len(words))
        self.runtime.memory.write_words(offset, words)
        self._plan = (offset, len(words))

    def run(self, op: str | None = None, /, **args) -> None:
        if op is not None:
            self.prepare(op, **args)
        self.runtime.run(*self._plan, self.threads)

    def close(self) -> None:
        for offset in self._allocated:
            self.runtime.allocator.free(offset)
        self._allocated.clear()
