"""The wasm layer's own pieces, on real wasmtime: the shared-memory workaround (docs/design.md
decision 3) and instances that share one memory through it. run_plan's error decoding is tested
with the real kernels in tests/kernels/test_abi_generated.py; the runners' tests cover the rest."""
import pytest
import torch
import wasmtime

from torch_wasm_backend import wasm_layer
from torch_wasm_backend.errors import WasmOutOfMemory
from torch_wasm_backend.wasm_layer import Instance, Memory

# A module of the kernel module's shape: it imports only env.memory (shared) and reads a word of it.
WAT = """(module (import "env" "memory" (memory 1 2 shared))
  (func (export "_initialize"))
  (func (export "load") (param i32) (result i32) local.get 0 i32.load))"""


def test_wasmtime_shared_memory_define_bug_still_present():
    """wasmtime-py 50 cannot Linker.define a SharedMemory. When this test fails, upstream fixed it:
    delete the workaround in wasm_layer.define_shared_memory."""
    engine = wasm_layer.engine(epoch_interruption=False)
    memory = Memory(engine, 1, 2)
    with pytest.raises(TypeError):
        wasmtime.Linker(engine).define(wasmtime.Store(engine), "env", "memory", memory.shared)


def test_instances_share_one_memory_with_the_host():
    """What the host writes through Memory at a byte offset, every instance reads at that address."""
    engine = wasm_layer.engine(epoch_interruption=False)
    module = wasmtime.Module(engine, wasmtime.wat2wasm(WAT))
    memory = Memory(engine, 1, 2)
    instances = [Instance(engine, module, memory, ("_initialize", "load")) for _ in range(2)]
    memory.write_words(4096, [123456789, -7])
    for inst in instances:
        assert inst.fn["load"](4096)[0].i32 == 123456789
        assert inst.fn["load"](4100)[0].i32 == -7
    memory.grow_to(memory.nbytes + 1)  # the view is rebuilt after growth; the address stays
    memory.write(2 * wasm_layer.PAGE - 4, torch.tensor([42], dtype=torch.int32))
    assert instances[0].fn["load"](2 * wasm_layer.PAGE - 4)[0].i32 == 42
    with pytest.raises(WasmOutOfMemory, match="MiB of wasm memory"):  # past max_pages
        memory.grow_to(2 * wasm_layer.PAGE + 1)


def test_memory_views_made_under_inference_mode_stay_writable_outside_it():
    """A model first run under torch.inference_mode() must still run outside it: the memory tensor
    (cached) and its views are made as normal tensors, or a later copy_ into an input view raised
    "Inplace update to inference tensor outside InferenceMode" (seen when a test under
    inference_mode shared a worker with later tests)."""
    memory = Memory(wasm_layer.engine(epoch_interruption=False), 1, 2)
    with torch.inference_mode():
        memory.write(64, torch.arange(4, dtype=torch.float32))
        view = memory.view(64, (4,))
    view.copy_(torch.ones(4))
    memory.write(80, torch.full((2,), 7.0))
    assert memory.view(64, (6,)).tolist() == [1.0, 1.0, 1.0, 1.0, 7.0, 7.0]
