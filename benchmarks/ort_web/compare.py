"""Side by side with ONNX Runtime Web: the same models exported to ONNX (torch.onnx) and run by the
npm package onnxruntime-web (wasm backend, SIMD) in Node.js, next to our exported .wasm run by our JS
loader, at 1 and 2 threads, in one run. Outputs of both are checked against eager; file sizes too.

    cd benchmarks/ort_web && npm ci && cd ../.. && python benchmarks/ort_web/compare.py [--quick]

Needs `onnx` and `onnxscript` (pip) for torch.onnx. Results: a markdown table on stdout and
.benchmarks/ort_web.json. Ratios are only meaningful within one run (shared machine).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

import torch_wasm_backend as twb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_zoo import resnet18  # noqa: E402  (the benchmarks' shared model definitions)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LOADER = Path(twb.__file__).resolve().parent / "js" / "loader.mjs"
ORT_DIST = HERE / "node_modules" / "onnxruntime-web" / "dist"


def models(quick: bool):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True, activation="gelu")
    bert = nn.TransformerEncoder(layer, 2 if quick else 4, enable_nested_tensor=False)
    with torch.no_grad():  # TransformerEncoder deep-copies one layer: make the layers' weights differ
        for p in bert.parameters():   # (identical ones would be stored once in our file, flattering it)
            p.add_(torch.randn_like(p) * 0.02)
    side = 112 if quick else 224
    return [("mlp 256-512-512-10, batch 32", "mlp", mlp, torch.randn(32, 256)),
            (f"resnet18 1x3x{side}x{side}", "resnet18", resnet18(), torch.randn(1, 3, side, side)),
            (f"bert-style encoder {'2' if quick else '4'}x(d256 h4 ff1024), 1x128", "bert", bert, torch.randn(1, 128, 256))]


def export_both(name, model, x, out: Path) -> dict:
    model.eval()
    for m in model.modules():  # non-trivial batch-norm statistics, as in a trained model
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():
        expected = model(x)
    ours = out / f"{name}.wasm"
    meta = twb.export(model, (x,), ours)
    onnx_path = out / f"{name}.onnx"
    # Grad mode on: nn.TransformerEncoderLayer then takes its plain path (the fused inference op has
    # no ONNX export); the numbers are the same.
    torch.onnx.export(model, (x,), str(onnx_path), input_names=["x"], output_names=["y"], dynamo=True,
                      external_data=False, verbose=False)
    (out / f"{name}.x.f32").write_bytes(x.numpy().astype("<f4").tobytes())
    (out / f"{name}.y.f32").write_bytes(expected.numpy().astype("<f4").tobytes())
    return {"name": name, "ours": str(ours), "onnx": str(onnx_path), "input": str(out / f"{name}.x.f32"),
            "expected": str(out / f"{name}.y.f32"), "shape": list(x.shape),
            "input_name": meta["inputs"][0]["name"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models and fewer iterations")
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args(argv)
    if not ORT_DIST.exists():
        sys.exit(f"onnxruntime-web is not installed: run `npm ci` in {HERE}")
    work = Path(tempfile.mkdtemp(prefix="twb-ort-"))
    labels, configs = {}, []
    for label, name, model, x in models(args.quick):
        labels[name] = label
        configs.append(export_both(name, model, x, work))
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        cfg = {"loader": str(LOADER), "threads": threads, "models": configs, "warmup": 2,
               "min_iters": 3 if args.quick else 5, "max_iters": 200, "min_seconds": 0.5 if args.quick else 2.0,
               "rounds": 1 if args.quick else 2}
        cfg_path = work / f"config{threads}.json"
        cfg_path.write_text(json.dumps(cfg))
        run = subprocess.run(["node", str(HERE / "bench.mjs"), str(cfg_path)], capture_output=True, text=True, cwd=HERE)
        if run.returncode != 0:
            sys.exit(f"bench.mjs failed:\n{run.stderr}")
        results += json.loads(run.stdout.strip().splitlines()[-1])
    ort_runtime = {f: (ORT_DIST / f).stat().st_size for f in ("ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs", "ort.wasm.min.mjs")}
    our_js = {p.name: p.stat().st_size for p in LOADER.parent.glob("*.mjs")}
    print("| model | threads | ours ms | ORT-web ms | ORT / ours | ours max abs diff | ORT max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {labels[r['model']]} | {r['threads']} | {r['ours']['median_ms']:.3f} | {r['ort']['median_ms']:.3f} | "
              f"{r['ort']['median_ms'] / r['ours']['median_ms']:.2f} | {r['ours_max_abs_diff']:.1e} | {r['ort_max_abs_diff']:.1e} |")
    print()
    print("| model | ours: .wasm (kernels + weights) | ORT-web: .onnx | + ORT-web runtime (wasm + JS) |")
    print("|---|---|---|---|")
    for c in configs:
        ours, onnx = Path(c["ours"]).stat().st_size, Path(c["onnx"]).stat().st_size
        print(f"| {labels[c['name']]} | {ours / 1e6:.2f} MB | {onnx / 1e6:.2f} MB | {sum(ort_runtime.values()) / 1e6:.2f} MB |")
    print(f"\nour JS loader: {sum(our_js.values()) / 1e3:.1f} kB ({', '.join(our_js)}); "
          f"ORT-web runtime files: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in ort_runtime.items()))
    out = ROOT / ".benchmarks"
    out.mkdir(exist_ok=True)
    (out / "ort_web.json").write_text(json.dumps({"results": results, "labels": labels, "ort_runtime_bytes": ort_runtime,
                                                  "our_js_bytes": our_js, "files": {c["name"]: {
                                                      "ours": Path(c["ours"]).stat().st_size,
                                                      "onnx": Path(c["onnx"]).stat().st_size} for c in configs}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
