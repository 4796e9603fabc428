"""Compile-time rewrites: batch norm folded into the preceding conv's weights, activations fused
into the GEMM / conv / channel-affine epilogue. Checked on the kernels the plans contain and on
the numbers."""
import torch
import torch.nn as nn

import torch_wasm_backend as twb
from helpers import MATMUL, check_against_eager


def _bn(channels):
    bn = nn.BatchNorm2d(channels)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    return bn


def test_conv_bn_relu_is_one_conv_kernel():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _bn(8), nn.ReLU()).eval()
    s = check_against_eager(model, torch.randn(2, 3, 9, 9), tol=MATMUL)
    assert s["plan_kernels"] == {"CONV2D": 1}, s["plan_kernels"]


def test_conv_without_bias_bn_relu6():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, bias=False), _bn(4), nn.ReLU6()).eval()
    s = check_against_eager(model, torch.randn(1, 4, 7, 7), tol=MATMUL)
    assert s["plan_kernels"] == {"CONV2D": 1}, s["plan_kernels"]


def test_linear_gelu_is_one_gemm():
    model = nn.Sequential(nn.Linear(16, 24), nn.GELU(), nn.Linear(24, 8), nn.Tanh()).eval()
    s = check_against_eager(model, torch.randn(5, 16), tol=MATMUL)
    assert s["plan_kernels"] == {"GEMM": 2}, s["plan_kernels"]


class TwoUsers(nn.Module):
    """The conv's output is also used raw: neither the bn fold nor the relu fusion may happen."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), _bn(3)

    def forward(self, x):
        y = self.conv(x)
        return torch.relu(self.bn(y)) + y


def test_no_fusion_when_the_intermediate_has_other_users():
    s = check_against_eager(TwoUsers().eval(), torch.randn(1, 3, 5, 5), tol=MATMUL)
    assert s["plan_kernels"].get("CHANNEL_AFFINE") == 1, s["plan_kernels"]


def test_bn_relu_without_conv_fuses_into_channel_affine():
    model = nn.Sequential(_bn(5), nn.ReLU()).eval()
    s = check_against_eager(model, torch.randn(2, 5, 4, 4), tol=MATMUL)
    assert s["plan_kernels"] == {"CHANNEL_AFFINE": 1}, s["plan_kernels"]


def test_folded_weights_follow_parameter_updates():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), _bn(4), nn.ReLU()).eval()
    compiled = torch.compile(model, backend="wasm")
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        compiled(x)
        model[1].running_var.mul_(3.0)
        model[0].weight.add_(0.5)
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
    assert twb.stats()["eager_partition_calls"] == 0
