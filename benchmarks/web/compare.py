"""Side by side with the other wasm runtimes in Node.js (`make bench-web`): the same models, same
weights, run by our exported .wasm through our JS loader, by ONNX Runtime Web (npm onnxruntime-web,
wasm backend, SIMD; the model exported by torch.onnx) and by TensorFlow.js's wasm backend (npm
@tensorflow/tfjs-backend-wasm, XNNPACK kernels; the model written as a TF.js op list by
tfjs_export.py and run by tfjs_graph.mjs), all in one Node.js process per thread count (1 and 2),
alternating round by round. Ours runs twice: the default export (baseline SIMD) and the same model
exported with simd="relaxed" (f32x4.relaxed_madd; Node.js 20 gets --experimental-wasm-relaxed-simd,
which Chrome 114+ does not need). Every runtime is warmed up alike (V8 starts wasm in Liftoff) and
reported with its warm-up; times are medians with quartiles and min/max of all alternating runs.
Outputs of all are checked against eager; file sizes too.

    cd benchmarks/web && npm ci && cd ../.. && python benchmarks/web/compare.py [--quick]

The models (default): an MLP, torchvision's MobileNetV2, MobileNetV3-Large and EfficientNet-B0 (random
weights, 224x224), ResNet-18 and a BERT-style nn.TransformerEncoder (d256 x4, seq 128), float inputs,
static shapes. On request (--models, ours and ORT-web only): two transformers BertModels (int64
input_ids + attention_mask in, last_hidden_state + pooler_output out) exported with a dynamic sequence
dim: one of BERT-base's shape, and one with BERT-base's graph at tiny widths, where a run is short
enough for a new length's planning cost to show. For those the run also times the first call at
sequence lengths never run before, and both files are checked to have a symbolic sequence dim.
--quick: smaller inputs and models, fewer iterations (a smoke test). --int8: the int8 table instead
(compare_int8.py): our int8 files vs ONNX Runtime Web's int8 ones, each next to its float32 file.
CNNs get batch-norm statistics measured on noise (model_zoo.calibrate_batch_norm says why).

TF.js at 2 threads: its threaded build, which it never picks under Node, is loaded through a
worker_threads shim (tfjs_graph.mjs says how). Needs `onnx` and `onnxscript` (pip) for torch.onnx.
Results: markdown tables on stdout and .benchmarks/web.json. Ratios are only meaningful within one
run (shared machine).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch.export import Dim

import torch_wasm_backend as twb

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from model_zoo import calibrate_batch_norm, resnet18  # noqa: E402  (the benchmarks' shared model definitions)
from tfjs_export import export_tfjs  # noqa: E402  (this directory)

LOADER = Path(twb.__file__).resolve().parent / "js" / "loader.mjs"
ORT_DIST = HERE / "node_modules" / "onnxruntime-web" / "dist"
TFJS_DIST = HERE / "node_modules" / "@tensorflow" / "tfjs-backend-wasm" / "dist"
# All runtimes' outputs must equal eager within 1e-4 of the output's scale (max |eager|), the
# model zoo's bound (tests/zoo/zoo_run.py): blocked SIMD sums in another order than eager's add
# ~1e-7..1e-6 relative noise per layer, normalization keeps it from compounding, and a real bug (a
# wrong index, mask or stride) moves outputs by >= 1e-2 of their scale.
RTOL = 1e-4
DTYPES = {torch.float32: "float32", torch.int64: "int64"}


@dataclass
class Case:
    name: str                      # file stem and key of the results
    label: str                     # row name in the tables
    model: nn.Module
    inputs: dict                   # forward's keyword arguments of the timed run
    dynamic_shapes: dict | None = None
    new_inputs: list = field(default_factory=list)   # inputs at sizes the timed run never saw
    tfjs: bool = True              # also run by TF.js (tfjs_export.py knows its ops)


def bert(name: str, what: str, config, lengths) -> Case:
    """transformers' BertModel with random weights, int64 input_ids + attention_mask [1, 128], exported
    with a dynamic sequence length; `lengths`: sizes first run after the timing, at 128."""
    from transformers import BertModel
    model = BertModel(config).eval()
    with torch.no_grad():  # BERT's init makes every bias 0 and every LayerNorm weight 1: equal tensors
        for p in model.parameters():   # are stored once in our file, which would flatter its size
            p.add_(torch.randn_like(p) * 0.02)
    gen = torch.Generator().manual_seed(0)

    def inputs(n: int) -> dict:
        mask = torch.ones(1, n, dtype=torch.int64)
        mask[0, n - n // 8:] = 0   # a padded tail, so that a mask ignored or misapplied shows
        return {"input_ids": torch.randint(0, config.vocab_size, (1, n), generator=gen), "attention_mask": mask}

    seq = Dim("seq", min=1, max=config.max_position_embeddings)
    return Case(name, f"BertModel {what}, 1x128, dynamic seq", model, inputs(128),
                {"input_ids": {1: seq}, "attention_mask": {1: seq}}, [inputs(n) for n in lengths], tfjs=False)


def berts(quick: bool) -> list[Case]:
    import tv_import  # noqa: F401  (transformers imports torchvision: tests/tv_import.py)
    from transformers import BertConfig
    if quick:
        small = BertConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024)
        return [bert("bert_base", "2 layers d256 h4 ff1024, vocab 30522", small, (77, 129))]
    # BertConfig()'s defaults are BERT-base: hidden 768, 12 layers, 12 heads, ff 3072, vocab 30522,
    # 512 positions. The second model has BERT-base's graph (12 layers, 12 heads: the same plan
    # records and size programs) at tiny widths: a run takes a few ms, so a new length's extra
    # first-run cost stands out of the run-to-run noise, which at BERT-base's ~1 s per run is larger.
    narrow = BertConfig(hidden_size=48, num_attention_heads=12, intermediate_size=64, vocab_size=1000)
    return [bert("bert_base", "BERT-base (12 layers d768 h12 ff3072, vocab 30522)", BertConfig(), (77, 100, 129, 200)),
            bert("bert_narrow", "BERT-base's graph at d48 ff64 (12 layers h12, vocab 1000)", narrow,
                 (3, 17, 33, 77, 100, 129, 200, 256, 300, 511))]


DEFAULT_MODELS = ("mlp", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "resnet18", "bert")
ALL_MODELS = (*DEFAULT_MODELS, "bert_base", "bert_narrow")


def cases(quick: bool, names: tuple[str, ...]) -> list[Case]:
    """The benchmark's models named in `names` (inputs smaller with `quick`)."""
    import tv_import  # noqa: F401  (torchvision next to the CPU torch: tests/tv_import.py)
    import torchvision.models as tvm
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True, activation="gelu")
    encoder = nn.TransformerEncoder(layer, 2 if quick else 4, enable_nested_tensor=False)
    with torch.no_grad():  # TransformerEncoder deep-copies one layer: make the layers' weights differ
        for p in encoder.parameters():   # (identical ones would be stored once in our file, flattering it)
            p.add_(torch.randn_like(p) * 0.02)
    side = 112 if quick else 224
    image = torch.randn(1, 3, side, side)   # (torchvision's forwards name it x, nn.Sequential's input)
    every = [Case("mlp", "mlp 256-512-512-10, batch 32", mlp, {"input": torch.randn(32, 256)}),
             Case("mobilenet_v2", f"MobileNetV2 1x3x{side}x{side}", tvm.mobilenet_v2(), {"x": image}),
             Case("mobilenet_v3_large", f"MobileNetV3-Large 1x3x{side}x{side}", tvm.mobilenet_v3_large(), {"x": image}),
             Case("efficientnet_b0", f"EfficientNet-B0 1x3x{side}x{side}", tvm.efficientnet_b0(), {"x": image}),
             Case("resnet18", f"ResNet-18 1x3x{side}x{side}", resnet18(), {"input": image}),
             Case("bert", f"bert-style encoder {'2' if quick else '4'}x(d256 h4 ff1024), 1x128", encoder,
                  {"src": torch.randn(1, 128, 256)})]
    if any(n.startswith("bert_") for n in names):
        every += berts(quick)
    return [c for c in every if c.name in names]


def _outputs(out, names: list[str]) -> list[torch.Tensor]:
    """Eager outputs in the order of the exported file's outputs (named by key for a ModelOutput)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "keys"):
        return [out[n] for n in names]
    return list(out)


def _write(tensors: dict, stem: Path) -> list[dict]:
    """Raw little-endian files of the tensors, described for bench.mjs."""
    specs = []
    for name, t in tensors.items():
        f = stem.with_name(f"{stem.name}.{name}.bin")
        f.write_bytes(t.contiguous().numpy().tobytes())
        specs.append({"name": name, "dtype": DTYPES[t.dtype], "shape": list(t.shape), "file": str(f),
                      "scale": t.abs().max().item() if t.is_floating_point() else None})
    return specs


def _check_symbolic(onnx_path: Path, dynamic_shapes: dict) -> dict:
    """The ONNX inputs' dynamic axes must be symbolic (dim_param), not fixed to the example's size."""
    import onnx  # (pip's bench extra; imported here so that tests can import RTOL without it)
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    dims = {v.name: v.type.tensor_type.shape.dim for v in graph.input}
    found = {}
    for name, axes in dynamic_shapes.items():
        for axis in axes:
            d = dims[name][axis]
            if not d.dim_param:
                sys.exit(f"{onnx_path}: input {name} axis {axis} is fixed to {d.dim_value}, not symbolic: "
                         "torch.onnx.export did not keep the dynamic dim; check its dynamic_shapes")
            found[f"{name}[{axis}]"] = d.dim_param
    return found


def export_all(case: Case, out: Path, relaxed: bool) -> dict:
    # CNNs: batch-norm statistics as training leaves them (model_zoo.calibrate_batch_norm says why)
    model = calibrate_batch_norm(case.model, next(iter(case.inputs.values())).shape)
    ours = out / f"{case.name}.wasm"
    meta = twb.export(model, (), ours, kwargs=case.inputs, dynamic_shapes=case.dynamic_shapes)
    names = [o["name"] for o in meta["outputs"]]
    ours_relaxed = out / f"{case.name}.relaxed.wasm"
    if relaxed:
        twb.export(model, (), ours_relaxed, kwargs=case.inputs, dynamic_shapes=case.dynamic_shapes, simd="relaxed")
    onnx_path = out / f"{case.name}.onnx"
    # Grad mode on: nn.TransformerEncoderLayer then takes its plain path (the fused inference op has
    # no ONNX export); the numbers are the same. Inputs keep their keyword names; outputs get ours.
    torch.onnx.export(model, (), str(onnx_path), kwargs=case.inputs, output_names=names, dynamo=True,
                      external_data=False, verbose=False, dynamic_shapes=case.dynamic_shapes)
    symbolic = _check_symbolic(onnx_path, case.dynamic_shapes) if case.dynamic_shapes else {}
    tfjs = out / case.name
    if case.tfjs:
        export_tfjs(model, tuple(case.inputs.values()), tfjs)

    def run_case(inputs: dict, tag: str) -> dict:
        with torch.no_grad():
            expected = dict(zip(names, _outputs(model(**inputs), names)))
        stem = out / f"{case.name}.{tag}"
        return {"inputs": _write(inputs, stem), "outputs": _write(expected, stem)}

    new = [{"length": next(iter(x.values())).shape[-1], **run_case(x, f"new{i}")} for i, x in enumerate(case.new_inputs)]
    return {"name": case.name, "ours": {"ours": str(ours), **({"ours_relaxed": str(ours_relaxed)} if relaxed else {})},
            "onnx": {"ort": str(onnx_path)},
            "tfjs": str(tfjs) if case.tfjs else None, **run_case(case.inputs, "main"),
            "new_lengths": new, "symbolic_dims": symbolic, "ours_bytes": ours.stat().st_size,
            "onnx_bytes": onnx_path.stat().st_size,
            "tfjs_bytes": tfjs.with_name(f"{tfjs.name}.tfjs.bin").stat().st_size + tfjs.with_name(f"{tfjs.name}.tfjs.json").stat().st_size if case.tfjs else None,
            "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}


def _rel_errors(result: dict, config: dict) -> dict:
    """max |runtime - eager| / max |eager| of each runtime, over all outputs and lengths run."""
    scales = {o["name"]: o["scale"] for o in config["outputs"]}
    for n in config["new_lengths"]:
        for o in n["outputs"]:
            scales[f"{o['name']}@{n['length']}"] = o["scale"]
    return {side: max(d / (scales[k] or 1.0) for k, d in diffs.items()) for side, diffs in result["max_abs_diff"].items()}


SIDES = {"ours": "ours", "ours_relaxed": "ours relaxed-SIMD", "ort": "ORT-web", "tfjs": "TF.js-wasm"}


def _cell(r: dict, side: str) -> str:
    """A side's median with its quartiles and min-max, or '-' when it did not run."""
    t = r.get(side)
    if not t:
        return "-"
    return f"{t['median_ms']:.2f} ({t['p25_ms']:.2f}-{t['p75_ms']:.2f}; {t['min_ms']:.2f}-{t['max_ms']:.2f})"


def _ratio(r: dict, a: str, b: str) -> str:
    return f"{r[a]['median_ms'] / r[b]['median_ms']:.2f}" if r.get(a) and r.get(b) else "-"


def print_tables(report: dict) -> None:
    """The run's markdown (what --write puts into BENCHMARKS.md) from its .benchmarks/web.json."""
    results, labels = report["results"], report["labels"]
    print(f"`{report['command']}` on {report['date']}, {report['machine']}; load average (1 min) "
          f"{report['load_average'][0]:.1f} at the start, {report['load_average'][1]:.1f} at the end; "
          + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".\n")
    print("Times: median ms (quartiles; min-max) of all alternating runs\n")
    print("| model | threads | " + " | ".join(SIDES.values()) + " | ours / ORT | ours / TF.js | relaxed / ORT | relaxed / TF.js "
          "| max error / scale (ours / relaxed / ORT / TF.js) |")
    print("|---|---|" + "---|" * (len(SIDES) + 5))
    for r in results:
        print(f"| {labels[r['model']]} | {r['threads']} | " + " | ".join(_cell(r, side) for side in SIDES) + " | "
              + " | ".join(_ratio(r, a, b) for a, b in (("ours", "ort"), ("ours", "tfjs"), ("ours_relaxed", "ort"), ("ours_relaxed", "tfjs")))
              + " | " + " / ".join(f"{r['rel_err'][side]:.1e}" if side in r["rel_err"] else "-" for side in SIDES) + " |")
    by_key = {(r["model"], r["threads"]): r for r in results}
    pairs = [(by_key[(m, 1)], by_key[(m, 2)]) for m in labels if (m, 1) in by_key and (m, 2) in by_key]
    if pairs:
        ours = [s for s in SIDES if s.startswith("ours")]
        print("\n2-thread speedup: 1-thread median / 2-thread median. \"one process\": our file at 1 and at 2 threads, "
              "alternating in the 2-thread process (a neighbour's load that comes or goes between the two processes cannot "
              "bend it); the other columns: the 1-thread process's median / the 2-thread process's\n")
        print("| model | " + " | ".join(f"{SIDES[s]}, one process" for s in ours) + " | " + " | ".join(SIDES.values()) + " |")
        print("|---|" + "---|" * (len(ours) + len(SIDES)))
        for one, two in pairs:
            cells = [f"{two[s + '_1t']['median_ms'] / two[s]['median_ms']:.2f}x" if two.get(s + "_1t") and two.get(s) else "-" for s in ours]
            cells += [f"{one[s]['median_ms'] / two[s]['median_ms']:.2f}x" if one.get(s) and two.get(s) else "-" for s in SIDES]
            print(f"| {labels[one['model']]} | " + " | ".join(cells) + " |")
    tf_info = {r["threads"]: r["tfjs_info"] for r in results}
    print("\nTF.js: " + "; ".join(f"{t} thread(s): " + (f"{i['build']}, {i['threads']} XNNPACK thread(s)" if "build" in i else f"not run ({i['error']})")
                                  for t, i in sorted(tf_info.items()))
          + ". (TF.js 4.22.0 caps its XNNPACK pool at half the logical cores it sees, taking them for hyperthreads, so on a"
          " 2-core machine without hyperthreads it runs 1 thread in a browser too; the shim shows it twice the cores: the"
          " 2-thread TF.js column is what it runs on a 2-core, 4-thread CPU.)")
    warmup_table(results, labels, SIDES)
    dyn = [r for r in results if r["new_lengths"]]
    if dyn:
        print("\nFirst run at a sequence length never run before, minus the median of the next runs at that length (ms);"
              "\nour planning alone: the loader's Engine.sizesFor in the main thread, its very first call (cold JS) and per new length")
        print("\n| model | threads | lengths | ours: extra ms per length | median | ORT-web: extra ms per length | median "
              "| our planning alone: cold ms | ms per length | median |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in dyn:
            cells = [", ".join(str(n["length"]) for n in r["new_lengths"])]
            for side in ("ours", "ort"):
                extra = [n[side]["first_ms"] - n[side]["steady_ms"] for n in r["new_lengths"]]
                cells += [", ".join(f"{e:.1f}" for e in extra), f"{statistics.median(extra):.1f}"]
            plan = r["planning_ms"]
            cells += [f"{plan['cold_ms']:.2f}", ", ".join(f"{t:.2f}" for t in plan["ms"]), f"{statistics.median(plan['ms']):.2f}"]
            print(f"| {labels[r['model']]} | {r['threads']} | " + " | ".join(cells) + " |")
    print("\n| model | fp32 weights | ours: .wasm (kernels + weights) | ours - weights | ORT-web: .onnx | TF.js: op list + weights |")
    print("|---|---|---|---|---|---|")
    for name, f in report["files"].items():
        print(f"| {labels[name]} | {f['fp32_weights'] / 1e6:.2f} MB | {f['ours'] / 1e6:.2f} MB | "
              f"{(f['ours'] - f['fp32_weights']) / 1e6:+.2f} MB | {f['onnx'] / 1e6:.2f} MB | "
              + (f"{f['tfjs'] / 1e6:.2f} MB" if f["tfjs"] else "-") + " |")
    our_js = report["our_js_bytes"]
    print(f"\nruntimes: our JS loader {sum(our_js.values()) / 1e3:.1f} kB ({', '.join(our_js)}) + kernels inside each .wasm; "
          + "; ".join(f"{name}: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in files.items()) for name, files in report["runtime_bytes"].items()))


def warmup_table(results: list, labels: dict, sides: dict) -> None:
    """Each side's warm-up before the timed rounds, as bench.mjs's warmUp() did it."""
    print("\nWarm-up (V8 starts wasm in its baseline compiler, Liftoff): each runtime runs for the same minimum time, then"
          "\nuntil 5 runs in a row are within 10%: first run ms, runs, seconds (* = had not settled by the time cap)")
    print("\n| model | threads | " + " | ".join(sides.values()) + " |")
    print("|---|---|" + "---|" * len(sides))
    for r in results:
        w = r["warmup"]
        print(f"| {labels[r['model']]} | {r['threads']} | " + " | ".join(
            f"{w[s]['first_ms']:.1f}, {w[s]['runs']}, {w[s]['seconds']:.1f}" + ("" if w[s]["settled"] else "*") if s in w else "-"
            for s in sides) + " |")


def node_flags() -> list[str]:
    """Node.js 20's V8 runs relaxed SIMD only behind a flag (browsers with it need none)."""
    probe = f"import({json.dumps(LOADER.as_uri())}).then((m) => console.log(m.relaxedSimdSupported()))"
    has = subprocess.run(["node", "-e", probe], capture_output=True, text=True).stdout.strip() == "true"
    return [] if has else ["--experimental-wasm-relaxed-simd"]


def timing_run(quick: bool, threads: int, configs: list, work: Path, one_thread_too: bool = False) -> list:
    """One Node process (ORT-web's numThreads and TF.js's thread pool are per process) timing every
    model at `threads`; `one_thread_too`: at 2+ threads, our files also at 1 thread in that process
    (sides ours_1t, ours_relaxed_1t), for a speedup that a change of load between processes cannot bend."""
    cfg = {"loader": str(LOADER), "threads": threads, "models": configs, "out": str(work / f"results{threads}.json"),
           "one_thread_too": one_thread_too,
           "warmup_seconds": 0.5 if quick else 3.0, "max_warmup_seconds": 2.0 if quick else 8.0,
           "min_iters": 3 if quick else 5, "max_iters": 200,
           "round_seconds": 0.2 if quick else 0.4, "rounds": 2 if quick else 5, "new_length_iters": 3 if quick else 5}
    cfg_path = work / f"config{threads}.json"
    cfg_path.write_text(json.dumps(cfg))
    run = subprocess.run(["node", *node_flags(), str(HERE / "bench.mjs"), str(cfg_path)], capture_output=True, text=True, cwd=HERE)
    if run.returncode != 0:
        sys.exit(f"bench.mjs failed:\n{run.stderr}")
    return json.loads(Path(cfg["out"]).read_text())


def _versions() -> dict:
    """The npm packages' versions (from their package.json) and Node's."""
    pkgs = {name: json.loads((HERE / "node_modules" / name / "package.json").read_text())["version"]
            for name in ("onnxruntime-web", "@tensorflow/tfjs-core", "@tensorflow/tfjs-backend-wasm")}
    return {"node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(), **pkgs}


WEB_SECTION = "## Web runtimes"   # BENCHMARKS.md's section of this benchmark (benchmarks/report.py keeps it)
INT8_SECTION = "## Web runtimes: int8"   # the --int8 run's section, after it (benchmarks/report.py keeps it too)
INT8_MODELS = ("mobilenet_v2", "resnet18", "bert")   # --int8's models (compare_int8.py)


def render(report: dict, write: bool) -> int:
    """Prints the run's tables; `write`: BENCHMARKS.md's web section (or its int8 section, for an
    --int8 run) becomes them (the other sections stay)."""
    if report.get("int8"):
        from compare_int8 import INT8_INTRO, print_int8_tables  # (this directory)
        printer, section, intro = print_int8_tables, INT8_SECTION, INT8_INTRO
    else:
        printer, section = print_tables, WEB_SECTION
        intro = ("Generated by `make bench-web` (benchmarks/web/compare.py --write): ours vs ONNX Runtime Web vs TensorFlow.js"
                 " (wasm backends), same weights, one Node.js process per thread count, alternating; ratios compare numbers of"
                 " this one run.")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        printer(report)
    text = buffer.getvalue()
    print(text)
    if write:
        write_section(section, f"{intro}\n\n{text}")
    return 0


def write_section(heading: str, body: str) -> None:
    """BENCHMARKS.md's section `heading` becomes `body`; the sections before and after it stay (a
    missing section is appended). Also profile_kernels.py's writer."""
    path = ROOT / "BENCHMARKS.md"
    head, found, rest = path.read_text().partition(f"\n{heading}\n")
    tail = rest[rest.index("\n## "):] if found and "\n## " in rest else ""
    path.write_text(head.rstrip("\n") + f"\n\n{heading}\n\n{body.rstrip()}\n" + tail)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs and models, fewer iterations (smoke test)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--models", help=f"comma-separated names of the models to run: {', '.join(ALL_MODELS)} (default: "
                        f"{', '.join(DEFAULT_MODELS)}; with --int8: {', '.join(INT8_MODELS)}, of which any)")
    parser.add_argument("--int8", action="store_true", help="the int8 table instead: ours int8 vs ORT-web int8 (QDQ) and both "
                        f"float32 (compare_int8.py), into BENCHMARKS.md's '{INT8_SECTION}' section with --write")
    parser.add_argument("--no-relaxed", action="store_true",
                        help="time only our default (baseline SIMD) files, not also their simd='relaxed' exports")
    parser.add_argument("--report", metavar="JSON", help="print (and with --write, write) the tables of an earlier run's JSON, run nothing")
    parser.add_argument("--write", action="store_true",
                        help=f"also put the tables into BENCHMARKS.md's '{WEB_SECTION}' section (with --int8: '{INT8_SECTION}')")
    args = parser.parse_args(argv)
    if args.quick and args.write:
        parser.error("--quick is a smoke test: BENCHMARKS.md takes full runs only (drop --write)")
    if args.report:
        return render(json.loads(Path(args.report).read_text()), args.write)
    choices = INT8_MODELS if args.int8 else ALL_MODELS
    names = tuple(args.models.split(",")) if args.models else (INT8_MODELS if args.int8 else DEFAULT_MODELS)
    unknown = set(names) - set(choices)
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}{' for --int8' if args.int8 else ''}: choose from {', '.join(choices)}")
    if not ORT_DIST.exists() or not TFJS_DIST.exists():
        sys.exit(f"onnxruntime-web / @tensorflow/tfjs-backend-wasm are not installed: run `npm ci` in {HERE}")
    if args.int8:
        from compare_int8 import run_int8   # (this directory; it imports this module's helpers)
        return run_int8(args, names, argv)
    labels, configs, results = {}, [], []
    start = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), load=os.getloadavg()[0])
    with tempfile.TemporaryDirectory(prefix="twb-web-") as tmp:  # (BERT-base: ~0.9 GB of files)
        for case in cases(args.quick, names):
            labels[case.name] = case.label
            configs.append(export_all(case, Path(tmp), relaxed=not args.no_relaxed))
        for threads in [int(t) for t in args.threads.split(",")]:
            results += timing_run(args.quick, threads, configs, Path(tmp), one_thread_too=True)
    by_name = {c["name"]: c for c in configs}
    for r in results:
        r["rel_err"] = _rel_errors(r, by_name[r["model"]])
    runtime_bytes = {
        "ORT-web": {f: (ORT_DIST / f).stat().st_size for f in ("ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs", "ort.wasm.min.mjs")},
        "TF.js-wasm": {f: (TFJS_DIST / f).stat().st_size for f in ("tfjs-backend-wasm-simd.wasm", "tfjs-backend-wasm-threaded-simd.wasm", "tf-backend-wasm.min.js")}}
    our_js = {p.name: p.stat().st_size for p in LOADER.parent.glob("*.mjs")}
    report = {"command": "python benchmarks/web/compare.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": start["date"], "load_average": [start["load"], os.getloadavg()[0]],
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "results": results, "labels": labels, "versions": _versions(), "runtime_bytes": runtime_bytes, "our_js_bytes": our_js,
              "files": {c["name"]: {"ours": c["ours_bytes"], "onnx": c["onnx_bytes"], "tfjs": c["tfjs_bytes"],
                                    "fp32_weights": c["weight_bytes"], "onnx_symbolic_dims": c["symbolic_dims"]} for c in configs}}
    out = ROOT / ".benchmarks"
    out.mkdir(exist_ok=True)
    (out / "web.json").write_text(json.dumps(report, indent=1))
    render(report, args.write)
    failed = [f"{labels[r['model']]} at {r['threads']} thread(s): {side} {err:.1e}" for r in results
              for side, err in r["rel_err"].items() if err > RTOL]
    if failed:
        print(f"\nFAILED: outputs differ from eager by more than {RTOL:.0e} of their scale: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
