"""Dynamic shapes: a BERT-style encoder (hidden 256, 4 layers) compiled once with dynamic=True and
fed new sequence lengths. Each round's first call at a new length = planning + one run; minus the
steady-state call that follows at that same length, it gives that length's preparation cost, whose
median over the lengths the report shows. Planning a new length = checking the plan template's
guards, rebuilding the plan from it and planning memory (lowering/template.py): the benchmark
asserts that no length was lowered. (Dynamo specializes sizes 0 and 1, so lengths start at 2.)"""
import itertools
import statistics
import time

import torch
import torch.nn as nn

import torch_wasm_backend as twb

LENGTHS = list(range(2, 257, 9))


def test_new_sequence_length(benchmark):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True, activation="gelu")
    model = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False).eval()
    compiled = torch.compile(model, backend="wasm", options={"threads": 1}, dynamic=True)
    lengths = iter(LENGTHS)
    steady, prep = [], []
    with torch.no_grad():
        compiled(torch.randn(1, 300, 256))  # compile and make the plan template (not measured)
        before = twb.stats()

        def new_length():
            return (torch.randn(1, next(lengths), 256),), {}

        def first_call(x):
            t0 = time.perf_counter()
            compiled(x)
            t1 = time.perf_counter()
            compiled(x)
            t2 = time.perf_counter()
            steady.append(t2 - t1)
            prep.append((t1 - t0) - (t2 - t1))

        benchmark.group = "dynamic shapes"
        benchmark.pedantic(first_call, setup=new_length, rounds=len(LENGTHS), iterations=1)
    after = twb.stats()
    assert after["graphs_compiled"] == before["graphs_compiled"], "Dynamo recompiled for a new length"
    assert after["plans_lowered"] == before["plans_lowered"], "a new length was lowered, not templated"
    assert after["plans_from_template"] - before["plans_from_template"] == len(LENGTHS)
    # The first length also checks the template against one full lowering (once per template).
    benchmark.extra_info.update(kind="dynamic", steady_median=statistics.median(steady),
                                prep_median=statistics.median(prep), prep_first=prep[0],
                                lengths=f"{LENGTHS[0]}..{LENGTHS[-1]} step 9")
