"""Whole models, eager vs wasm, 1 and 2 threads, in one run (benchmarks/model_zoo.py)."""
import pytest
import torch

import torch_wasm_backend as twb
from model_zoo import MODELS, calibrate_batch_norm

ROUNDS = {"resnet18_224": 5, "mobilenet_v2_224": 5, "bert_256x4_seq128": 10}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("engine", ["eager", "wasm"])
def test_model(benchmark, engine, name, threads):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    model, x = calibrate_batch_norm(factory(), shape), torch.randn(shape)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fn = model if engine == "eager" else torch.compile(model, backend="wasm", options={"threads": threads})
        with torch.inference_mode():
            expected = model(x)
            torch.testing.assert_close(fn(x), expected, rtol=1e-3, atol=1e-3)
            benchmark.group = f"{name} threads={threads}"
            benchmark.extra_info.update(kind="model", model=name, engine=engine, threads=threads)
            if name in ROUNDS:
                benchmark.pedantic(fn, args=(x,), rounds=ROUNDS[name], iterations=1, warmup_rounds=1)
            else:
                benchmark(fn, x)
        if engine == "wasm":  # the timed calls really ran in wasm (not a silent eager fallback)
            s = twb.stats()
            assert s["calls"] > 0 and s["eager_partition_calls"] == 0 and s["lowered_fraction"] == 1.0, s
    finally:
        torch.set_num_threads(old)
