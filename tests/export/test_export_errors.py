"""Refusals and bad input: unsupported ops (listed, no file written), training-mode buffers, wrong
input names/shapes/dtypes, truncated, foreign, damaged and incompatible files."""
import json

import numpy as np
import pytest
import torch

import torch_wasm_backend as twb
from torch_wasm_backend import wasm_file
from torch_wasm_backend.errors import WasmBackendError


class Unsupported(torch.nn.Module):
    def forward(self, x):
        y = torch.relu(x)
        return torch.cumprod(y, 0) + torch.sort(y, dim=1).values  # no wasm kernels for these


def test_unsupported_ops_are_listed_and_no_file_is_written(tmp_path):
    path = tmp_path / "m.wasm"
    with pytest.raises(WasmBackendError) as info:
        twb.export(Unsupported(), (torch.randn(4, 5),), path)
    msg = str(info.value)
    assert "2 node(s)" in msg
    assert "aten::cumprod" in msg and "aten::sort" in msg
    assert "[4, 5]:float32" in msg                      # shapes
    assert "test_export_errors.py" in msg and "torch.cumprod(y, 0)" in msg  # source line
    assert "No file was written" in msg
    assert not path.exists() and not list(tmp_path.iterdir())


def test_training_mode_dropout_suggests_eval(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))  # .train() by default
    with pytest.raises(WasmBackendError, match=r"(?s)aten::native_dropout.*module '1' \(Dropout\).*training mode.*model.eval\(\)"):
        twb.export(model, (torch.randn(2, 4),), tmp_path / "d.wasm")


def test_training_mode_batchnorm_is_refused(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))  # .train() by default
    with pytest.raises(WasmBackendError, match=r"model.eval\(\)"):
        twb.export(model, (torch.randn(1, 3, 8, 8),), tmp_path / "bn.wasm")


@pytest.fixture(scope="module")
def mlp_model(exported):
    m = twb.load(exported["mlp"].path)
    yield m
    m.close()


def test_wrong_input_name_shape_dtype(mlp_model, exported):
    x = exported["mlp"].x
    with pytest.raises(WasmBackendError, match=r"unknown input name 'x'.*\['input'\]"):
        mlp_model(x=x)
    with pytest.raises(WasmBackendError, match=r"input 'input' dim 1 is 38, the model was exported for 37 there \(shape \[9, 37\]\)"):
        mlp_model(torch.randn(9, 38))
    with pytest.raises(WasmBackendError, match=r"dtype float64, the model takes float32"):
        mlp_model(x.double().numpy())
    with pytest.raises(WasmBackendError, match=r"missing input"):
        mlp_model()
    with pytest.raises(WasmBackendError, match=r"2 inputs given, the model takes 1"):
        mlp_model(x, x)


def test_truncated_file(exported, tmp_path):
    data = exported["mlp"].path.read_bytes()
    for cut in (4, 100, len(data) // 2, len(data) - 10):
        p = tmp_path / f"cut{cut}.wasm"
        p.write_bytes(data[:cut])
        with pytest.raises(wasm_file.ExportFileError, match="truncated|not a WebAssembly module"):
            twb.load(p)


def test_foreign_files(tmp_path):
    from torch_wasm_backend.runtime import KERNEL_BUILDS
    with pytest.raises(wasm_file.ExportFileError, match="not a torch_wasm_backend export"):
        twb.load(KERNEL_BUILDS["baseline"])  # a valid wasm module, but no model in it
    p = tmp_path / "x.npy"
    np.save(p, np.zeros(3))
    with pytest.raises(wasm_file.ExportFileError, match="not a WebAssembly module"):
        twb.load(p)


def _rewrite(path, out, edit_meta=None, edit_weights=None):
    """Re-assembles an exported file from its parts, optionally with edited metadata or weights
    (the content hash is kept as exported, as a damaged or foreign file would have it)."""
    parsed = wasm_file.parse(path.read_bytes())
    plan, weights = parsed.custom[wasm_file.PLAN_SECTION], bytearray(parsed.custom[wasm_file.WEIGHTS_SECTION])
    kernel = parsed.data[:parsed.data.index(wasm_file.custom_section(wasm_file.PLAN_SECTION, plan))]
    meta = json.loads(json.dumps(parsed.metadata))
    if edit_meta:
        edit_meta(meta)
    if edit_weights:
        edit_weights(weights)
    out.write_bytes(kernel + wasm_file.custom_section(wasm_file.PLAN_SECTION, plan)
                    + wasm_file.custom_section(wasm_file.WEIGHTS_SECTION, bytes(weights))
                    + wasm_file.custom_section(wasm_file.METADATA_SECTION, json.dumps(meta, indent=1).encode()))
    return out


def test_roundtrip_rewrite_is_identical(exported, tmp_path):
    p = _rewrite(exported["mlp"].path, tmp_path / "same.wasm")
    assert p.read_bytes() == exported["mlp"].path.read_bytes()


def test_incompatible_producer_version(exported, tmp_path):
    def future(meta):
        meta["format_version"] = 99
        meta["producer"]["version"] = "9.0.0"
    p = _rewrite(exported["mlp"].path, tmp_path / "future.wasm", edit_meta=future)
    with pytest.raises(wasm_file.ExportFileError, match=r"torch_wasm_backend 9.0.0 in export format version 99"):
        twb.load(p)


def test_damaged_weights_fail_the_content_hash(exported, tmp_path):
    def flip(w):
        w[10] ^= 0xFF
    p = _rewrite(exported["mlp"].path, tmp_path / "damaged.wasm", edit_weights=flip)
    with pytest.raises(wasm_file.ExportFileError, match="damaged"):
        twb.load(p)


def test_damaged_metadata_fails_the_content_hash(exported, tmp_path):
    """One changed digit in the metadata (an input stride) with the hash as exported: the hash
    covers the whole file, so this is "damaged", not silently wrong outputs."""
    def stride(meta):
        meta["variants"][0]["inputs"][0]["strides"][0] += 1
    p = _rewrite(exported["mlp"].path, tmp_path / "stride.wasm", edit_meta=stride)
    with pytest.raises(wasm_file.ExportFileError, match="damaged"):
        twb.load(p)


def test_format_1_files_are_refused_with_re_export(exported, tmp_path):
    def old(meta):
        meta["format_version"] = 1
    p = _rewrite(exported["mlp"].path, tmp_path / "v1.wasm", edit_meta=old)
    with pytest.raises(wasm_file.ExportFileError, match=r"export format version 1; .*Re-export the model"):
        twb.load(p)
