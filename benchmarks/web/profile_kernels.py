"""Where each web runtime spends its time, per kernel class, for the models that miss a target of
issue #13 (MobileNetV2, MobileNetV3-Large, EfficientNet-B0 vs TF.js-wasm; the BERT-style encoder vs
ONNX Runtime Web; ResNet-18 vs both): ours, ORT-web and TF.js-wasm on the same weights in ONE
Node.js process (profile_kernels.mjs), so the three run on the same engine (V8); results also in
.benchmarks/profiles.json:

    cd benchmarks/web && npm ci && cd ../.. && python benchmarks/web/profile_kernels.py --model mobilenet_v2 [--threads 1,2] [--write]

Per kernel: ours from the loader's Model.profile() (each plan record its own run_plan call, timed in
the Worker), ORT-web from its session profiler (per graph node), TF.js from tf.profile (per kernel,
grouped by the op-list layer that issued it). Each kernel is put into one class (CLASSES), from what
each runtime says about it: our record's arguments (read from the exported plan), ORT's node type
and input shapes, the TF.js layer. The class totals of a runtime add up to its kernel time; the
residue (median plain run minus median kernel sum) is what runs outside kernels (our Worker round
trip and input/output copies, ORT's session and tensor handling, TF.js's tensor bookkeeping and
output reads) minus what profiling adds to the kernels. --write puts the tables into BENCHMARKS.md's
"Why targets are missed: per-kernel profiles" section (one subsection per model).
(Named profile_kernels.py, not profile.py: a script's directory comes first on sys.path, and torch
imports cProfile, which imports the standard library's `profile`.)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import compare  # noqa: E402  (the web benchmark's models, exports and Node flags: profiled as timed)

from torch_wasm_backend import wasm_file  # noqa: E402
from torch_wasm_backend.lowering.abi import ABI  # noqa: E402

CLASSES = ("stem conv", "depthwise 3x3", "depthwise 5x5", "pointwise 1x1", "other conv", "linear/GEMM",
           "attention (matmul/softmax)", "elementwise/activation", "pooling", "norm", "other")
# The runtime each model misses its target against (issue #13's targets), in the tables' ratio column.
TARGETS = {"mobilenet_v2": ("tfjs",), "mobilenet_v3_large": ("tfjs",), "efficientnet_b0": ("tfjs",),
           "bert": ("ort",), "resnet18": ("ort", "tfjs")}
RUNTIMES = {"ours": "ours", "ort": "ORT-web", "tfjs": "TF.js-wasm"}
SECTION = "## Why targets are missed: per-kernel profiles"


def conv_class(c_in: int, groups: int, kh: int, kw: int) -> str:
    """A 2-D convolution's class: the stem reads the 3-channel image; depthwise: one group per input
    channel."""
    if c_in == 3:
        return "stem conv"
    if groups == c_in and c_in > 1:
        return f"depthwise {kh}x{kw}" if (kh, kw) in ((3, 3), (5, 5)) else "other conv"
    return "pointwise 1x1" if (kh, kw) == (1, 1) and groups == 1 else "other conv"


# ---- ours: plan records -------------------------------------------------------------------------
OUR_CLASSES = {"UNARY": "elementwise/activation", "BINARY": "elementwise/activation", "MAP": "elementwise/activation",
               "WHERE": "elementwise/activation", "COMPARE": "elementwise/activation", "POOL2D": "pooling",
               # REDUCE in these models: global average pools (classifier heads, squeeze-excite squeezes)
               "REDUCE": "pooling", "CHANNEL_AFFINE": "norm", "LAYERNORM": "norm", "SOFTMAX": "attention (matmul/softmax)",
               "QGEMM": "linear/GEMM", "QGEMM_DYN": "linear/GEMM"}


class OurPlan:
    """An exported file's plan records (of its first variant: these models are static), decoded by
    kernel_abi.def's field lists, to class each record Model.profile() timed."""

    def __init__(self, path: Path):
        parsed = wasm_file.parse(path.read_bytes(), str(path))
        meta = parsed.metadata
        variant = meta["variants"][0]
        words = np.frombuffer(parsed.custom["twb.plan"], dtype="<i4")
        self.words = words[variant["plan_offset"]:variant["plan_offset"] + variant["plan_words"]]
        lay = meta["layout"]
        self.weights = (lay["weights_at"], lay["weights_at"] + lay["weights_bytes"])

    def args(self, op: str, word: int) -> dict:
        spec = ABI.ops[op]
        out, at = {}, word + 2
        for f in spec.fields:
            out[f.name] = int(self.words[at]) if f.length == 1 else [int(v) for v in self.words[at:at + f.length]]
            at += f.length
        return out

    def is_weight(self, pointer: int) -> bool:
        return self.weights[0] <= pointer < self.weights[1]

    def classify(self, op: str, word: int) -> str:
        if op in ("CONV2D", "QCONV2D"):
            a = self.args(op, word)
            return conv_class(a["c_in"], a["groups"], a["kh"], a["kw"])
        if op in ("CONV2D_WINOGRAD", "QCONV2D_WINO"):   # 3x3, groups 1
            return conv_class(self.args(op, word)["c_in"], 1, 3, 3)
        if op == "GEMM":   # a linear multiplies by a weight; attention's QK^T and PV by activations
            a = self.args(op, word)
            return "linear/GEMM" if self.is_weight(a["b_packed"]) or self.is_weight(a["a"]) else "attention (matmul/softmax)"
        if op == "PACK_B":   # packs a run-time B operand (weights are packed at export)
            return "linear/GEMM" if self.is_weight(self.args(op, word)["b"]) else "attention (matmul/softmax)"
        return OUR_CLASSES.get(op, "other")


# ---- ORT-web: graph nodes -----------------------------------------------------------------------
ORT_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Erf", "Tanh",
                   "Sqrt", "Pow", "Where", "Gelu", "BiasGelu", "FastGelu", "QuickGelu", "Neg", "Exp", "Max", "Min",
                   "Equal", "Not", "Cast"}
ORT_CLASSES = {**{op: "elementwise/activation" for op in ORT_ELEMENTWISE},
               "MaxPool": "pooling", "AveragePool": "pooling", "GlobalAveragePool": "pooling", "ReduceMean": "pooling",
               "BatchNormalization": "norm", "LayerNormalization": "norm", "SkipLayerNormalization": "norm",
               "SimplifiedLayerNormalization": "norm", "Softmax": "attention (matmul/softmax)",
               "Attention": "attention (matmul/softmax)", "MultiHeadAttention": "attention (matmul/softmax)",
               "Gemm": "linear/GEMM"}


def ort_class(node: dict) -> str:
    op, shapes = node["op"], node["inputs"]
    if op in ("Conv", "FusedConv", "NhwcConv", "NhwcFusedConv"):
        x, w = shapes[0], shapes[1] if len(shapes) > 1 else None
        if w is None or len(w) != 4:   # (a weight ORT prepacked is not listed)
            return "stem conv" if x[1] == 3 else "other conv"
        c_in = x[3] if op.startswith("Nhwc") else x[1]
        return conv_class(c_in, c_in // w[1], w[2], w[3])
    if op in ("MatMul", "FusedMatMul"):   # attention multiplies two batched activations
        return "attention (matmul/softmax)" if len(shapes) > 1 and len(shapes[0]) > 2 and len(shapes[1]) > 2 else "linear/GEMM"
    return ORT_CLASSES.get(op, "other")


# ---- TF.js: op-list layers ----------------------------------------------------------------------
TFJS_CLASSES = {"linear": "linear/GEMM", "sdpa": "attention (matmul/softmax)", "unary": "elementwise/activation",
                "binary": "elementwise/activation", "affine": "norm", "layernorm": "norm", "mean_hw": "pooling",
                "maxpool": "pooling"}


def tfjs_class(op: dict, weights: dict) -> str:
    if op["op"] == "conv":   # filters: conv [kh, kw, c_in, c_out], depthwise [kh, kw, c_in, 1]
        kh, kw, c_in, c_out = weights[op["w"]]["shape"]
        return conv_class(c_in, c_in if op["depthwise"] else 1, kh, kw)
    return TFJS_CLASSES.get(op["op"], "other")


# ---- one model ----------------------------------------------------------------------------------
def profile(case: compare.Case, threads: int, rounds: int, warmup_seconds: float) -> dict:
    """Exports the model three ways (compare.export_all), runs profile_kernels.mjs, classes every
    kernel entry: {runtime: {"run_ms", "kernel_ms", "classes": {class: ms}, "other_kernels": {name: ms}}}."""
    with tempfile.TemporaryDirectory(prefix="twb-profile-") as tmp:
        files = compare.export_all(case, Path(tmp), relaxed=False)
        cfg = {"loader": str(compare.LOADER), "threads": threads, "ours": files["ours"]["ours"], "onnx": files["onnx"]["ort"],
               "tfjs": files["tfjs"], "inputs": files["inputs"], "warmup_seconds": warmup_seconds,
               "rounds": rounds, "runs_per_round": 5, "out": str(Path(tmp) / "profile.json")}
        (Path(tmp) / "config.json").write_text(json.dumps(cfg))
        run = subprocess.run(["node", *compare.node_flags(), str(HERE / "profile_kernels.mjs"), str(Path(tmp) / "config.json")],
                             capture_output=True, text=True, cwd=HERE)
        if run.returncode != 0:
            sys.exit(f"profile_kernels.mjs failed:\n{run.stderr}")
        raw = json.loads(Path(cfg["out"]).read_text())
        plan = OurPlan(Path(files["ours"]["ours"]))
        tfjs_graph = json.loads(Path(f"{files['tfjs']}.tfjs.json").read_text()) if files["tfjs"] else None
    classify = {"ours": lambda e: plan.classify(e["op"], e["word"]), "ort": ort_class,
                "tfjs": lambda e: tfjs_class(tfjs_graph["ops"][e["index"]], tfjs_graph["weights"])}
    out = {"label": case.label, "threads": threads}
    for runtime in RUNTIMES:
        if runtime not in raw:
            continue
        # Per profiled run: each class's total (and each 'other' kernel's); then medians over the
        # runs, like the kernel sum's: a mean let one slowed run (a neighbour's load) lift a class
        # above the median sum (shares over 100% at 2 threads on a noisy machine).
        per_run = []
        for p in raw[runtime]["profiles"]:
            classes, names = {}, {}
            for e in p["entries"]:
                cls = classify[runtime](e)
                classes[cls] = classes.get(cls, 0.0) + e["ms"]
                if cls == "other":
                    names[e["op"]] = names.get(e["op"], 0.0) + e["ms"]
            per_run.append((sum(e["ms"] for e in p["entries"]), classes, names))

        def medians(i):
            keys = set().union(*(r[i] for r in per_run))
            return {k: statistics.median(r[i].get(k, 0.0) for r in per_run) for k in keys}
        out[runtime] = {"run_ms": statistics.median(raw[runtime]["run_ms"]), "kernel_ms": statistics.median(r[0] for r in per_run),
                        "classes": medians(1), "other_kernels": medians(2), "profiled_runs": len(per_run)}
    return out


def table(p: dict) -> str:
    """A model's markdown table: ms per run (share of that runtime's kernel time) per class."""
    present = [r for r in RUNTIMES if r in p]
    ratios = [t for t in TARGETS.get(p["model"], ()) if t in p]
    lines = ["| kernel class | " + " | ".join(f"{RUNTIMES[r]} ms (share)" for r in present)
             + "".join(f" | ours / {RUNTIMES[t]}" for t in ratios) + " |",
             "|---|" + "---|" * (len(present) + len(ratios))]

    def row(label, values):   # values: runtime -> ms
        cells = [f"{values[r]:.2f}" if r in values else "-" for r in present]
        return f"| {label} | " + " | ".join(cells) + "".join(
            f" | {values['ours'] / values[t]:.2f}" if values.get(t) else " | -" for t in ratios) + " |"
    for cls in CLASSES:
        got = {r: p[r]["classes"][cls] for r in present if cls in p[r]["classes"]}
        if not got:
            continue
        cells = [f"{got[r]:.2f} ({got[r] / p[r]['kernel_ms']:.0%})" if r in got else "-" for r in present]
        lines.append(f"| {cls} | " + " | ".join(cells) + "".join(
            f" | {got['ours'] / got[t]:.2f}" if got.get("ours") and got.get(t) else " | -" for t in ratios) + " |")
    lines.append(row("**all kernels** (median of profiled runs' sums)", {r: p[r]["kernel_ms"] for r in present}))
    lines.append(row("**run** (median of plain runs)", {r: p[r]["run_ms"] for r in present}))
    lines.append("| residue: run - kernels | " + " | ".join(
        f"{p[r]['run_ms'] - p[r]['kernel_ms']:+.2f} ({(p[r]['run_ms'] - p[r]['kernel_ms']) / p[r]['run_ms']:+.0%})" for r in present)
        + " | -" * len(ratios) + " |")
    others = "; ".join(f"{RUNTIMES[r]}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(p[r]["other_kernels"].items(), key=lambda kv: -kv[1])[:5])
                       for r in present if p[r]["other_kernels"])
    return "\n".join(lines) + "".join(f"\n\n{gap(p, t)}" for t in ratios) + (f"\n\n'other' is: {others} (ms)" if others else "")


def gap(p: dict, target: str) -> str:
    """One line: how far ours is from `target` (plain runs) and the classes where ours spends more."""
    ours, them = p["ours"], p[target]
    diffs = sorted(((ours["classes"].get(c, 0.0) - them["classes"].get(c, 0.0), c) for c in CLASSES), reverse=True)
    worse = [f"{c} {d:+.2f} ms" + (f" ({ours['classes'][c] / them['classes'][c]:.2f}x)" if them["classes"].get(c) and c in ours["classes"] else "")
             for d, c in diffs if d > 0][:3]
    better = [f"{c} {d:+.2f} ms" for d, c in reversed(diffs) if d < 0][:2]
    return (f"vs {RUNTIMES[target]}: ours runs {ours['run_ms'] / them['run_ms']:.2f}x its time ({ours['run_ms'] - them['run_ms']:+.2f} ms); "
            + (f"ours spends more in {', '.join(worse)}" if worse else "no class takes ours longer")
            + (f"; less in {', '.join(better)}." if better else "; none takes ours less."))


def render(report: dict) -> str:
    parts = [f"`{report['command']}` on {report['date']}, {report['machine']}; load average (1 min) "
             f"{report['load'][0]:.1f} at the start, {report['load'][1]:.1f} at the end; "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
             + f". {report['rounds']} alternating rounds per model (5 plain runs + 1 profiled run of each runtime per round).\n"]
    for p in report["profiles"]:
        parts.append(f"### {p['label']}, {p['threads']} thread(s)\n\n{table(p)}\n")
    return "\n".join(parts)


def write_section(text: str) -> None:
    """BENCHMARKS.md's SECTION becomes `text` under its intro (the rest of the file stays)."""
    compare.write_section(SECTION, "Generated by `benchmarks/web/profile_kernels.py --write`: each runtime's kernels in one "
            "Node.js process (V8), timed by the runtime's own profiler (ours: `Model.profile()` of the JS loader; "
            "ORT-web: its session profiler; TF.js: `tf.profile`), grouped into classes. A class's ms is the median over "
            "profiled runs of its total in each run; shares are of that runtime's kernel time (the median of the runs' sums: "
            "the shares of a runtime need not add up to exactly 100%); the residue is the median plain run minus the median kernel sum (time outside kernels, and "
            "the profilers' own cost, negative when profiled kernels run slower than plain ones). Read conv and "
            "elementwise classes together: ours fuses activations (ReLU6, SiLU, hardswish, sigmoid, GELU) into its conv and GEMM "
            "records, TF.js fuses only relu/relu6 into its convs and linears and ORT-web some, so their activations land in "
            "'elementwise/activation' and ours in the conv and linear classes. Classes: a conv reading the 3-channel image is the "
            "stem; a linear multiplies by a weight, attention by two activations; pooling includes global average "
            "pools (also squeeze-excite squeezes).\n\n" + text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=",".join(TARGETS),
                        help=f"comma-separated: {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2 (one Node.js process each per model)")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds (each: 5 plain + 1 profiled run per runtime)")
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--write", action="store_true", help=f"put the tables into BENCHMARKS.md's '{SECTION}'")
    parser.add_argument("--report", metavar="JSON", help="print (and with --write, write) the tables of an earlier run's JSON, run nothing")
    args = parser.parse_args(argv)
    if args.report:
        return show(json.loads(Path(args.report).read_text()), args.write)
    names = args.model.split(",")
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}: choose from {', '.join(TARGETS)}")
    if not compare.ORT_DIST.exists() or not compare.TFJS_DIST.exists():
        sys.exit(f"onnxruntime-web / @tensorflow/tfjs-backend-wasm are not installed: run `npm ci` in {HERE}")
    load = os.getloadavg()[0]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    profiles = [{"model": case.name, **profile(case, threads, args.rounds, args.warmup_seconds)}
                for case in compare.cases(False, tuple(names)) for threads in map(int, args.threads.split(","))]
    report = {"command": "python benchmarks/web/profile_kernels.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": date, "machine": f"{os.cpu_count()} cores", "load": [load, os.getloadavg()[0]],
              "versions": compare._versions(), "rounds": args.rounds, "profiles": profiles}
    out = ROOT / ".benchmarks"
    out.mkdir(exist_ok=True)
    (out / "profiles.json").write_text(json.dumps(report, indent=1))
    return show(report, args.write)


def show(report: dict, write: bool) -> int:
    """Prints a run's tables (its .benchmarks/profiles.json); `write`: into BENCHMARKS.md too."""
    text = render(report)
    print(text)
    if write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
