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
WEB_SECTION = "## Web runtimes"   # BENCHMARKS.md's section written from a `make bench-web` run


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


KERNEL_KINDS = ("gemm", "linear", "stream", "conv")


def kernel_tables(kernels, peak: float, kernel_peak: float | None) -> None:
    """GEMM / linear / conv speed as % of threads x peak (the highest multiply-add rate a wasm loop
    reaches, peak_flops_chains; GEMM also against kernel_peak, the micro-kernel-shaped peak_flops
    loop) and their 2-thread speedups; the small-M
    linear shapes also against their roofline min(peak, bandwidth x flops per byte), with the
    bandwidth measured streaming a buffer of the weight's size at the same thread count."""
    by = {}
    for info, median in kernels:
        key = {"gemm": lambda i: (i["m"], i["n"], i["k"]), "linear": lambda i: (i["m"], i["k"], i["n"]),
               "stream": lambda i: "dram" if i.get("dram") else (i["k"], i["n"]),
               "conv": lambda i: i["name"]}[info["kind"]](info)
        by.setdefault(info["kind"], {}).setdefault(key, {})[info["threads"]] = (info, median)

    def speedup(runs):
        return f"{runs[1][1] / runs[2][1]:.2f}x" if 1 in runs and 2 in runs else "-"

    def pct(info, median, threads):
        gflops = info["flops"] / median / 1e9
        return gflops, 100 * gflops / (peak * threads)

    bandwidth = {key: {t: info["bytes"] / median / 1e9 for t, (info, median) in runs.items()}
                 for key, runs in by.get("stream", {}).items()}
    if bandwidth:
        print("\nread bandwidth (read_bandwidth loop over a buffer of that size), GB/s: " + "; ".join(
            f"{'512 MiB' if key == 'dram' else f'{4 * key[0] * key[1] / 2**20:g} MiB'}: "
            + ", ".join(f"{bw:.1f} ({t} thr)" for t, bw in sorted(runs.items()))
            for key, runs in sorted(bandwidth.items(), key=lambda kv: str(kv[0]))))
    if "gemm" in by:
        print("\n| GEMM m x n x k | threads | GFLOP/s | % of threads x peak | % of threads x kernel-loop peak "
              "| 2-thread speedup |")
        print("|---|---|---|---|---|---|")
        for key, runs in sorted(by["gemm"].items()):
            for t, (info, median) in sorted(runs.items()):
                g, p = pct(info, median, t)
                k = f"{100 * g / (kernel_peak * t):.0f}%" if kernel_peak else "-"
                print(f"| {'x'.join(map(str, key))} | {t} | {g:.1f} | {p:.0f}% | {k} | {speedup(runs) if t == 2 else ''} |")
    if "linear" in by:
        print("\n| linear m, k -> n (packed weight, bias) | threads | GFLOP/s | % of threads x peak | "
              "roofline GFLOP/s | % of roofline | 2-thread speedup |")
        print("|---|---|---|---|---|---|---|")
        for (m, k, n), runs in sorted(by["linear"].items()):
            for t, (info, median) in sorted(runs.items()):
                g, p = pct(info, median, t)
                bw = bandwidth.get((k, n), {}).get(t)
                roof, roof_pct = "-", "-"
                if bw:
                    intensity = 2.0 * m * k * n / (4.0 * (k * n + m * k + m * n))  # flops per byte moved
                    r = min(peak * t, bw * intensity)
                    roof, roof_pct = f"{r:.1f}", f"{100 * g / r:.0f}%"
                print(f"| {m}, {k} -> {n} | {t} | {g:.1f} | {p:.0f}% | {roof} | {roof_pct} | "
                      f"{speedup(runs) if t == 2 else ''} |")
    if "conv" in by:
        print("\nConv layers: GFLOP/s = a direct conv's flops / time (Winograd does 2.25x fewer multiplies, "
              "so its effective rate can pass the peak).\n")
        print("| ResNet-18 conv (batch 1, bias + ReLU) | threads | ms | GFLOP/s | % of threads x peak | "
              "2-thread speedup |")
        print("|---|---|---|---|---|---|")
        for name, runs in by["conv"].items():
            for t, (info, median) in sorted(runs.items()):
                g, p = pct(info, median, t)
                print(f"| {name} | {t} | {median * 1e3:.2f} | {g:.1f} | {p:.0f}% | {speedup(runs) if t == 2 else ''} |")


def main(path: str, write: bool = False) -> None:
    data = json.load(open(path))
    rows = {}
    peaks = {}   # (loop, kernel build) -> GFLOP/s
    gemm = []
    dynamic = None
    startup = {}
    overhead = {}
    kernels = []
    eager_gemm = {}
    for b in data["benchmarks"]:
        info, median = b["extra_info"], b["stats"]["median"]
        if info.get("kind") == "model":
            rows.setdefault((info["model"], info["threads"]), {})[info["engine"]] = median
        elif info.get("kind") == "peak":  # (older files: only peak_flops of the baseline build)
            peaks[info.get("loop", "peak_flops"), info.get("simd", "baseline")] = info["flops"] / median / 1e9
        elif info.get("kind") == "eager_gemm":
            eager_gemm[info["threads"]] = info["flops"] / median / 1e9
        if info.get("kind") in KERNEL_KINDS:
            kernels.append((info, median))
        if info.get("kind") == "gemm" and info.get("m", 512) == 512:
            gemm.append((info["threads"], info["flops"] / median / 1e9))
        elif info.get("kind") == "overhead":
            overhead.setdefault(info["graph"], {})[info["engine"]] = (median, info)
        elif info.get("kind") == "startup":
            startup[info["cache"]] = median
        elif info.get("kind") == "dynamic":
            # per length: first call (plan + run) minus the steady run after it; the median of
            # those (older runs: median round minus two median steady runs, a noisier estimate)
            prep = info.get("prep_median", median - 2 * info["steady_median"])
            dynamic = (prep, info["lengths"], info.get("prep_first"), info.get("planning_median"),
                       info.get("planning_max"), info.get("length_one"))
    cpu = data.get("machine_info", {}).get("cpu", {}).get("brand_raw", platform.processor())
    print(f"machine: {cpu}, {data.get('machine_info', {}).get('cpu', {}).get('count', '?')} cores; "
          f"date: {data.get('datetime', '?')}; command: `{COMMAND}` (medians)\n")
    print("| model | threads | eager ms | wasm ms | wasm / eager |")
    print("|---|---|---|---|---|")
    for (model, threads), r in sorted(rows.items()):
        if "eager" in r and "wasm" in r:
            print(f"| {model} | {threads} | {r['eager'] * 1e3:.3f} | {r['wasm'] * 1e3:.3f} | {r['wasm'] / r['eager']:.2f} |")
    # The yardstick: the highest multiply-add rate a wasm loop reaches here (12 chains, no loads);
    # files from before that loop existed fall back to the micro-kernel-shaped loop.
    kernel_peak = peaks.get(("peak_flops", "baseline"))
    peak = peaks.get(("peak_flops_chains", "baseline"), kernel_peak)
    if peaks:
        loops = {"peak_flops_chains": "12 mul+add chains, no loads", "peak_flops": "GEMM micro-kernel-shaped, 8 chains + 2 loads"}
        print("\n| SIMD128 peak loop (1 thread) | baseline build GFLOP/s | relaxed build (relaxed_madd) GFLOP/s |")
        print("|---|---|---|")
        for loop, what in loops.items():
            cells = [f"{peaks[loop, b]:.1f}" if (loop, b) in peaks else "-" for b in ("baseline", "relaxed")]
            print(f"| {loop}: {what} | {cells[0]} | {cells[1]} |")
        print("\n% of peak below: of the baseline build's 12-chain loop (the highest rate a wasm loop reaches "
              "here); the relaxed build's yardstick is its own 12-chain loop.")
    if peak:
        if 1 in eager_gemm:
            print(f"\nnative eager torch.mm 512^3 (1 thread): {eager_gemm[1]:.1f} GFLOP/s = "
                  f"{eager_gemm[1] / peak:.1f}x the wasm SIMD128 peak: the floor of wasm/eager for a "
                  "GEMM-bound model on this CPU")
        kernel_tables(kernels, peak, kernel_peak if kernel_peak != peak else None)
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
        prep, lengths, first, planning, planning_max, length_one = dynamic
        print(f"\nBERT-style encoder (256 x 4 layers), dynamic=True, lengths {lengths}, each from the plan "
              "template (no lowering, no Dynamo recompile): "
              + (f"making and loading the plan {planning * 1e3:.2f} ms per new length (median), "
                 f"{planning_max * 1e3:.2f} ms at most; " if planning is not None else "")
              + f"first call minus steady call {prep * 1e3:.1f} ms (median)"
              + (f"; the first length, which also checks the template against a full lowering: "
                 f"{first * 1e3:.1f} ms" if first is not None else "")
              + (f"; length 1, which Dynamo specializes (one recompile): {length_one * 1e3:.0f} ms"
                 if length_one is not None else ""))
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
        # the "Web runtimes" section comes from another run (make bench-web) and is kept as it is
        old = (ROOT / "BENCHMARKS.md").read_text() if (ROOT / "BENCHMARKS.md").exists() else ""
        web = old[old.index(WEB_SECTION):] if WEB_SECTION in old else ""
        (ROOT / "BENCHMARKS.md").write_text(
            "# Benchmarks\n\nGenerated by `make bench` (benchmarks/report.py) from one run of the "
            "pytest-benchmark suites in `benchmarks/`; ratios compare numbers measured in that same run.\n\n"
            + text + "\n![wasm/eager per model, GEMM % of peak](benchmarks/chart.png)\n" + (f"\n{web}" if web else ""))
        sys.stdout.write(text)
    else:
        main(json_path)
