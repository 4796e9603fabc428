"""Per-record A/B of our exported files (ab_records.mjs): where one int8 file spends its time
against another build's file of the same model, or against the float32 file, layer by layer, in ONE
Node.js process (files alternating, medians). Used for issue #15's int8 MobileNetV2 work (design.md
decision 11); timings are ratios of this one run (other processes on the machine shift them all).

    python benchmarks/web/profile_records.py --export DIR [--model resnet18]
                  # DIR/MODEL.{f32,int8}.wasm + DIR/input.json, DIR/x.bin, as compare_int8.py quantizes it
                  # (MODEL: a compare.py case name; default mobilenet_v2)
    python benchmarks/web/profile_records.py A.wasm B.wasm [C.wasm] [--threads 1] [--rounds 30] [--layers]

Prints per record class (stem, depthwise / pointwise / other conv by shape, each other kernel by name)
each file's summed median ms and its ratio to the first file's; --layers: every record. Records are
matched by position, so the files must hold the same plan (the same model and export options) or be
the float32 and int8 files of one model (matched by class totals only). The node flags are compare.py's
(relaxed SIMD where Node needs a flag, as the web benchmark runs) and --no-liftoff.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import compare  # noqa: E402
from profile_kernels import OurPlan  # noqa: E402


def export(out: Path, name: str) -> None:
    import torch
    import torch_wasm_backend as twb
    from torch_wasm_backend.quantize import quantize_pt2e
    from compare_int8 import CALIBRATION_BATCHES
    out.mkdir(parents=True, exist_ok=True)
    case, = compare.cases(False, (name,))
    (input_name, x), = case.inputs.items()
    model = compare.calibrate_batch_norm(case.model, x.shape)
    gen = torch.Generator().manual_seed(1)
    calibration = [(torch.randn(x.shape, generator=gen),) for _ in range(CALIBRATION_BATCHES)]
    twb.export(model, (x,), out / f"{name}.f32.wasm")
    twb.export(quantize_pt2e(model, (x,), calibration=calibration), (x,), out / f"{name}.int8.wasm")
    x.numpy().tofile(out / "x.bin")
    (out / "input.json").write_text(json.dumps({"name": input_name, "file": str(out / "x.bin"), "shape": list(x.shape)}))


def record_class(plan: OurPlan, op: str, word: int) -> tuple[str, str]:
    """(class, description) of one plan record."""
    if op not in ("CONV2D", "QCONV2D", "CONV2D_WINOGRAD", "QCONV2D_WINO"):
        return op, op
    a = plan.args(op, word)
    groups, kh = a.get("groups", 1), a.get("kh", 3)
    desc = f"{op} {a['c_in']}->{a['c_out']} g{groups} k{kh} s{a.get('sh', 1)} {a['h']}x{a['w']}"
    if a["c_in"] == 3:
        return "stem", desc
    if groups == a["c_in"] and groups > 1:
        return f"depthwise {kh}x{kh} s{a['sh']}", desc
    return ("pointwise" if kh == 1 else "other conv"), desc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--export", type=Path)
    ap.add_argument("--model", default="mobilenet_v2", help="with --export: the compare.py case to export")
    ap.add_argument("--input", type=Path, help="input.json that --export wrote (default: the one next to the first file)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--layers", action="store_true")
    args = ap.parse_args(argv)
    if args.export:
        export(args.export, args.model)
        return 0
    if len(args.files) < 2:
        ap.error("give two or more exported files (or --export DIR)")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"loader": str(compare.LOADER), "threads": args.threads, "rounds": args.rounds,
               "input": json.loads((args.input or args.files[0].parent / "input.json").read_text()),
               "files": [str(f) for f in args.files], "out": str(Path(tmp) / "out.json")}
        (Path(tmp) / "cfg.json").write_text(json.dumps(cfg))
        # --no-liftoff: every function compiled by TurboFan up front. With V8's dynamic tiering a
        # kernel called once per run (a stem conv) could still be in baseline code in one file and
        # not the other after the warm-up: 1.4x apart on identical code.
        subprocess.run(["node", *compare.node_flags(), "--no-liftoff", str(HERE / "ab_records.mjs"),
                        str(Path(tmp) / "cfg.json")], check=True)
        results = json.loads(Path(cfg["out"]).read_text())
    totals, layers = [], []
    for r in results:
        plan = OurPlan(Path(r["file"]))
        t, rows = {}, []
        for s in r["steps"]:
            cls, desc = record_class(plan, s["op"], s["word"])
            t[cls] = t.get(cls, 0.0) + s["ms"]
            rows.append((desc, s["ms"]))
        totals.append(t)
        layers.append(rows)
    print(f"threads {args.threads}, {args.rounds} rounds; median ms (ratio to the first file)")
    for r in results:
        print(f"  {r['file']}: plain run {r['run_ms']:.2f}, records {sum(s['ms'] for s in r['steps']):.2f}, "
              f"first output differs from the first file's in {r['outputs_differing']} values")
    for cls in sorted(set().union(*totals), key=lambda c: -totals[0].get(c, 0.0)):
        base = totals[0].get(cls)
        print(f"  {cls:22s}" + "".join(f" {t.get(cls, 0.0):8.3f}" + (f" ({t.get(cls, 0.0) / base:4.2f})" if base else "       ")
                                     for t in totals))
    if args.layers and all(len(x) == len(layers[0]) for x in layers):
        for i, (desc, ms) in enumerate(layers[0]):
            print(f"  {desc:44s} {ms:.3f}" + "".join(f" {x[i][1]:.3f} ({x[i][1] / ms:.2f})" for x in layers[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
