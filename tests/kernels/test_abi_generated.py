"""run_plan's error codes are declared once (RUN_ERROR in kernels_cpp/kernel_abi.def): the C++
executor returns them, Python decodes them (lowering/abi.py parses the .def) and the JS loader reads
them from a generated module, which must be up to date."""
import importlib.util
from pathlib import Path

import pytest

from torch_wasm_backend.errors import WasmTrap
from torch_wasm_backend.lowering.abi import ABI
from torch_wasm_backend.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]


def test_js_abi_module_is_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_js_abi", REPO / "scripts" / "gen_js_abi.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.OUT.read_text() == gen.render(), \
        f"{gen.OUT.relative_to(REPO)} is stale: run `make kernels` (or python3 scripts/gen_js_abi.py) and commit it"


UNARY = ABI.ops["UNARY"].code
# A plan that makes run_plan stop with each fatal code at its first record (word 0).
BAD_PLANS = {"BAD_OP_CODE": [12345, 0], "BAD_ARG_COUNT": [UNARY, 1, 0], "TRUNCATED": [UNARY, 100]}


@pytest.mark.parametrize("name", sorted(BAD_PLANS))
def test_run_plan_codes_decode_as_declared(name):
    """The code the wasm executor returns is decoded to the .def's message for that name."""
    runtime = Runtime(1)  # its own: a fatal code retires the runtime
    words = BAD_PLANS[name]
    at = runtime.allocator.alloc(4 * len(words))
    runtime.memory.write_words(at, words)
    message = ABI.run_error_message[ABI.run_error[name]]
    with pytest.raises(WasmTrap, match=f"^{message} at plan word 0$"):
        runtime.run(at, len(words), 1)
    assert runtime.broken
