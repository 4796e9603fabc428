"""Benchmarks run with torch and wasm on the same thread count, in one process, so ratios compare
like with like on this shared, noisy machine."""
