// GEMM against a pre-packed B (panel layout of PACK_B, NR = kGemmNR columns per panel), exposed to
// the other kernels (CONV2D calls it after its im2col) as well as behind k_GEMM.
#pragma once
#include <stdint.h>

// C[m, n] = act(A[m, k] @ B[k, n] + bias) for one batch. A row-major (row stride lda), bp in panel
// layout (ceil(n/NR) panels of k x NR floats), C row stride ldc. bias_mode 0 none, 1 bias[n],
// 2 bias[m]. Splits the work over the thread pool when it is worth it (nested calls run inline).
void gemm_packed(int m, int n, int k, const float* a, int lda, const float* bp, float* c, int ldc,
                 const float* bias, int bias_mode, int act, float p0, float p1);

// Rows of the micro-kernel's tile (benchmarks/gemm_micro builds other shapes with -DGEMM_MR=...):
// callers that cut m into chunks cut it into whole tiles.
#ifndef GEMM_MR
#define GEMM_MR 6
#endif
constexpr int kGemmMR = GEMM_MR;

// First row of chunk t of m rows cut into `chunks` chunks of whole row tiles, as even as whole tiles
// allow (t = chunks gives m). gemm_packed's task grid splits m this way, and so do callers that run
// gemm_packed on row chunks themselves (CONV2D_WINOGRAD), so no chunk but the last ends in a partial tile.
inline int gemm_chunk_row(int m, int chunks, int t) {
  const int row = (m + kGemmMR - 1) / kGemmMR * t / chunks * kGemmMR;
  return row < m ? row : m;
}

// Panels per L2 column block of gemm_packed (KC x 256 floats = 256 KiB); CONV2D's 1-thread pointwise
// path packs its input in blocks of at most this many panels.
constexpr int kGemmNCB = 32;

// Packs B[k, n] (element strides stride_k, stride_n) into panel layout at out
// (ceil(n/NR)*NR*k floats, zero padded past n).
void pack_b(int k, int n, const float* b, int stride_k, int stride_n, float* out);
