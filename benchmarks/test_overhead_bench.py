"""Fixed cost of one compiled-graph call: a tiny graph (x + 1 on 4 floats) and the batch-1 MLP of
model_zoo, under torch.no_grad(), 1 thread. Engines, in one run: eager (the plain function or
module), dynamo_eager (torch.compile with backend="eager": Dynamo's own guards, frame and call,
running the graph in eager) and wasm. wasm minus dynamo_eager is what this backend adds over
Dynamo; the wasm rows also record, from stats(), the mean time per call inside wasm and in the
partition runner's host code (guards, copies in and out)."""
import pytest
import torch

import torch_wasm_backend as twb
from model_zoo import small_mlp


def _add_one(x):
    return x + 1


GRAPHS = {"add_4": (lambda: _add_one, (4,)), "mlp_batch1": (lambda: small_mlp().eval(), (1, 64))}


@pytest.mark.parametrize("graph", list(GRAPHS))
@pytest.mark.parametrize("engine", ["eager", "dynamo_eager", "wasm"])
def test_call_overhead(benchmark, engine, graph):
    factory, shape = GRAPHS[graph]
    torch.manual_seed(0)
    fn, x = factory(), torch.randn(shape)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if engine == "dynamo_eager":
            fn = torch.compile(fn, backend="eager")
        elif engine == "wasm":
            fn = torch.compile(fn, backend="wasm", options={"threads": 1})
        with torch.no_grad():
            fn(x)  # compile (not measured)
            twb.reset_stats()
            benchmark.group = f"call overhead: {graph}"
            benchmark(fn, x)
            s = twb.stats()
    finally:
        torch.set_num_threads(old)
    benchmark.extra_info.update(kind="overhead", graph=graph, engine=engine)
    if engine == "wasm":
        assert s["calls"] > 0 and s["eager_partition_calls"] == 0
        benchmark.extra_info.update(wasm_seconds_per_call=s["seconds_in_wasm"] / s["calls"],
                                    host_seconds_per_call=s["seconds_host"] / s["calls"])
