"""Dynamic shapes: a BERT-style encoder (hidden 256, 4 layers) compiled once with dynamic=True and
fed every sequence length from 2 to 256. Two measures of what a new length costs: the time the
partition spent making and loading its plan (stats()["seconds_planning"], per length: median and
maximum), and the first call at that length minus the steady-state call that follows (median:
this one also holds the first call's cold caches and the run-to-run noise). Making a plan = checking
the plan template's guards, rebuilding the plan from it and planning memory (lowering/template.py):
the benchmark asserts that no length was lowered and that Dynamo did not recompile. Length 1 comes last and is timed on its own: Dynamo specializes sizes 0 and 1, so it is
one recompile (Dynamo's rule, not ours), which the benchmark asserts too."""
import statistics
import time

import torch
import torch.nn as nn

import torch_wasm_backend as twb

LENGTHS = list(range(2, 257))


def test_new_sequence_length(benchmark):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True, activation="gelu")
    model = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False).eval()
    compiled = torch.compile(model, backend="wasm", options={"threads": 1}, dynamic=True)
    lengths = iter(LENGTHS)
    steady, prep, planning = [], [], []
    with torch.no_grad():
        compiled(torch.randn(1, 300, 256))  # compile and make the plan template (not measured)
        before = twb.stats()

        def new_length():
            return (torch.randn(1, next(lengths), 256),), {}

        def first_call(x):
            planning_before = twb.stats()["seconds_planning"]
            t0 = time.perf_counter()
            compiled(x)
            t1 = time.perf_counter()
            planning.append(twb.stats()["seconds_planning"] - planning_before)
            compiled(x)
            t2 = time.perf_counter()
            steady.append(t2 - t1)
            prep.append((t1 - t0) - (t2 - t1))

        benchmark.group = "dynamic shapes"
        benchmark.pedantic(first_call, setup=new_length, rounds=len(LENGTHS), iterations=1)
        after = twb.stats()
        x = torch.randn(1, 1, 256)
        t0 = time.perf_counter()
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
        length_one = time.perf_counter() - t0
    assert after["graphs_compiled"] == before["graphs_compiled"], "Dynamo recompiled for a new length"
    assert after["plans_lowered"] == before["plans_lowered"], "a new length was lowered, not templated"
    assert after["plans_from_template"] - before["plans_from_template"] == len(LENGTHS)
    assert twb.stats()["graphs_compiled"] == after["graphs_compiled"] + 1  # length 1: Dynamo's own
    # The first length also checks the template against one full lowering (once per template).
    benchmark.extra_info.update(kind="dynamic", steady_median=statistics.median(steady),
                                prep_median=statistics.median(prep), prep_first=prep[0],
                                planning_median=statistics.median(planning[1:]),
                                planning_max=max(planning[1:]), length_one=length_one,
                                lengths=f"{LENGTHS[0]}..{LENGTHS[-1]}")
