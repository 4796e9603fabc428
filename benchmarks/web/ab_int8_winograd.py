"""Int8 Winograd (QCONV2D_WINO) A/B in Node.js, 1 thread, each comparison in ONE process alternating
round by round (medians of per-round ratios): the int8 ResNet-18 of compare_int8.py (same model,
seeds and calibration) exported with winograd on and off (winograd=False: every conv on QCONV2D),
next to our float32 file and ORT-web's int8 model; then one int8 3x3 conv (+ ReLU) per ResNet-18
3x3 shape, winograd on / off, timed by Model.profile (the conv record alone). Outputs of the two
int8 files are compared (they must be equal). --wasmtime instead times the QCONV2D_WINO and QCONV2D
records themselves on those shapes in wasmtime (KernelSession, 1 thread, alternating, thread CPU
time: wall time swings 2x on a loaded machine). Written for issue #15; timings only.

    python benchmarks/web/ab_int8_winograd.py [--rounds 30] [--dir /tmp/ab_int8_winograd] [--wasmtime]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
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


def wasmtime_layers(rounds: int) -> None:
    from torch_wasm_backend.kernel_call import KernelSession
    from torch_wasm_backend.lowering.ops.conv import winograd_tile_block
    from torch_wasm_backend.lowering.ops.elementwise import DTYPE_CODE
    from torch_wasm_backend.lowering.ops.quant import (acc_bias, channel_scale, conv_scratch_numel, conv_weight_rows,
                                                       pack_weight, qwino_scratch_numel, requant_args)
    torch.manual_seed(0)
    with KernelSession(threads=1) as s:
        for c, hw in LAYERS:
            x = torch.randint(0, 256, (1, c, hw, hw), dtype=torch.int32).to(torch.uint8)
            w = torch.randint(-128, 128, (c, c, 3, 3), dtype=torch.int32).to(torch.int8)
            packed = pack_weight(conv_weight_rows(w), torch.zeros(c, dtype=torch.int64))
            kp = packed.shape[1]
            common = dict(n=1, c_in=c, h=hw, w=hw, c_out=c, ph=1, pw=1, oh=hw, ow=hw, kp=kp,
                          x_dtype=DTYPE_CODE[torch.uint8], x_zp=128, **{"in": s.put(x)}, weight=s.put(packed),
                          acc_bias=s.put(acc_bias(packed, 128)), scale=s.put(channel_scale(0.02, torch.rand(c) * 1e-3)),
                          bias=s.put(torch.randn(c)), **requant_args(True, 0.05, 0, 0, 255, torch.uint8), res=0,
                          res_dtype=0, res_scale=1.0, res_zp=0)
            block = winograd_tile_block(((hw + 1) // 2) ** 2, c)
            outs = {"QCONV2D_WINO": s.alloc(c * hw * hw), "QCONV2D": s.alloc(c * hw * hw)}
            extra = {"QCONV2D_WINO": dict(tile_block=block, scratch=s.alloc(qwino_scratch_numel(c, c, block))),
                     "QCONV2D": dict(groups=1, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1,
                                     scratch=s.alloc(conv_scratch_numel(c, hw * hw, kp)))}
            times = {op: [] for op in outs}
            for r in range(rounds + 3):   # (3 rounds of warm-up)
                for op in outs:
                    s.prepare(op, **common, **extra[op], out=outs[op])
                    t = time.thread_time()
                    s.run()
                    if r >= 3:
                        times[op].append(time.thread_time() - t)
            same = torch.equal(*(s.get(o, (c * hw * hw,), torch.uint8) for o in outs.values()))
            ratio = statistics.median(a / b for a, b in zip(times["QCONV2D_WINO"], times["QCONV2D"]))
            print(f"wasmtime {c}x{hw}x{hw}: QCONV2D_WINO {statistics.median(times['QCONV2D_WINO']) * 1e3:.2f} ms, "
                  f"QCONV2D {statistics.median(times['QCONV2D']) * 1e3:.2f} ms, ratio {ratio:.3f}, outputs equal: {same}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ab_int8_winograd"))
    ap.add_argument("--no-export", action="store_true", help="reuse the files in --dir")
    ap.add_argument("--wasmtime", action="store_true", help="the kernel records in wasmtime instead")
    a = ap.parse_args()
    if a.wasmtime:
        wasmtime_layers(a.rounds)
        return 0
    a.dir.mkdir(parents=True, exist_ok=True)
    if not a.no_export:
        export_all(a.dir)
    layers = ",".join(f"{c}x{hw}" for c, hw in LAYERS)
    return subprocess.run(["node", str(HERE / "ab_int8_winograd.mjs"), str(LOADER), str(a.dir), str(a.rounds), layers],
                          cwd=HERE).returncode


if __name__ == "__main__":
    sys.exit(main())
