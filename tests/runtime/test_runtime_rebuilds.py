"""A runtime rebuilt after a trap or a time limit is invisible to every other call: many threads
calling several models while another thread keeps making one model trap and another time out get
only right answers and no exceptions, and only the trapping partition is charged. Also: a worker
kept busy by back-to-back calls is never interrupted by its own deadline (it used to be, after
time limit + 100 ms: a spurious trap or WasmTimeout on an ordinary call)."""
from __future__ import annotations

import gc
import random
import threading
import time

import pytest
import torch
from torch import nn

import torch_wasm_backend as twb
from torch_wasm_backend import runtime
from torch_wasm_backend.testing import inject_stalls, inject_traps

from helpers import MATMUL

CALLERS = 12
MIN_CALLS = 20_000
TIME_CAP = 120.0       # seconds: the test fails (too few calls) rather than run longer
TRAP_EVERY = 0.003     # seconds between the trapping thread's faults
STALL_EVERY = 25       # ... every STALL_EVERY-th fault is a stall that hits the time limit


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 33), nn.Linear(33, 7)

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x):
        return self.conv(x).relu().mean((2, 3))


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 4)

    def forward(self, ids):
        return self.proj(self.emb(ids))


class Trap(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(7, 5)

    def forward(self, x):
        return self.fc(x).tanh()


class Stall(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x).relu()


def _models():
    """(name, eager model, options, inputs): the callers' models on both runtime kinds (untimed,
    and timed: the one the stalls retire), then the one made to trap and the one made to stall.
    One class each: a Dynamo frame per model, no guards shared between them. max_failures: a
    partition charged for another's trap would stay in wasm (and keep being checked)."""
    never = 10**9
    return [
        ("mlp", Mlp().eval(), {"threads": 2, "max_failures": never}, [torch.randn(3, 16) for _ in range(4)]),
        ("cnn", Cnn().eval(), {"threads": 2, "timeout_ms": 10_000, "max_failures": never},
         [torch.randn(2, 3, 9, 9) for _ in range(4)]),
        ("emb", Embed().eval(), {"threads": 2, "max_failures": never}, [torch.randint(0, 50, (2, 5)) for _ in range(4)]),
        ("trap", Trap().eval(), {"threads": 2, "max_failures": never}, [torch.randn(5, 7)]),
        ("stall", Stall().eval(), {"threads": 2, "timeout_ms": 50}, [torch.randn(3, 3)]),
    ]


def test_threads_never_see_another_models_trap_or_timeout(partitions):
    models, eager = {}, {}
    with torch.no_grad():
        for name, model, options, inputs in _models():
            compiled = torch.compile(model, backend="wasm", options=options)
            expected = [model(x) for x in inputs]  # eager, computed before any thread starts
            for x, want in zip(inputs, expected):  # compile (one signature per model) and check
                torch.testing.assert_close(compiled(x), want, **MATMUL)
            models[name], eager[name] = (compiled, inputs, expected), model
        bad_ids = torch.tensor([[1, 2, 50, 3, 4], [0, -1, 0, 0, 0]])  # out of range: eager raises
        with pytest.raises(IndexError) as eager_error:
            eager["emb"](bad_ids)
    twb.reset_stats()
    first_generation = runtime._generation

    stop = threading.Event()
    lock = threading.Lock()
    counts = {"calls": 0, "wrong": 0, "bad_input": 0, "traps": 0, "timeouts": 0}
    errors: list[str] = []
    wrong: list[str] = []

    def caller(seed: int):
        rng = random.Random(seed)
        names = ["mlp", "cnn", "emb"]
        calls = bad = 0
        try:
            with torch.no_grad():
                while not stop.is_set():
                    if rng.random() < 0.01:
                        try:
                            models["emb"][0](bad_ids)
                            errors.append("bad ids gave a result")
                        except IndexError as e:
                            if str(e) != str(eager_error.value):
                                errors.append(f"bad ids: {type(e).__name__}: {e}")
                        bad += 1
                        continue
                    name = names[rng.randrange(3)]
                    compiled, inputs, expected = models[name]
                    i = rng.randrange(len(inputs))
                    got = compiled(inputs[i])
                    if not torch.allclose(got, expected[i], **MATMUL):
                        with lock:
                            wrong.append(f"{name}[{i}]: max |diff| {(got - expected[i]).abs().max():.3g}")
                    calls += 1
        except Exception as e:  # noqa: BLE001 - every exception is a failure to report
            errors.append(f"{type(e).__name__}: {e}")
        with lock:
            counts["calls"] += calls
            counts["bad_input"] += bad

    def faulter():
        trap, trap_in, trap_want = models["trap"]
        stall, stall_in, _ = models["stall"]
        n = 0
        try:
            with torch.no_grad():
                while not stop.is_set():
                    n += 1
                    if n % STALL_EVERY == 0:
                        with inject_stalls(1), pytest.raises(twb.WasmTimeout):
                            stall(stall_in[0])
                        counts["timeouts"] += 1
                    else:
                        with inject_traps(1):
                            got = trap(trap_in[0])  # the eager result, after a real trap in wasm
                        if not torch.allclose(got, trap_want[0], **MATMUL):
                            wrong.append("the trapping model's eager result")
                        counts["traps"] += 1
                    time.sleep(TRAP_EVERY)
        except BaseException as e:  # noqa: BLE001 - pytest's Failed too
            errors.append(f"faulter: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(CALLERS)]
    threads.append(threading.Thread(target=faulter, daemon=True))
    start = time.monotonic()
    for t in threads:
        t.start()
    while time.monotonic() - start < TIME_CAP and not errors:
        time.sleep(0.5)
        s = twb.stats()
        if s["calls"] - counts["traps"] >= MIN_CALLS and counts["timeouts"] >= 5:
            break
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    elapsed = time.monotonic() - start

    s = twb.stats()
    summary = (f"{counts['calls']} calls checked against eager, {counts['bad_input']} bad-input calls, "
               f"{counts['traps']} traps, {counts['timeouts']} timeouts in {elapsed:.1f} s")
    print(summary)
    assert errors == [], f"{summary}; exceptions: {errors[:5]}"
    assert wrong == [], f"{summary}; {len(wrong)} wrong outputs: {wrong[:5]}"
    assert counts["calls"] >= MIN_CALLS, summary
    assert counts["traps"] >= 100 and counts["timeouts"] >= 5, summary
    # Nothing innocent ran in eager: only the bad inputs did (eager raising its IndexError; a
    # trapped call's eager answer is counted under traps); every checked call ran in wasm.
    assert s["eager_partition_calls"] == counts["bad_input"], (summary, s["eager_partition_calls"])
    assert s["calls"] == counts["calls"], (summary, s["calls"])
    assert s["timeouts"] == counts["timeouts"]
    # Only the trapping partition was charged, once per trap.
    charged = [p for p in partitions if p.failures]
    assert len(charged) == 1 and charged[0].failures == counts["traps"], [p.failures for p in partitions]
    assert all(p.disabled_reason is None for p in partitions)
    assert len(s["traps"]) == counts["traps"] and all("(5, 7)" in m for m in s["traps"])
    # Retired runtimes go away: their workers end (a stalled one at its next check) and nothing
    # keeps them alive; only the two current ones (untimed, timed) remain of those made here.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        workers = [t for t in threading.enumerate() if t.name.startswith("wasm-worker")]
        if len(workers) <= 2:
            break
        time.sleep(0.1)
    assert len(workers) <= 2, f"{len(workers)} wasm worker threads still running"
    gc.collect()
    made_here = [o for o in gc.get_objects() if type(o) is runtime.Runtime and o.generation > first_generation]
    assert len(made_here) <= 2 and not any(r.broken for r in made_here), \
        f"{len(made_here)} of {runtime._generation - first_generation} runtimes made in the test are alive"


def test_busy_worker_is_not_interrupted_by_its_own_deadline():
    """threads=2 with a 300 ms limit: back-to-back calls keep the worker in wasm for 2 s. Its
    deadline used to be re-armed only when it idled 100 ms, so it trapped after ~400 ms and the
    runtime was thrown away (a spurious trap, or a WasmTimeout when the main thread then waited for
    the dead worker). Now it runs on: same runtime, every call in wasm."""
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256)).eval()
    compiled = torch.compile(model, backend="wasm", options={"threads": 2, "timeout_ms": 300})
    x = torch.randn(32, 256)  # big enough for the GEMMs to use both threads
    want = model(x).detach()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), want, **MATMUL)
        rt, _ = runtime.get_runtime(2, True)
        time.sleep(0.3)  # the worker idles (the old code armed its deadline here)
        n, start = 0, time.monotonic()
        while time.monotonic() - start < 2.0:
            torch.testing.assert_close(compiled(x), want, **MATMUL)
            n += 1
    s = twb.stats()
    assert s["traps"] == [] and s["timeouts"] == 0 and s["eager_partition_calls"] == 0
    assert s["calls"] == n + 1
    assert runtime.get_runtime(2, True)[0] is rt and not rt.broken
