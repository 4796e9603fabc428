"""python3 run.py ROUNDS a.wasm b.wasm ...: run.mjs's measurement in wasmtime (one process, files
alternating round by round, fastest round per shape, GFLOP/s; the broadcast switch stays at its default)."""
import json
import sys
import time
from pathlib import Path

import wasmtime

rounds, files = int(sys.argv[1]), sys.argv[2:]
engine = wasmtime.Engine(wasmtime.Config())
inst = []
for spec in files:
    f, *modes = spec.split(":")  # ":m1": bench.cpp's set_mode, as in run.mjs
    store = wasmtime.Store(engine)
    module = wasmtime.Module.from_file(engine, f)
    # emscripten's standalone WASI imports; never called by the benchmark
    stubs = [wasmtime.Func(store, imp.type, lambda *a, n=len(imp.type.results): 0 if n else None)
             for imp in module.imports]
    ex = wasmtime.Instance(store, module, stubs).exports(store)
    for m in modes:
        if m.startswith("m"):
            ex["set_mode"](store, int(m[1:]))
    inst.append((store, ex))


def peak(store, ex):
    t = time.perf_counter()
    flops = ex["peak_flops_chains"](store, 2000000)
    return flops / (time.perf_counter() - t) / 1e9


peak(*inst[0])
print("peak_flops_chains GFLOP/s %.1f" % max(peak(*inst[0]) for _ in range(5)))
for m, n, k in json.loads((Path(__file__).parent / "shapes.json").read_text()):
    flops = 2 * m * n * k
    reps = max(1, round(1e7 / flops))
    for store, ex in inst:
        ex["setup"](store, m, n, k)
        ex["run"](store, reps, 2)
    ts = [[] for _ in inst]
    for _ in range(rounds):
        for j, (store, ex) in enumerate(inst):
            t = time.perf_counter()
            ex["run"](store, reps, 2)
            ts[j].append(time.perf_counter() - t)
    print(f"{m}x{n}x{k}".ljust(16), "  ".join("%.1f" % (flops * reps / min(x) / 1e9) for x in ts))
