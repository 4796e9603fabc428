"""threads=1 and threads=2 give bit-identical results: work is split by output rows / panels /
planes / columns, never by the summed dimension, so the arithmetic per element must not depend on
the thread count. Every case is well above the kernels' threading threshold (2e5 flops)."""
from __future__ import annotations

import pytest
import torch

from kernel_testing import assert_bits_equal
from test_conv_pool_norm_kernels import (run_channel_affine, run_conv, run_layernorm, run_pool,
                                         run_reduce, run_softmax)
from test_elementwise_kernels import run_binary, run_unary
from test_gemm_kernels import run_gemm, run_pack_b


def _same(s1, s2, fn):
    a, b = fn(s1), fn(s2)
    assert s1.threads == 1 and s2.threads == 2
    assert not torch.isnan(a).all()
    assert_bits_equal(a, b)


X = {}


def _x(name, shape, seed):
    if name not in X:
        X[name] = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return X[name]


CASES = {
    "gemm": lambda s: run_gemm(s, _x("ga", (2, 130, 300), 1), _x("gb", (2, 300, 257), 2),
                               _x("gbias", (257,), 3), 1, "RELU", ldc_pad=3),
    "gemm_m3_long_k": lambda s: run_gemm(s, _x("ga3", (1, 3, 700), 4), _x("gb3", (1, 700, 1000), 5)),
    "gemm_m8_wide": lambda s: run_gemm(s, _x("ga9", (1, 8, 77), 27), _x("gb9", (1, 77, 1001), 28),
                                       _x("gbias9", (1001,), 29), 1, "CLAMP"),
    "gemm_batched": lambda s: run_gemm(s, _x("ga8", (16, 9, 40), 6), _x("gb8", (16, 40, 33), 7)),
    "pack_b_transposed": lambda s: run_pack_b(s, _x("pb", (3, 500, 300), 8).transpose(1, 2))[0],
    "conv3x3": lambda s: run_conv(s, _x("cx", (2, 32, 30, 30), 9), _x("cw", (48, 32, 3, 3), 10),
                                  _x("cb", (48,), 11), (1, 1), (1, 1), (1, 1), 1, "RELU"),
    "conv3x3_7_panels": lambda s: run_conv(s, _x("cx7", (1, 128, 7, 7), 24), _x("cw7", (64, 128, 3, 3), 25),
                                           _x("cb7", (64,), 26), (1, 1), (1, 1), (1, 1), 1, "RELU"),
    "conv1x1": lambda s: run_conv(s, _x("cx", (2, 32, 30, 30), 9), _x("cw1", (48, 32, 1, 1), 12),
                                  _x("cb", (48,), 11), (1, 1), (0, 0), (1, 1), 1),
    # pointwise convs (conv.cpp): columns split across threads (more columns than output channels;
    # 667 columns: panels cut mid-row, the last one partial), rows split over a B packed by one
    # thread, rows split over a B packed by both (K x columns over the threading threshold)
    "conv1x1_odd_columns": lambda s: run_conv(s, _x("cxo", (1, 24, 23, 29), 33), _x("cwo", (37, 24, 1, 1), 34),
                                              _x("cbo", (37,), 35), (1, 1), (0, 0), (1, 1), 1, "RELU"),
    "conv1x1_more_rows": lambda s: run_conv(s, _x("cxr", (1, 40, 14, 14), 36), _x("cwr", (200, 40, 1, 1), 37),
                                            _x("cbr", (200,), 38), (1, 1), (0, 0), (1, 1), 1),
    "conv1x1_more_rows_packed": lambda s: run_conv(s, _x("cxp", (1, 1030, 14, 14), 39), _x("cwp", (216, 1030, 1, 1), 40),
                                                   None, (1, 1), (0, 0), (1, 1), 1, "CLAMP", 0.0, 6.0),
    "conv_depthwise": lambda s: run_conv(s, _x("cx", (2, 32, 30, 30), 9), _x("cwd", (32, 1, 3, 3), 13),
                                         None, (1, 1), (1, 1), (1, 1), 32),
    # 131 planes: the pool claims 8 tasks at a time on 2 threads (threadpool.cpp claim_chunk), the
    # last claim 3 (131 = 16 * 8 + 3)
    "conv_depthwise_131_planes": lambda s: run_conv(s, _x("cxd", (1, 131, 12, 13), 30), _x("cwd131", (131, 1, 3, 3), 31),
                                                    _x("cbd", (131,), 32), (1, 1), (1, 1), (1, 1), 131, "RELU"),
    "conv_grouped_s2": lambda s: run_conv(s, _x("cx", (2, 32, 30, 30), 9), _x("cwg", (64, 8, 3, 3), 14),
                                          _x("cbg", (64,), 15), (2, 2), (1, 1), (1, 1), 4, "CLAMP", -1.0, 1.0),
    "unary_gelu": lambda s: run_unary(s, "GELU_ERF", _x("e", (300, 1001), 16)),
    "unary_exp": lambda s: run_unary(s, "EXP", _x("e", (300, 1001), 16)),
    "unary_transposed_silu": lambda s: run_unary(s, "SILU", _x("e", (300, 1001), 16).t()),
    "binary_bcast": lambda s: run_binary(s, "ADD", _x("e", (300, 1001), 16), _x("row", (1001,), 17)),
    "binary_out_transposed": lambda s: run_binary(s, "MUL", _x("e", (300, 1001), 16),
                                                  _x("e", (300, 1001), 16), out_transposed=True),
    "maxpool": lambda s: run_pool(s, "MAX", _x("p", (64, 56, 56), 18), 28, 28, (3, 3), (2, 2), (1, 1)),
    "avgpool": lambda s: run_pool(s, "AVG", _x("p", (64, 56, 56), 18), 28, 28, (3, 3), (2, 2), (1, 1)),
    "adaptive": lambda s: run_pool(s, "ADAPTIVE_AVG", _x("p", (64, 56, 56), 18), 7, 7, (1, 1), (1, 1), (0, 0)),
    "reduce_sum_inner": lambda s: run_reduce(s, "SUM", _x("r", (64, 500, 70), 19)),
    "reduce_mean_rows": lambda s: run_reduce(s, "MEAN", _x("r1", (300, 3001, 1), 20)),
    "reduce_amax_inner": lambda s: run_reduce(s, "AMAX", _x("r", (64, 500, 70), 19)),
    "softmax_rows": lambda s: run_softmax(s, _x("e", (300, 1001), 16)[:, :, None], 0),
    "log_softmax_inner": lambda s: run_softmax(s, _x("r", (64, 500, 70), 19), 1),
    "layernorm": lambda s: run_layernorm(s, _x("e", (300, 1001), 16), _x("lw", (1001,), 21),
                                         _x("row", (1001,), 17), 1e-5, True)[0],
    "channel_affine": lambda s: run_channel_affine(s, _x("cx", (2, 32, 30, 30), 9).reshape(2, 32, 900),
                                                   _x("sc", (32,), 22), _x("sh", (32,), 23), "RELU"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_vs_two_threads_bit_identical(s1, s2, case):
    _same(s1, s2, CASES[case])
