"""The JS loader as an npm package (torch_wasm_backend/js: package.json with "exports", index.d.ts):
`npm pack` makes a tarball holding every module the loader imports; a throwaway project installs it
(a local tarball: offline) with typescript and @types/node (from the npm registry, or npm's cache).
A program importing the package by its name (js/npm_consumer.mts) type-checks under strict tsc
against index.d.ts, misuse of the API fails to type-check, and the compiled program, run by Node,
gives eager's numbers for a token model with dynamic dims and throws the package's error classes.
(test_export_browser.py runs the unpacked tarball's loader in Chromium.)
`-m 'not npm'` deselects these tests."""
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch
from torch.export import Dim

import torch_wasm_backend as twb
from helpers import MATMUL
from test_export_dynamic import BATCH_MAX, SEQ_MAX, TokenModel, _inputs, _runs_json
from test_export_node import DRIVERS, LOADER, NODE
from export_testing import NPM

PACKAGE = LOADER.parent
# Pure-JS releases (typescript 7 is a native binary per platform); pinned so the check does not move.
DEV_DEPENDENCIES = ("typescript@5.9.3", "@types/node@20")
pytestmark = [pytest.mark.npm,
              pytest.mark.skipif(NODE is None or NPM is None, reason="Node.js/npm are not installed (scripts/setup.sh installs them)")]


@pytest.fixture(scope="module")
def project(npm_tarball, tmp_path_factory) -> Path:
    """A user's project with the tarball installed and the consumer compiled by tsc."""
    root = tmp_path_factory.mktemp("project")
    (root / "package.json").write_text(json.dumps({"name": "consumer", "private": True, "type": "module"}))
    run = subprocess.run([NPM, "install", "--no-audit", "--no-fund", str(npm_tarball), *DEV_DEPENDENCIES],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"npm install failed (typescript and @types/node come from the npm registry):\n{run.stderr}"
    shutil.copy(DRIVERS / "npm_consumer.mts", root)
    return root


def test_tarball_holds_every_module_the_loader_imports(npm_tarball):
    names = {n.removeprefix("package/") for n in tarfile.open(npm_tarball).getnames()}
    imported = {"loader.mjs"}
    for js in PACKAGE.glob("*.mjs"):  # static imports and new URL("./x.mjs", import.meta.url) workers
        imported |= set(re.findall(r"""["']\./([\w.]+\.mjs)["']""", js.read_text()))
    assert imported <= names, imported - names
    assert {"package.json", "index.d.ts"} <= names, names
    pkg = json.loads((PACKAGE / "package.json").read_text())
    assert pkg["version"] == twb.__version__, "keep package.json's version equal to the Python package's"


def test_typescript_consumer_type_checks_and_matches_eager(project, tmp_path):
    tsc = subprocess.run([str(project / "node_modules" / ".bin" / "tsc"), "--strict", "--target", "es2022",
                          "--module", "nodenext", "--moduleResolution", "nodenext", "--types", "node",
                          "npm_consumer.mts"], cwd=project, capture_output=True, text=True, timeout=120)
    assert tsc.returncode == 0, tsc.stdout + tsc.stderr

    torch.manual_seed(0)
    model = TokenModel().eval()
    dims = {"ids": {0: Dim("batch", min=1, max=BATCH_MAX), 1: Dim("seq", min=1, max=SEQ_MAX)},
            "keep": {0: Dim("batch", min=1, max=BATCH_MAX), 1: Dim("seq", min=1, max=SEQ_MAX)}}
    path = tmp_path / "tokens.wasm"
    twb.export(model, _inputs(2, 9, 0), path, dynamic_shapes=dims)
    cases = [_inputs(b, s, seed=s) for b, s in ((1, 1), (BATCH_MAX, SEQ_MAX))]
    runs = _runs_json(tmp_path, [{"ids": ("int64", ids), "keep": ("bool", keep.to(torch.uint8))} for ids, keep in cases])
    out = subprocess.run([NODE, "npm_consumer.mjs", str(path), "2", runs], cwd=project,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["inputs"] == ["ids", "keep"]
    assert result["errors"] == {"file": "ModelFileError", "input": "ModelInputError"}
    assert result["profile"]["same"]   # profile(): run()'s outputs, and steps named by the file's kernels
    assert result["profile"]["ops"] and set(result["profile"]["ops"]) <= set(twb.wasm_file.read_metadata(path)["kernel_calls"])
    for (ids, keep), got in zip(cases, result["runs"]):
        with torch.no_grad():
            expected = model(ids, keep)
        for name, e in expected.items():
            assert got[name]["shape"] == list(e.shape)
            torch.testing.assert_close(torch.tensor(got[name]["data"]).reshape(e.shape), e, **MATMUL)
