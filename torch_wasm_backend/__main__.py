"""Command line.

    python -m torch_wasm_backend ops                      # table of ATen ops that run in wasm (docs/ops.md)
    python -m torch_wasm_backend explain module:factory   # what of a model runs in wasm, what in eager, why
    python -m torch_wasm_backend info model.wasm          # an exported model: inputs, outputs, sizes, ops
    python -m torch_wasm_backend run model.wasm --input x.npy --output y.npy
    python -m torch_wasm_backend serve examples/browser  # localhost server with COOP/COEP + the JS loader
"""
import argparse
import importlib
import json
import os
import sys
import threading



def ops_table() -> str:
    from torch_wasm_backend.lowering import ops  # noqa: F401  (fills the registry; imported here: `info` needs no torch)
    from torch_wasm_backend.lowering.registry import REGISTRY
    ops.register_int8()  # (registered on first need: see lowering/ops/quant.py)
    lines = ["# ATen ops that run in wasm", "",
             "Generated from `lowering/registry.py` by `python -m torch_wasm_backend ops`. float32 "
             "unless noted; every node that is not listed, or fails its check, runs in eager with "
             "a reason in `torch_wasm_backend.stats()['fallback_nodes']`.", "",
             "| ATen op | how | kernels |", "|---|---|---|"]
    for entry in sorted(REGISTRY.values(), key=lambda e: e.name):
        how = entry.notes or ("decomposed" if entry.decompose else "lowered")
        lines.append(f"| `{entry.name}` | {how} | {', '.join(entry.kernels) or '-'} |")
    return "\n".join(lines) + "\n"


def load_factory(spec: str):
    """'package.module:factory' -> (model, example_args) from calling factory()."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"expected module:factory (e.g. mymodels:resnet), got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attr, None)
    if factory is None:
        raise SystemExit(f"module {module_name!r} has no attribute {attr!r}")
    built = factory()
    if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[1], (tuple, list))):
        raise SystemExit(f"{spec}() must return (model, example_args) with example_args a tuple, "
                         f"got {type(built).__name__}")
    return built[0], tuple(built[1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_wasm_backend")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ops", help="print the table of ATen ops that run in wasm (markdown)")
    explain_cmd = sub.add_parser("explain", help="what of a model runs in wasm, what in eager and why")
    explain_cmd.add_argument("factory", help="module:factory; factory() returns (model, example_args)")
    explain_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    explain_cmd.add_argument("--options", type=json.loads, default=None, metavar="JSON",
                             help='backend options, e.g. \'{"min_partition_size": 2}\'')
    info = sub.add_parser("info", help="describe an exported .wasm (read without running it)")
    info.add_argument("model")
    run = sub.add_parser("run", help="run an exported .wasm on .npy inputs (wasmtime)")
    run.add_argument("model")
    run.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE.npy",
                     help="one per model input, in order or as name=file.npy")
    run.add_argument("--output", action="append", default=[], metavar="[NAME=]FILE.npy",
                     help="where to save outputs (in order or name=file.npy); default: print a summary")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--timeout-ms", type=float, default=10_000,
                     help="time limit for loading and for the run (default 10000; 0: none)")
    serve = sub.add_parser("serve", help="serve a folder on localhost with COOP/COEP headers and the JS "
                                         "loader at /torch_wasm_backend/js/ (for trying models in a browser)")
    serve.add_argument("directory", help="the folder to serve (only files inside it, no dotfiles, no listings)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-isolation", action="store_true", help="omit COOP/COEP (the loader then runs 1 thread)")
    args = parser.parse_args(argv)
    if args.command == "ops":
        sys.stdout.write(ops_table())
        return 0
    if args.command == "explain":
        from .explain_report import explain
        sys.path.insert(0, "")   # the factory's module may live in the current directory
        model, example_args = load_factory(args.factory)
        report = explain(model, *example_args, options=args.options)
        sys.stdout.write((report.to_json() if args.json else str(report)) + "\n")
        return 0
    if args.command == "serve":
        from .dev_server import serve as serve_directory
        try:
            serve_directory(args.directory, args.port, not args.no_isolation)
        except OSError as e:   # not a folder, port in use
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    from .cli_export import info_text, run_model
    if args.command == "info":
        return _interruptible(lambda: info_text(args.model))
    return _interruptible(lambda: run_model(args.model, args.input, args.output, args.threads,
                                            args.timeout_ms or None))


def _interruptible(work) -> int:
    """Runs work() (-> text for stdout) in a thread so that Ctrl-C ends the command at once even
    while wasm runs (Python handles signals only between bytecodes of the main thread). Errors are
    one line on stderr, exit code 1; Ctrl-C exits with 130."""
    from .errors import WasmBackendError
    result: dict = {}

    def target():
        try:
            result["text"] = work()
        except (WasmBackendError, OSError, ValueError) as e:
            result["error"] = str(e).replace("\n", " ")
        except Exception as e:  # a bug, not the file: still one line, never a traceback
            result["error"] = f"internal error ({type(e).__name__}: {e}); please report it"

    thread = threading.Thread(target=target, name="twb-cli", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        os._exit(130)  # the worker may be inside wasm: do not wait for it
    if "error" in result:
        print(f"error: {result['error']}", file=sys.stderr)
        return 1
    sys.stdout.write(result["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
