// Standalone GEMM micro-benchmark (benchmarks/gemm_micro/build.sh): gemm_packed of kernels_cpp/gemm.cpp
// on fixed buffers, single-threaded (the pool is stubbed), timed by the host (run.mjs: V8, run.py:
// wasmtime). The tile shapes and broadcast of docs/design.md decision 4 were chosen with it.
#include <stdlib.h>
#include <stdint.h>
#include "gemm.h"
#include "threadpool.h"
int pool_threads() { return 1; }
void set_pool_threads(int) {}
void parallel_for_raw(int n, task_fn fn, void* ctx) { for (int t = 0; t < n; ++t) fn(ctx, t); }
static float *A, *B, *Bin, *C, *bias; static int M, N, K;
// set_mode: 0 = B packed once in setup (a linear: its constant B); 1 = B packed on every run from
// the row-major [K, N], as CONV2D's pointwise path packs its input planes; 2 = packed on every run
// block by block, each block's GEMM right after its pack (CONV2D's 1-thread pointwise path: blocks of
// 64 Ki floats of panels, at least 8 panels); 100 + P = the same with P-panel blocks.
static int mode = 0;
extern "C" __attribute__((export_name("set_mode"))) void set_mode(int m) { mode = m; }
extern "C" __attribute__((export_name("setup"))) void setup(int m, int n, int k) {
  free(A); free(B); free(Bin); free(C); free(bias);
  M = m; N = n; K = k;
  A = (float*)malloc(4 * (size_t)m * k); float* b = Bin = (float*)malloc(4 * (size_t)k * n);
  B = (float*)malloc(4 * (size_t)k * ((n + 7) / 8 * 8)); C = (float*)malloc(4 * (size_t)m * n);
  bias = (float*)malloc(4 * (size_t)(m > n ? m : n));
  for (long i = 0; i < (long)m * k; ++i) A[i] = (float)((i * 7) % 13) * 0.01f;
  for (long i = 0; i < (long)k * n; ++i) b[i] = (float)((i * 5) % 11) * 0.01f;
  for (int i = 0; i < (m > n ? m : n); ++i) bias[i] = 0.1f;
  pack_b(k, n, b, n, 1, B);
}
extern "C" __attribute__((export_name("run"))) float run(int reps, int bias_mode) {
  for (int r = 0; r < reps; ++r) {
    if (mode >= 2) {
      int block = mode >= 100 ? mode - 100 : 64 * 1024 / (K * 8);
      block = block < 8 ? 8 : block;
      for (int c0 = 0; c0 < N; c0 += block * 8) {
        const int c1 = c0 + block * 8 < N ? c0 + block * 8 : N;
        pack_b(K, c1 - c0, Bin + c0, N, 1, B);
        gemm_packed(M, c1 - c0, K, A, K, B, C + c0, N, bias, bias_mode, 0, 0, 0);
      }
      continue;
    }
    if (mode == 1) pack_b(K, N, Bin, N, 1, B);
    gemm_packed(M, N, K, A, K, B, C, N, bias, bias_mode, 0, 0, 0);
  }
  return C[0] + C[(long)M * N - 1];
}
