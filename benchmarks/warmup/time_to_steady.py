"""Time to steady speed after the JS loader's loadModel, in fresh Node.js processes (issue #13 part 5).

V8 first runs a wasm function in its baseline compiler (Liftoff) and tiers it up to TurboFan in the
background once it has run enough; the optimized code is used from the function's next call on. A
browser cannot pass --no-liftoff, so the loader warms the model up itself (loadModel's warmUp). This
exports a MobileNetV2-shaped CNN (224x224) and the BERT-style encoder (d256 x 4 layers, seq 128) of
benchmarks/model_zoo.py and runs each, at 1 thread, in fresh processes with V8's default flags and
with --no-liftoff, with and without the warm-up, alternating the four variants for --rounds rounds.
Prints a markdown table: median load time (of which the warm-up), each of the first --runs runs, and
the steady time (median of the last half of the runs), all in ms.

    python benchmarks/warmup/time_to_steady.py [--rounds 5] [--runs 8]

Ratios are only meaningful within one run of this script (shared machine); it prints `uptime`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import torch_wasm_backend as twb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from model_zoo import bert_encoder, calibrate_batch_norm, mobilenet_v2  # noqa: E402

LOADER = Path(twb.__file__).resolve().parent / "js" / "loader.mjs"
VARIANTS = [("default flags", [], True), ("default flags", [], False),
            ("--no-liftoff", ["--no-liftoff"], True), ("--no-liftoff", ["--no-liftoff"], False)]


def export_models(out: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    cnn = calibrate_batch_norm(mobilenet_v2(), (1, 3, 224, 224))
    encoder = bert_encoder().eval()
    with torch.no_grad():  # TransformerEncoder deep-copies one layer: make the layers' weights differ
        for p in encoder.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    files = {"MobileNetV2 1x3x224x224": out / "mobilenet_v2.wasm", "BERT-style d256x4, 1x128": out / "bert.wasm"}
    twb.export(cnn, (torch.randn(1, 3, 224, 224),), files["MobileNetV2 1x3x224x224"])
    twb.export(encoder, (torch.randn(1, 128, 256),), files["BERT-style d256x4, 1x128"])
    return files


def one_process(flags: list[str], file: Path, runs: int, warm_up: bool) -> dict:
    cmd = ["node", *flags, str(HERE / "first_runs.mjs"), str(LOADER), str(file), str(runs), str(warm_up).lower()]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per variant")
    parser.add_argument("--runs", type=int, default=8, help="runs timed in each process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = export_models(Path(tmp))
        results = {(model, i): [] for model in files for i in range(len(VARIANTS))}
        for _ in range(args.rounds):
            for model, file in files.items():
                for i, (_, flags, warm_up) in enumerate(VARIANTS):
                    results[model, i].append(one_process(flags, file, args.runs, warm_up))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    med = statistics.median
    head = " | ".join(f"run {k + 1}" for k in range(args.runs))
    print(f"{args.rounds} fresh processes per row, medians, ms; 1 thread; {uptime}\n")
    print(f"| model | V8 flags | warm-up | load (warm-up) | {head} | steady |")
    print("|---|---|---|---|" + "---|" * args.runs + "---|")
    for model in files:
        for i, (flag_name, _, warm_up) in enumerate(VARIANTS):
            rs = results[model, i]
            per_run = [med(r["runs_ms"][k] for r in rs) for k in range(args.runs)]
            steady = med(t for r in rs for t in r["runs_ms"][args.runs // 2:])
            load = f"{med(r['load_ms'] for r in rs):.0f}"
            if warm_up:
                load += f" ({med(r['warm_up_ms'] for r in rs):.0f})"
            cells = " | ".join(f"{t:.0f}" for t in per_run)
            print(f"| {model} | {flag_name} | {'on' if warm_up else 'off'} | {load} | {cells} | {steady:.0f} |")


if __name__ == "__main__":
    main()
