// The direct convolution for few input channels (a CNN's first conv, reading the RGB image):
// kernels_cpp/conv_small_cin.cpp. k_CONV2D dispatches to it when small_cin_conv_applies.
#pragma once
#include "abi.h"

// True when small_cin_conv runs this CONV2D record: groups 1, c_in <= 4, c_in * kh * kw <= 36 (where
// it beats im2col + GEMM), stride 1 or 2 (the same both ways), dilation 1, and its zero-padded input
// lines and packed weights fit its stack buffers.
bool small_cin_conv_applies(const CONV2D_args* a);

// The CONV2D record `a` (one that small_cin_conv_applies to); no scratch.
void small_cin_conv(const CONV2D_args* a);
