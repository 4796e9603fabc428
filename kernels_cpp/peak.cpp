// peak_flops: the yardstick the GEMM is judged against. It runs the GEMM inner-loop pattern
// (acc += a * b on f32x4 through simd_math::madd, as the micro-kernel does: mul+add in the
// baseline build, relaxed_madd in the relaxed one) with nothing else in the
// loop but the two loads the micro-kernel also does, and returns the number of flops performed;
// the host times the call.
//
// Shape: 8 accumulators = 4 multipliers (registers) x 2 vectors loaded per step; 8 independent add
// chains cover the add latency, and 8 + 4 + 2 + 1 temporaries fit the 16 xmm registers wasmtime's
// x86 backend allocates from (12 accumulators with their operands spill, which measures spills).
// Guarding against the compiler: b is loaded from an address that changes every step (else every
// product is loop-invariant and gets hoisted), the four multipliers are distinct values read
// through a volatile (a constant 1.0 would fold the mul away, equal ones would be CSE'd), and the
// sum goes to a volatile global so the loop is not dead.
#include <stdint.h>
#include <wasm_simd128.h>
#include "simd_math.h"
#include "threadpool.h"

void set_pool_threads(int n);

namespace {
alignas(16) float g_b[16 * 8];
volatile float g_seed = 1e-7f;
volatile float g_checksum;
}  // namespace

extern "C" __attribute__((export_name("peak_flops"))) double peak_flops(int32_t iters) {
  const float seed = g_seed;
  for (int i = 0; i < 16 * 8; ++i) g_b[i] = seed * (float)(i + 1);
  const v128_t a0 = wasm_f32x4_splat(seed + 0.5f), a1 = wasm_f32x4_splat(seed + 0.25f);
  const v128_t a2 = wasm_f32x4_splat(seed + 0.125f), a3 = wasm_f32x4_splat(seed + 0.0625f);
  v128_t c00 = wasm_f32x4_splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
         c30 = c00, c31 = c00;
  for (int32_t it = 0; it < iters; ++it) {
    const float* b = g_b + (it & 15) * 8;
    const v128_t b0 = wasm_v128_load(b), b1 = wasm_v128_load(b + 4);
    c00 = simd_math::madd(a0, b0, c00);
    c01 = simd_math::madd(a0, b1, c01);
    c10 = simd_math::madd(a1, b0, c10);
    c11 = simd_math::madd(a1, b1, c11);
    c20 = simd_math::madd(a2, b0, c20);
    c21 = simd_math::madd(a2, b1, c21);
    c30 = simd_math::madd(a3, b0, c30);
    c31 = simd_math::madd(a3, b1, c31);
  }
  const v128_t s = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(c00, c01), wasm_f32x4_add(c10, c11)),
                                  wasm_f32x4_add(wasm_f32x4_add(c20, c21), wasm_f32x4_add(c30, c31)));
  g_checksum = wasm_f32x4_extract_lane(s, 0) + wasm_f32x4_extract_lane(s, 3);
  return (double)iters * 8 * 4 * 2;
}

// peak_flops_chains: the highest multiply-add rate a wasm loop reaches on this machine, the yardstick
// next to peak_flops (whose two loads per step and 8 chains leave it ~25% short of it in wasmtime):
// 12 independent chains c = c * m + d (simd_math::madd: mul + add, or relaxed_madd) and no loads.
// 12 chains cover the mul + add latency (8 cycles) at two vector ops per cycle, and 12 accumulators
// + m + d + one product temporary fit the 16 xmm registers (checked with `wasm-tools print`: the loop
// body is 12 madds on locals, no loads or stores). Guarding against the compiler: the multiply takes
// the accumulator, so it cannot be hoisted out of the loop; m and d are read through a volatile (no
// constant folding); the chains start from distinct values (equal ones would be CSE'd into one);
// m < 1 keeps them finite (they converge to d / (1 - m), no denormals); the sum goes to a volatile.
extern "C" __attribute__((export_name("peak_flops_chains"))) double peak_flops_chains(int32_t iters) {
  const float seed = g_seed;
  const v128_t m = wasm_f32x4_splat(1.0f - seed), d = wasm_f32x4_splat(seed);
  v128_t c[12];
  for (int i = 0; i < 12; ++i) c[i] = wasm_f32x4_splat(seed * (float)(i + 1));
  for (int32_t it = 0; it < iters; ++it) {
#pragma clang loop unroll(full)
    for (int i = 0; i < 12; ++i) c[i] = simd_math::madd(c[i], m, d);
  }
  v128_t s = c[0];
  for (int i = 1; i < 12; ++i) s = wasm_f32x4_add(s, c[i]);
  g_checksum = wasm_f32x4_extract_lane(s, 0) + wasm_f32x4_extract_lane(s, 3);
  return (double)iters * 12 * 4 * 2;
}

// read_bandwidth: the other yardstick, for kernels that stream an operand from memory (a GEMV reads
// each weight once per call). Reads nbytes at ptr `passes` times, split in contiguous chunks over
// `threads` threads of the pool (each re-reads its own chunk, as a kernel whose operand stays in its
// core's cache would), and returns the bytes read; the host times the call. The loads feed 8 i32x4
// add chains (1-cycle latency, unlike a float add), so the loop is bound by the loads and the
// caches/memory behind them, not by arithmetic. nbytes must be a multiple of 128.
extern "C" __attribute__((export_name("read_bandwidth"))) double read_bandwidth(const v128_t* p, int32_t nbytes,
                                                                               int32_t passes, int32_t threads) {
  const int32_t blocks = nbytes / 128;  // 8 vectors each
  const int prev = pool_threads();
  set_pool_threads(threads);
  const int tasks = threads < 1 ? 1 : threads > 16 ? 16 : threads;
  v128_t partial[16];
  parallel_for(tasks, [&](int t) {
    const int32_t lo = (int32_t)((int64_t)blocks * t / tasks), hi = (int32_t)((int64_t)blocks * (t + 1) / tasks);
    v128_t r0 = wasm_i32x4_splat(0), r1 = r0, r2 = r0, r3 = r0, r4 = r0, r5 = r0, r6 = r0, r7 = r0;
    for (int32_t pass = 0; pass < passes; ++pass) {
      for (const v128_t* q = p + (ptrdiff_t)lo * 8; q < p + (ptrdiff_t)hi * 8; q += 8) {
        r0 = wasm_i32x4_add(r0, q[0]);
        r1 = wasm_i32x4_add(r1, q[1]);
        r2 = wasm_i32x4_add(r2, q[2]);
        r3 = wasm_i32x4_add(r3, q[3]);
        r4 = wasm_i32x4_add(r4, q[4]);
        r5 = wasm_i32x4_add(r5, q[5]);
        r6 = wasm_i32x4_add(r6, q[6]);
        r7 = wasm_i32x4_add(r7, q[7]);
      }
    }
    partial[t & 15] = wasm_i32x4_add(wasm_i32x4_add(wasm_i32x4_add(r0, r1), wasm_i32x4_add(r2, r3)),
                                     wasm_i32x4_add(wasm_i32x4_add(r4, r5), wasm_i32x4_add(r6, r7)));
  });
  set_pool_threads(prev);
  v128_t all = wasm_i32x4_splat(0);
  for (int t = 0; t < tasks && t < 16; ++t) all = wasm_i32x4_add(all, partial[t]);
  g_checksum = (float)wasm_i32x4_extract_lane(all, 0);
  return (double)blocks * 128 * passes;
}
