"""Benchmark models, defined here (no downloads): ResNet-18- and MobileNetV2-shaped CNNs, a
BERT-style encoder, and MLPs. Shapes follow the originals; weights are random."""
import torch
import torch.nn as nn


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
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


def resnet18(classes=1000):
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


def mobilenet_v2(classes=1000):
    layers = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
    cin = 32
    for expand, cout, repeats, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(repeats):
            layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes)]
    return nn.Sequential(*layers)


def bert_encoder(hidden=256, layers=4, heads=4):
    layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout=0.0, batch_first=True, activation="gelu")
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class BertEncoder(nn.Module):
    """transformers' BertModel (random weights; d256 h4 ff1024, vocab 1000) on token ids, its last
    hidden state (one tensor, so that every runtime's file names its output alike)."""

    def __init__(self, layers=4):
        super().__init__()
        import tv_import  # noqa: F401  (tests/: before transformers, which imports torchvision)
        from transformers import BertConfig, BertModel
        config = BertConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=layers, num_attention_heads=4,
                            intermediate_size=1024)
        self.bert = BertModel(config, add_pooling_layer=False).eval()
        with torch.no_grad():  # BERT's init makes every bias 0 and every LayerNorm weight 1: equal tensors
            for p in self.bert.parameters():   # are stored once in our file, which would flatter its size
                p.add_(torch.randn_like(p) * 0.02)

    def forward(self, input_ids):
        return self.bert(input_ids=input_ids).last_hidden_state


def small_mlp():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def calibrate_batch_norm(model, shape, batches=2, seed=0):
    """model in eval mode with batch-norm statistics measured, as training leaves them, instead of
    the initial mean 0 / variance 1: `batches` forwards of seeded standard-normal images (`shape`
    with its batch dim set to 8) with only the BatchNorm layers in train mode and momentum None
    (a cumulative average over the batches); affine weights stay as initialized. Dropout and
    stochastic depth stay in eval mode.

    Why: random-init convs do not keep unit variance, so eval-mode BN with the initial statistics
    scales activations down block after block (mean |activation| at the last BNs of torchvision's
    MobileNetV2 / EfficientNet-B0: ~1e-9 / ~1e-11), and PT2E-quantized MobileNetV2 outputs zeros;
    with randomized running means (uniform +-0.2, what compare.py had) those means swamp the
    shrunken signal and the network computes a constant: two noise images' logits (bias-free)
    differ by 1e-7 of their norm, float rounding, in torchvision's MobileNetV2, MobileNetV3-Large and
    EfficientNet-B0. Measured after this: mean |activation| 0.7-0.85 at every BN, logits differing
    by 0.35-1.0 of their norm. (No float32 denormals in any of these: counted in every module's
    output with forward hooks.)"""
    model.eval()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    momenta = [m.momentum for m in norms]
    gen = torch.Generator().manual_seed(seed)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(8, *shape[1:], generator=gen))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


# name -> (factory, input shape)
MODELS = {
    "resnet18_224": (resnet18, (1, 3, 224, 224)),
    "mobilenet_v2_224": (mobilenet_v2, (1, 3, 224, 224)),
    "bert_256x4_seq128": (bert_encoder, (1, 128, 256)),
    "mlp_batch1": (small_mlp, (1, 64)),
}
