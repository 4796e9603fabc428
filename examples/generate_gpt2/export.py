"""Exports the decoding step of a small random GPT-2 to DIR/gpt2_step.wasm (DIR: this folder unless
given) and writes DIR/prompt.json: the prompt's token ids and the tokens `model.generate(...,
do_sample=False)` picks after it, which generate.mjs must reproduce token for token.

    python examples/generate_gpt2/export.py [DIR]
    node examples/generate_gpt2/generate.mjs [DIR]
"""
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
# PyPI's torchvision, which transformers imports, fails to import next to the CPU torch wheel;
# tests/tv_import.py works around it (README, "The model zoo"). Not needed with a CPU torchvision.
sys.path.insert(0, str(ROOT / "tests"))
import tv_import  # noqa: E402,F401
import transformers  # noqa: E402

from torch_wasm_backend.decoder import export_decoder  # noqa: E402

NEW_TOKENS = 20


def tiny_gpt2() -> transformers.GPT2LMHeadModel:
    """A random 2-layer GPT-2 with a 100-token vocabulary. Weights drawn with std 0.5 instead of
    GPT-2's 0.02: at 0.02 a random model's logits are nearly flat and greedy decoding repeats one
    token, which would prove little."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_embd=64, n_layer=2, n_head=4, n_positions=32,
                                     initializer_range=0.5, bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(config).eval()


def main(out_dir: Path) -> dict:
    """Writes gpt2_step.wasm and prompt.json into out_dir; returns prompt.json's content."""
    model = tiny_gpt2()
    prompt = torch.randint(0, model.config.vocab_size, (1, 6))
    with torch.no_grad():
        generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=NEW_TOKENS,
                                   do_sample=False, pad_token_id=0)
    export_decoder(model, out_dir / "gpt2_step.wasm")
    expected = {"prompt": prompt[0].tolist(), "max_new_tokens": NEW_TOKENS,
                "expected": generated[0, prompt.shape[1]:].tolist()}
    (out_dir / "prompt.json").write_text(json.dumps(expected))
    return expected


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    result = main(out)
    print(f"wrote {out / 'gpt2_step.wasm'} ({(out / 'gpt2_step.wasm').stat().st_size} bytes) and "
          f"{out / 'prompt.json'}: prompt {result['prompt']}, generate() gives {result['expected']}")
