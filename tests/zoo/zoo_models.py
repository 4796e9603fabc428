"""The model zoo: real architectures from torchvision, timm and transformers, built with random
weights (no downloads) at small sizes so the whole tier runs in CI in minutes.

Each ZooModel builds an eval-mode module and its example inputs. Vision models take one small image
(64x64 where the architecture allows it: ViT-style models get img_size=64 so their position
embeddings fit); transformers take 9 tokens (odd on purpose) on tiny configs (hidden 32-64, 2
layers), except the 12-layer BERT, which keeps BERT-base's depth at a tiny width. Hugging Face
models are wrapped to return one tensor (last_hidden_state) so the same module compiles and exports.
Seeds are fixed so every run builds the same weights and inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from tv_import import torchvision  # before timm: timm imports torchvision

import timm  # noqa: E402
import transformers  # noqa: E402

IMAGE = (1, 3, 64, 64)
SEQ = 9


@dataclass
class ZooModel:
    name: str                     # pytest id and docs/zoo.md row
    library: str                  # torchvision | timm | transformers
    build: Callable[[], nn.Module]
    inputs: Callable[[], tuple]
    export: bool = True           # also export to .wasm and run the file in wasmtime
    notes: str = ""
    marks: list = field(default_factory=list)


def _image(shape=IMAGE):
    return lambda: (torch.randn(*shape, generator=torch.Generator().manual_seed(1)),)


def _tokens(vocab=100, seq=SEQ):
    return lambda: (torch.randint(0, vocab, (1, seq), generator=torch.Generator().manual_seed(1)),)


def _eval(model: nn.Module) -> nn.Module:
    """Eval mode, with non-trivial BatchNorm statistics (fresh ones are the identity, which would
    hide a wrong fold of BN into the convolution before it)."""
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_((torch.rand(m.num_features, generator=g) - 0.5) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
    return model.eval()


def _tv(fn, **kwargs):
    def build():
        torch.manual_seed(0)
        return _eval(fn(weights=None, **kwargs))
    return build


def _timm(name, **kwargs):
    def build():
        torch.manual_seed(0)
        return _eval(timm.create_model(name, pretrained=False, **kwargs))
    return build


class LastHidden(nn.Module):
    """A Hugging Face model called with one tensor, returning one tensor (compiles and exports)."""

    def __init__(self, model: nn.Module, arg: str):
        super().__init__()
        self.model, self.arg = model, arg

    def forward(self, x):
        out = self.model(**{self.arg: x})
        return out.last_hidden_state


def _hf(config_cls, model_cls, arg="input_ids", **config):
    def build():
        torch.manual_seed(0)
        cfg = config_cls(**config)
        return _eval(LastHidden(model_cls(cfg), arg))
    return build


TINY_TEXT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=64)
TINY_DECODER = dict(TINY_TEXT, num_key_value_heads=2, use_cache=False)

tvm = torchvision.models
T = transformers

MODELS = [
    # ---- torchvision ----------------------------------------------------------------------
    ZooModel("tv-resnet18", "torchvision", _tv(tvm.resnet18), _image()),
    ZooModel("tv-resnext50_32x4d", "torchvision", _tv(tvm.resnext50_32x4d), _image()),
    ZooModel("tv-mobilenet_v2", "torchvision", _tv(tvm.mobilenet_v2), _image()),
    ZooModel("tv-mobilenet_v3_small", "torchvision", _tv(tvm.mobilenet_v3_small), _image()),
    ZooModel("tv-efficientnet_b0", "torchvision", _tv(tvm.efficientnet_b0), _image()),
    ZooModel("tv-squeezenet1_1", "torchvision", _tv(tvm.squeezenet1_1), _image()),
    ZooModel("tv-shufflenet_v2_x0_5", "torchvision", _tv(tvm.shufflenet_v2_x0_5), _image()),
    ZooModel("tv-mnasnet0_5", "torchvision", _tv(tvm.mnasnet0_5), _image()),
    ZooModel("tv-regnet_y_400mf", "torchvision", _tv(tvm.regnet_y_400mf), _image()),
    ZooModel("tv-densenet121", "torchvision", _tv(tvm.densenet121), _image()),
    ZooModel("tv-googlenet", "torchvision", _tv(tvm.googlenet, aux_logits=False, init_weights=True),
             _image()),
    ZooModel("tv-convnext_tiny", "torchvision", _tv(tvm.convnext_tiny), _image()),
    ZooModel("tv-swin_t", "torchvision", _tv(tvm.swin_t), _image()),
    ZooModel("tv-vit_b_16", "torchvision", _tv(tvm.vit_b_16, image_size=64), _image()),
    ZooModel("tv-r3d_18", "torchvision", _tv(tvm.video.r3d_18), _image((1, 3, 4, 32, 32))),
    # ---- timm -----------------------------------------------------------------------------
    ZooModel("timm-resnet18d", "timm", _timm("resnet18d"), _image()),
    ZooModel("timm-convnextv2_atto", "timm", _timm("convnextv2_atto"), _image()),
    ZooModel("timm-vit_tiny_patch16", "timm", _timm("vit_tiny_patch16_224", img_size=64), _image()),
    ZooModel("timm-deit_tiny_patch16", "timm", _timm("deit_tiny_patch16_224", img_size=64), _image()),
    ZooModel("timm-efficientnet_b0", "timm", _timm("efficientnet_b0"), _image()),
    ZooModel("timm-mobilevit_xxs", "timm", _timm("mobilevit_xxs"), _image()),
    ZooModel("timm-regnetx_002", "timm", _timm("regnetx_002"), _image()),
    ZooModel("timm-ghostnet_050", "timm", _timm("ghostnet_050"), _image()),
    ZooModel("timm-rexnet_100", "timm", _timm("rexnet_100"), _image()),
    ZooModel("timm-poolformerv2_s12", "timm", _timm("poolformerv2_s12"), _image()),
    ZooModel("timm-mixer_s16", "timm", _timm("mixer_s16_224", img_size=64), _image()),
    ZooModel("timm-edgenext_xx_small", "timm", _timm("edgenext_xx_small"), _image()),
    ZooModel("timm-levit_128s", "timm", _timm("levit_128s", img_size=64), _image()),
    ZooModel("timm-swin_tiny_window4", "timm",
             _timm("swin_tiny_patch4_window7_224", img_size=64, window_size=4), _image()),
    ZooModel("timm-fastvit_t8", "timm", _timm("fastvit_t8"), _image()),
    # ---- transformers ---------------------------------------------------------------------
    ZooModel("hf-bert", "transformers", _hf(T.BertConfig, T.BertModel, **TINY_TEXT), _tokens()),
    ZooModel("hf-bert-12-layers", "transformers",
             _hf(T.BertConfig, T.BertModel, **dict(TINY_TEXT, num_hidden_layers=12)), _tokens()),
    ZooModel("hf-distilbert", "transformers",
             _hf(T.DistilBertConfig, T.DistilBertModel, vocab_size=100, dim=32, n_layers=2, n_heads=4,
                 hidden_dim=64, max_position_embeddings=64), _tokens()),
    ZooModel("hf-roberta", "transformers",
             _hf(T.RobertaConfig, T.RobertaModel, **TINY_TEXT), _tokens()),
    ZooModel("hf-albert", "transformers",
             _hf(T.AlbertConfig, T.AlbertModel, embedding_size=16, **TINY_TEXT), _tokens()),
    ZooModel("hf-gpt2", "transformers",
             _hf(T.GPT2Config, T.GPT2Model, vocab_size=100, n_embd=32, n_layer=2, n_head=4,
                 n_positions=64, use_cache=False), _tokens()),
    ZooModel("hf-llama", "transformers",
             _hf(T.LlamaConfig, T.LlamaModel, **TINY_DECODER), _tokens()),
    ZooModel("hf-mistral", "transformers",
             _hf(T.MistralConfig, T.MistralModel, **TINY_DECODER), _tokens()),
    ZooModel("hf-qwen2", "transformers",
             _hf(T.Qwen2Config, T.Qwen2Model, **TINY_DECODER), _tokens()),
    ZooModel("hf-bart", "transformers",
             _hf(T.BartConfig, T.BartModel, vocab_size=100, d_model=32, encoder_layers=2,
                 decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                 encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                 use_cache=False), _tokens()),
    ZooModel("hf-t5-encoder", "transformers",
             _hf(T.T5Config, T.T5EncoderModel, vocab_size=100, d_model=32, d_kv=8, d_ff=64,
                 num_layers=2, num_heads=4), _tokens()),
    ZooModel("hf-vit", "transformers",
             _hf(T.ViTConfig, T.ViTModel, "pixel_values", hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8),
             _image((1, 3, 32, 32))),
    ZooModel("hf-wav2vec2", "transformers",
             _hf(T.Wav2Vec2Config, T.Wav2Vec2Model, "input_values", hidden_size=32,
                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 conv_dim=(16, 16, 16), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
                 num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
             _image((1, 400))),
]
