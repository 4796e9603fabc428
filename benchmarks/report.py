"""Reads a pytest-benchmark JSON file and prints the ratios that matter, measured in that one run:
wasm time / eager time per model and thread count, and GEMM GFLOP/s as a fraction of the peak loop.

    python benchmarks/report.py .benchmarks/core.json
"""
import json
import platform
import sys


def main(path: str) -> None:
    data = json.load(open(path))
    rows = {}
    peak = None
    gemm = []
    dynamic = None
    startup = {}
    for b in data["benchmarks"]:
        info, median = b["extra_info"], b["stats"]["median"]
        if info.get("kind") == "model":
            rows.setdefault((info["model"], info["threads"]), {})[info["engine"]] = median
        elif info.get("kind") == "peak":
            peak = info["flops"] / median / 1e9
        elif info.get("kind") == "gemm":
            gemm.append((info["threads"], info["flops"] / median / 1e9))
        elif info.get("kind") == "startup":
            startup[info["cache"]] = median
        elif info.get("kind") == "dynamic":
            # first call at a new length (plan + run + steady run) minus two steady runs
            dynamic = (median - 2 * info["steady_median"], info["lengths"])
    cpu = data.get("machine_info", {}).get("cpu", {}).get("brand_raw", platform.processor())
    print(f"machine: {cpu}; date: {data.get('datetime', '?')}")
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


    if len(startup) == 2:
        print(f"\nnew process to a ready runtime (incl. Python imports): cold {startup['cold']:.2f} s, "
              f"warm compile cache {startup['warm']:.2f} s")
    if dynamic:
        print(f"\nBERT-style encoder (256 x 4 layers), dynamic=True, lengths {dynamic[1]}: "
              f"{dynamic[0] * 1e3:.1f} ms to prepare each new length (median)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".benchmarks/core.json")
