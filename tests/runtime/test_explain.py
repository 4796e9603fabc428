"""torch_wasm_backend.explain: per-op counts, fallback nodes with reasons and source lines,
partitions and sizes, graph breaks; the table, dict/JSON forms and the command line."""
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn as nn

import torch_wasm_backend as twb
from torch_wasm_backend.explain_report import ExplainReport
from explain_models import small_cnn

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


class LinearSortLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.fc1(x))
        y = torch.sort(y, dim=-1).values
        return self.fc2(y).softmax(-1)


def _line_of(text: str, obj) -> int:
    lines, start = inspect.getsourcelines(obj)
    return start + next(i for i, line in enumerate(lines) if text in line)


def test_unsupported_op_is_a_fallback_with_reason_and_source_line():
    report = twb.explain(LinearSortLinear().eval(), torch.randn(4, 8))
    assert report.graphs == 1 and report.graph_breaks == []
    [fb] = report.fallback
    assert fb.op == "aten::sort" and fb.graph == 1
    assert "aten::sort" in fb.reason
    assert fb.source.startswith(f"{os.path.relpath(__file__)}:{_line_of('torch.sort', LinearSortLinear.forward)}")
    assert fb.source.endswith("in forward") and "torch.sort(y" in fb.code
    assert report.by_op["aten::sort"] == {"lowered": 0, "fallback": 1}
    assert report.by_op["aten::addmm"] == {"lowered": 2, "fallback": 0}
    # the sort splits the graph into two wasm partitions, before and after it
    assert len(report.partitions) == 2
    assert sum(p.aten_nodes for p in report.partitions) == report.lowered_nodes == report.total_nodes - 1
    assert 0 < report.lowered_fraction < 1
    text = str(report)
    assert f"{report.lowered_nodes} of {report.total_nodes} ATen nodes run in wasm" in text
    assert "Nodes that run in eager:" in text and "torch.sort(y, dim=-1)" in text


def test_fully_supported_cnn_is_one_partition_all_in_wasm():
    model, args = small_cnn()
    report = twb.explain(model, *args)
    assert report.fallback == [] and report.graph_breaks == []
    assert len(report.partitions) == 1
    assert report.partitions[0].aten_nodes == report.total_nodes > 0
    assert report.lowered_fraction == 1.0
    assert "(100.0%), 0 in eager" in str(report)


def test_report_agrees_with_the_backend_stats():
    twb.reset_stats()
    report = twb.explain(LinearSortLinear().eval(), torch.randn(4, 8))
    s = twb.stats()
    assert (s["aten_nodes_total"], s["aten_nodes_lowered"]) == (report.total_nodes, report.lowered_nodes)
    assert [f["node"] for f in s["fallback_nodes"]] == [f.node for f in report.fallback]


def test_json_round_trips():
    report = twb.explain(LinearSortLinear().eval(), torch.randn(4, 8))
    d = json.loads(report.to_json())
    assert d == report.to_dict()
    assert d["lowered_fraction"] == report.lowered_fraction
    assert ExplainReport.from_dict(d) == report


def test_graph_breaks_are_reported():
    def f(x):
        y = torch.relu(x) * 2
        print("graph break")
        return y + 1

    report = twb.explain(f, torch.randn(5))
    assert report.graphs == 2 and len(report.graph_breaks) == 1
    assert "print" in report.graph_breaks[0].reason
    assert f":{_line_of('print(', f)} in f" in report.graph_breaks[0].source
    assert "Graph breaks (Dynamo):" in str(report)


def test_partition_that_ran_in_eager_counts_as_eager():
    from torch_wasm_backend.explain_report import Partition, _Capture
    capture = _Capture()
    capture.labels["graph7"] = 1
    capture.report.partitions.append(Partition(1, "fused_0", 2, 2, {"aten::relu": 2}))
    capture.report.by_op["aten::relu"] = {"lowered": 2, "fallback": 0}
    capture.partitions_run_in_eager([{"graph": "graph7/fused_0", "node": "*", "op": "partition",
                                      "reason": "inputs (3,):float32: out of wasm memory"}])
    r = capture.report
    assert r.lowered_fraction == 0.0 and r.partitions[0].eager_reason.endswith("out of wasm memory")
    assert r.fallback[0].reason.startswith("ran in eager: ")


def _cli(*argv):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
    return subprocess.run([sys.executable, "-m", "torch_wasm_backend", "explain", *argv],
                          capture_output=True, text=True, env=env, cwd=HERE)


def test_cli_prints_the_table_and_json():
    out = _cli("explain_models:with_sort")
    assert out.returncode == 0, out.stderr
    assert "ATen op" in out.stdout and "aten::sort" in out.stdout
    assert "explain_models.py:21 in forward: y = torch.sort(self.fc(x), dim=-1).values" in out.stdout
    out = _cli("explain_models:small_cnn", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["lowered_fraction"] == 1.0 and len(d["partitions"]) == 1 and d["fallback"] == []


def test_cli_bad_factory_is_a_clear_error():
    out = _cli("explain_models:not_a_pair")
    assert out.returncode != 0 and "must return (model, example_args)" in out.stderr
    out = _cli("explain_models")
    assert out.returncode != 0 and "expected module:factory" in out.stderr
