"""Side by side with ONNX Runtime Web: the same models exported to ONNX (torch.onnx) and run by the
npm package onnxruntime-web (wasm backend, SIMD) in Node.js, next to our exported .wasm run by our JS
loader, at 1 and 2 threads, in one run. Ours runs twice: the default export (baseline SIMD) and the
same model exported with simd="relaxed" (f32x4.relaxed_madd; Node.js 20 gets
--experimental-wasm-relaxed-simd, which Chrome 114+ does not need). Outputs of all are checked
against eager; file sizes too.

    cd benchmarks/ort_web && npm ci && cd ../.. && python benchmarks/ort_web/compare.py [--quick]

The models: an MLP, ResNet-18, a small nn.TransformerEncoder (float inputs, static shapes) and two
transformers BertModels (int64 input_ids + attention_mask in, last_hidden_state + pooler_output out)
exported by both with a dynamic sequence dim: one of BERT-base's shape, and one with BERT-base's
graph at tiny widths, where a run is short enough for a new length's planning cost to show. For
those the run also times the first call at sequence lengths never run before, and both files are
checked to have a symbolic sequence dim. --quick: smaller models, fewer iterations.

Needs `onnx` and `onnxscript` (pip) for torch.onnx. Results: markdown tables on stdout and
.benchmarks/ort_web.json. Ratios are only meaningful within one run (shared machine).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
import torch.nn as nn
from torch.export import Dim

import torch_wasm_backend as twb

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from model_zoo import resnet18  # noqa: E402  (the benchmarks' shared model definitions)

LOADER = Path(twb.__file__).resolve().parent / "js" / "loader.mjs"
ORT_DIST = HERE / "node_modules" / "onnxruntime-web" / "dist"
# Both runtimes' outputs must equal eager within 1e-4 of the output's scale (max |eager|), the
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
                {"input_ids": {1: seq}, "attention_mask": {1: seq}}, [inputs(n) for n in lengths])


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


def cases(quick: bool) -> list[Case]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True, activation="gelu")
    encoder = nn.TransformerEncoder(layer, 2 if quick else 4, enable_nested_tensor=False)
    with torch.no_grad():  # TransformerEncoder deep-copies one layer: make the layers' weights differ
        for p in encoder.parameters():   # (identical ones would be stored once in our file, flattering it)
            p.add_(torch.randn_like(p) * 0.02)
    side = 112 if quick else 224
    return [Case("mlp", "mlp 256-512-512-10, batch 32", mlp, {"input": torch.randn(32, 256)}),
            Case("resnet18", f"resnet18 1x3x{side}x{side}", resnet18(), {"input": torch.randn(1, 3, side, side)}),
            Case("bert", f"bert-style encoder {'2' if quick else '4'}x(d256 h4 ff1024), 1x128", encoder,
                 {"src": torch.randn(1, 128, 256)}),
            *berts(quick)]


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


def export_both(case: Case, out: Path, relaxed: bool) -> dict:
    model = case.model.eval()
    for m in model.modules():  # non-trivial batch-norm statistics, as in a trained model
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
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

    def run_case(inputs: dict, tag: str) -> dict:
        with torch.no_grad():
            expected = dict(zip(names, _outputs(model(**inputs), names)))
        stem = out / f"{case.name}.{tag}"
        return {"inputs": _write(inputs, stem), "outputs": _write(expected, stem)}

    new = [{"length": next(iter(x.values())).shape[-1], **run_case(x, f"new{i}")} for i, x in enumerate(case.new_inputs)]
    return {"name": case.name, "ours": str(ours), "ours_relaxed": str(ours_relaxed) if relaxed else None, "onnx": str(onnx_path), **run_case(case.inputs, "main"),
            "new_lengths": new, "symbolic_dims": symbolic, "ours_bytes": ours.stat().st_size,
            "onnx_bytes": onnx_path.stat().st_size,
            "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}


def _rel_errors(result: dict, config: dict) -> dict:
    """max |runtime - eager| / max |eager| of each runtime, over all outputs and lengths run."""
    scales = {o["name"]: o["scale"] for o in config["outputs"]}
    for n in config["new_lengths"]:
        for o in n["outputs"]:
            scales[f"{o['name']}@{n['length']}"] = o["scale"]
    return {side: max(d / (scales[k] or 1.0) for k, d in diffs.items()) for side, diffs in result["max_abs_diff"].items()}


def print_tables(results, configs, labels, ort_runtime, our_js) -> None:
    print("| model | threads | ours ms | ours relaxed-SIMD ms | ORT-web ms | ours / ORT | relaxed / ORT "
          "| max error / scale (ours / relaxed / ORT) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ort_ms, relaxed = r["ort"]["median_ms"], r.get("ours_relaxed")
        print(f"| {labels[r['model']]} | {r['threads']} | {r['ours']['median_ms']:.3f} | "
              + (f"{relaxed['median_ms']:.3f}" if relaxed else "-") + f" | {ort_ms:.3f} | {r['ours']['median_ms'] / ort_ms:.2f} | "
              + (f"{relaxed['median_ms'] / ort_ms:.2f}" if relaxed else "-") + " | "
              + " / ".join(f"{r['rel_err'][side]:.1e}" if side in r["rel_err"] else "-" for side in ("ours", "ours_relaxed", "ort")) + " |")
    print("\nWarm-up (V8 starts wasm in its baseline compiler): first run, runs until 3 in a row are within 10%, their time")
    print("\n| model | threads | ours: first ms, runs, s | relaxed: first ms, runs, s | ORT-web: first ms, runs, s |")
    print("|---|---|---|---|---|")
    for r in results:
        w = r["warmup"]
        print(f"| {labels[r['model']]} | {r['threads']} | " + " | ".join(
            f"{w[s]['first_ms']:.1f}, {w[s]['runs']}, {w[s]['seconds']:.1f}" if s in w else "-"
            for s in ("ours", "ours_relaxed", "ort")) + " |")
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
    print("\n| model | fp32 weights | ours: .wasm (kernels + weights) | ours - weights | ORT-web: .onnx | + ORT-web runtime (wasm + JS) |")
    print("|---|---|---|---|---|---|")
    for c in configs:
        ours, onnx_bytes = c["ours_bytes"], c["onnx_bytes"]
        print(f"| {labels[c['name']]} | {c['weight_bytes'] / 1e6:.2f} MB | {ours / 1e6:.2f} MB | "
              f"{(ours - c['weight_bytes']) / 1e6:+.2f} MB | {onnx_bytes / 1e6:.2f} MB | {sum(ort_runtime.values()) / 1e6:.2f} MB |")
    print(f"\nour JS loader: {sum(our_js.values()) / 1e3:.1f} kB ({', '.join(our_js)}); "
          f"ORT-web runtime files: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in ort_runtime.items()))


def node_flags() -> list[str]:
    """Node.js 20's V8 runs relaxed SIMD only behind a flag (browsers with it need none)."""
    probe = f"import({json.dumps(LOADER.as_uri())}).then((m) => console.log(m.relaxedSimdSupported()))"
    has = subprocess.run(["node", "-e", probe], capture_output=True, text=True).stdout.strip() == "true"
    return [] if has else ["--experimental-wasm-relaxed-simd"]


def timing_run(quick: bool, threads: int, configs: list, work: Path) -> list:
    """One Node process (ORT-web's numThreads is per process) timing every model at `threads`."""
    cfg = {"loader": str(LOADER), "threads": threads, "models": configs, "min_warmup": 2,
           "max_warmup": 10 if quick else 20, "min_iters": 3 if quick else 5, "max_iters": 200,
           "min_seconds": 0.5 if quick else 2.0, "rounds": 1 if quick else 2, "new_length_iters": 3 if quick else 5}
    cfg_path = work / f"config{threads}.json"
    cfg_path.write_text(json.dumps(cfg))
    run = subprocess.run(["node", *node_flags(), str(HERE / "bench.mjs"), str(cfg_path)], capture_output=True, text=True, cwd=HERE)
    if run.returncode != 0:
        sys.exit(f"bench.mjs failed:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models and fewer iterations")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--models", help="comma-separated names of the models to run (default: all): "
                        "mlp, resnet18, bert, bert_base, bert_narrow")
    parser.add_argument("--no-relaxed", action="store_true",
                        help="time only our default (baseline SIMD) files, not also their simd='relaxed' exports")
    args = parser.parse_args(argv)
    if not ORT_DIST.exists():
        sys.exit(f"onnxruntime-web is not installed: run `npm ci` in {HERE}")
    labels, configs, results = {}, [], []
    with tempfile.TemporaryDirectory(prefix="twb-ort-") as tmp:  # (BERT-base: ~0.9 GB of files)
        for case in cases(args.quick):
            if args.models and case.name not in args.models.split(","):
                continue
            labels[case.name] = case.label
            configs.append(export_both(case, Path(tmp), relaxed=not args.no_relaxed))
        for threads in [int(t) for t in args.threads.split(",")]:
            results += timing_run(args.quick, threads, configs, Path(tmp))
    by_name = {c["name"]: c for c in configs}
    for r in results:
        r["rel_err"] = _rel_errors(r, by_name[r["model"]])
    ort_runtime = {f: (ORT_DIST / f).stat().st_size for f in ("ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs", "ort.wasm.min.mjs")}
    our_js = {p.name: p.stat().st_size for p in LOADER.parent.glob("*.mjs")}
    print_tables(results, configs, labels, ort_runtime, our_js)
    out = ROOT / ".benchmarks"
    out.mkdir(exist_ok=True)
    (out / "ort_web.json").write_text(json.dumps({
        "results": results, "labels": labels, "ort_runtime_bytes": ort_runtime, "our_js_bytes": our_js,
        "files": {c["name"]: {"ours": c["ours_bytes"], "onnx": c["onnx_bytes"], "fp32_weights": c["weight_bytes"],
                              "onnx_symbolic_dims": c["symbolic_dims"]} for c in configs}}, indent=1))
    failed = [f"{labels[r['model']]} at {r['threads']} thread(s): {side} {err:.1e}" for r in results
              for side, err in r["rel_err"].items() if err > RTOL]
    if failed:
        print(f"\nFAILED: outputs differ from eager by more than {RTOL:.0e} of their scale: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
