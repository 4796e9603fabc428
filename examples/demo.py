"""Demo: compile a small CNN and an MLP with backend="wasm", compare with eager, time both, and
print what ran where."""
import json
import statistics
import time

import torch
import torch.nn as nn

import torch_wasm_backend as twb


def median_ms(fn, x, repeat=30):
    fn(x)  # warm up (compiles on the first call)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    torch.manual_seed(0)
    models = {
        "cnn": (nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval(), torch.randn(4, 3, 32, 32)),
        "mlp": (nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(),
                              nn.Linear(256, 10)).eval(), torch.randn(16, 128)),
    }
    for name, (model, x) in models.items():
        twb.reset_stats()
        compiled = torch.compile(model, backend="wasm")
        with torch.inference_mode():
            diff = (compiled(x) - model(x)).abs().max().item()
            eager_ms = median_ms(model, x)
            wasm_ms = median_ms(compiled, x)
        s = twb.stats()
        print(f"== {name}: max |wasm - eager| = {diff:.3g}")
        print(f"   eager {eager_ms:.3f} ms, wasm {wasm_ms:.3f} ms (median of 30, torch threads = "
              f"{torch.get_num_threads()})")
        print(f"   ATen nodes in wasm: {s['aten_nodes_lowered']}/{s['aten_nodes_total']}, "
              f"fallback nodes: {len(s['fallback_nodes'])}")
        print("   stats:", json.dumps({k: s[k] for k in ("partitions", "lowered_by_op", "calls",
              "seconds_in_wasm", "seconds_host", "bytes_copied_in", "bytes_copied_out",
              "plan_cache_hits", "plan_cache_misses", "recoveries")}, default=str))


if __name__ == "__main__":
    main()
