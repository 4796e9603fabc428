"""The web benchmark's int8 table (benchmarks/web/compare_int8.py, `make bench-web`) on a tiny conv
net: quantize_pt2e -> twb.export next to torch.onnx -> onnxruntime.quantization.quantize_static
(QDQ), all four files timed by bench.mjs in one Node.js process, and each checked against its own
reference as the benchmark checks it (float32 files within compare.RTOL of eager, int8 files nearer
their own quantized reference than it is to the float model: compare_int8.int8_failures says why).

Needs benchmarks/web's npm packages (scripts/setup.sh runs `npm ci` there) and onnxruntime (the
test extra). `-m 'not npm'` deselects it."""
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from helpers import randomized_bn

WEB = Path(__file__).resolve().parents[2] / "benchmarks" / "web"
sys.path.insert(0, str(WEB))
pytestmark = [pytest.mark.npm, pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")]


def test_int8_table_runs_qdq_onnx_and_ours(tmp_path):
    pytest.importorskip("torchao", reason="pip install torchao==0.18.0")
    pytest.importorskip("onnxruntime", reason="pip install -e '.[test]'")
    import onnx
    from compare import RTOL, Case, _rel_errors, timing_run
    from compare_int8 import SIDES, export_int8, int8_errors, int8_failures
    if not (WEB / "node_modules" / "onnxruntime-web").exists():
        pytest.fail(f"onnxruntime-web is not installed in {WEB}: run `npm ci` there (scripts/setup.sh does)")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), randomized_bn(16), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.ReLU6(), nn.Conv2d(16, 32, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    case = Case("tiny", "tiny conv net", net, {"input": torch.randn(1, 3, 16, 16)})
    config, references = export_int8(case, tmp_path, dynamic=False)
    ops = {n.op_type for n in onnx.load(config["onnx"]["ort_int8"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, ops   # the QDQ format
    (result,) = timing_run(True, 1, [config], tmp_path)
    assert set(SIDES) <= set(result) and all(result[s]["median_ms"] > 0 for s in SIDES), result
    rel = _rel_errors(result, config)
    assert rel["ours"] <= RTOL and rel["ort"] <= RTOL, rel
    result["int8_err"] = int8_errors(result, config, references)
    assert not int8_failures([result], {"tiny": case.label}), result["int8_err"]
