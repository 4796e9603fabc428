"""Export the decoding step of a transformers causal LM with its key/value cache as a plain input
and output, so a loop outside Python (JS, or `load` in Python) generates text.

`DecoderStep(model)` is an nn.Module: `forward(input_ids [1, n], position_ids [1, n], past_key_values
[layers, 2, kv_heads, p, head_dim])` returns `{"logits": [1, n, vocab], "present_key_values": [layers,
2, kv_heads, p + n, head_dim]}` (index 0 of dim 1 holds keys, 1 values); the next step takes
`present_key_values` as its `past_key_values`. One cache tensor keeps the signature the same for any
depth and a loop feeds one output back as one input; stacking it costs one copy of the cache per
step, as much as the concatenation of old and new keys and values that any cache without in-place
writes does.

Past position 0 is always a dummy: an empty past (p = 0) would be a special case for torch.export
(sizes 0 and 1 are specialized), so generation starts from `empty_past()`, one position of zeros,
which the step's attention mask excludes (its softmax weight is exactly 0): the logits equal the
model's without it, and greedy decoding gives `model.generate(..., do_sample=False)`'s tokens.
`position_ids` are the tokens' positions in the sequence (the prompt: 0 ... n - 1; then one number
per step). They are an input, not computed from p, because an exported file computes values made
from sizes alone only as slices of their value at the largest sizes, and positions p - 1 + i (or a
causal mask offset by p) are not; from an input they are computed at run time. Batch size 1.

`export_decoder(model, path)` exports the step with both sizes dynamic; `greedy_generate` is the
decoding loop, for a `DecoderStep` or the exported file opened with `load`.
"""
from __future__ import annotations

import torch


def _cache_geometry(model) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of a transformers causal LM's attention cache."""
    config = model.config.get_text_config(decoder=True)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def _filled_layer(keys: torch.Tensor, values: torch.Tensor):
    """A transformers DynamicLayer holding `keys` and `values` as they are: filling one through
    update() would copy them once more (it concatenates them to an empty tensor), a full copy of the
    cache per step."""
    from transformers.cache_utils import DynamicLayer
    layer = DynamicLayer()
    layer.lazy_initialization(keys, values)
    layer.keys, layer.values = keys, values
    return layer


class DecoderStep(torch.nn.Module):
    """One decoding step of `model` (a transformers causal LM) with its cache as one tensor."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.num_layers, self.kv_heads, self.head_dim = _cache_geometry(model)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                past_key_values: torch.Tensor) -> dict[str, torch.Tensor]:
        from transformers import DynamicCache
        cache = DynamicCache()
        # [kv_heads, p, head_dim] -> [1, kv_heads, p, head_dim]: views, no copy
        cache.layers = [_filled_layer(past_key_values[i, 0][None], past_key_values[i, 1][None])
                        for i in range(self.num_layers)]
        out = self.model(input_ids=input_ids, position_ids=position_ids,
                         attention_mask=self._mask(position_ids, past_key_values.shape[3] + input_ids.shape[1]),
                         past_key_values=cache, use_cache=True)
        # one copy: [layers * 2, kv_heads, p + n, head_dim] -> [layers, 2, ...] is a view
        present = torch.stack([kv[0] for layer in out.past_key_values.layers for kv in (layer.keys, layer.values)])
        return {"logits": out.logits, "present_key_values": present.unflatten(0, (self.num_layers, 2))}

    def _mask(self, position_ids: torch.Tensor, kv_length: int) -> torch.Tensor:
        """The additive 4-D mask [1, 1, n, kv_length] transformers takes as given (eager attention
        and SDPA alike): cache slot j holds position j - 1 (slot 0 is the dummy); a token at position
        q sees slots 1 ... q + 1. Masked scores get the dtype's minimum, whose exp is exactly 0."""
        dtype = self.model.dtype
        slot = torch.arange(kv_length)
        seen = (slot >= 1) & (slot <= position_ids[0, :, None] + 1)
        return torch.where(seen, 0.0, torch.finfo(dtype).min).to(dtype)[None, None]

    def empty_past(self, dtype=torch.float32) -> torch.Tensor:
        """The `past_key_values` of the first step: the dummy position alone."""
        return torch.zeros(self.num_layers, 2, self.kv_heads, 1, self.head_dim, dtype=dtype)


def greedy_generate(step, input_ids: torch.Tensor, past_key_values: torch.Tensor,
                    max_new_tokens: int) -> list[int]:
    """Greedy decoding with a step function `step(input_ids=..., position_ids=..., past_key_values=...)
    -> dict`: a `DecoderStep`, or a model exported by `export_decoder` and opened with `load`. The
    prompt goes in as one step, then one token per step; returns the new tokens."""
    tokens = []
    position_ids = torch.arange(input_ids.shape[1])[None]
    for _ in range(max_new_tokens):
        out = step(input_ids=input_ids, position_ids=position_ids, past_key_values=past_key_values)
        tokens.append(int(torch.as_tensor(out["logits"])[0, -1].argmax()))
        input_ids = torch.tensor([[tokens[-1]]], dtype=input_ids.dtype)
        position_ids = position_ids[:, -1:] + 1
        past_key_values = torch.as_tensor(out["present_key_values"])
    return tokens


def export_decoder(model: torch.nn.Module, path, *, max_length: int | None = None,
                   winograd: bool = True, simd: str = "baseline") -> dict:
    """Exports `DecoderStep(model)` to one .wasm at `path`; returns its metadata.

    The file takes `input_ids` and `position_ids` (int64 [1, new_tokens]) and `past_key_values`
    (float32 [layers, 2, kv_heads, past_length, head_dim]; start from zeros with past_length 1, the
    dummy) and gives `logits` and `present_key_values`. max_length (default: the model's max_position_embeddings)
    bounds the tokens of one sequence: new_tokens <= max_length and past_length <= max_length
    (the dummy and max_length - 1 tokens). winograd and simd: as in export()."""
    from torch.export import Dim
    from .exporter import export
    step = DecoderStep(model.eval())
    if max_length is None:
        max_length = model.config.get_text_config(decoder=True).max_position_embeddings
    if max_length < 3:
        raise ValueError(f"max_length={max_length}: export_decoder needs at least 3 (its example step, "
                         "2 new tokens after a past of 3, must fit the bounds)")
    # Example sizes 2 and 3: torch.export specializes sizes 0 and 1, and distinct values keep the
    # two dims apart.
    example = {"input_ids": torch.zeros(1, 2, dtype=torch.long), "position_ids": torch.tensor([[2, 3]]),
               "past_key_values": torch.zeros(step.num_layers, 2, step.kv_heads, 3, step.head_dim)}
    new_tokens = Dim("new_tokens", min=1, max=max_length)
    dynamic = {"input_ids": {1: new_tokens}, "position_ids": {1: new_tokens},
               "past_key_values": {3: Dim("past_length", min=1, max=max_length)}}
    return export(step, (), path, kwargs=example, dynamic_shapes=dynamic, winograd=winograd, simd=simd)
