"""The web benchmark's TensorFlow.js side (benchmarks/web, `make bench-web`): a PyTorch model written
as a TF.js op list by tfjs_export.py and run by tfjs_graph.mjs with TF.js's wasm backend in Node.js
computes what eager computes, at 1 thread (the SIMD build) and at 2 (the threaded build through the
worker_threads shim). Tiny nets holding every op the benchmark's models use: NHWC convolutions
(regular, depthwise, depthwise with a channel multiplier) with folded batch norm and fused
relu/relu6, an SE block (hardsigmoid, mul), hardswish, SiLU, sigmoid, residual add, max pool,
global pool, a flatten of a map larger than 1x1 (the NHWC -> NCHW transpose), linears and a
transformer encoder layer (layer norm, attention, gelu).

Needs benchmarks/web's npm packages: scripts/setup.sh runs `npm ci` there. `-m 'not npm'`
deselects these tests."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from helpers import randomized_bn

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "benchmarks" / "web"
sys.path.insert(0, str(WEB))
from compare import RTOL  # noqa: E402  (the benchmark's bound on |runtime - eager| / max |eager|, justified there)
from tfjs_export import export_tfjs  # noqa: E402

NODE = shutil.which("node")
pytestmark = [pytest.mark.npm,
              pytest.mark.skipif(NODE is None, reason="Node.js is not installed (scripts/setup.sh installs it)")]


class ConvNet(nn.Module):
    """MobileNet/EfficientNet-style blocks at 8-32 channels on a 16x16 image."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), randomized_bn(8), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), randomized_bn(8), nn.ReLU())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 1), nn.Hardsigmoid())
        self.pw = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), randomized_bn(8))
        self.conv = nn.Sequential(nn.Conv2d(8, 16, 3, 1, 1), randomized_bn(16), nn.SiLU())
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.dw2 = nn.Conv2d(16, 32, 3, 1, 1, groups=16)        # a depthwise conv with channel multiplier 2
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
        self.side = nn.Linear(32 * 4 * 4, 10)                   # reads a 4x4 map flattened: NCHW order

    def forward(self, x):
        y = self.dw(self.stem(x))
        y = y * self.se(y)
        y = nn.functional.hardswish(self.pw(y)) + y
        y = self.dw2(self.pool(self.conv(y)))
        return self.head(y) + self.side(torch.sigmoid(y).flatten(1))


def encoder():
    layer = nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, batch_first=True, activation="gelu")
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


MODELS = {"convnet": (ConvNet, (1, 3, 16, 16)), "encoder": (encoder, (1, 8, 32)),
          "mlp": (lambda: nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)), (4, 16))}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each model's op list, input file and eager output."""
    if not (WEB / "node_modules" / "@tensorflow" / "tfjs-backend-wasm").exists():
        pytest.fail(f"TensorFlow.js is not installed in {WEB}: run `npm ci` there (scripts/setup.sh does)")
    out = tmp_path_factory.mktemp("tfjs")
    torch.manual_seed(0)
    made = {}
    for name, (make, shape) in MODELS.items():
        model, x = make().eval(), torch.randn(*shape)
        with torch.no_grad():
            model.train(False)
            if name == "encoder":   # the deep copies of one layer: make the layers differ
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.02)
            expected = model(x)
        export_tfjs(model, (x,), out / name)
        (out / f"{name}.in.f32").write_bytes(x.numpy().astype("<f4").tobytes())
        made[name] = (out / name, out / f"{name}.in.f32", list(shape), expected)
    return made


@pytest.mark.parametrize("threads", [1, 2])
def test_tfjs_graph_matches_eager(exported, threads):
    for name, (stem, x_file, shape, expected) in exported.items():
        run = subprocess.run([NODE, str(Path(__file__).parent / "js" / "run_tfjs_graph.mjs"), str(WEB / "tfjs_graph.mjs"),
                              str(stem), str(threads), str(x_file), json.dumps(shape)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        result = json.loads(run.stdout.strip().splitlines()[-1])
        assert result["threads"] == threads, result["build"]
        got = torch.tensor(result["outputs"][0]).reshape(expected.shape)
        err = ((got - expected).abs().max() / expected.abs().max()).item()
        assert err <= RTOL, f"{name} at {threads} thread(s): max |TF.js - eager| / max |eager| = {err:.1e}"
