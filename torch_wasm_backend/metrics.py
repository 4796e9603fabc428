"""Process-wide metrics: what was compiled, what ran where, how long, how many bytes moved."""
from __future__ import annotations

import copy
import threading
from collections import Counter

_lock = threading.Lock()


def _fresh() -> dict:
    return {
        "graphs_compiled": 0,
        "partitions": 0,
        "aten_nodes_total": 0,
        "aten_nodes_lowered": 0,
        "lowered_by_op": Counter(),
        "plan_kernels": Counter(),     # kernel records in the plans built (after fusion/folding)
        "fallback_nodes": [],          # {"graph", "node", "op", "reason"}
        "fallback_by_op": Counter(),
        "calls": 0,                    # partition calls that ran in wasm
        "eager_partition_calls": 0,    # partition calls that ran in eager (signature or failures)
        "seconds_in_wasm": 0.0,
        "seconds_host": 0.0,           # guards, plan lookup (planning on a miss), copies in and out
        "seconds_planning": 0.0,       # making plans for new input signatures and loading them
        "bytes_copied_in": 0,
        "bytes_copied_out": 0,
        "constant_bytes_uploaded": 0,
        "plan_cache_hits": 0,
        "plan_cache_misses": 0,
        "plans_lowered": 0,            # plans made by lowering the partition's graph
        "plans_from_template": 0,      # plans of a dynamic-shape graph rebuilt from its template
        "recoveries": 0,
        "timeouts": 0,
        "input_errors": 0,             # calls whose inputs a kernel rejected (eager raised its error)
        "verify_passes": 0,
        "verify_mismatches": 0,
        "traps": [],                   # messages of traps caught
    }


_stats = _fresh()


def stats() -> dict:
    """A snapshot of the metrics (a plain dict; Counters are dicts)."""
    with _lock:
        snap = copy.deepcopy(_stats)
    snap["lowered_by_op"] = dict(snap["lowered_by_op"])
    snap["fallback_by_op"] = dict(snap["fallback_by_op"])
    snap["plan_kernels"] = dict(snap["plan_kernels"])
    total = snap["aten_nodes_total"]
    snap["lowered_fraction"] = snap["aten_nodes_lowered"] / total if total else 0.0
    return snap


def reset_stats() -> None:
    global _stats
    with _lock:
        _stats = _fresh()


def add(**deltas) -> None:
    with _lock:
        for k, v in deltas.items():
            _stats[k] += v


def record_call(seconds_in_wasm: float, seconds_host: float, bytes_in: int, bytes_out: int,
                plan_cache_hit: bool) -> None:
    """One partition call that ran in wasm (called on every call: positional, no keyword dict)."""
    with _lock:
        s = _stats
        s["calls"] += 1
        s["plan_cache_hits" if plan_cache_hit else "plan_cache_misses"] += 1
        s["seconds_in_wasm"] += seconds_in_wasm
        s["seconds_host"] += seconds_host
        s["bytes_copied_in"] += bytes_in
        s["bytes_copied_out"] += bytes_out


def record_graph(graph: str, total: int, lowered_ops: Counter, fallback: dict, partitions: int) -> None:
    with _lock:
        _stats["graphs_compiled"] += 1
        _stats["partitions"] += partitions
        _stats["aten_nodes_total"] += total
        _stats["aten_nodes_lowered"] += sum(lowered_ops.values())
        _stats["lowered_by_op"].update(lowered_ops)
        for node, (op, reason) in fallback.items():
            _stats["fallback_nodes"].append({"graph": graph, "node": node, "op": op, "reason": reason})
            _stats["fallback_by_op"][op] += 1


def record_fallback(graph: str, node: str, op: str, reason: str) -> None:
    with _lock:
        _stats["fallback_nodes"].append({"graph": graph, "node": node, "op": op, "reason": reason})


def record_plan(kernels) -> None:
    with _lock:
        _stats["plan_kernels"].update(kernels)


def record_trap(message: str) -> None:
    with _lock:
        _stats["recoveries"] += 1
        _stats["traps"].append(message)
