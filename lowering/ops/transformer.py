"""nn.TransformerEncoderLayer's fused inference path (aten._transformer_encoder_layer_fwd) is
rewritten, before partitioning, into ops our kernels run: linear, softmax, layer norm, gelu/relu."""
from __future__ import annotations

import math

import torch

from ..registry import register_decomposition

aten = torch.ops.aten


def _self_attention(x, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, mask, mask_type):
    batch, seq, _ = x.shape
    head_dim = embed_dim // num_heads
    qkv = aten.linear(x, qkv_weight, qkv_bias)
    q, k, v = (t.reshape(batch, seq, num_heads, head_dim).transpose(1, 2)
               for t in qkv.split(embed_dim, dim=-1))
    scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(head_dim))
    if mask is not None:
        if mask_type == 1:  # key padding mask [batch, seq]
            mask = mask.view(batch, 1, 1, seq)
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=scores.dtype).masked_fill(mask, float("-inf"))
        scores = scores + mask
    attn = torch.softmax(scores, dim=-1)
    out = torch.matmul(attn, v).transpose(1, 2).reshape(batch, seq, embed_dim)
    return aten.linear(out, proj_weight, proj_bias)


@register_decomposition(aten._transformer_encoder_layer_fwd.default,
                        notes="decomposed into linear/softmax/layer_norm/activation")
def transformer_encoder_layer(src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias,
                              use_gelu, norm_first, eps, norm_weight_1, norm_bias_1, norm_weight_2,
                              norm_bias_2, ffn_weight_1, ffn_bias_1, ffn_weight_2, ffn_bias_2,
                              mask=None, mask_type=None):
    def attention(x):
        return _self_attention(x, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias,
                               mask, mask_type)

    def feed_forward(x):
        h = aten.linear(x, ffn_weight_1, ffn_bias_1)
        h = torch.nn.functional.gelu(h) if use_gelu else torch.relu(h)
        return aten.linear(h, ffn_weight_2, ffn_bias_2)

    def norm(x, w, b):
        return torch.nn.functional.layer_norm(x, (embed_dim,), w, b, eps)

    squeeze = src.dim() == 2  # unbatched input
    x = src.unsqueeze(0) if squeeze else src
    if norm_first:
        x = x + attention(norm(x, norm_weight_1, norm_bias_1))
        x = x + feed_forward(norm(x, norm_weight_2, norm_bias_2))
    else:
        x = norm(x + attention(x), norm_weight_1, norm_bias_1)
        x = norm(x + feed_forward(x), norm_weight_2, norm_bias_2)
    return x.squeeze(0) if squeeze else x


def _torch_decomposition(target):
    from torch._decomp import get_decompositions
    return get_decompositions([target])[target]


# nn.MultiheadAttention outside the fused path (e.g. with grad enabled) calls SDPA, which on CPU
# becomes this op; PyTorch's own decomposition expresses it in matmul/softmax/mul.
register_decomposition(aten._scaled_dot_product_flash_attention_for_cpu.default,
                       notes="PyTorch's decomposition (matmul, softmax)")(
    _torch_decomposition(aten._scaled_dot_product_flash_attention_for_cpu.default))
