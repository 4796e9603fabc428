// peak_flops: the yardstick the GEMM is judged against. It runs the GEMM inner-loop pattern
// (acc += a * b on f32x4, a mul then an add since this target has no FMA) with nothing else in the
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
    c00 = wasm_f32x4_add(c00, wasm_f32x4_mul(a0, b0));
    c01 = wasm_f32x4_add(c01, wasm_f32x4_mul(a0, b1));
    c10 = wasm_f32x4_add(c10, wasm_f32x4_mul(a1, b0));
    c11 = wasm_f32x4_add(c11, wasm_f32x4_mul(a1, b1));
    c20 = wasm_f32x4_add(c20, wasm_f32x4_mul(a2, b0));
    c21 = wasm_f32x4_add(c21, wasm_f32x4_mul(a2, b1));
    c30 = wasm_f32x4_add(c30, wasm_f32x4_mul(a3, b0));
    c31 = wasm_f32x4_add(c31, wasm_f32x4_mul(a3, b1));
  }
  const v128_t s = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(c00, c01), wasm_f32x4_add(c10, c11)),
                                  wasm_f32x4_add(wasm_f32x4_add(c20, c21), wasm_f32x4_add(c30, c31)));
  g_checksum = wasm_f32x4_extract_lane(s, 0) + wasm_f32x4_extract_lane(s, 3);
  return (double)iters * 8 * 4 * 2;
}
