"""The model-zoo tier: each architecture in zoo_models.MODELS (torchvision, timm, transformers;
random weights, small inputs) must
  - trace to one Dynamo graph (no graph break, no recompile),
  - run >= 99% of its ATen nodes in wasm (stats()),
  - equal eager within ZOO_RTOL of the output's scale (tolerance justified in zoo_run.py),
  - and, unless the entry says why not, export to a .wasm whose output (twb.load, wasmtime) equals
    eager within the same tolerance.
Every step runs even if an earlier check fails, so docs/zoo.md (--zoo-report) shows the whole
picture; the test then fails naming every broken promise.
"""
from __future__ import annotations

import pytest

from zoo_models import MODELS
from zoo_run import MIN_LOWERED, ZOO_RTOL, ZooResult, run_compiled, run_exported


def _error(e: BaseException) -> str:
    """Type and the first two lines of the message (export errors name the first node there)."""
    lines = [line.strip() for line in str(e).strip().splitlines()[:2]]
    return f"{type(e).__name__}: {' '.join(lines)}"


@pytest.mark.parametrize("zm", MODELS, ids=lambda zm: zm.name)
def test_zoo_model(zm, tmp_path, zoo_results):
    result = ZooResult(zm.name, zm.library)
    zoo_results.append(result)
    try:
        model, inputs, expected, _ = run_compiled(zm, result)
    except Exception as e:
        result.error = _error(e)
        raise

    if not zm.export:
        result.export = f"not exported: {zm.notes}"
    else:
        try:
            run_exported(model, inputs, expected, tmp_path / f"{zm.name}.wasm", result)
        except Exception as e:
            result.export = f"failed: {_error(e)}"

    problems = []
    if expected.numel() < 2 or expected.std() == 0:
        problems.append("the eager output is constant: comparing it proves nothing "
                        "(a zero-initialized head? compare the features instead)")
    if result.graphs != 1:
        problems.append(f"{result.graphs} Dynamo graphs (graph breaks or recompiles), expected 1")
    if result.lowered_fraction < MIN_LOWERED:
        problems.append(f"{result.aten_in_wasm}/{result.aten_nodes} ATen nodes in wasm "
                        f"(< {MIN_LOWERED:.0%}); fallbacks: {result.fallbacks}")
    if result.max_rel_err > ZOO_RTOL:
        problems.append(f"compiled output differs from eager by {result.max_rel_err:.2e} of its "
                        f"scale (tolerance {ZOO_RTOL:.0e})")
    if zm.export and result.export != "ok":
        problems.append(f"export {result.export}")
    elif zm.export and result.export_rel_err > ZOO_RTOL:
        problems.append(f"exported file differs from eager by {result.export_rel_err:.2e} of its "
                        f"scale (tolerance {ZOO_RTOL:.0e})")
    assert not problems, f"{zm.name}: " + "; ".join(problems)
