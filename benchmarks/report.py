"""Reads a pytest-benchmark JSON file and reports the ratios that matter, measured in that one run:
wasm time / eager time per model and thread count, GEMM GFLOP/s as a fraction of the peak loop,
planning cost per new shape, process start. Prints markdown; with --write, also writes
BENCHMARKS.md and benchmarks/chart.png (what `make bench` does).

    python benchmarks/report.py .benchmarks/all.json [--write]
"""
import contextlib
import io
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "make bench"


def chart(rows, gemm, peak, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    labels, ratios, colors = [], [], []
    for (model, threads), r in sorted(rows.items()):
        if "eager" in r and "wasm" in r:
            labels.append(f"{model}\n{threads} thr")
            ratios.append(r["wasm"] / r["eager"])
            colors.append("tab:blue" if threads == 1 else "tab:orange")
    left.bar(range(len(ratios)), ratios, color=colors)
    left.axhline(1.0, color="black", linewidth=0.8)
    left.set_xticks(range(len(ratios)), labels, fontsize=7, rotation=30, ha="right")
    left.set_ylabel("wasm time / eager time (lower is better)")
    left.set_title("models, same thread count, one run")
    if peak and gemm:
        right.bar([f"{t} thr" for t, _ in sorted(gemm)], [100 * g / (peak * t) for t, g in sorted(gemm)],
                  color="tab:green")
        right.set_ylabel("% of measured SIMD128 peak")
        right.set_title("GEMM 512^3")
        right.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(path: str, write: bool = False) -> None:
    data = json.load(open(path))
    rows = {}
    peak = None
    gemm = []
    dynamic = None
    startup = {}
    overhead = {}
    for b in data["benchmarks"]:
        info, median = b["extra_info"], b["stats"]["median"]
        if info.get("kind") == "model":
            rows.setdefault((info["model"], info["threads"]), {})[info["engine"]] = median
        elif info.get("kind") == "peak":
            peak = info["flops"] / median / 1e9
        elif info.get("kind") == "gemm":
            gemm.append((info["threads"], info["flops"] / median / 1e9))
        elif info.get("kind") == "overhead":
            overhead.setdefault(info["graph"], {})[info["engine"]] = (median, info)
        elif info.get("kind") == "startup":
            startup[info["cache"]] = median
        elif info.get("kind") == "dynamic":
            # per length: first call (plan + run) minus the steady run after it; the median of
            # those (older runs: median round minus two median steady runs, a noisier estimate)
            prep = info.get("prep_median", median - 2 * info["steady_median"])
            dynamic = (prep, info["lengths"])
    cpu = data.get("machine_info", {}).get("cpu", {}).get("brand_raw", platform.processor())
    print(f"machine: {cpu}, {data.get('machine_info', {}).get('cpu', {}).get('count', '?')} cores; "
          f"date: {data.get('datetime', '?')}; command: `{COMMAND}` (medians)\n")
    print("| model | threads | eager ms | wasm ms | wasm / eager |")
    print("|---|---|---|---|---|")
    for (model, threads), r in sorted(rows.items()):
        if "eager" in r and "wasm" in r:
            print(f"| {model} | {threads} | {r['eager'] * 1e3:.3f} | {r['wasm'] * 1e3:.3f} | {r['wasm'] / r['eager']:.2f} |")
    if peak:
        print(f"\nSIMD128 peak loop (1 thread): {peak:.1f} GFLOP/s")
        for threads, gflops in sorted(gemm):
            print(f"GEMM 512x512x512, {threads} thread(s): {gflops:.1f} GFLOP/s = "
                  f"{100 * gflops / (peak * threads):.0f}% of {threads} x peak")


    if overhead:
        print("\n| call overhead (1 thread, no_grad) | eager us | Dynamo + eager backend us | wasm us "
              "| wasm / eager | of which in wasm us | partition host code us |")
        print("|---|---|---|---|---|---|---|")
        for graph, r in sorted(overhead.items()):
            if len(r) == 3:
                (eager, _), (dynamo, _), (wasm, info) = r["eager"], r["dynamo_eager"], r["wasm"]
                print(f"| {graph} | {eager * 1e6:.1f} | {dynamo * 1e6:.1f} | {wasm * 1e6:.1f} | {wasm / eager:.2f} "
                      f"| {info['wasm_seconds_per_call'] * 1e6:.1f} | {info['host_seconds_per_call'] * 1e6:.1f} |")

    if len(startup) == 2:
        print(f"\nnew process to a ready runtime (incl. Python imports): cold {startup['cold']:.2f} s, "
              f"warm compile cache {startup['warm']:.2f} s")
    if dynamic:
        print(f"\nBERT-style encoder (256 x 4 layers), dynamic=True, lengths {dynamic[1]}: "
              f"{dynamic[0] * 1e3:.1f} ms to prepare each new length (median)")


    if write:
        chart(rows, gemm, peak, ROOT / "benchmarks" / "chart.png")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--write"]
    json_path = args[0] if args else ".benchmarks/all.json"
    if "--write" in sys.argv:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            main(json_path, write=True)
        text = buffer.getvalue()
        (ROOT / "BENCHMARKS.md").write_text(
            "# Benchmarks\n\nGenerated by `make bench` (benchmarks/report.py) from one run of the "
            "pytest-benchmark suites in `benchmarks/`; ratios compare numbers measured in that same run.\n\n"
            + text + "\n![wasm/eager per model, GEMM % of peak](benchmarks/chart.png)\n")
        sys.stdout.write(text)
    else:
        main(json_path)
