"""Exports a small random BERT (transformers, no download) with a dynamic sequence length, then runs
the one file at three lengths in wasmtime and prints its largest difference to PyTorch eager.

    python examples/text_model/export_bert.py [out.wasm]      # default: examples/text_model/bert.wasm
    node examples/text_model/run_bert.mjs [bert.wasm]         # the same file in Node.js
"""
import sys
from pathlib import Path

import torch
from torch.export import Dim

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
import tv_import  # noqa: E402,F401  (transformers imports torchvision; see tests/tv_import.py)
import transformers  # noqa: E402

import torch_wasm_backend as twb  # noqa: E402

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("bert.wasm")
torch.manual_seed(0)
config = transformers.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=128, max_position_embeddings=128)
model = transformers.BertModel(config).eval()

ids = torch.randint(0, 1000, (1, 32))
mask = torch.ones(1, 32, dtype=torch.long)
seq = Dim("seq", min=1, max=128)
twb.export(model, (), out, kwargs={"input_ids": ids, "attention_mask": mask},
           dynamic_shapes={"input_ids": {1: seq}, "attention_mask": {1: seq}})

m = twb.load(out)
for length in (1, 17, 128):
    ids = torch.randint(0, 1000, (1, length))
    mask = torch.ones(1, length, dtype=torch.long)
    got = m(input_ids=ids, attention_mask=mask)            # a dict: the model returned a ModelOutput
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
    diff = (got["last_hidden_state"] - expected).abs().max().item()
    print(f"length {length:3d}: last_hidden_state {list(got['last_hidden_state'].shape)}, max |wasm - eager| = {diff:.2e}")
print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); inspect it with: python -m torch_wasm_backend info {out}")
