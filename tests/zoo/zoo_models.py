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

from dataclasses import dataclass
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
    notes: str = ""            # why not exported


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


def _random_vit_head(build):
    """torchvision's VisionTransformer starts its classifier at zero (a constant output proves
    nothing): give it random weights."""
    def with_head():
        model = build()
        with torch.no_grad():
            torch.nn.init.normal_(model.heads.head.weight, std=0.02, generator=torch.Generator().manual_seed(0))
        return model
    return with_head


def _cls(cls, *args, **kwargs):
    """A torchvision model class at a custom size (takes and ignores weights=None, like the
    builders)."""
    return lambda weights=None: cls(*args, **kwargs)


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


def _text(name, config_cls, model_cls, **config):
    """A text model on 9 random token ids. Exported models take float32 tensors only
    (torch_wasm_backend.exporter), so models fed int64 token ids are checked through torch.compile
    only."""
    return ZooModel(name, "transformers", _hf(config_cls, model_cls, **config), _tokens(),
                    export=False, notes="takes int64 token ids; exported models take float32 only")


TINY_TEXT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=64)
TINY_DECODER = dict(TINY_TEXT, num_key_value_heads=2, use_cache=False)

tvm = torchvision.models
CNBlockConfig = torchvision.models.convnext.CNBlockConfig
T = transformers

MODELS = [
    # ---- torchvision ----------------------------------------------------------------------
    ZooModel("tv-resnet18", "torchvision", _tv(tvm.resnet18), _image()),
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
    # ConvNeXt-T, Swin-T and ViT-B/16 at reduced width (same classes, blocks and depth, except
    # Swin's third stage: 2 blocks instead of 6), so that compiling and exporting takes seconds.
    ZooModel("tv-convnext_tiny-w24", "torchvision",
             _tv(_cls(tvm.ConvNeXt, [CNBlockConfig(24, 48, 3), CNBlockConfig(48, 96, 3),
                                     CNBlockConfig(96, 192, 9), CNBlockConfig(192, None, 3)])),
             _image()),
    ZooModel("tv-swin_t-w24", "torchvision",
             _tv(_cls(tvm.SwinTransformer, patch_size=[4, 4], embed_dim=24, depths=[2, 2, 2, 2],
                      num_heads=[1, 2, 4, 8], window_size=[7, 7])), _image()),
    ZooModel("tv-vit_b_16-w192", "torchvision",
             _random_vit_head(_tv(_cls(tvm.VisionTransformer, image_size=64, patch_size=16, num_layers=12,
                                       num_heads=3, hidden_dim=192, mlp_dim=768))), _image()),
    ZooModel("tv-r3d_18", "torchvision", _tv(tvm.video.r3d_18), _image((1, 3, 4, 32, 32))),
    # ---- timm -----------------------------------------------------------------------------
    ZooModel("timm-resnet18d", "timm", _timm("resnet18d"), _image()),
    ZooModel("timm-convnextv2_atto", "timm", _timm("convnextv2_atto"), _image()),
    ZooModel("timm-vit_tiny_patch16-depth4", "timm",
             _timm("vit_tiny_patch16_224", img_size=64, depth=4), _image()),
    ZooModel("timm-mobilevit_xxs", "timm", _timm("mobilevit_xxs"), _image()),
    ZooModel("timm-ghostnet_050", "timm", _timm("ghostnet_050"), _image()),
    ZooModel("timm-poolformerv2_s12", "timm", _timm("poolformerv2_s12"), _image()),
    # timm's MLP-Mixer zero-initializes its classifier (the output would be all zeros, proving
    # nothing): compare the pooled features instead.
    ZooModel("timm-mixer_s16", "timm", _timm("mixer_s16_224", img_size=64, num_classes=0),
             _image()),
    ZooModel("timm-edgenext_xx_small", "timm", _timm("edgenext_xx_small"), _image()),
    ZooModel("timm-levit_128s", "timm", _timm("levit_128s", img_size=64), _image()),
    ZooModel("timm-fastvit_t8", "timm", _timm("fastvit_t8"), _image()),
    # ---- transformers ---------------------------------------------------------------------
    _text("hf-bert", T.BertConfig, T.BertModel, **TINY_TEXT),
    _text("hf-bert-12-layers", T.BertConfig, T.BertModel, **dict(TINY_TEXT, num_hidden_layers=12)),
    _text("hf-distilbert", T.DistilBertConfig, T.DistilBertModel, vocab_size=100, dim=32,
          n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64),
    _text("hf-roberta", T.RobertaConfig, T.RobertaModel, **TINY_TEXT),
    _text("hf-albert", T.AlbertConfig, T.AlbertModel, embedding_size=16, **TINY_TEXT),
    _text("hf-gpt2", T.GPT2Config, T.GPT2Model, vocab_size=100, n_embd=32, n_layer=2, n_head=4,
          n_positions=64, use_cache=False),
    _text("hf-llama", T.LlamaConfig, T.LlamaModel, **TINY_DECODER),
    _text("hf-mistral", T.MistralConfig, T.MistralModel, **TINY_DECODER),
    _text("hf-qwen2", T.Qwen2Config, T.Qwen2Model, **TINY_DECODER),
    _text("hf-bart", T.BartConfig, T.BartModel, vocab_size=100, d_model=32, encoder_layers=2,
          decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
          encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, use_cache=False),
    _text("hf-t5-encoder", T.T5Config, T.T5EncoderModel, vocab_size=100, d_model=32, d_kv=8,
          d_ff=64, num_layers=2, num_heads=4),
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
