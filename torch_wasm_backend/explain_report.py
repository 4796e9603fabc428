"""explain(model, *args): what of a model runs in wasm and what runs in eager, and why.

It runs the model once through the real backend path (`torch.compile` -> Dynamo -> aot_autograd with
the registry's decompositions -> `torch_wasm_backend.lowering.partition.partition_graph`), watching every ATen graph as
it is partitioned, so the report is what `backend="wasm"` does, not a second opinion. Graph breaks come
from `torch._dynamo.explain`. The report prints as a table and converts to a dict / JSON."""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch

from torch_wasm_backend.lowering.partition import PartitionResult, is_compute, is_tensor_op
from torch_wasm_backend.lowering.registry import op_name
from . import metrics
from .backend import wasm_backend

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)\n(?P<code>[^\n]*)')


@dataclass
class FallbackNode:
    graph: int                  # 1-based, in the order the ATen graphs were compiled
    node: str
    op: str
    reason: str
    source: str = ""            # "file.py:12 in forward" (innermost user frame), "" if unknown
    code: str = ""              # the source line itself


@dataclass
class Partition:
    graph: int
    name: str                   # the submodule name in the partitioned graph (fused_0, ...)
    aten_nodes: int             # ATen tensor ops in it (what the lowered fraction counts)
    compute_nodes: int          # of those, not views (views cost no copy)
    ops: dict = field(default_factory=dict)   # op -> count
    eager_reason: str = ""      # set if the partition could not run in wasm on these inputs


@dataclass
class Int8Node:
    """A conv / linear of a quantized graph: the int8 pattern it runs as, or why it stays float32."""
    graph: int
    node: str
    fused: bool
    pattern: str                # e.g. "dq -> conv2d -> add(dq) -> relu -> q" ("" if not fused)
    reason: str = ""            # not fused: why; fused: what next to it stays float32 ("" if nothing)


@dataclass
class GraphBreak:
    reason: str
    source: str = ""


@dataclass
class ExplainReport:
    graphs: int = 0                                           # ATen graphs compiled
    graph_breaks: list = field(default_factory=list)         # [GraphBreak]
    partitions: list = field(default_factory=list)           # [Partition]
    fallback: list = field(default_factory=list)             # [FallbackNode]
    by_op: dict = field(default_factory=dict)                # op -> {"lowered": n, "fallback": m}
    int8: list = field(default_factory=list)                 # [Int8Node] (quantized graphs only)

    @property
    def total_nodes(self) -> int:
        return sum(c["lowered"] + c["fallback"] for c in self.by_op.values())

    @property
    def lowered_nodes(self) -> int:
        return sum(c["lowered"] for c in self.by_op.values())

    @property
    def lowered_fraction(self) -> float:
        return self.lowered_nodes / self.total_nodes if self.total_nodes else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(total_nodes=self.total_nodes, lowered_nodes=self.lowered_nodes,
                 lowered_fraction=self.lowered_fraction)
        return d

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **{"indent": 2, **kwargs})

    @classmethod
    def from_dict(cls, d: dict) -> "ExplainReport":
        return cls(graphs=d["graphs"],
                   graph_breaks=[GraphBreak(**b) for b in d["graph_breaks"]],
                   partitions=[Partition(**p) for p in d["partitions"]],
                   fallback=[FallbackNode(**f) for f in d["fallback"]],
                   by_op={op: dict(c) for op, c in d["by_op"].items()},
                   int8=[Int8Node(**n) for n in d.get("int8", [])])

    def __str__(self) -> str:
        out = [f"{self.lowered_nodes} of {self.total_nodes} ATen nodes run in wasm "
               f"({100 * self.lowered_fraction:.1f}%), {len(self.fallback)} in eager; "
               f"{self.graphs} graph(s), {len(self.partitions)} wasm partition(s), "
               f"{len(self.graph_breaks)} graph break(s)", ""]
        out += _table(["ATen op", "wasm", "eager"],
                      [[op, c["lowered"], c["fallback"]] for op, c in sorted(self.by_op.items())])
        if self.partitions:
            out += [""] + _table(
                ["graph", "partition", "ATen nodes", "compute nodes", "runs in"],
                [[p.graph, p.name, p.aten_nodes, p.compute_nodes,
                  f"eager: {p.eager_reason}" if p.eager_reason else "wasm"] for p in self.partitions])
        if self.fallback:
            out += ["", "Nodes that run in eager:"] + _table(
                ["graph", "node", "op", "reason", "source"],
                [[f.graph, f.node, f.op, f.reason, f"{f.source}: {f.code}" if f.code else f.source]
                 for f in self.fallback])
        if self.int8:
            fused = sum(n.fused for n in self.int8)
            out += ["", f"Int8 patterns: {fused} of {len(self.int8)} quantized nodes (conv, linear, pool, add, cat, views) on int8 kernels:"] + _table(
                ["graph", "node", "int8 pattern", "float32 (why)"],
                [[n.graph, n.node, n.pattern or "-", n.reason] for n in self.int8])
        if self.graph_breaks:
            out += ["", "Graph breaks (Dynamo):"] + _table(
                ["reason", "source"],
                [[b.reason.strip().splitlines()[0] if b.reason.strip() else "", b.source]
                 for b in self.graph_breaks])
        return "\n".join(out)


def _table(header: list, rows: list) -> list[str]:
    """Plain-text columns; numeric columns right-aligned."""
    numeric = [bool(rows) and all(isinstance(r[i], int) for r in rows) for i in range(len(header))]
    cells = [[str(c) for c in r] for r in [header] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def fmt(r):
        return "  ".join(c.rjust(w) if num else c.ljust(w)
                         for c, w, num in zip(r, widths, numeric)).rstrip()
    return [fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]]


def _short_path(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _source(node) -> tuple[str, str]:
    """The innermost frame of the node's stack trace: ("file.py:12 in forward", "code")."""
    frames = list(_FRAME.finditer(node.meta.get("stack_trace") or ""))
    if not frames:
        return "", ""
    f = frames[-1]
    return f"{_short_path(f['file'])}:{f['line']} in {f['func']}", f["code"].strip()


class _Capture:
    """on_partition hook: records each ATen graph's partitioning before its partitions compile."""

    def __init__(self):
        self.report = ExplainReport()
        self.labels: dict[str, int] = {}      # backend label (graphN) -> 1-based graph number

    def __call__(self, label: str, result: PartitionResult) -> None:
        self.report.graphs += 1
        graph = self.labels[label] = self.report.graphs
        top = result.module
        lowered: Counter = Counter()
        for node in top.graph.nodes:
            if node.op == "call_module" and node.target in result.partitions:
                sub = getattr(top, node.target)
                ops = Counter(op_name(n.target) for n in sub.graph.nodes if is_tensor_op(n))
                lowered.update(ops)
                self.report.partitions.append(Partition(
                    graph, node.target, sum(ops.values()),
                    sum(1 for n in sub.graph.nodes if is_compute(n) and is_tensor_op(n)), dict(ops)))
        self.report.int8 += [Int8Node(graph, p.node, p.fused, p.pattern, p.reason) for p in result.int8]
        nodes = {n.name: n for n in top.graph.nodes}
        fallback: Counter = Counter()
        for name, (op, reason) in result.fallback.items():
            fallback[op] += 1
            self.report.fallback.append(FallbackNode(graph, name, op, reason, *_source(nodes[name])))
        assert sum(lowered.values()) + sum(fallback.values()) == result.total_nodes, (
            "explain: partitions + fallback do not add up to the graph's ATen nodes")
        for op in lowered.keys() | fallback.keys():
            c = self.report.by_op.setdefault(op, {"lowered": 0, "fallback": 0})
            c["lowered"] += lowered[op]
            c["fallback"] += fallback[op]

    def partitions_run_in_eager(self, new_fallbacks: list[dict]) -> None:
        """Partitions whose Plan could not be built for these inputs ran in eager at call time (the
        runtime records them in the stats as node "*"): their nodes count as eager, with that reason."""
        report = self.report
        for rec in new_fallbacks:
            label, _, name = rec["graph"].partition("/")
            if rec["node"] != "*" or label not in self.labels:
                continue
            for p in report.partitions:
                if p.graph == self.labels[label] and p.name == name and not p.eager_reason:
                    p.eager_reason = rec["reason"]
                    for op, n in p.ops.items():
                        report.by_op[op]["lowered"] -= n
                        report.by_op[op]["fallback"] += n
                    report.fallback.append(FallbackNode(p.graph, name, "partition",
                                                        f"ran in eager: {rec['reason']}"))


def explain(model, *args, options: dict | None = None) -> ExplainReport:
    """Runs `model(*args)` once under torch.no_grad() through backend="wasm" (with `options`, minus
    strict) and reports: ATen nodes per op in wasm / in eager, every eager node with its reason and
    source line, the wasm partitions and their sizes, and Dynamo's graph breaks. Like
    torch._dynamo.explain, it resets Dynamo's caches; torch_wasm_backend.stats() counts the run."""
    options = {k: v for k, v in (options or {}).items() if k != "strict"}
    with torch.no_grad():
        dynamo = torch._dynamo.explain(model)(*args)
        capture = _Capture()
        seen = len(metrics.stats()["fallback_nodes"])

        def backend(gm, example_inputs):
            return wasm_backend(gm, example_inputs, options, on_partition=capture)

        torch.compile(model, backend=backend)(*args)
        torch._dynamo.reset()   # the capturing backend's compiled code is of no further use
    capture.partitions_run_in_eager(metrics.stats()["fallback_nodes"][seen:])
    for reason in dynamo.break_reasons:
        frame = reason.user_stack[-1] if reason.user_stack else None
        where = f"{_short_path(frame.filename)}:{frame.lineno} in {frame.name}" if frame else ""
        capture.report.graph_breaks.append(GraphBreak(reason.reason, where))
    return capture.report
