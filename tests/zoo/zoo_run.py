"""Runs one zoo model through eager, torch.compile(backend="wasm") and export -> load, and records
what docs/zoo.md shows: ATen nodes in wasm, fallbacks with their reasons, Dynamo graphs, compile
time, the wasm/eager time ratio and the largest error. The test (test_zoo.py) asserts on the record;
the report (conftest.py, --zoo-report) prints it. Times are measured, never asserted.

Tolerance (ZOO_RTOL, relative to the output's scale): these networks stack 2-120 GEMM/conv layers
whose blocked SIMD summation order differs from eager's, plus polynomial exp/erf/tanh accurate to a
few ulp. Each layer adds ~1e-7..1e-6 relative rounding noise, and normalization between layers keeps
it from compounding: the largest error measured over the zoo is 1.4e-6 of the output's scale.
ZOO_RTOL = 1e-4 of that scale (~800 float32 ulps) leaves room for that noise on other CPUs and
is still far below what a real bug does (a wrong index, mask, stride or dropped term moves outputs
by >= 1e-2 of their scale). Scale-relative, because random-weight networks produce outputs from
~1e-2 to ~1e2 and a fixed atol would be meaningless at one end or the other.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

import torch_wasm_backend as twb

ZOO_RTOL = 1e-4
MIN_LOWERED = 0.99
TIMING_RUNS = 3


@dataclass
class ZooResult:
    name: str
    library: str
    aten_nodes: int = 0
    aten_in_wasm: int = 0
    graphs: int = 0
    partitions: int = 0
    fallbacks: list = field(default_factory=list)   # "op: reason", deduplicated, with counts
    compile_s: float = 0.0                          # first compiled call (trace, lower, upload)
    eager_ms: float = 0.0
    wasm_ms: float = 0.0
    max_rel_err: float | None = None                # max |wasm - eager| / max |eager|
    export: str = ""                                # "ok", "not exported: why", "failed: error"
    export_rel_err: float | None = None
    error: str = ""                                 # first exception, type and message

    @property
    def lowered_fraction(self) -> float:
        return self.aten_in_wasm / self.aten_nodes if self.aten_nodes else 0.0


def _median_ms(fn, *args) -> float:
    times = []
    for _ in range(TIMING_RUNS):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected| (the scale the tolerance is relative to)."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    if expected.numel() == 0:
        return 0.0
    scale = expected.abs().max().item() or 1.0
    return (got - expected).abs().max().item() / scale


def _fallbacks(s: dict) -> list:
    counts: dict = {}
    for f in s["fallback_nodes"]:
        key = f"{f['op']}: {f['reason']}"
        counts[key] = counts.get(key, 0) + 1
    return [f"{n} x {k}" for k, n in counts.items()]


def run_compiled(zm, result: ZooResult) -> tuple:
    """Eager and torch.compile(backend="wasm") on the same inputs; fills result; returns
    (model, inputs, eager output, compiled output)."""
    model, inputs = zm.build(), zm.inputs()
    with torch.no_grad():
        expected = model(*inputs)
        result.eager_ms = _median_ms(model, *inputs)
        torch._dynamo.reset()
        twb.reset_stats()
        compiled = torch.compile(model, backend="wasm")
        t0 = time.perf_counter()
        got = compiled(*inputs)
        result.compile_s = time.perf_counter() - t0
        result.wasm_ms = _median_ms(compiled, *inputs)
    s = twb.stats()
    result.aten_nodes, result.aten_in_wasm = s["aten_nodes_total"], s["aten_nodes_lowered"]
    result.graphs, result.partitions = s["graphs_compiled"], s["partitions"]
    result.fallbacks = _fallbacks(s)
    result.max_rel_err = rel_err(got, expected)
    return model, inputs, expected, got


def run_exported(model, inputs, expected, path, result: ZooResult) -> torch.Tensor:
    """twb.export -> twb.load (wasmtime) -> run; fills result; returns the file's output."""
    with torch.no_grad():
        twb.export(model, inputs, path)
        got = twb.load(path)(*inputs)
    result.export_rel_err = rel_err(got, expected)
    result.export = "ok"
    return got
