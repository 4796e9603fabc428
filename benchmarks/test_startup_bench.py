"""Cold vs warm start of a new process: time from `import torch_wasm_backend` to a ready runtime
(kernel module compiled by Cranelift, or loaded from the on-disk compile cache)."""
import json
import os
import subprocess
import sys

import pytest

_START = """
import json, time
t0 = time.perf_counter()
from torch_wasm_backend import runtime
runtime.get_runtime(1)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def _start(cache_dir) -> float:
    env = {**os.environ, "TORCH_WASM_BACKEND_CACHE_DIR": str(cache_dir)}
    out = subprocess.run([sys.executable, "-c", _START], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_new_process_start(benchmark, cache, tmp_path):
    if cache == "warm":
        _start(tmp_path)  # fill the cache
        run = lambda: _start(tmp_path)
    else:
        run = lambda: _start("off")
    benchmark.group = "process start"
    benchmark.extra_info.update(kind="startup", cache=cache)
    seconds = benchmark.pedantic(run, rounds=3, iterations=1)
    assert seconds > 0
