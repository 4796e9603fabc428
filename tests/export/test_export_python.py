"""export() -> one valid .wasm; load() runs it in wasmtime and matches eager (MLP, CNN, encoder) with
1 and 2 threads; metadata is readable without running; the CLI's info and run commands."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import torch_wasm_backend as twb
from torch_wasm_backend import wasm_file
from torch_wasm_backend.__main__ import main
from helpers import MATMUL
from export_testing import TwoInTwoOut, wasm_tools_validate

MODELS = ["mlp", "cnn", "encoder"]


@pytest.mark.parametrize("name", MODELS)
def test_file_is_valid_wasm_with_metadata(exported, name):
    e = exported[name]
    wasm_tools_validate(e.path)
    meta = wasm_file.read_metadata(e.path)
    assert meta["producer"]["name"] == "torch_wasm_backend"
    assert meta["producer"]["version"] == twb.__version__
    assert meta["content_hash"].startswith("sha256:")
    assert [i["shape"] for i in meta["inputs"]] == [list(e.x.shape)]
    assert [o["shape"] for o in meta["outputs"]] == [list(e.expected.shape)]
    assert meta["inputs"][0]["dtype"] == meta["outputs"][0]["dtype"] == "float32"
    assert meta["memory"]["initial_pages"] * 65536 >= meta["memory"]["static_bytes"]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", MODELS)
def test_load_matches_eager(exported, name, threads):
    e = exported[name]
    model = twb.load(e.path, threads=threads)
    try:
        got = model(e.x)
        again = model(e.x.numpy())  # numpy in, second run on the same memory
        by_name = model.run({model.input_names[0]: e.x})["output"]
    finally:
        model.close()
    for y in (got, again, by_name):
        assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
        torch.testing.assert_close(y, e.expected, **MATMUL)


def test_expected_ops_were_lowered(exported):
    ops = {n: wasm_file.read_metadata(exported[n].path)["ops"] for n in MODELS}
    assert ops["mlp"]["aten::addmm"] == 3
    assert ops["cnn"]["aten::convolution"] == 3
    assert ops["encoder"]["aten::bmm"] > 0 and ops["encoder"]["aten::native_layer_norm"] == 4


def test_multiple_inputs_and_outputs_by_name(tmp_path):
    m = TwoInTwoOut().eval()
    a, b = torch.randn(5, 8), torch.randn(5, 4)
    path = tmp_path / "two.wasm"
    meta = twb.export(m, (a, b), path)
    assert [i["name"] for i in meta["inputs"]] == ["a", "b"]
    assert [o["name"] for o in meta["outputs"]] == ["output_0", "output_1"]
    loaded = twb.load(path)
    r0, r1 = loaded(b=b, a=a)
    e0, e1 = m(a, b)
    torch.testing.assert_close(r0, e0, **MATMUL)
    torch.testing.assert_close(r1, e1.detach(), **MATMUL)


def test_dict_outputs_are_named_by_key(tmp_path):
    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(6, 6)

        def forward(self, x):
            h = self.body(x).relu()
            return {"logits": h * 2.0, "features": h}

    m = Heads().eval()
    x = torch.randn(3, 6)
    meta = twb.export(m, (x,), tmp_path / "heads.wasm")
    assert [o["name"] for o in meta["outputs"]] == ["logits", "features"]
    got = twb.load(tmp_path / "heads.wasm").run({"x": x})
    with torch.no_grad():
        for k, v in m(x).items():
            torch.testing.assert_close(got[k], v, **MATMUL)


def test_python_number_argument_is_baked_in(tmp_path):
    """torch.export specialises a Python int argument: the file takes only the tensors."""
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x, k: int, y):
            return self.lin(x) * k + y

    m = Scaled().eval()
    x, y = torch.randn(2, 4), torch.randn(2, 3)
    meta = twb.export(m, (x, 3, y), tmp_path / "k.wasm")
    assert [i["name"] for i in meta["inputs"]] == ["x", "y"]
    with torch.no_grad():
        torch.testing.assert_close(twb.load(tmp_path / "k.wasm")(x, y), m(x, 3, y), **MATMUL)


def test_cli_info_and_run(exported, tmp_path, capsys):
    e = exported["cnn"]
    assert main(["info", str(e.path)]) == 0
    text = capsys.readouterr().out
    assert "input: float32[2, 3, 19, 21]" in text and "output: float32[2, 5]" in text
    assert "aten::convolution x3" in text and "weights:" in text
    np.save(tmp_path / "x.npy", e.x.numpy())
    assert main(["run", str(e.path), "--input", str(tmp_path / "x.npy"), "--output",
                 f"output={tmp_path / 'y.npy'}", "--threads", "2"]) == 0
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "y.npy")), e.expected, **MATMUL)


def test_cli_as_a_process(exported, tmp_path):
    """The real command line, once (a new interpreter: ~3 s)."""
    e = exported["mlp"]
    np.save(tmp_path / "x.npy", e.x.numpy())
    run = subprocess.run([sys.executable, "-m", "torch_wasm_backend", "run", str(e.path), "--input",
                          str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "y.npy")), e.expected, **MATMUL)
    bad = subprocess.run([sys.executable, "-m", "torch_wasm_backend", "info", str(tmp_path / "x.npy")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "not a WebAssembly module" in bad.stderr


def test_winograd_off_stores_raw_weights_and_matches_eager(tmp_path):
    # 3x3 stride-1 convs with >= 8 channels run by Winograd (weights stored transformed, 16/9 the
    # size); winograd=False keeps them on im2col + GEMM with the raw weights.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 32, 3, padding=1)).eval()
    x = torch.randn(1, 16, 12, 12)
    metas = {}
    for winograd in (True, False):
        path = tmp_path / f"w{winograd}.wasm"
        metas[winograd] = twb.export(model, (x,), path, winograd=winograd)
        loaded = twb.load(path)
        try:
            torch.testing.assert_close(loaded(x), model(x), **MATMUL)
        finally:
            loaded.close()
    assert metas[True]["kernel_calls"] == {"CONV2D_WINOGRAD": 2}, metas[True]["kernel_calls"]
    assert metas[False]["kernel_calls"] == {"CONV2D": 2}, metas[False]["kernel_calls"]
    raw = sum(p.numel() * 4 for p in model.parameters())
    assert metas[False]["layout"]["weights_bytes"] < metas[True]["layout"]["weights_bytes"]
    assert metas[False]["layout"]["weights_bytes"] <= raw + 4096
