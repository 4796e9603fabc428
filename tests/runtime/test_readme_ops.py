"""The README's summary of what runs in wasm names only ops the registry has (issue 16 part 7: it
once listed `gather`, which runs in eager). Every plain identifier in code font in the paragraph
is an ATen op; names with dots, slashes or spaces are modules, files or commands."""
import re
from pathlib import Path

import torch

from torch_wasm_backend.lowering import ops  # noqa: F401  (fills the registry)

ops.register_int8()  # (the int8 entries are registered on first need: see lowering/ops/quant.py)
from torch_wasm_backend.lowering.registry import REGISTRY, _foldable_target

README = Path(__file__).resolve().parents[2] / "README.md"
# Factories that are never lowered as kernels: the partitioner folds them into constants when their
# sizes are static (registry.is_static), which the README says in the same sentence.
FOLDED = {"arange", "ones"}


def _summary() -> str:
    text = README.read_text()
    section = text.split("## What runs in wasm", 1)[1]
    return section.split("\n\n", 2)[1]   # the paragraph after the heading's blank line


def test_every_op_named_in_the_readme_summary_is_registered():
    summary = _summary()
    assert "In short" in summary
    names = {n for n in re.findall(r"`([^`]+)`", summary) if re.fullmatch(r"[a-z_][a-z0-9_]*", n)}
    assert len(names) > 30, names   # the paragraph was found and is written in code font
    registered = {e.name.split("::", 1)[1].split(".", 1)[0] for e in REGISTRY.values()}
    missing = sorted(names - registered - FOLDED)
    assert not missing, f"README names ops the registry does not have: {missing}"
    for name in FOLDED:
        assert name not in registered and _foldable_target(getattr(torch.ops.aten, name).default)


def test_readme_count_of_overloads_matches_the_registry():
    count = int(re.match(r"(\d+) ATen overloads", _summary()).group(1))
    assert count == len(REGISTRY)
