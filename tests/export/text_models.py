"""Real architectures from transformers (PyPI, random weights, no downloads) at small seeded
configs, each exported once with a dynamic sequence dim and run at three lengths: 1 (the minimum),
a middle odd length and the maximum. Seven text models take token ids and an attention mask (int64);
the audio encoder (Wav2Vec2) takes raw samples (float32) and has its own length in samples.

A TextModel says how to build the module, its inputs at a given length, its dynamic_shapes (one
Dim with a finite range, shared by every input that has the length) and the lengths to run.
Inputs are seeded by length, so every call builds the same tensors.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch.export import Dim

import tv_import  # noqa: F401  (before transformers, which imports torchvision)
import transformers as T  # noqa: E402

VOCAB = 100
SEQ_MAX = 24          # small, so running at the maximum stays cheap
SEQ_LENGTHS = (1, 11, SEQ_MAX)
PADDED = 11           # the attention mask at this length ends in PAD_TAIL zeros (padding)
PAD_TAIL = 4
# Larger than transformers' default initializer_range (0.02): at 0.02 and hidden size 32 every
# attention row is nearly uniform, so a wrong mask or position would barely move the outputs.
INIT_RANGE = 0.2

TEXT = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, initializer_range=INIT_RANGE)
# No KV cache: a cache is an output object (DynamicCache) that an exported file cannot return.
DECODER = dict(TEXT, num_key_value_heads=2, use_cache=False)

# Wav2Vec2's feature encoder (kernels 10, 3, 3; strides 5, 2, 2) turns n samples into n // 20 - 1
# frames (torch.export simplifies the floor divisions to that). 60 samples (2 frames) is the least
# torch.export allows: at 1 frame a reshape takes another path, so the graph is valid from 2 frames on.
# A named Dim fails here: torch.export cannot prove guards on n // 20 over the range ("Constraints
# violated"); Dim.DYNAMIC with the same finite range takes the same graph (see AUDIO_DIM).
AUDIO_CONV = dict(conv_dim=(16, 16, 16), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3))
SAMPLES_MIN, SAMPLES_MAX = 60, 500   # 2 and 24 frames
SAMPLE_LENGTHS = (SAMPLES_MIN, 237, SAMPLES_MAX)
AUDIO_DIM = Dim.DYNAMIC(min=SAMPLES_MIN, max=SAMPLES_MAX)


@dataclasses.dataclass
class TextModel:
    name: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[int], dict]   # length -> keyword inputs (tensors)
    dim: object                     # the dynamic length and its range (a Dim, or Dim.DYNAMIC(min, max))
    dynamic_axis: dict              # input name -> axis that has the length
    lengths: tuple                  # (minimum, a middle odd length, maximum)
    padded: int | None = None       # the length whose attention mask has zeros

    @property
    def dynamic_shapes(self) -> dict:
        return {name: {axis: self.dim} for name, axis in self.dynamic_axis.items()}

    def model(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return self.build().eval()


def _token_inputs(length: int) -> dict:
    g = torch.Generator().manual_seed(length)
    # Ids from 3 up: 0-2 are the special tokens (pad, bos/eos) of these configs.
    ids = torch.randint(3, VOCAB, (1, length), generator=g)
    mask = torch.ones(1, length, dtype=torch.int64)
    if length == PADDED:
        mask[:, -PAD_TAIL:] = 0  # right padding: causal rows still see position 0, none is empty
    return {"input_ids": ids, "attention_mask": mask}


def _audio_inputs(length: int) -> dict:
    g = torch.Generator().manual_seed(length)
    return {"input_values": torch.randn(1, length, generator=g)}


def _text(name, config_cls, model_cls, **config) -> TextModel:
    return TextModel(name, lambda: model_cls(config_cls(**config)), _token_inputs,
                     Dim("seq", min=1, max=SEQ_MAX), {"input_ids": 1, "attention_mask": 1},
                     SEQ_LENGTHS, PADDED)


MODELS = {m.name: m for m in [
    _text("bert", T.BertConfig, T.BertModel, **TEXT),
    _text("distilbert", T.DistilBertConfig, T.DistilBertModel, vocab_size=VOCAB, dim=32, n_layers=2,
          n_heads=4, hidden_dim=64, max_position_embeddings=64, initializer_range=INIT_RANGE),
    _text("roberta", T.RobertaConfig, T.RobertaModel, **TEXT),
    _text("gpt2", T.GPT2Config, T.GPT2LMHeadModel, vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
          n_positions=64, use_cache=False, initializer_range=INIT_RANGE, bos_token_id=1, eos_token_id=2),
    _text("llama", T.LlamaConfig, T.LlamaForCausalLM, **DECODER),
    _text("t5_encoder", T.T5Config, T.T5EncoderModel, vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64,
          num_layers=2, num_heads=4),
    # eos_token_id=2: the pooled output is taken at the argmax of the ids (CLIP's original rule)
    _text("clip_text", T.CLIPTextConfig, T.CLIPTextModel, bos_token_id=1, eos_token_id=2, **TEXT),
    TextModel("wav2vec2", lambda: T.Wav2Vec2Model(T.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, initializer_range=INIT_RANGE,
        **AUDIO_CONV)),
        _audio_inputs, AUDIO_DIM, {"input_values": 1},
        SAMPLE_LENGTHS),
]}


def eager_outputs(model: torch.nn.Module, inputs: dict) -> dict:
    """{name: tensor} of the model's tensor outputs, named by their keys (ModelOutput is a dict)."""
    with torch.no_grad():
        out = model(**inputs)
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
