"""PyTorch's own OpInfo samples through backend="wasm" (strict), for every registry op that has an
OpInfo in torch.testing._internal.common_methods_invocations.op_db.

Each float32 CPU sample `op.op(sample.input, *sample.args, **sample.kwargs)` is classified as
  passed    ran in wasm (stats: every ATen node lowered, >= 1 wasm call, no eager partition call)
            and matches eager within the op family's tolerance
  rejected  strict mode refused it with a reason from the support check (a fallback, not a pass),
            or the compiled graph had no ATen node in wasm
  WRONG     ran in wasm and mismatched eager                         -> the test fails
  error     anything else: a crash in lowering, a trap in wasm...   -> the test fails
  (samples eager itself rejects are skipped)

View ops (view, permute, split...) alone form view-only partitions that the partitioner leaves to
eager by design (they cost no copy there), so for them every output is fed through clone(): the
view is then lowered for real (as strides on the clone's input) and compared.

The per-op table is printed (pytest -s) and, with TWB_WRITE_OPINFO_TABLE=1, written to
docs/opinfo_coverage.md.
"""
from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from helpers import EXACT, MATMUL, REDUCTION, TRANSCENDENTAL, _assert_tree_close

import torch_wasm_backend as twb
from torch_wasm_backend.lowering import ops as _ops  # noqa: F401  (fills the registry)
from torch_wasm_backend.lowering.registry import REGISTRY, Unsupported

pytest.importorskip("expecttest", reason="torch's OpInfo database needs the 'expecttest' package")
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

MAX_SAMPLES_PER_OP = 12
# Issue 3's target: >= 95% of the samples of registered ops run in wasm and match (the rest are
# rejected with a reason: float64 compute, training-mode batch norm, dropout, > 6-d tensors...).
MIN_PASS_RATE = 0.95
# ONE_ULP: add/sub with alpha are one fma in eager, a multiply then an add in wasm; eager's sqrt is
# not always correctly rounded (wasm's is). Otherwise these ops are exact.
ONE_ULP = dict(rtol=2.5e-7, atol=1e-6)

# registry op (base name of the ATen overload) -> (OpInfo names "name" or "name.variant", tolerance)
OPINFO_FOR = {
    "add": (["add"], ONE_ULP),
    "sub": (["sub"], ONE_ULP),
    "mul": (["mul"], EXACT),
    "div": (["div.no_rounding_mode", "div.floor_rounding", "div.trunc_rounding"], EXACT),
    "maximum": (["maximum"], EXACT),
    "minimum": (["minimum"], EXACT),
    "rsub": (["rsub"], ONE_ULP),
    "relu": (["nn.functional.relu"], EXACT),
    "gelu": (["nn.functional.gelu"], TRANSCENDENTAL),
    "silu": (["nn.functional.silu"], TRANSCENDENTAL),
    "sigmoid": (["sigmoid"], TRANSCENDENTAL),
    "tanh": (["tanh"], TRANSCENDENTAL),
    "exp": (["exp"], TRANSCENDENTAL),
    "neg": (["neg"], EXACT),
    "sqrt": (["sqrt"], ONE_ULP),
    "rsqrt": (["rsqrt"], TRANSCENDENTAL),
    "clamp": (["clamp"], EXACT),
    "hardtanh": (["nn.functional.hardtanh", "nn.functional.relu6"], EXACT),
    "clone": (["clone"], EXACT),
    "_to_copy": (["to"], EXACT),
    "mm": (["mm"], MATMUL),
    "addmm": (["addmm", "addmm.decomposed"], MATMUL),
    "bmm": (["bmm"], MATMUL),
    "linear": (["nn.functional.linear"], MATMUL),
    "convolution": (["nn.functional.conv1d", "nn.functional.conv2d", "nn.functional.conv_transpose1d",
                     "nn.functional.conv_transpose2d", "nn.functional.conv3d"], MATMUL),
    "_softmax": (["softmax", "softmax.with_dtype"], REDUCTION),
    "_log_softmax": (["log_softmax", "log_softmax.with_dtype"], REDUCTION),
    "_safe_softmax": (["torch.ops.aten._safe_softmax.default"], REDUCTION),
    "native_layer_norm": (["native_layer_norm", "nn.functional.layer_norm"], REDUCTION),
    "_native_batch_norm_legit_no_training": (["nn.functional.batch_norm"], TRANSCENDENTAL),
    "native_batch_norm": (["native_batch_norm"], TRANSCENDENTAL),
    "max_pool2d_with_indices": (["nn.functional.max_pool2d"], EXACT),
    "max_pool2d": (["nn.functional.max_pool2d"], EXACT),
    "max_pool3d_with_indices": (["nn.functional.max_pool3d"], EXACT),
    "max_pool3d": (["nn.functional.max_pool3d"], EXACT),
    "avg_pool3d": (["nn.functional.avg_pool3d"], REDUCTION),
    "adaptive_avg_pool3d": (["nn.functional.adaptive_avg_pool3d"], REDUCTION),
    "_adaptive_avg_pool3d": (["nn.functional.adaptive_avg_pool3d"], REDUCTION),
    "avg_pool2d": (["nn.functional.avg_pool2d"], REDUCTION),
    "adaptive_avg_pool2d": (["nn.functional.adaptive_avg_pool2d"], REDUCTION),
    "_adaptive_avg_pool2d": (["nn.functional.adaptive_avg_pool2d"], REDUCTION),
    "sum": (["sum"], REDUCTION),
    "mean": (["mean"], REDUCTION),
    "amax": (["amax"], EXACT),
    "amin": (["amin"], EXACT),
    "cat": (["cat"], EXACT),
    "_scaled_dot_product_flash_attention_for_cpu": (["nn.functional.scaled_dot_product_attention"], MATMUL),
    "hardswish": (["nn.functional.hardswish"], EXACT),
    "hardsigmoid": (["nn.functional.hardsigmoid"], EXACT),
    "abs": (["abs"], EXACT),
    "log": (["log"], TRANSCENDENTAL),
    "reciprocal": (["reciprocal"], EXACT),
    "erf": (["erf"], TRANSCENDENTAL),
    "floor": (["floor"], EXACT),
    "ceil": (["ceil"], EXACT),
    "trunc": (["trunc"], EXACT),
    "round": (["round", "round.decimals_0"], EXACT),
    "leaky_relu": (["nn.functional.leaky_relu"], EXACT),
    # double-precision reduction + float polynomials: <= 1.52 ulp (kernel tests), eager ~1 ulp
    "sin": (["sin"], TRANSCENDENTAL),
    "cos": (["cos"], TRANSCENDENTAL),
    # eager contracts value * t1 * t2 + self into an fma; the decomposition rounds the product
    "addcmul": (["addcmul"], ONE_ULP),
    # exp(p log|x|) for general exponents: ~2 ulp per unit of |p log x| (kernel tests), inside 1e-5
    "pow": (["pow"], TRANSCENDENTAL),
    "floor_divide": (["floor_divide"], EXACT),
    "eq": (["eq"], EXACT),
    "ne": (["ne"], EXACT),
    "lt": (["lt"], EXACT),
    "le": (["le"], EXACT),
    "gt": (["gt"], EXACT),
    "ge": (["ge"], EXACT),
    "logical_and": (["logical_and"], EXACT),
    "logical_or": (["logical_or"], EXACT),
    "logical_xor": (["logical_xor"], EXACT),
    "logical_not": (["logical_not"], EXACT),
    "bitwise_not": (["bitwise_not"], EXACT),
    "where": (["where"], EXACT),
    "masked_fill": (["masked_fill"], EXACT),
    "tril": (["tril"], EXACT),
    "triu": (["triu"], EXACT),
    "embedding": (["nn.functional.embedding"], EXACT),
    "index_select": (["index_select"], EXACT),
    "gather": (["gather"], EXACT),
    "slice_scatter": (["slice_scatter"], EXACT),
    "select_scatter": (["select_scatter"], EXACT),
    "fill": (["fill"], EXACT),
    "index": (["__getitem__"], EXACT),
    # upsampling reaches the graph as PyTorch's decomposition: static index tables + _unsafe_index
    "_unsafe_index": (["nn.functional.interpolate.nearest", "nn.functional.interpolate.bilinear"], REDUCTION),
    "zeros_like": (["zeros_like"], EXACT),
    "ones_like": (["ones_like"], EXACT),
    "full_like": (["full_like"], EXACT),
    "new_zeros": (["new_zeros"], EXACT),
    "new_ones": (["new_ones"], EXACT),
    "new_full": (["new_full"], EXACT),
    "constant_pad_nd": (["constant_pad_nd", "nn.functional.pad.constant"], EXACT),
    "cumsum": (["cumsum"], REDUCTION),
    "flip": (["flip"], EXACT),
    "stack": (["stack"], EXACT),
    "var": (["var", "var.unbiased"], REDUCTION),
    "var_mean": (["var_mean"], REDUCTION),
    "std": (["std"], REDUCTION),
    "std_mean": (["std_mean"], REDUCTION),
    "native_group_norm": (["nn.functional.group_norm"], REDUCTION),
    "_native_batch_norm_legit": (["nn.functional.instance_norm"], REDUCTION),
    "repeat": (["repeat"], EXACT),
    "roll": (["roll"], EXACT),
    "pixel_shuffle": (["nn.functional.pixel_shuffle"], EXACT),
    "pixel_unshuffle": (["nn.functional.pixel_unshuffle"], EXACT),
    "_prelu_kernel": (["nn.functional.prelu"], EXACT),
    "baddbmm": (["baddbmm"], MATMUL),
    "logsumexp": (["logsumexp"], REDUCTION),
    "glu": (["nn.functional.glu"], TRANSCENDENTAL),
    "linalg_vector_norm": (["linalg.vector_norm"], REDUCTION),
    "clamp_min": (["clamp_min"], EXACT),
    "clamp_max": (["clamp_max"], EXACT),
    "argmax": (["argmax"], EXACT),
    "argmin": (["argmin"], EXACT),
    "max": (["max.reduction_with_dim"], EXACT),
    "min": (["min.reduction_with_dim"], EXACT),
    # views (outputs fed to clone(), see the module docstring)
    "view": (["view"], EXACT),
    "view_as": (["view_as"], EXACT),
    "reshape": (["reshape"], EXACT),
    "_unsafe_view": (["reshape"], EXACT),
    "permute": (["permute"], EXACT),
    "transpose": (["transpose"], EXACT),
    "t": (["t"], EXACT),
    "expand": (["expand"], EXACT),
    "unsqueeze": (["unsqueeze"], EXACT),
    "squeeze": (["squeeze", "squeeze.multiple"], EXACT),
    "slice": (["slice"], EXACT),
    "select": (["select"], EXACT),
    "narrow": (["narrow"], EXACT),
    "split": (["split", "split.list_args"], EXACT),
    "split_with_sizes": (["split_with_sizes"], EXACT),
    "unbind": (["unbind"], EXACT),
    "chunk": (["chunk"], EXACT),
    "flatten": (["flatten"], EXACT),
    "unflatten": (["unflatten"], EXACT),
}
# OpInfos whose op.op Dynamo cannot trace (SDPA's is wrapped to fix the dropout seed): call the
# public function instead.
OP_OVERRIDE = {"nn.functional.scaled_dot_product_attention": torch.nn.functional.scaled_dot_product_attention}

# Backend bugs already reported, (OpInfo key, text in the error) -> description. Matching samples
# are counted as "known bug" instead of failing the test; delete an entry once it is fixed.
KNOWN_BUGS: dict[tuple[str, str], str] = {}

VIEW_BASES = {"view", "view_as", "reshape", "permute", "transpose", "t", "expand", "unsqueeze", "squeeze",
              "slice", "select", "narrow", "split", "split_with_sizes", "unbind", "chunk", "flatten",
              "unflatten"}

_STRICT_REASON = re.compile(r"^\s+\S+: (aten::\S+|\S+): (.*)$", re.MULTILINE)


def _base(name: str) -> str:
    return name.split("::", 1)[-1].split(".", 1)[0]


def _opinfo_key(op) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def _spread(gen, n):
    first = []
    for i, s in enumerate(gen):
        if i >= 200:
            break
        first.append(s)
    if len(first) <= n:
        return first
    if n <= 1:
        return first[:n]
    return [first[round(i * (len(first) - 1) / (n - 1))] for i in range(n)]


def _exception_chain(exc):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "inner_exception", None) or exc.__cause__ or exc.__context__


def _rejection_reason(exc: BaseException) -> str | None:
    """The support check's reason if exc is a strict-mode rejection, else None. Compile-time
    rejections arrive as BackendCompilerFailed(WasmBackendError("strict mode: these nodes...")),
    call-time (shape-dependent) ones as WasmBackendError raised from registry.Unsupported."""
    for e in _exception_chain(exc):
        if isinstance(e, Unsupported):
            return str(e)
        if isinstance(e, twb.WasmBackendError) and "strict mode: these nodes cannot run in wasm" in str(e):
            found = _STRICT_REASON.findall(str(e))
            return "; ".join(sorted({f"{op}: {why}" for op, why in found})) or "strict mode rejection"
    return None


class _Result:
    def __init__(self):
        self.counts = Counter()
        self.reasons = Counter()
        self.failures: list[str] = []
        self.lowered = Counter()


def _run_sample(op, sample, tol, clone_outputs, result: _Result):
    leaves, spec = tree_flatten((sample.input, sample.args, sample.kwargs))
    where = [i for i, v in enumerate(leaves) if isinstance(v, torch.Tensor)]
    tensors = [leaves[i] for i in where]
    call = OP_OVERRIDE.get(_opinfo_key(op), op.op)

    def fn(*ts):
        ls = list(leaves)
        for i, t in zip(where, ts):
            ls[i] = t
        inp, args, kwargs = tree_unflatten(ls, spec)
        out = call(inp, *args, **kwargs)
        if clone_outputs:
            out = tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, out)
        return out

    desc = f"{_opinfo_key(op)}: {sample.summary() if hasattr(sample, 'summary') else sample}"
    with torch.no_grad():
        try:
            expected = fn(*tensors)
        except Exception:
            result.counts["skipped"] += 1  # eager itself rejects the sample
            return
        torch._dynamo.reset()  # or the recompile limit silently sends later samples to eager
        twb.reset_stats()
        compiled = torch.compile(fn, backend="wasm", options={"strict": True})
        try:
            got = compiled(*tensors)
        except Exception as e:  # noqa: BLE001
            reason = _rejection_reason(e)
            if reason is None:
                text = f"{type(e).__name__}: {e}"
                known = [why for (key, pattern), why in KNOWN_BUGS.items()
                         if key == _opinfo_key(op) and pattern in text]
                if known:
                    result.counts["known bug"] += 1
                    result.reasons[f"KNOWN BUG: {known[0]}"] += 1
                else:
                    result.counts["error"] += 1
                    result.failures.append(f"ERROR {desc}\n    {text[:600]}")
            else:
                result.counts["rejected"] += 1
                result.reasons[reason[:160]] += 1
            return
    s = twb.stats()
    if s["calls"] == 0 or s["aten_nodes_lowered"] == 0 or s["eager_partition_calls"] or s["fallback_nodes"]:
        result.counts["rejected"] += 1
        result.reasons["no ATen node ran in wasm" if not s["aten_nodes_lowered"] else
                       f"partly in eager: {s['fallback_nodes'][:1]}"] += 1
        return
    result.lowered.update(s["lowered_by_op"])
    try:
        _assert_tree_close(got, expected, tol)
    except AssertionError as e:
        result.counts["WRONG"] += 1
        result.failures.append(f"WRONG {desc}\n    {str(e)[:600]}")
        return
    result.counts["passed"] += 1


def _collect():
    """[(registry op names, OpInfo, tolerance)], one entry per OpInfo; and the registry ops that
    have no OpInfo."""
    by_key = {_opinfo_key(op): op for op in op_db}
    registered = {_base(e.name) for e in REGISTRY.values()}
    plan: dict[str, tuple[list[str], object, dict]] = {}
    missing = []
    for base in sorted(registered):
        if base not in OPINFO_FOR:
            missing.append(base)
            continue
        names, tol = OPINFO_FOR[base]
        for name in names:
            if name not in by_key:
                missing.append(f"{base} (no OpInfo {name})")
            elif name in plan:
                plan[name][0].append(base)
            else:
                plan[name] = ([base], by_key[name], tol)
    return [("/".join(bases), op, tol) for bases, op, tol in plan.values()], missing


def _table(results: dict, missing: list[str], seconds: float) -> str:
    tot = Counter()
    for r in results.values():
        tot.update(r.counts)
    ran = sum(tot[k] for k in ("passed", "rejected", "WRONG", "error", "known bug"))
    lines = [
        "# OpInfo coverage of the wasm backend",
        "",
        "Generated by `TWB_WRITE_OPINFO_TABLE=1 python -m pytest -q tests/ops/test_opinfo.py`: PyTorch's",
        f"OpInfo float32 CPU samples (at most {MAX_SAMPLES_PER_OP} per OpInfo, spread over its sample list) run",
        "through `torch.compile(backend=\"wasm\", options={\"strict\": True})` and compared with eager.",
        "*passed*: ran in wasm and matched; *rejected*: the support check refused it (a fallback);",
        "*wrong*/*error*: a mismatch or a crash (the test fails on any); *known*: a crash already",
        "reported (KNOWN_BUGS in the test). View ops are fed to `clone()`.",
        "",
        f"Total: {tot['passed']} passed, {tot['rejected']} rejected, {tot['WRONG']} wrong, {tot['error']} errors, "
        f"{tot['known bug']} known bugs "
        f"of {ran} samples run ({100.0 * tot['passed'] / max(ran, 1):.1f}% passed); {tot['skipped']} skipped "
        f"(eager rejects them); {seconds:.0f} s.",
        "",
        "| registry op | OpInfo | passed | rejected | wrong | error | known | total | top rejection reasons |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for (base, key), r in results.items():
        c = r.counts
        total = sum(c[k] for k in ("passed", "rejected", "WRONG", "error", "known bug"))
        reasons = "; ".join(f"{why} (x{n})" for why, n in r.reasons.most_common(2)).replace("|", "\\|")
        lines.append(f"| {base} | {key} | {c['passed']} | {c['rejected']} | {c['WRONG']} | {c['error']} | "
                     f"{c['known bug']} | {total} | {reasons} |")
    lines += ["", "Registry ops without an OpInfo here: " + ", ".join(sorted(set(missing))) + "."]
    return "\n".join(lines) + "\n"


def test_opinfo_samples():
    plan, missing = _collect()
    assert plan, "no registry op matched an OpInfo"
    start = time.perf_counter()
    results: dict = {}
    for base, op, tol in plan:
        r = results.setdefault((base, _opinfo_key(op)), _Result())
        samples = _spread(op.sample_inputs("cpu", torch.float32, requires_grad=False), MAX_SAMPLES_PER_OP)
        if len(samples) < MAX_SAMPLES_PER_OP:
            # Elementwise OpInfos have only a few samples; top up from their reference inputs
            # (extremal values, large and non-contiguous tensors).
            ref = _spread(op.reference_inputs("cpu", torch.float32, requires_grad=False), 4 * MAX_SAMPLES_PER_OP)
            samples += _spread(ref[len(samples):], MAX_SAMPLES_PER_OP - len(samples))
        for sample in samples:
            _run_sample(op, sample, tol, bool(set(base.split("/")) & VIEW_BASES), r)
    seconds = time.perf_counter() - start
    table = _table(results, missing, seconds)
    print("\n" + table)
    if os.environ.get("TWB_WRITE_OPINFO_TABLE") == "1":
        out = Path(__file__).resolve().parents[2] / "docs" / "opinfo_coverage.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
    failures = [f for r in results.values() for f in r.failures]
    assert not failures, f"{len(failures)} wrong answers / errors:\n" + "\n".join(failures)
    tot = Counter()
    for r in results.values():
        tot.update(r.counts)
    ran = sum(tot[k] for k in ("passed", "rejected", "WRONG", "error", "known bug"))
    assert tot["passed"] >= MIN_PASS_RATE * ran, (
        f"OpInfo pass rate {tot['passed']}/{ran} fell below {MIN_PASS_RATE:.0%}:\n{table}")
