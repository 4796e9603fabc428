"""Real network families (our own small definitions, no downloads) through torch.compile(backend=
"wasm"): each must equal eager within a stated tolerance, run >= 98% of its ATen nodes in wasm and,
having no unsupported op, form a single wasm partition.

Tolerance: FAMILY_TOL (1e-4 relative and absolute). These nets stack 4-20 GEMM/conv layers whose
blocked summation order differs from eager's; on O(1) activations that reordering costs ~1e-6 per
layer, and the polynomial exp/erf/tanh a few ulp each. 1e-4 is ~1000 float32 ulps: far below a
real bug (a wrong index, mask or dropped term moves outputs by O(1e-2) or more). The LSTM/GRU run
their recurrences over 7 steps, each a GEMM + sigmoid/tanh, so they use the same bound.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_wasm_backend as twb

FAMILY_TOL = dict(rtol=1e-4, atol=1e-4)
MIN_LOWERED = 0.98


def _randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


def run_family(model, *inputs, single_partition=True):
    """Compiles model (eval, no_grad), compares with eager, returns (stats, max abs error)."""
    torch._dynamo.reset()
    model.eval()
    twb.reset_stats()
    compiled = torch.compile(model, backend="wasm")
    with torch.no_grad():
        expected = model(*inputs)
        got = compiled(*inputs)
    s = twb.stats()
    if isinstance(expected, torch.Tensor):
        expected, got = [expected], [got]
    err = 0.0
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        torch.testing.assert_close(g, e, **FAMILY_TOL)
        if e.numel():
            err = max(err, (g - e).abs().max().item())
    assert s["calls"] >= 1, f"nothing ran in wasm: {s['fallback_nodes']}"
    assert s["lowered_fraction"] >= MIN_LOWERED, (
        f"{s['aten_nodes_lowered']}/{s['aten_nodes_total']} ATen nodes in wasm; fallbacks: "
        f"{s['fallback_nodes']}")
    if single_partition:
        assert s["partitions"] == 1, f"{s['partitions']} partitions; fallbacks: {s['fallback_nodes']}"
        assert s["eager_partition_calls"] == 0
    return s, err


# ---- CNNs -----------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


class ResNet18ish(nn.Module):
    """ResNet-18's layout (stem, 4 stages x 2 basic blocks, global pool, fc) at 1/8 width."""

    def __init__(self, width=8, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], width
        for i, cout in enumerate([width, 2 * width, 4 * width, 8 * width]):
            stride = 1 if i == 0 else 2
            blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.pool(self.layers(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2ish(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        cfg = [(1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2), (6, 24, 1, 1)]  # t, c, n, s
        layers = [nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True)]
        cin = 8
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [nn.Conv2d(cin, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class MobileNetV3ish(nn.Module):
    """Stem with hardswish, two V3 bneck blocks (depthwise, SE with hardsigmoid, hardswish), head."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.block1 = nn.Sequential(
            nn.Conv2d(16, 16, 3, 2, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            SqueezeExcite(16), nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.block2 = nn.Sequential(
            nn.Conv2d(16, 48, 1, bias=False), nn.BatchNorm2d(48), nn.Hardswish(),
            nn.Conv2d(48, 48, 5, 1, 2, groups=48, bias=False), nn.BatchNorm2d(48), nn.Hardswish(),
            SqueezeExcite(48), nn.Conv2d(48, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = nn.Sequential(nn.Linear(16, 32), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(32, classes))

    def forward(self, x):
        x = self.block1(self.stem(x))
        x = x + self.block2(x)
        return self.head(x.mean((2, 3)))


class UNetSmall(nn.Module):
    """Two-level U-Net: down by max pool, up by conv_transpose2d (level 1) and bilinear upsample
    (level 2), skip connections by channel cat after constant padding to the skip's size."""

    def __init__(self, c=8, out=3):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.enc1, self.enc2, self.mid = block(3, c), block(c, 2 * c), block(2 * c, 4 * c)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.dec2 = block(4 * c, 2 * c)
        self.reduce1 = nn.Conv2d(2 * c, c, 1)
        self.dec1 = block(2 * c, c)
        self.final = nn.Conv2d(c, out, 1)

    @staticmethod
    def _pad_to(x, ref):
        dh, dw = ref.shape[2] - x.shape[2], ref.shape[3] - x.shape[3]
        return F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([e2, self._pad_to(self.up2(m), e2)], dim=1))
        u1 = F.interpolate(self.reduce1(d2), scale_factor=2, mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat([e1, self._pad_to(u1, e1)], dim=1))
        return self.final(F.interpolate(d1, size=(x.shape[2] + 4, x.shape[3] + 4), mode="nearest"))


@pytest.mark.parametrize("batch", [1, 2])
def test_resnet18ish(batch):
    torch.manual_seed(0)
    s, err = run_family(_randomize_bn(ResNet18ish()), torch.randn(batch, 3, 45, 39))
    assert s["lowered_by_op"]["aten::convolution"] == 20


def test_mobilenet_v2ish():
    torch.manual_seed(0)
    run_family(_randomize_bn(MobileNetV2ish()), torch.randn(2, 3, 33, 30))


def test_mobilenet_v3ish():
    torch.manual_seed(0)
    run_family(_randomize_bn(MobileNetV3ish()), torch.randn(2, 3, 31, 29))


def test_unet_small():
    torch.manual_seed(0)
    run_family(_randomize_bn(UNetSmall()), torch.randn(1, 3, 22, 18))


# ---- Transformers ---------------------------------------------------------------------------

class BertSelfAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, mask):  # mask: [B, T] of 1 (keep) / 0 (pad)
        b, t, d = x.shape
        q, k, v = (m(x).view(b, t, self.h, self.dh).transpose(1, 2) for m in (self.q, self.k, self.v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dh)
        scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
        probs = scores.softmax(-1)
        return self.o((probs @ v).transpose(1, 2).reshape(b, t, d))


class BertLayer(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.attn = BertSelfAttention(d, heads)
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-12), nn.LayerNorm(d, eps=1e-12)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.drop = nn.Dropout(0.1)

    def forward(self, x, mask):
        x = self.ln1(x + self.drop(self.attn(x, mask)))
        return self.ln2(x + self.drop(self.ff2(F.gelu(self.ff1(x)))))


class BertEncoder(nn.Module):
    def __init__(self, vocab=50, max_len=32, d=32, heads=4, ff=64, layers=2):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(max_len, d)
        self.typ = nn.Embedding(2, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(d, heads, ff) for _ in range(layers))
        self.pool = nn.Linear(d, d)

    def forward(self, ids, mask):
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device).unsqueeze(0)
        x = self.ln(self.tok(ids) + self.pos(pos) + self.typ(torch.zeros_like(ids)))
        for layer in self.layers:
            x = layer(x, mask)
        return x, torch.tanh(self.pool(x[:, 0]))


class GPT2Block(nn.Module):
    def __init__(self, d, heads, max_len, use_sdpa):
        super().__init__()
        self.h, self.use_sdpa = heads, use_sdpa
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.register_buffer("bias", torch.tril(torch.ones(max_len, max_len)).view(1, 1, max_len, max_len))

    def attn(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            w = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            causal = torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device))
            w = torch.where(causal, w, torch.tensor(float("-inf")))
            w = w.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
            y = F.softmax(w, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, d))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT2ish(nn.Module):
    def __init__(self, vocab=64, max_len=32, d=32, heads=4, layers=2, use_sdpa=False):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(GPT2Block(d, heads, max_len, use_sdpa) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, like GPT-2

    def forward(self, ids):
        pos = torch.arange(0, ids.size(1), dtype=torch.long, device=ids.device)
        x = self.wte(ids) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        return self.lm_head(self.ln_f(x))


class ViTish(nn.Module):
    def __init__(self, img=24, patch=6, d=32, heads=4, layers=2, classes=10):
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, patch)
        n = (img // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.norm(self.encoder(x))
        return self.head(x[:, 0])


class MHAViTBlock(nn.Module):
    """A ViT block on nn.MultiheadAttention with need_weights=False (the SDPA path)."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(0.0), nn.Linear(2 * d, d))

    def forward(self, x):
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


def test_bert_encoder():
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 13))
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, 9:] = 0
    run_family(BertEncoder(), ids, mask)


@pytest.mark.parametrize("use_sdpa", [False, True], ids=["tril-mask", "sdpa-causal"])
def test_gpt2ish(use_sdpa):
    torch.manual_seed(0)
    run_family(GPT2ish(use_sdpa=use_sdpa), torch.randint(0, 64, (2, 11)))


def test_vitish():
    torch.manual_seed(0)
    run_family(ViTish(), torch.randn(2, 3, 24, 24))


def test_vit_mha_block():
    torch.manual_seed(0)
    run_family(MHAViTBlock(), torch.randn(2, 17, 32))


# ---- RNNs -----------------------------------------------------------------------------------

class RNNClassifier(nn.Module):
    def __init__(self, kind="lstm", vocab=40, d=16, hidden=24, layers=2, bidirectional=False, classes=5):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn(d, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), classes)

    def forward(self, ids):
        out, _ = self.rnn(self.emb(ids))
        return self.fc(out[:, -1])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_rnn_classifier(kind, bidirectional):
    """Dynamo graph-breaks around nn.LSTM/nn.GRU (running them in eager, outside any graph) unless
    allow_rnn is set; with it, the recurrences reach the backend and must run in wasm."""
    torch.manual_seed(0)
    with torch._dynamo.config.patch(allow_rnn=True):
        s, _ = run_family(RNNClassifier(kind, bidirectional=bidirectional), torch.randint(0, 40, (3, 7)))
    assert s["lowered_by_op"].get("aten::tanh", 0) >= 7 * 2  # 7 steps x 2 layers, unrolled


# ---- New input sizes ------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["gpt2", "bert", "unet"])
def test_families_at_new_sizes(family):
    """A second size makes Dynamo recompile with symbolic sizes: the causal mask, positions and
    upsampling index tables then depend on them and are rebuilt per plan, still in wasm."""
    torch.manual_seed(0)
    torch._dynamo.reset()
    if family == "gpt2":
        model, make = GPT2ish(), lambda t: (torch.randint(0, 64, (2, t)),)
    elif family == "bert":
        model, make = BertEncoder(), lambda t: (torch.randint(0, 50, (2, t)), (torch.rand(2, t) > 0.3).long())
    else:
        model, make = _randomize_bn(UNetSmall()), lambda t: (torch.randn(1, 3, t + 8, t + 5),)
    model.eval()
    twb.reset_stats()
    compiled = torch.compile(model, backend="wasm")
    with torch.no_grad():
        for t in (11, 7, 9):
            inputs = make(t)
            expected, got = model(*inputs), compiled(*inputs)
            for g, e in zip(*(([a] if isinstance(a, torch.Tensor) else a) for a in (got, expected))):
                torch.testing.assert_close(g, e, **FAMILY_TOL)
    s = twb.stats()
    assert s["eager_partition_calls"] == 0, s["fallback_nodes"]
    assert s["lowered_fraction"] >= MIN_LOWERED, s["fallback_nodes"]


@pytest.mark.parametrize("family", ["mobilenet_v3", "unet", "gpt2", "vit_block"])
def test_families_with_dynamic_true_plan_new_sizes_from_templates(family, partitions):
    """dynamic=True: the first size is lowered into a plan template (lowering/template.py), and
    every later size is rebuilt from it (or from a second template where a size crosses a branch of
    the lowering, such as the UNet's padding): equal to eager, and no size is lowered again."""
    from torch_wasm_backend.lowering.template import template_status
    torch.manual_seed(0)
    torch._dynamo.reset()
    if family == "mobilenet_v3":
        model, make = _randomize_bn(MobileNetV3ish()), lambda t: (torch.randn(2, 3, t + 20, t + 19),)
    elif family == "unet":
        model, make = _randomize_bn(UNetSmall()), lambda t: (torch.randn(1, 3, t + 8, t + 5),)
    elif family == "gpt2":
        model, make = GPT2ish(), lambda t: (torch.randint(0, 64, (2, t)),)
    else:
        model, make = MHAViTBlock(), lambda t: (torch.randn(2, t, 32),)
    model.eval()
    twb.reset_stats()
    compiled = torch.compile(model, backend="wasm", dynamic=True)
    sizes = (11, 7, 9, 13, 6)
    with torch.no_grad():
        for t in sizes:
            inputs = make(t)
            torch.testing.assert_close(compiled(*inputs), model(*inputs), **FAMILY_TOL)
    s = twb.stats()
    statuses = [status for p in partitions for status in template_status(p.lowering)]
    assert statuses and not any(status.startswith("disabled") for status in statuses), statuses
    assert s["plans_lowered"] == 0 and s["plans_from_template"] == len(sizes) * s["partitions"]
    assert s["eager_partition_calls"] == 0 and s["graphs_compiled"] == 1
