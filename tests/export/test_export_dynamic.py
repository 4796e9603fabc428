"""Export with dynamic dims and non-float inputs: one file, exported once, runs every size in the dims'
ranges (checked against eager over a grid of sizes) in wasmtime and Node.js; inputs of the wrong size,
range or dtype get clear errors; int64/int32/bool inputs and named outputs; size programs evaluate the
same in Python and JS; files of format version 2 (before dynamic dims) still load."""
import json
import random
import subprocess

import pytest
import torch
import torch.nn as nn
from torch.export import Dim

import torch_wasm_backend as twb
from torch_wasm_backend import size_program, wasm_file
from torch_wasm_backend.errors import WasmBackendError
from helpers import MATMUL
from test_export_node import DRIVERS, LOADER, NODE

SIZES_JS = LOADER.parent / "sizes.mjs"
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (scripts/setup.sh installs it)")


class TokenModel(nn.Module):
    """Token ids + a bool padding mask -> a dict: per-token states, a masked mean, a plain mean (a
    1/seq scale computed from sizes), with positions from arange(seq) (a constant made from sizes)."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(50, 16)
        self.pos = nn.Embedding(40, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.norm = nn.LayerNorm(16)

    def forward(self, ids, keep):
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        x = self.tok(ids) + self.pos(positions)
        a, _ = self.attn(x, x, x, key_padding_mask=~keep, need_weights=False)
        h = self.norm(x + a)
        pooled = (h * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True).float().clamp(min=1)
        return {"hidden": h, "pooled": pooled, "mean": h.mean(1)}


SEQ_MAX, BATCH_MAX = 20, 3


def _inputs(batch, seq, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (batch, seq), generator=g)
    keep = torch.rand(batch, seq, generator=g) > 0.3
    keep[:, 0] = True  # (a row of all-padding gives NaN in eager's attention, by design)
    return ids, keep


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    torch.manual_seed(0)
    model = TokenModel().eval()
    path = tmp_path_factory.mktemp("dynamic") / "tokens.wasm"
    dims = {"ids": {0: Dim("batch", min=1, max=BATCH_MAX), 1: Dim("seq", min=1, max=SEQ_MAX)},
            "keep": {0: Dim("batch", min=1, max=BATCH_MAX), 1: Dim("seq", min=1, max=SEQ_MAX)}}
    meta = twb.export(model, _inputs(2, 9, 0), path, dynamic_shapes=dims)
    return model, path, meta


def test_metadata_names_dims_dtypes_and_outputs(token_file):
    _, _, meta = token_file
    assert meta["format_version"] == 3
    assert meta["dims"] == {"batch": {"min": 1, "max": BATCH_MAX}, "seq": {"min": 1, "max": SEQ_MAX}}
    assert [(i["name"], i["dtype"], i["shape"]) for i in meta["inputs"]] == [
        ("ids", "int64", ["batch", "seq"]), ("keep", "bool", ["batch", "seq"])]
    assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [
        ("hidden", ["batch", "seq", 16]), ("pooled", ["batch", 16]), ("mean", ["batch", 16])]
    assert meta["outputs_by_name"] is True


@pytest.mark.parametrize("batch", [1, 2, BATCH_MAX])
def test_python_matches_eager_at_every_length(token_file, batch):
    """Every seq length of the range at each batch size, in one loaded model (sizes change between
    calls, and come back: the patched plans are cached per input shapes)."""
    model, path, _ = token_file
    with twb.load(path) as m:
        for seq in list(range(1, SEQ_MAX + 1)) + [1, SEQ_MAX, 7]:
            ids, keep = _inputs(batch, seq, seed=seq)
            got = m(ids, keep)
            with torch.no_grad():
                expected = model(ids, keep)
            assert set(got) == set(expected)
            for name in expected:  # attention and layer norm: matmul-class accumulation differences
                torch.testing.assert_close(got[name], expected[name], **MATMUL)


def test_int32_ids_are_widened_and_run_returns_a_dict(token_file):
    model, path, _ = token_file
    ids, keep = _inputs(2, 5, seed=1)
    with twb.load(path) as m:
        got = m.run({"ids": ids.int().numpy(), "keep": keep.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(got["pooled"], model(ids, keep)["pooled"], **MATMUL)


def test_python_input_errors_name_the_dim(token_file):
    _, path, _ = token_file
    with twb.load(path) as m:
        ids, keep = _inputs(1, SEQ_MAX + 1, 0)
        with pytest.raises(WasmBackendError, match=r"input 'ids' dim 1 \(dim 'seq'\) is 21, outside its range \[1, 20\]"):
            m(ids, keep)
        ids, _ = _inputs(1, 5, 0)
        _, keep = _inputs(1, 6, 0)
        with pytest.raises(WasmBackendError, match=r"input 'keep' dim 1 is 6 but input 'ids' dim 1 is 5: both are dim 'seq'"):
            m(ids, keep)
        with pytest.raises(WasmBackendError, match=r"input 'ids': dtype float32, the model takes int64"):
            m(ids.float(), keep[:, :5])
        with pytest.raises(WasmBackendError, match=r"input 'ids': 1 dims \(shape \[5\]\), the model takes 2"):
            m(ids[0], keep[:, :5])
        ids, keep = _inputs(2, 3, 0)
        assert m(ids, keep)["hidden"].shape == (2, 3, 16)  # still usable after the errors


class TailSlice(nn.Module):
    """x[:, 1:] on the dynamic dim: torch.export writes the open end as sys.maxsize."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x)[:, 1:] * 2


def test_open_ended_slice_of_a_dynamic_dim(tmp_path):
    model = TailSlice().eval()
    path = tmp_path / "tail.wasm"
    # min 3: torch.export specializes a size-1 result (n - 1 == 1) away
    twb.export(model, (torch.randn(2, 9, 4),), path, dynamic_shapes=({1: Dim("n", min=3, max=17)},))
    with twb.load(path) as m:
        for n in (3, 8, 17):
            x = torch.randn(2, n, 4)
            with torch.no_grad():
                torch.testing.assert_close(m(x), model(x), **MATMUL)  # a GEMM: accumulation order


def test_a_dim_without_max_is_refused(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(WasmBackendError, match=r"dynamic dim 'rows' has no maximum.*Dim\('rows', min=1, max=512\)"):
        twb.export(model, (torch.randn(5, 4),), tmp_path / "m.wasm", dynamic_shapes=({0: Dim("rows")},))
    assert not (tmp_path / "m.wasm").exists()


def _runs_json(tmp_path, runs) -> str:
    path = tmp_path / "runs.json"
    path.write_text(json.dumps([{name: {"dtype": d, "shape": list(t.shape), "data": t.flatten().tolist()}
                                 for name, (d, t) in run.items()} for run in runs]))
    return str(path)


def _node_runs(model_path, threads, runs_file) -> list:
    out = subprocess.run([NODE, str(DRIVERS / "run_sizes.mjs"), str(LOADER), str(model_path), str(threads), runs_file],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])["runs"]


@needs_node
@pytest.mark.parametrize("threads", [1, 2])
def test_node_matches_eager_at_three_lengths(token_file, tmp_path, threads):
    model, path, _ = token_file
    cases = [_inputs(b, s, seed=s) for b, s in ((1, 1), (2, 13), (BATCH_MAX, SEQ_MAX))]
    runs = [{"ids": ("int64" if k else "int32-for-int64", ids), "keep": ("bool", keep.to(torch.uint8))}
            for k, (ids, keep) in enumerate(cases)]
    results = _node_runs(path, threads, _runs_json(tmp_path, runs))
    for (ids, keep), got in zip(cases, results):
        with torch.no_grad():
            expected = model(ids, keep)
        for name, e in expected.items():
            assert got[name]["shape"] == list(e.shape)
            torch.testing.assert_close(torch.tensor(got[name]["data"]).reshape(e.shape), e, **MATMUL)


@needs_node
def test_node_input_errors_name_the_dim(token_file, tmp_path):
    _, path, _ = token_file
    ids, keep = _inputs(1, SEQ_MAX + 1, 0)
    ok_ids, ok_keep = _inputs(1, 4, 0)
    runs = [{"ids": ("int64", ids), "keep": ("bool", keep.to(torch.uint8))},
            {"ids": ("int64", ok_ids), "keep": ("bool", ok_keep[:, :3].to(torch.uint8))},
            {"ids": ("float32", ok_ids.float()), "keep": ("bool", ok_keep.to(torch.uint8))},
            {"ids": ("int64", ok_ids), "keep": ("bool", ok_keep.to(torch.uint8))}]
    results = _node_runs(path, 1, _runs_json(tmp_path, runs))
    assert "ModelInputError: input 'ids' dim 1 (dim 'seq') is 21, outside its range [1, 20]" in results[0]["error"]
    assert "ModelInputError: input 'keep' dim 1 is 3 but input 'ids' dim 1 is 4: both are dim 'seq'" in results[1]["error"]
    assert "ModelInputError: input 'ids': got Float32Array, the model takes int64" in results[2]["error"]
    assert results[3]["hidden"]["shape"] == [1, 4, 16]  # still usable after the errors


def _as_version_2(path, out):
    """A static file rewritten in format version 2's metadata layout (float32, views at the top
    level, no dims/exprs/variants), hashed like a version-2 file: what exports made before format 3 are."""
    parsed = wasm_file.parse(path.read_bytes())
    meta = json.loads(json.dumps(parsed.metadata))
    variant = meta.pop("variants")[0]
    for kind in ("inputs", "outputs"):
        for spec, view in zip(meta[kind], variant[kind]):
            spec.update(view if view is not None else {"offset": None, "strides": None})
    for key in ("dims", "exprs", "outputs_by_name", "content_hash", "format", "format_version"):
        meta.pop(key)
    module = parsed.data[:parsed.module_end]
    data = wasm_file.build(module, meta, parsed.custom[wasm_file.PLAN_SECTION], parsed.custom[wasm_file.WEIGHTS_SECTION])
    out.write_bytes(data.replace(b'"format_version": 3', b'"format_version": 2'))
    raw = bytearray(out.read_bytes())  # re-hash after the edit, as version 2 hashed the whole file too
    at = raw.rindex(b"sha256:") + len("sha256:")
    raw[at:at + 64] = b"0" * 64
    import hashlib
    raw[at:at + 64] = hashlib.sha256(raw).hexdigest().encode()
    out.write_bytes(bytes(raw))
    return out


def test_version_2_files_still_load(exported, tmp_path):
    e = exported["mlp"]
    old = _as_version_2(e.path, tmp_path / "v2.wasm")
    assert b'"format_version": 2' in old.read_bytes() and b'"variants"' not in old.read_bytes()
    with twb.load(old) as m:
        torch.testing.assert_close(m(e.x), e.expected, **MATMUL)
    if NODE is not None:
        results = _node_runs(old, 1, _runs_json(tmp_path, [{"input": ("float32", e.x)}]))
        torch.testing.assert_close(torch.tensor(results[0]["output"]["data"]).reshape(e.expected.shape), e.expected, **MATMUL)


def _random_source(rng: random.Random, depth: int) -> str:
    if depth == 0 or rng.random() < 0.25:
        return rng.choice(["a0", "a1", str(rng.randint(-5, 40)), "a0", "a1"])
    a, b = _random_source(rng, depth - 1), _random_source(rng, depth - 1)
    return rng.choice([f"({a} + {b})", f"({a} - {b})", f"({a} * {b})", f"({a} // {b})", f"({a} % {b})",
                       f"min({a}, {b})", f"max({a}, {b})", f"({a} < {b})", f"({a} == {b})", f"({a} != {b})",
                       f"(not {a})", f"abs({a})", f"(-{a})", f"(({a} < {b}) and ({b} != 3))", f"sum(({a}, {b}, a0))",
                       f"math.floor({a} / (abs({b}) + 1))", f"f32bits({a} / (abs({b}) + 3))"])


def _python_value(source: str, a0: int, a1: int):
    import math
    try:
        value = eval(source, {"math": math, "f32bits": lambda x: size_program._UNARY_FN["f32"](x)}, {"a0": a0, "a1": a1})
    except ZeroDivisionError:
        return None
    return int(value) if isinstance(value, bool) else value


@needs_node
def test_size_programs_evaluate_alike_in_python_and_js(tmp_path):
    """Random size expressions: the program compiled from Python source gives Python's own value,
    in size_program.evaluate and in js/sizes.mjs (integer floor division and modulo of negative
    numbers, comparisons, float scales as f32 bits); a division by zero is NaN in JS, an error in Python."""
    rng = random.Random(0)
    sources = [_random_source(rng, 4) for _ in range(300)]
    names = {"a0": "seq", "a1": "batch"}
    cases, expected = [], []
    for a0, a1 in ((1, 1), (7, 3), (512, 0), (13, 2)):
        for source in sources:
            program = size_program.compile_source(source, names)
            want = _python_value(source, a0, a1)
            if want is not None:
                assert size_program.evaluate([program], {"seq": a0, "batch": a1}) == [want], source
            cases.append({"programs": [program], "dims": {"seq": a0, "batch": a1}})
            expected.append(want)
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    out = subprocess.run([NODE, str(DRIVERS / "eval_sizes.mjs"), str(SIZES_JS), str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = [v[0] for v in json.loads(out.stdout)["values"]]
    mismatches = [(c, w, g) for c, w, g in zip(cases, expected, got) if w is not None and w != g]
    assert not mismatches, mismatches[:3]


@pytest.mark.parametrize("edit, problem", [
    (lambda m: m["exprs"].append(["$seq", "sqrt"]), r"unknown token 'sqrt'"),
    (lambda m: m["exprs"].append(["$nope"]), r"unknown token '\$nope'"),
    (lambda m: m["exprs"].append(["$seq", "+"]), r"pops an empty stack"),
    (lambda m: m["exprs"].insert(0, ["#0"]), r"unknown token '#0'"),
    (lambda m: m["variants"][0]["patches"].append([10**6, 0]), r"not \[plan word, program index\]"),
    (lambda m: m["variants"][0].update(when=10**6), r"when is not null or a program index"),
    (lambda m: m["dims"]["seq"].update(min=30), r"dims.seq.max = 20 is outside \[30"),
    (lambda m: m["inputs"][0]["shape"].__setitem__(1, "sequence"), r"not an integer, a dim's name or a program"),
    (lambda m: m["dims"].update(extra={"min": 1, "max": 2}), r"name \['extra'\], which no input's shape determines"),
])
def test_damaged_dynamic_metadata_is_refused(token_file, tmp_path, edit, problem):
    """Each edit (with the content hash recomputed, as an editor of the file could) is named at load
    in Python; the JS loader (same checks) is exercised on the same files by test_fuzz's corpus runner."""
    _, path, _ = token_file
    parsed = wasm_file.parse(path.read_bytes())
    meta = json.loads(json.dumps(parsed.metadata))
    for key in ("format", "format_version", "content_hash"):
        meta.pop(key)
    edit(meta)
    out = tmp_path / "edited.wasm"
    out.write_bytes(wasm_file.build(parsed.data[:parsed.module_end], meta, parsed.custom[wasm_file.PLAN_SECTION],
                                    parsed.custom[wasm_file.WEIGHTS_SECTION]))
    with pytest.raises(wasm_file.ExportFileError, match=problem):
        twb.load(out)


class _Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(10, 4)

    def forward(self, ids):
        return self.table(ids).relu()


def test_an_index_out_of_range_names_the_op_and_source_line(tmp_path):
    """A token id past the vocabulary: the kernel finds it before writing anything; Python raises
    WasmInputError and JS rejects with ModelInputError, each naming the op, the source line and the
    module; the model stays usable."""
    path = tmp_path / "embed.wasm"
    twb.export(_Embed().eval(), (torch.tensor([[1, 2, 3]]),), path, dynamic_shapes=({1: Dim("seq", min=1, max=8)},))
    where = r"in aten::embedding at File .*test_export_dynamic.py.*return self.table\(ids\).relu\(\); module 'table' \(Embedding\)"
    with twb.load(path) as m:
        with pytest.raises(twb.WasmInputError, match=r"an index out of range at plan word \d+, " + where):
            m(torch.tensor([[1, 12]]))
        assert m(torch.tensor([[1, 2]])).shape == (1, 2, 4)
    if NODE is not None:
        runs = [{"ids": ("int64", torch.tensor([[1, 12]]))}, {"ids": ("int64", torch.tensor([[1, 2]]))}]
        results = _node_runs(path, 1, _runs_json(tmp_path, runs))
        assert results[0]["error"].startswith("ModelInputError: ")
        assert __import__("re").search(where, results[0]["error"]), results[0]["error"]
        assert results[1]["output"]["shape"] == [1, 2, 4]
