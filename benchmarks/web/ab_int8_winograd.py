"""Int8 Winograd (QCONV2D_WINO) A/B in Node.js, 1 thread, each comparison in ONE process alternating
round by round (medians of per-round ratios): the int8 ResNet-18 of compare_int8.py (same model,
seeds and calibration) exported with winograd on and off (winograd=False: every conv on QCONV2D),
next to our float32 file and ORT-web's int8 model; then one int8 3x3 conv (+ ReLU) per ResNet-18
3x3 shape, winograd on / off, timed by Model.profile (the conv record alone). Outputs of the two
int8 files are compared (they must be equal). Written for issue #15; timings only, no checks
beyond that.

    python benchmarks/web/ab_int8_winograd.py [--rounds 30] [--dir /tmp/ab_int8_winograd]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import torch_wasm_backend as twb  # noqa: E402
from compare import LOADER, calibrate_batch_norm, cases  # noqa: E402
from compare_int8 import CALIBRATION_BATCHES, quantize_onnx  # noqa: E402
from torch_wasm_backend.quantize import quantize_pt2e  # noqa: E402

LAYERS = [(64, 56), (128, 28), (256, 14), (512, 7)]


def export_all(out: Path) -> None:
    torch.manual_seed(0)
    case = cases(False, ("resnet18",))[0]
    (name, x), = case.inputs.items()
    model = calibrate_batch_norm(case.model, x.shape)
    gen = torch.Generator().manual_seed(1)
    calibration = [torch.randn(x.shape, generator=gen) for _ in range(CALIBRATION_BATCHES)]
    q = quantize_pt2e(model, (x,), calibration=[(c,) for c in calibration])
    twb.export(model, (x,), out / "f32.wasm")
    twb.export(q, (x,), out / "int8_wino.wasm")
    twb.export(q, (x,), out / "int8_plain.wasm", winograd=False)
    torch.onnx.export(model, (x,), str(out / "f32.onnx"), input_names=[name], output_names=["output_0"], dynamo=True,
                      external_data=False, verbose=False)
    quantize_onnx(out / "f32.onnx", out / "ort_int8.onnx", False, name, calibration)
    x.numpy().tofile(out / "x.bin")
    for c, hw in LAYERS:
        conv = torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.ReLU()).eval()
        xl = torch.randn(1, c, hw, hw)
        ql = quantize_pt2e(conv, (xl,), calibration=[(torch.randn(1, c, hw, hw),) for _ in range(2)])
        twb.export(ql, (xl,), out / f"conv{c}_wino.wasm")
        twb.export(ql, (xl,), out / f"conv{c}_plain.wasm", winograd=False)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ab_int8_winograd"))
    ap.add_argument("--no-export", action="store_true", help="reuse the files in --dir")
    a = ap.parse_args()
    a.dir.mkdir(parents=True, exist_ok=True)
    if not a.no_export:
        export_all(a.dir)
    layers = ",".join(f"{c}x{hw}" for c, hw in LAYERS)
    return subprocess.run(["node", str(HERE / "ab_int8_winograd.mjs"), str(LOADER), str(a.dir), str(a.rounds), layers],
                          cwd=HERE).returncode


if __name__ == "__main__":
    sys.exit(main())
