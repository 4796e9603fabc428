"""Which convs the lowering runs as CONV2D_WINOGRAD (3x3, stride 1, dilation 1, groups 1, constant
weight, >= 8 channels in and out, >= 8 2x2 output tiles in the batch), and that they equal eager
with a folded batch norm, a fused activation, odd sizes and batches. Tolerance MATMUL (helpers.py):
the kernel tests (tests/kernels/test_conv_winograd_kernels.py) bound the error at these sizes far
below it."""
import pytest
import torch
import torch.nn as nn

from helpers import MATMUL, check_against_eager, randomized_bn


@pytest.mark.parametrize("n,c_in,c_out,h,w,padding,bias", [
    (8, 16, 16, 1, 1, 1, True), (4, 17, 33, 2, 3, 1, False), (3, 33, 17, 5, 7, 1, True),
    (1, 8, 24, 13, 13, 0, True), (2, 20, 9, 7, 5, (0, 1), False)])
def test_conv_runs_as_winograd(n, c_in, c_out, h, w, padding, bias):
    model = nn.Conv2d(c_in, c_out, 3, padding=padding, bias=bias).eval()
    s = check_against_eager(model, torch.randn(n, c_in, h, w), tol=MATMUL)
    assert s["plan_kernels"] == {"CONV2D_WINOGRAD": 1}, s["plan_kernels"]


def test_conv_bn_relu_is_one_winograd_kernel_with_one_weight():
    """The batch norm folds into the transformed weight; neither the raw weight nor the unfolded
    transformed one is uploaded (constants: 16 * c_out * c_in weight floats + c_out bias floats)."""
    model = nn.Sequential(nn.Conv2d(24, 32, 3, padding=1), randomized_bn(32), nn.ReLU()).eval()
    s = check_against_eager(model, torch.randn(3, 24, 11, 9), tol=MATMUL)
    assert s["plan_kernels"] == {"CONV2D_WINOGRAD": 1}, s["plan_kernels"]
    assert s["constant_bytes_uploaded"] == 4 * (16 * 32 * 24 + 32), s["constant_bytes_uploaded"]


@pytest.mark.parametrize("kwargs,c_in,hw", [(dict(stride=2), 16, 9), (dict(dilation=2), 16, 9),
                                            (dict(groups=2), 16, 9), ({}, 4, 9), (dict(kernel_size=(3, 1)), 16, 9),
                                            ({}, 16, 4)])  # a 4x4 output is 4 tiles (< 8)
def test_other_convs_stay_direct(kwargs, c_in, hw):
    kwargs = {"kernel_size": 3, **kwargs}
    model = nn.Conv2d(c_in, 16, padding=1, **kwargs).eval()
    s = check_against_eager(model, torch.randn(1, c_in, hw, hw), tol=MATMUL)
    assert s["plan_kernels"] == {"CONV2D": 1}, s["plan_kernels"]


def test_runtime_weight_stays_direct():
    f = lambda x, w: torch.nn.functional.conv2d(x, w, padding=1)
    s = check_against_eager(f, torch.randn(1, 16, 6, 6), torch.randn(16, 16, 3, 3), tol=MATMUL)
    assert s["plan_kernels"] == {"CONV2D": 1}, s["plan_kernels"]
