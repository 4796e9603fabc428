"""Compile-time rewrites: batch norm folded into the preceding conv's weights, activations fused
into the GEMM / conv / channel-affine epilogue, chains of elementwise ops fused into one MAP pass.
Checked on the kernels the plans contain and on the numbers."""
import pytest
import torch
import torch.nn as nn

import torch_wasm_backend as twb
from helpers import EXACT, MATMUL, TRANSCENDENTAL, check_against_eager, randomized_bn


def test_conv_bn_relu_is_one_conv_kernel():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), randomized_bn(8), nn.ReLU()).eval()
    s = check_against_eager(model, torch.randn(2, 3, 9, 9), tol=MATMUL)
    assert s["plan_kernels"] == {"CONV2D": 1}, s["plan_kernels"]


def test_conv_without_bias_bn_relu6():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, bias=False), randomized_bn(4), nn.ReLU6()).eval()
    s = check_against_eager(model, torch.randn(1, 4, 7, 7), tol=MATMUL)
    assert s["plan_kernels"] == {"CONV2D": 1}, s["plan_kernels"]


def test_conv_bn_hardswish_is_one_conv_kernel():
    """MobileNetV3's conv -> bn -> hardswish, depthwise 5x5 stride 2 and pointwise: one CONV2D each.
    MATMUL: hardswish's slope is at most 1.5, so it adds at most half the conv's error and its ulps."""
    model = nn.Sequential(nn.Conv2d(6, 6, 5, stride=2, padding=2, groups=6, bias=False), randomized_bn(6),
                          nn.Hardswish(), nn.Conv2d(6, 10, 1, bias=False), randomized_bn(10), nn.Hardswish()).eval()
    s = check_against_eager(model, 3 * torch.randn(1, 6, 13, 11), tol=MATMUL)
    assert s["plan_kernels"] == {"CONV2D": 2}, s["plan_kernels"]


def test_linear_gelu_is_one_gemm():
    model = nn.Sequential(nn.Linear(16, 24), nn.GELU(), nn.Linear(24, 8), nn.Tanh()).eval()
    s = check_against_eager(model, torch.randn(5, 16), tol=MATMUL)
    assert s["plan_kernels"] == {"GEMM": 2}, s["plan_kernels"]


class TwoUsers(nn.Module):
    """The conv's output is also used raw: neither the bn fold nor the relu fusion may happen."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), randomized_bn(3)

    def forward(self, x):
        y = self.conv(x)
        return torch.relu(self.bn(y)) + y


def test_no_fusion_when_the_intermediate_has_other_users():
    s = check_against_eager(TwoUsers().eval(), torch.randn(1, 3, 5, 5), tol=MATMUL)
    assert s["plan_kernels"].get("CHANNEL_AFFINE") == 1, s["plan_kernels"]


def test_bn_relu_without_conv_fuses_into_channel_affine():
    model = nn.Sequential(randomized_bn(5), nn.ReLU()).eval()
    s = check_against_eager(model, torch.randn(2, 5, 4, 4), tol=MATMUL)
    assert s["plan_kernels"] == {"CHANNEL_AFFINE": 1}, s["plan_kernels"]


@pytest.mark.parametrize("channels,kernel", [(4, "CONV2D"), (16, "CONV2D_WINOGRAD")])
def test_folded_weights_follow_parameter_updates(channels, kernel):
    # the Winograd conv's weight is the folded weight transformed: both must follow the update
    # (8x8 input -> 3x3 = 9 output tiles, above the Winograd minimum of 8)
    model = nn.Sequential(nn.Conv2d(channels, channels, 3), randomized_bn(channels), nn.ReLU()).eval()
    compiled = torch.compile(model, backend="wasm")
    x = torch.randn(1, channels, 8, 8)
    with torch.no_grad():
        compiled(x)
        assert twb.stats()["plan_kernels"] == {kernel: 1}, twb.stats()["plan_kernels"]
        model[1].running_var.mul_(3.0)
        model[0].weight.add_(0.5)
        torch.testing.assert_close(compiled(x), model(x), **MATMUL)
    assert twb.stats()["eager_partition_calls"] == 0


# ---- elementwise chains -> one MAP record --------------------------------------------------------
def test_elementwise_chain_is_one_pass_and_exact():
    # IEEE ops only, so the fused chain must give eager's bits; y broadcasts, scalars are immediates
    fn = lambda x, y: torch.relu(1.5 - (x * 2.0 + y)) * x / 3.0
    s = check_against_eager(fn, torch.randn(3, 5, 257), torch.randn(5, 1), tol=EXACT)
    assert s["plan_kernels"] == {"MAP": 1}, s["plan_kernels"]


def test_chain_with_transcendentals_and_three_inputs():
    fn = lambda x, y, z: torch.sigmoid(torch.tanh(x * y) + z).sqrt() - x
    s = check_against_eager(fn, torch.randn(7, 33), torch.randn(33), torch.randn(7, 1), tol=TRANSCENDENTAL)
    assert s["plan_kernels"] == {"MAP": 1}, s["plan_kernels"]


def test_fourth_input_or_ninth_op_starts_a_new_record():
    four = lambda a, b, c, d: ((a + b) * c) - d
    s = check_against_eager(four, *[torch.randn(4, 9) for _ in range(4)], tol=EXACT)
    assert s["plan_kernels"] == {"MAP": 1, "BINARY": 1}, s["plan_kernels"]

    def long_chain(x):
        for i in range(10):
            x = x * 1.25 + float(i)
        return x
    s = check_against_eager(long_chain, torch.randn(5, 6), tol=EXACT)
    assert s["plan_kernels"] == {"MAP": 3}, s["plan_kernels"]  # 20 ops: 8 + 8 + 4


def test_no_chain_fusion_when_the_intermediate_is_needed():
    # t is read twice (by u and by the output), and t's transposed view cannot come from registers
    two_users = lambda x: (lambda t: (t.relu(), t))(x * 2.0)
    s = check_against_eager(two_users, torch.randn(6, 6), tol=EXACT)
    assert s["plan_kernels"] == {"BINARY": 1, "UNARY": 1}, s["plan_kernels"]
    s = check_against_eager(lambda x: (lambda t: t + t.t())(x * 2.0), torch.randn(6, 6), tol=EXACT)
    assert s["plan_kernels"] == {"BINARY": 2}, s["plan_kernels"]


def test_no_chain_fusion_across_a_broadcast_or_a_dtype_change():
    # the intermediate (x + 1) is broadcast to a bigger result: different index spaces
    s = check_against_eager(lambda x, y: (x + 1.0) * y, torch.randn(1, 7), torch.randn(3, 7), tol=EXACT)
    assert s["plan_kernels"] == {"BINARY": 2}, s["plan_kernels"]
    # an int64 operand needs a cast before it can join float math
    s = check_against_eager(lambda x, i: (x * 2.0) + i, torch.randn(4, 5), torch.arange(5), tol=EXACT)
    assert "MAP" not in s["plan_kernels"], s["plan_kernels"]
