"""Where MobileNetV2 (torchvision, 224x224, batch 1, 1 thread) spends its time, ours next to
TF.js-wasm's XNNPACK, per kernel class (stem conv, depthwise 3x3, pointwise 1x1, the rest):
ours from the backend's per-kernel torch.profiler spans (options profile_kernels, wasmtime),
TF.js from tf.profile's per-kernel times (tfjs_graph.mjs in Node.js). The two split the same
network the same way, so their class totals compare; they run one after the other in two engines
(wasmtime, V8), so on a loaded machine the shares say more than the ms.

    python benchmarks/web/profile_mobilenet.py [--runs 10]
"""
from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))
import tv_import  # noqa: E402,F401  (torchvision next to the CPU torch)
import torchvision.models as tvm  # noqa: E402

from tfjs_export import export_tfjs  # noqa: E402


def model_and_input():
    torch.manual_seed(0)
    model = tvm.mobilenet_v2().eval()
    for m in model.modules():   # non-trivial batch-norm statistics, as compare.py
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(1, 3, 224, 224)


def conv_class(conv: torch.nn.Conv2d) -> str:
    """The kernel class of a convolution, named as profile_tfjs.mjs names TF.js's."""
    if conv.groups > 1 and conv.groups == conv.in_channels:
        return "depthwise conv"
    return "x".join(map(str, conv.kernel_size)) + " conv"


def ours(model, x, runs: int) -> dict:
    """ms per run per kernel class (mean over `runs` profiled runs after 3 warm-ups). The backend's
    spans name the kernel (wasm::CONV2D), not the layer; MobileNetV2's convolutions run one CONV2D
    call each in the model's order, so the k-th CONV2D span of a run is the k-th nn.Conv2d."""
    import torch_wasm_backend  # noqa: F401  (registers backend="wasm")
    compiled = torch.compile(model, backend="wasm", options={"threads": 1, "profile_kernels": True, "strict": True})
    with torch.no_grad():
        for _ in range(3):
            compiled(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                compiled(x)
    convs = [conv_class(m) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    spans = sorted((e for e in prof.events() if e.name.startswith("wasm::")), key=lambda e: e.time_range.start)
    conv_spans = [e for e in spans if e.name == "wasm::CONV2D"]
    if len(conv_spans) != runs * len(convs):
        sys.exit(f"{len(conv_spans)} CONV2D spans in {runs} runs of a model with {len(convs)} convolutions: "
                 "the one-span-per-conv mapping does not hold (a conv split or fused differently)")
    by_class = collections.defaultdict(float)
    for i, e in enumerate(conv_spans):
        by_class[convs[i % len(convs)]] += e.cpu_time_total / 1e3 / runs
    for e in spans:
        if e.name != "wasm::CONV2D":
            by_class[e.name.removeprefix("wasm::")] += e.cpu_time_total / 1e3 / runs
    return dict(by_class)


def tfjs(model, x, runs: int) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        stem = Path(tmp) / "mobilenet_v2"
        export_tfjs(model, (x,), stem)
        (Path(tmp) / "x.f32").write_bytes(x.numpy().tobytes())
        run = subprocess.run(["node", str(HERE / "profile_tfjs.mjs"), str(stem), str(Path(tmp) / "x.f32"),
                              json.dumps(list(x.shape)), str(runs)], capture_output=True, text=True, cwd=HERE)
        if run.returncode != 0:
            sys.exit(f"profile_tfjs.mjs failed:\n{run.stderr}")
        return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    model, x = model_and_input()
    sides = {}
    for name, kernels in (("ours (wasmtime)", ours(model, x, args.runs).items()),
                          ("TF.js-wasm (V8)", ((k["class"], k["ms"]) for k in tfjs(model, x, args.runs)))):
        sides[name] = collections.defaultdict(float)
        for cls, ms in kernels:   # the two name their other kernels differently: one class for them
            sides[name][cls if cls.endswith(" conv") else "rest (add, global pool, linear)"] += ms
    totals = {name: sum(t.values()) for name, t in sides.items()}
    classes = sorted({c for t in sides.values() for c in t}, key=lambda c: -max(t.get(c, 0) for t in sides.values()))
    print(f"MobileNetV2 224x224, 1 thread, ms per run (share), mean of {args.runs} profiled runs\n")
    print("| kernel class | " + " | ".join(sides) + " | ours / TF.js |\n|---|" + "---|" * (len(sides) + 1))
    for c in classes:
        ms = [t.get(c, 0.0) for t in sides.values()]
        print(f"| {c} | " + " | ".join(f"{m:.2f} ({m / totals[n]:.0%})" for m, n in zip(ms, sides))
              + (f" | {ms[0] / ms[1]:.2f} |" if ms[1] else " | - |"))
    print("| all kernels | " + " | ".join(f"{totals[n]:.2f}" for n in sides) + f" | {totals['ours (wasmtime)'] / totals['TF.js-wasm (V8)']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
