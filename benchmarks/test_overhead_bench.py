"""Fixed cost of one compiled-graph call: a tiny graph (x + 1 on 4 floats) and the batch-1 MLP of
model_zoo, under torch.no_grad(), 1 thread. Engines, in one run: eager (the plain function or
module), dynamo_eager (torch.compile with backend="eager": Dynamo's own guards, frame and call,
running the graph in eager) and wasm. wasm minus dynamo_eager is what this backend adds over
Dynamo; the wasm rows also record, from stats(), the time per call inside wasm and in the partition
runner's host code (guards, copies in and out): the median over batches of calls of each batch's
mean, so that a few preempted calls on this shared machine do not dominate."""
import statistics

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
            benchmark.group = f"call overhead: {graph}"
            benchmark(fn, x)
            if engine == "wasm":
                benchmark.extra_info.update(_split_per_call(fn, x))
    finally:
        torch.set_num_threads(old)
    benchmark.extra_info.update(kind="overhead", graph=graph, engine=engine)


def _split_per_call(fn, x, batches: int = 21, calls: int = 200) -> dict:
    wasm, host = [], []
    for _ in range(batches):
        twb.reset_stats()
        for _ in range(calls):
            fn(x)
        s = twb.stats()
        assert s["calls"] == calls and s["eager_partition_calls"] == 0
        wasm.append(s["seconds_in_wasm"] / calls)
        host.append(s["seconds_host"] / calls)
    return dict(wasm_seconds_per_call=statistics.median(wasm),
                host_seconds_per_call=statistics.median(host))
