"""Exported decoding steps of causal LMs (torch_wasm_backend/decoder.py) generate the same tokens as
transformers' `generate(..., do_sample=False)`: GPT-2 through examples/generate_gpt2 in Node.js 20,
a LLaMA-style model (rotary positions, 2 key/value heads for 4 heads) through `load` in Python."""
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch

import tv_import  # noqa: F401  (before transformers, which imports torchvision: tests/tv_import.py)
import transformers

import torch_wasm_backend as twb
from torch_wasm_backend.decoder import DecoderStep, export_decoder, greedy_generate
from helpers import MATMUL
from test_export_node import NODE

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "generate_gpt2"
NEW_TOKENS = 20


def _example_export():
    """examples/generate_gpt2/export.py as a module (its main() is what `python export.py` runs)."""
    spec = importlib.util.spec_from_file_location("generate_gpt2_export", EXAMPLE / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_llama() -> transformers.LlamaForCausalLM:
    """Random weights with std 0.5 (not 0.02): a random model's logits are then far from flat, so
    greedy decoding does not just repeat one token."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                                      initializer_range=0.5, bos_token_id=None, eos_token_id=None)
    return transformers.LlamaForCausalLM(config).eval()


def generate(model, prompt) -> list[int]:
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                             do_sample=False, pad_token_id=0)
    return out[0, prompt.shape[1]:].tolist()


@pytest.fixture(scope="module")
def gpt2_example(tmp_path_factory):
    """The example's gpt2_step.wasm and prompt.json, written to a temporary folder."""
    out = tmp_path_factory.mktemp("generate_gpt2")
    return out, _example_export().main(out)


@pytest.fixture(scope="module")
def llama_step(tmp_path_factory):
    """(model, its decoding step exported and loaded)."""
    model = tiny_llama()
    path = tmp_path_factory.mktemp("llama") / "llama_step.wasm"
    export_decoder(model, path)
    with twb.load(path) as loaded:
        yield model, loaded


@pytest.mark.parametrize("make", [lambda: _example_export().tiny_gpt2(), tiny_llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("prompt_length", [1, 6])
def test_eager_step_loop_matches_generate(make, prompt_length):
    """The wrapper itself (dummy past position, explicit positions, stacked cache) in eager PyTorch."""
    model = make()
    step = DecoderStep(model)
    prompt = torch.randint(0, 100, (1, prompt_length))
    with torch.no_grad():
        tokens = greedy_generate(step, prompt, step.empty_past(), NEW_TOKENS)
    assert tokens == generate(model, prompt)


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (scripts/setup.sh installs it)")
def test_node_example_generates_gpt2(gpt2_example):
    out, written = gpt2_example
    run = subprocess.run([NODE, str(EXAMPLE / "generate.mjs"), str(out)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    tokens = json.loads(run.stdout.strip().splitlines()[-1])["tokens"]
    assert len(tokens) == NEW_TOKENS and len(set(tokens)) > 1  # a real sequence, not one repeated token
    assert tokens == written["expected"]


def test_python_load_generates_llama(llama_step):
    model, loaded = llama_step
    prompt = torch.randint(0, 100, (1, 7))
    past = DecoderStep(model).empty_past()
    tokens = greedy_generate(loaded, prompt, past, NEW_TOKENS)
    assert len(set(tokens)) > 1
    assert tokens == generate(model, prompt)


@pytest.mark.parametrize("past_length,new_tokens", [(1, 1), (1, 9), (2, 1), (17, 3), (32, 1)])
def test_loaded_llama_step_matches_eager(llama_step, past_length, new_tokens):
    """Logits and cache at awkward sizes, up to the bound (max_position_embeddings = 32), against the
    eager step on random pasts. MATMUL tolerance: the attention and projections are GEMMs summed in
    another order than eager's."""
    model, loaded = llama_step
    step = DecoderStep(model)
    ids = torch.randint(0, 100, (1, new_tokens))
    positions = torch.arange(past_length - 1, past_length - 1 + new_tokens)[None]
    past = torch.randn(step.num_layers, 2, step.kv_heads, past_length, step.head_dim)
    with torch.no_grad():
        expected = step(ids, positions, past)
    got = loaded(input_ids=ids, position_ids=positions, past_key_values=past)
    for name in ("logits", "present_key_values"):
        torch.testing.assert_close(torch.as_tensor(got[name]), expected[name], **MATMUL)
