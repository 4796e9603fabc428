"""Command line: `python -m torch_wasm_backend ops` prints the table of ATen ops that run in wasm,
generated from the op registry (docs/ops.md is this output)."""
import argparse
import sys

from lowering import ops  # noqa: F401  (fills the registry)
from lowering.registry import REGISTRY


def ops_table() -> str:
    lines = ["# ATen ops that run in wasm", "",
             "Generated from `lowering/registry.py` by `python -m torch_wasm_backend ops`. float32 "
             "unless noted; every node that is not listed, or fails its check, runs in eager with "
             "a reason in `torch_wasm_backend.stats()['fallback_nodes']`.", "",
             "| ATen op | how | kernels |", "|---|---|---|"]
    for entry in sorted(REGISTRY.values(), key=lambda e: e.name):
        how = entry.notes or ("decomposed" if entry.decompose else "lowered")
        lines.append(f"| `{entry.name}` | {how} | {', '.join(entry.kernels) or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_wasm_backend")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ops", help="print the table of ATen ops that run in wasm (markdown)")
    args = parser.parse_args(argv)
    if args.command == "ops":
        sys.stdout.write(ops_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
