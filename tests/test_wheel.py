"""The wheel: built from a copy of this checkout (setuptools, no build isolation, so offline), it is
py3-none-any, installs the one top-level name `torch_wasm_backend` and holds kernels.wasm and every
file read at run time. Installed into a throwaway venv and run from a folder with no source tree and
a PATH without emcc, the README demo, torch.compile(..., backend="wasm") and export + load work, all
from the venv's copy.

The venv is made with --system-site-packages to reuse the installed torch: a clean venv installs
torch 2.13.0 (1 GB) from the local wheel cache in ~80 s, which would double this test's time. The
system site-packages also hold this checkout's editable install, so the check asserts that every
torch_wasm_backend module it ran was imported from the venv.
`-m 'not wheel'` deselects this test (~1 min)."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.wheel

REPO = Path(__file__).resolve().parents[1]
# What the wheel is built from (pyproject.toml's packages and package-dir): copied, so building
# never writes build/ or *.egg-info into the checkout under a running test suite.
SOURCES = ("pyproject.toml", "README.md", "torch_wasm_backend", "lowering", "kernels_cpp")
RUN_TIME_FILES = ("torch_wasm_backend/kernels.wasm", "torch_wasm_backend/kernels_relaxed.wasm", "torch_wasm_backend/kernels_cpp/kernel_abi.def",
                  "torch_wasm_backend/js/loader.mjs", "torch_wasm_backend/js/core.mjs",
                  "torch_wasm_backend/js/controller.mjs", "torch_wasm_backend/js/pool_worker.mjs",
                  "torch_wasm_backend/js/sizes.mjs", "torch_wasm_backend/js/package.json",
                  "torch_wasm_backend/js/index.d.ts", "torch_wasm_backend/lowering/abi.py",
                  "torch_wasm_backend/lowering/ops/__init__.py")

# Runs inside the venv: compile without importing the package (the entry point finds it), export a
# token model with a dynamic length, load it back, and say where every module came from.
CHECK = r'''
import sys
import torch
torch.manual_seed(0)
mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4)).eval()
x = torch.randn(3, 16)
with torch.inference_mode():
    got, want = torch.compile(mlp, backend="wasm")(x), mlp(x)
# float32 GEMMs summing 16 and 32 products in another order than eager: 1e-5 of the scale.
torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * want.abs().max().item())

import torch_wasm_backend as twb
assert twb.stats()["aten_nodes_lowered"] == twb.stats()["aten_nodes_total"] > 0, twb.stats()

class Tokens(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.out = torch.nn.Embedding(50, 16), torch.nn.Linear(16, 8)
    def forward(self, input_ids):
        return {"logits": self.out(self.emb(input_ids).relu())}

model = Tokens().eval()
seq = torch.export.Dim("seq", min=1, max=12)
twb.export(model, (torch.randint(0, 50, (1, 5)),), "tokens.wasm", dynamic_shapes={"input_ids": {1: seq}})
loaded = twb.load("tokens.wasm")
for n in (1, 7, 12):
    ids = torch.randint(0, 50, (1, n))
    with torch.no_grad():
        want = model(ids)["logits"]
    # Gather + one 16-term GEMM per row: the same float32 ops as eager up to summation order.
    torch.testing.assert_close(loaded(input_ids=ids)["logits"], want, rtol=0, atol=1e-5 * want.abs().max().item())

for name, module in sorted(sys.modules.items()):
    if name == "lowering" or name.startswith(("lowering.", "torch_wasm_backend")):
        print("module", name, getattr(module, "__file__", None))
'''


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if not (REPO / "torch_wasm_backend" / "kernels.wasm").exists():
        pytest.fail("torch_wasm_backend/kernels.wasm is missing: the wheel ships it prebuilt. Run `make kernels` first.")
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "node_modules", "*.tgz"))
        else:
            shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(src)], check=True, timeout=300)
    (built,) = out.glob("*.whl")
    return built


def test_wheel_is_pure_and_holds_one_top_level_package(wheel):
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"  # name-version.dist-info
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"torch_wasm_backend", dist_info}, top
    top_level = zipfile.ZipFile(wheel).read(f"{dist_info}/top_level.txt").decode().split()
    assert top_level == ["torch_wasm_backend"], top_level
    missing = [f for f in RUN_TIME_FILES if f not in names]
    assert not missing, f"the wheel lacks files read at run time: {missing}"
    # C++ sources are build inputs, not run-time files.
    assert not [n for n in names if n.endswith((".cpp", ".h"))]


def test_wheel_runs_from_a_venv_without_source_tree(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)
    python = venv / "bin" / "python"
    # The outer pip installs into the venv (--python); --no-index: the dependencies are satisfied
    # by the system site-packages, and nothing is downloaded.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(REPO / "examples" / "demo.py", work / "demo.py")
    (work / "check.py").write_text(CHECK)
    # PATH: the venv only (no emcc, no node); -I: no cwd or PYTHONPATH on sys.path.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PATH")}
    env.update(PATH=str(venv / "bin"), TORCH_WASM_BACKEND_CACHE_DIR="off")
    run = dict(cwd=work, env=env, capture_output=True, text=True, timeout=300)

    demo = subprocess.run([str(python), "-I", "demo.py"], **run)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert demo.stdout.count("max |wasm - eager|") == 2, demo.stdout

    check = subprocess.run([str(python), "-I", "check.py"], **run)
    assert check.returncode == 0, check.stderr[-3000:]
    site = subprocess.run([str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          **run).stdout.strip()
    modules = dict(line.split()[1:] for line in check.stdout.splitlines() if line.startswith("module "))
    assert "torch_wasm_backend.lowering.abi" in modules and "torch_wasm_backend.exporter" in modules, modules
    outside = {n: f for n, f in modules.items() if f == "None" or not f.startswith(site)}
    assert not outside, f"modules not imported from the venv's site-packages {site}: {outside}"
