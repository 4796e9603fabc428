// Standalone micro-benchmark of the dynamic int8 linear (benchmarks/gemm_micro/build_int8.sh):
// kernels_cpp/quant_dynamic.cpp's QDYNPACK + QGEMM_DYN on fixed buffers, single-threaded, with
// bench.cpp's exports, so run.mjs / run.py time it next to the float32 GEMM at the same shapes:
// setup(m, n, k) is a linear of m tokens, k inputs, n outputs (the float GEMM's [m, k] x [k, n]);
// run(reps, 2) runs the whole linear (quantize + GEMM), run(reps, 0) QDYNPACK only, run(reps, 1)
// QGEMM_DYN only (GFLOP/s then count 2mnk for each: compare the times).
#include <stdint.h>
#include <stdlib.h>
#include "abi.h"
#include "threadpool.h"
int pool_threads() { return 1; }
void set_pool_threads(int) {}
void parallel_for_raw(int n, task_fn fn, void* ctx) { for (int t = 0; t < n; ++t) fn(ctx, t); }
static QDYNPACK_args P;
static QGEMM_DYN_args G;
static void* bufs[6];
static uint32_t off(void* p) { return (uint32_t)(uintptr_t)p; }
extern "C" __attribute__((export_name("setup"))) void setup(int m, int n, int k) {
  for (void*& b : bufs) free(b);
  const int kp = k + k % 2, n8 = (n + 7) / 8 * 8, m4 = (m + 3) / 4 * 4;
  float* x = (float*)malloc(4 * (size_t)m * k);
  for (long i = 0; i < (long)m * k; ++i) x[i] = (float)((i * 7) % 13) * 0.1f - 0.5f;
  int8_t* w = (int8_t*)malloc((size_t)n8 * kp);  // (the layout does not matter for timing)
  for (long i = 0; i < (long)n8 * kp; ++i) w[i] = (int8_t)((i * 5) % 255 - 127);
  float* scales = (float*)malloc(8 * (size_t)n);  // w_scale, then bias
  for (int i = 0; i < 2 * n; ++i) scales[i] = 0.01f;
  int16_t* xq = (int16_t*)malloc(2 * (size_t)m4 * kp);
  int32_t* qparams = (int32_t*)malloc(8);
  float* out = (float*)malloc(4 * (size_t)m * n);
  void* all[6] = {x, w, scales, xq, qparams, out};
  for (int i = 0; i < 6; ++i) bufs[i] = all[i];
  P = QDYNPACK_args{m, k, kp, k, 0, 255, 1.0f / 4096, off(x), off(qparams), off(xq)};
  G = QGEMM_DYN_args{n, m, kp, off(w), off(xq), off(qparams), off(scales), off(scales + n), off(out)};
  k_QDYNPACK(&P);
}
extern "C" __attribute__((export_name("run"))) float run(int reps, int mode) {
  for (int r = 0; r < reps; ++r) {
    if (mode != 1) k_QDYNPACK(&P);
    if (mode != 0) k_QGEMM_DYN(&G);
  }
  const float* out = (const float*)bufs[5];
  return out[0] + out[(long)G.rows * G.cols - 1];
}
