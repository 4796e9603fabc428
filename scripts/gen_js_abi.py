"""Writes torch_wasm_backend/js/abi_generated.mjs: the parts of kernels_cpp/kernel_abi.def the JS
loader needs (run_plan's error codes, the functions a kernel module exports, the op names that
Model.profile() reports), as a module. A browser cannot read the .def at run time, so the generated
file is committed; `make kernels` runs this script (python3 scripts/gen_js_abi.py),
and tests/kernels/test_abi_generated.py fails when the committed file is stale.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "torch_wasm_backend" / "js" / "abi_generated.mjs"


def _kernel_abi():
    """lowering/abi.py's ABI, loaded on its own: importing the package would import torch (seconds)."""
    spec = importlib.util.spec_from_file_location("_twb_kernel_abi", REPO / "lowering" / "abi.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up while the file runs)
    spec.loader.exec_module(module)
    return module.ABI


def render() -> str:
    abi = _kernel_abi()
    exports = ", ".join(f"{name}: {len(params)}" for name, (params, _) in abi.kernel_exports.items())
    names = ", ".join(f"{json.dumps(str(op.code))}: {json.dumps(name)}" for name, op in abi.ops.items())
    messages = ", ".join(f"{json.dumps(str(code))}: {json.dumps(text)}" for code, text in abi.run_error_message.items())
    return (
        "// Generated from kernels_cpp/kernel_abi.def by scripts/gen_js_abi.py (`make kernels`): do not edit.\n"
        "\n"
        "/** run_plan's error codes (RUN_ERROR in kernel_abi.def) -> what went wrong. */\n"
        f"export const RUN_PLAN_ERRORS = Object.freeze({{ {messages} }});\n"
        "/** run_plan's code for inputs a kernel rejected (an index out of range): the model stays usable. */\n"
        f"export const INPUT_ERROR = {abi.run_error['INPUT']};\n"
        "/** The functions a kernel module exports for its host (KERNEL_EXPORT), with their numbers of i32 parameters. */\n"
        f"export const KERNEL_EXPORTS = Object.freeze({{ {exports} }});\n"
        "/** Plan op codes (OP) -> kernel names: Model.profile() names each timed record by its kernel. */\n"
        f"export const OP_NAMES = Object.freeze({{ {names} }});\n")


if __name__ == "__main__":
    OUT.write_text(render())
