"""Real architectures (tests/export/text_models.py: BERT, DistilBERT, RoBERTa, GPT-2, LLaMA, T5
encoder, CLIP text, Wav2Vec2), each exported once with a dynamic sequence dim, run at three lengths
(the minimum, a middle odd one with a padded attention mask, the maximum) in wasmtime, Node.js and
headless Chromium from the same files; all equal to eager. Lengths out of the dim's range, and
inputs that disagree on it, get a clear error naming the dim and its range.

Run alone with `python3 -m pytest -m text_models -p no:xdist`.

Tolerance: MATMUL (rtol = atol = 1e-4) from tests/helpers.py. The outputs come out of GEMMs with
K <= 64 summed in another order than eager's (blocked SIMD lanes) and of exp/erf/tanh/rsqrt
approximations a few ulp off, through two layers and layer norms that keep outputs small (max |y|
2.5-4.4 here). The files' largest error in wasmtime was 3.5e-6 (LLaMA, 2026-12-03), so 1e-4 leaves
margin, and still catches a wrong mask: test_padding_changes_the_outputs checks that dropping the
padding moves the outputs by more than 100x the tolerance."""
import json
import shutil
from pathlib import Path

import pytest
import torch

import torch_wasm_backend as twb
from torch_wasm_backend import WasmBackendError
from helpers import MATMUL
from test_export_browser import CHROMIUM, run_page
from test_export_dynamic import _node_runs, _runs_json, needs_node
from test_export_node import DRIVERS
import text_models

# One xdist worker runs the whole file (`make test` uses --dist loadgroup), so the models are
# exported once per session rather than once per worker.
pytestmark = [pytest.mark.text_models, pytest.mark.xdist_group("text_models")]

NAMES = list(text_models.MODELS)
THREADS = 2  # Node and Chromium: the deployed setting; work splits differ per length


class Exported:
    """One model exported once: the file, and per run its inputs and eager outputs. The runs are
    the three lengths in order, then the middle one again (a shorter call after the longest must
    not see anything the longer call left in memory)."""

    def __init__(self, spec: text_models.TextModel, root: Path):
        self.spec = spec
        self.model = model = spec.model()
        example = spec.inputs(spec.lengths[1])
        self.path = root / f"{spec.name}.wasm"
        self.meta = twb.export(model, (), self.path, kwargs=example, dynamic_shapes=spec.dynamic_shapes)
        lengths = [*spec.lengths, spec.lengths[1]]
        self.runs = [spec.inputs(n) for n in lengths]
        self.expected = [text_models.eager_outputs(model, inputs) for inputs in self.runs]
        # Every run, then the bad inputs: (label, inputs, eager outputs or None for an error).
        self.cases = [(f"at length {_length(x)}", x, y) for x, y in zip(self.runs, self.expected)]
        self.cases += [(case, x, None) for case, x in self.bad_inputs().items()]
        folder = root / spec.name
        folder.mkdir()
        self.runs_file = _runs_json(folder, [{k: (str(v.dtype).replace("torch.", ""), v) for k, v in x.items()}
                                             for _, x, _ in self.cases])

    @property
    def dim(self) -> tuple[str, int, int]:
        """The dynamic dim's name and range as the file states them."""
        (name, r), = self.meta["dims"].items()
        return name, r["min"], r["max"]

    def bad_inputs(self) -> dict:
        """Inputs one past each end of the dim's range, and (with two inputs) lengths that disagree."""
        _, lo, hi = self.dim
        middle = self.runs[1]
        cases = {"too_long": {k: _resized(v, hi + 1) for k, v in middle.items()}}
        if lo > 1:
            cases["too_short"] = {k: _resized(v, lo - 1) for k, v in middle.items()}
        if len(middle) > 1:
            last = list(middle)[-1]
            cases["inconsistent"] = {**middle, last: _resized(middle[last], middle[last].shape[1] + 1)}
        return cases


def _length(inputs: dict) -> int:
    return next(iter(inputs.values())).shape[1]


def _resized(t: torch.Tensor, length: int) -> torch.Tensor:
    """t with its last axis cut or repeated to `length`."""
    return t.repeat(1, -(-length // t.shape[1]))[:, :length]


@pytest.fixture(scope="session")
def text_exported(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("text_models")
    return {name: Exported(spec, root) for name, spec in text_models.MODELS.items()}


def _check(got: dict, expected: dict, where: str) -> None:
    assert set(got) == set(expected), (where, sorted(got), sorted(expected))
    for k, e in expected.items():
        assert got[k].shape == e.shape and got[k].dtype == e.dtype, (where, k, got[k].shape, e.shape)
        torch.testing.assert_close(got[k], e, **MATMUL, msg=lambda m: f"{where} {k}: {m}")


def _check_message(case: str, message: str, dim: str, lo: int, hi: int) -> None:
    """An out-of-range length names the dim and its range; disagreeing inputs name the dim."""
    assert dim in message, (case, message)
    if case != "inconsistent":
        assert f"[{lo}, {hi}]" in message, (case, message)


@pytest.mark.parametrize("name", [n for n, m in text_models.MODELS.items() if m.padded])
def test_padding_changes_the_outputs(text_exported, name):
    """The padded run compares something: eager without the padding gives other outputs."""
    e = text_exported[name]
    k = e.spec.lengths.index(e.spec.padded)
    unpadded = {**e.runs[k], "attention_mask": torch.ones_like(e.runs[k]["attention_mask"])}
    changed = text_models.eager_outputs(e.model, unpadded)
    assert any((changed[key] - v).abs().max() > 100 * MATMUL["atol"] for key, v in e.expected[k].items())


# ---- metadata and wasmtime ---------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_metadata_names_the_dim(text_exported, name):
    e = text_exported[name]
    dim, lo, hi = e.dim
    spec_lo, spec_hi = e.spec.lengths[0], e.spec.lengths[-1]
    assert (lo, hi) == (spec_lo, spec_hi)
    for entry in e.meta["inputs"]:
        assert entry["shape"][e.spec.dynamic_axis[entry["name"]]] == dim
    assert [o["name"] for o in e.meta["outputs"]] == list(e.expected[0])


@pytest.mark.parametrize("name", NAMES)
def test_wasmtime_matches_eager(text_exported, name):
    """Each length equals eager (in one loaded model); each bad input is a WasmBackendError naming
    the dim."""
    e = text_exported[name]
    with twb.load(e.path) as model:
        for label, inputs, expected in e.cases:
            where = f"wasmtime: {name} {label}"
            if expected is None:
                with pytest.raises(WasmBackendError) as info:
                    model(**inputs)
                _check_message(label, str(info.value), *e.dim)
            else:
                _check(model(**inputs), expected, where)
        _check(model.run(e.runs[0]), e.expected[0], f"wasmtime: {name} run()")


# ---- Node.js and Chromium: the same runs through tests/export/js/runs.mjs -------------------------

def _results_match(results: list, e: Exported, runtime: str) -> None:
    """Each length's outputs equal eager's; each bad input got a ModelInputError naming the dim."""
    assert len(results) == len(e.cases)
    for (label, _, expected), got in zip(e.cases, results):
        where = f"{runtime}: {e.spec.name} {label}"
        if expected is None:
            assert got.get("error", "").startswith("ModelInputError:"), (where, got)
            _check_message(label, got["error"], *e.dim)
        else:
            assert "error" not in got, (where, got["error"])
            _check({k: torch.tensor(v["data"], dtype=torch.float32).reshape(v["shape"]) for k, v in got.items()},
                   expected, where)


@needs_node
@pytest.mark.parametrize("name", NAMES)
def test_node_matches_eager(text_exported, name):
    e = text_exported[name]
    _results_match(_node_runs(e.path, THREADS, e.runs_file), e, "node")


@pytest.fixture(scope="module")
def chromium_report(text_exported, tmp_path_factory):
    """One page load runs every model (a browser launch costs seconds)."""
    if CHROMIUM is None:
        pytest.skip("chromium not installed (scripts/setup.sh installs it)")
    site = tmp_path_factory.mktemp("text_site")
    models = []
    for name, e in text_exported.items():
        shutil.copy(e.path, site / f"{name}.wasm")
        shutil.copy(e.runs_file, site / f"{name}.runs.json")
        models.append({"name": name, "file": f"{name}.wasm", "runs": f"{name}.runs.json"})
    (site / "manifest.json").write_text(json.dumps({"threads": THREADS, "models": models}))
    shutil.copy(DRIVERS / "runs.mjs", site / "runs.mjs")
    shutil.copy(Path(__file__).parent / "browser" / "lengths.html", site / "lengths.html")
    report = run_page(site, {}, True, tmp_path_factory.mktemp("chromium"), page="lengths.html")
    assert "fatal" not in report, report["fatal"]
    assert report["crossOriginIsolated"] is True
    return report["models"]


@pytest.mark.parametrize("name", NAMES)
def test_chromium_matches_eager(chromium_report, text_exported, name):
    assert chromium_report[name]["threads"] == THREADS
    _results_match(chromium_report[name]["runs"], text_exported[name], "chromium")
