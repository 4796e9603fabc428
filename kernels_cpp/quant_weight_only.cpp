// Weight-only int8 linear (torchao's Int8WeightOnlyConfig): float32 activations times int8 weights
// with a per-output-channel scale. The weights stay int8 in memory and are widened to float32 in
// registers (i16x8.load8x8_s, i32x4.extend, f32x4.convert), so the weight stream, which bounds a
// batch-1 decoding step (M = 1: every weight byte is used once), is 4x smaller than float32's. The
// products accumulate in float32 (the activations are float: there is no integer dot to use) and
// the scale multiplies each finished sum in the epilogue, as eager torchao does (mm, then mul).
#include <stddef.h>
#include <wasm_simd128.h>
#include "abi.h"
#include "simd_math.h"
#include "threadpool.h"

namespace {

constexpr int kNR = 8;   // output channels per packed panel: two f32x4 accumulators per row
constexpr int kMR = 4;   // activation rows per tile: 8 accumulators + 2 widened weights + 1 splat
constexpr int kMB = 16;  // rows of x kept hot (in L1 for k <= 512) while a thread walks its panels

// The 8 int8 weights of one k step of a panel, as two f32x4 (exact: int8 fits float32).
inline void widen8(const int8_t* p, v128_t* lo, v128_t* hi) {
  const v128_t w16 = wasm_i16x8_load8x8(p);
  *lo = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(w16));
  *hi = wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(w16));
}

// out[c] = acc[c] * scale[c] (+ bias[c]) for the panel's nr valid channels: a multiply then an add,
// two roundings, as eager's mul and add nodes.
inline void store_row(float* out, v128_t a0, v128_t a1, const float* scale, const float* bias, int nr) {
  if (nr == kNR) {
    v128_t y0 = wasm_f32x4_mul(a0, wasm_v128_load(scale)), y1 = wasm_f32x4_mul(a1, wasm_v128_load(scale + 4));
    if (bias) {
      y0 = wasm_f32x4_add(y0, wasm_v128_load(bias));
      y1 = wasm_f32x4_add(y1, wasm_v128_load(bias + 4));
    }
    wasm_v128_store(out, y0);
    wasm_v128_store(out + 4, y1);
    return;
  }
  alignas(16) float acc[kNR];
  wasm_v128_store(acc, a0);
  wasm_v128_store(acc + 4, a1);
  for (int c = 0; c < nr; ++c) out[c] = bias ? acc[c] * scale[c] + bias[c] : acc[c] * scale[c];
}

// One row of x against one panel (the M = 1 decoding case): k unrolled by 4 into four independent
// accumulator pairs, so the adds of consecutive k steps do not wait on each other; one 16-byte load
// holds two k steps of the panel.
inline void gemv_panel(const float* x, const int8_t* w, int K, v128_t* o0, v128_t* o1) {
  v128_t acc[4][2];
  for (auto& a : acc) a[0] = a[1] = wasm_f32x4_splat(0.0f);
  int k = 0;
  for (; k + 4 <= K; k += 4) {
    const v128_t pair[2] = {wasm_v128_load(w + (ptrdiff_t)k * kNR), wasm_v128_load(w + (ptrdiff_t)k * kNR + 16)};
    for (int h = 0; h < 2; ++h) {
      const v128_t w16[2] = {wasm_i16x8_extend_low_i8x16(pair[h]), wasm_i16x8_extend_high_i8x16(pair[h])};
      for (int s = 0; s < 2; ++s) {
        const int step = 2 * h + s;
        const v128_t xs = wasm_f32x4_splat(x[k + step]);
        acc[step][0] = simd_math::madd(xs, wasm_f32x4_convert_i32x4(wasm_i32x4_extend_low_i16x8(w16[s])), acc[step][0]);
        acc[step][1] = simd_math::madd(xs, wasm_f32x4_convert_i32x4(wasm_i32x4_extend_high_i16x8(w16[s])), acc[step][1]);
      }
    }
  }
  for (; k < K; ++k) {
    v128_t w0, w1;
    widen8(w + (ptrdiff_t)k * kNR, &w0, &w1);
    const v128_t xs = wasm_f32x4_splat(x[k]);
    acc[0][0] = simd_math::madd(xs, w0, acc[0][0]);
    acc[0][1] = simd_math::madd(xs, w1, acc[0][1]);
  }
  *o0 = wasm_f32x4_add(wasm_f32x4_add(acc[0][0], acc[1][0]), wasm_f32x4_add(acc[2][0], acc[3][0]));
  *o1 = wasm_f32x4_add(wasm_f32x4_add(acc[0][1], acc[1][1]), wasm_f32x4_add(acc[2][1], acc[3][1]));
}

// MR rows of x against one panel: each k step's weights are widened once and used by MR rows.
template <int MR>
inline void tile(const float* x, int x_stride, const int8_t* w, int K, v128_t (*acc)[2]) {
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = wasm_f32x4_splat(0.0f);
  for (int k = 0; k < K; ++k) {
    v128_t w0, w1;
    widen8(w + (ptrdiff_t)k * kNR, &w0, &w1);
    for (int i = 0; i < MR; ++i) {
      const v128_t xs = wasm_f32x4_splat(x[(ptrdiff_t)i * x_stride + k]);
      acc[i][0] = simd_math::madd(xs, w0, acc[i][0]);
      acc[i][1] = simd_math::madd(xs, w1, acc[i][1]);
    }
  }
}

template <int MR>
inline void tile_store(const WOLINEAR_args* a, const float* x, const int8_t* w, float* out, const float* scale,
                       const float* bias, int nr) {
  v128_t acc[MR][2];
  tile<MR>(x, a->x_stride, w, a->k, acc);
  for (int i = 0; i < MR; ++i) store_row(out + (ptrdiff_t)i * a->n, acc[i][0], acc[i][1], scale, bias, nr);
}

// Rows [i0, i1) of x against panels [p0, p1).
void run_block(const WOLINEAR_args* a, int i0, int i1, int p0, int p1) {
  const float* x = at<const float>(a->x);
  const int8_t* w = at<const int8_t>(a->w);
  const float* scale = at<const float>(a->scale);
  const float* bias = a->bias ? at<const float>(a->bias) : nullptr;
  float* out = at<float>(a->out);
  for (int p = p0; p < p1; ++p) {
    const int n0 = p * kNR, nr = a->n - n0 < kNR ? a->n - n0 : kNR;
    const int8_t* panel = w + (ptrdiff_t)p * a->k * kNR;
    const float* sc = scale + n0;
    const float* bi = bias ? bias + n0 : nullptr;
    int i = i0;
    for (; i + kMR <= i1; i += kMR)
      tile_store<kMR>(a, x + (ptrdiff_t)i * a->x_stride, panel, out + (ptrdiff_t)i * a->n + n0, sc, bi, nr);
    const float* xi = x + (ptrdiff_t)i * a->x_stride;
    float* oi = out + (ptrdiff_t)i * a->n + n0;
    switch (i1 - i) {
      case 3: tile_store<3>(a, xi, panel, oi, sc, bi, nr); break;
      case 2: tile_store<2>(a, xi, panel, oi, sc, bi, nr); break;
      case 1: {
        v128_t o0, o1;
        gemv_panel(xi, panel, a->k, &o0, &o1);
        store_row(oi, o0, o1, sc, bi, nr);
        break;
      }
      default: break;
    }
  }
}

}  // namespace

void k_WOLINEAR(const WOLINEAR_args* a) {
  const int panels = (a->n + kNR - 1) / kNR;
  // Threads split the output channels (each reads only its share of the weights, once per block
  // of kMB rows); rows go in blocks of kMB so a block of x stays in cache across the panels.
  parallel_rows(panels, 2.0 * a->m * a->n * a->k, [&](int64_t p0, int64_t p1) {
    for (int i0 = 0; i0 < a->m; i0 += kMB) run_block(a, i0, i0 + kMB < a->m ? i0 + kMB : a->m, (int)p0, (int)p1);
  });
}
