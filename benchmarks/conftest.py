"""Benchmarks run with torch and wasm on the same thread count, in one process, so ratios compare
like with like on this shared, noisy machine."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # model_zoo
