// Weight-only int8 linear (torchao's Int8WeightOnlyConfig): float32 activations times int8 weights
// with a per-output-channel scale. The weights stay int8 in memory and are widened to float32 in
// registers (i16x8.load8x8_s, i32x4.extend, f32x4.convert), so the weight stream, which bounds a
// batch-1 decoding step (M = 1: every weight byte is used once), is 4x smaller than float32's. The
// products accumulate in float32 (the activations are float: there is no integer dot to use) and
// the scale multiplies each finished sum in the epilogue, as eager torchao does (mm, then mul).
#include <stddef.h>
#include <wasm_simd128.h>
#include "abi.h"
#include "gemm.h"
#include "simd_math.h"
#include "threadpool.h"

namespace {

constexpr int kNR = kWoPanel;            // output channels per packed panel (8): two f32x4 accumulators per row
constexpr int kBlockPanels = kWoScratchPanels;  // panels widened per float GEMM call (8)
constexpr int kGemmRows = kWoGemmRows;   // rows from which the widened copy + float GEMM pays (6: its 6-row tile)

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

// 4 bytes of v (lanes 4g..4g+3) moved to the top byte of each i32 lane (the rest zero) and
// converted: 2^24 times the int8 weights, exactly (8 significant bits). One swizzle and one
// convert per 4 weights, where sign extension takes two extends and a convert.
template <int G>
inline v128_t top_bytes(v128_t v) {
  const v128_t idx = wasm_i8x16_make(-1, -1, -1, 4 * G, -1, -1, -1, 4 * G + 1, -1, -1, -1, 4 * G + 2, -1, -1, -1, 4 * G + 3);
#ifdef __wasm_relaxed_simd__
  return wasm_f32x4_convert_i32x4(wasm_i8x16_relaxed_swizzle(v, idx));
#else
  return wasm_f32x4_convert_i32x4(wasm_i8x16_swizzle(v, idx));
#endif
}

// One row of x against one panel (the M = 1 decoding case): k unrolled by 4 into four independent
// accumulator pairs, so the adds of consecutive k steps do not wait on each other; one 16-byte load
// holds two k steps of the panel. The sums are 2^24 times the dot products (top_bytes): exact
// scaling, undone in the epilogue (kTopScale).
inline void gemv_panel(const float* x, const int8_t* w, int K, v128_t* o0, v128_t* o1) {
  v128_t acc[4][2];
  for (auto& a : acc) a[0] = a[1] = wasm_f32x4_splat(0.0f);
  int k = 0;
  for (; k + 4 <= K; k += 4) {
    const v128_t pa = wasm_v128_load(w + (ptrdiff_t)k * kNR), pb = wasm_v128_load(w + (ptrdiff_t)k * kNR + 16);
    v128_t xs = wasm_f32x4_splat(x[k]);
    acc[0][0] = simd_math::madd(xs, top_bytes<0>(pa), acc[0][0]);
    acc[0][1] = simd_math::madd(xs, top_bytes<1>(pa), acc[0][1]);
    xs = wasm_f32x4_splat(x[k + 1]);
    acc[1][0] = simd_math::madd(xs, top_bytes<2>(pa), acc[1][0]);
    acc[1][1] = simd_math::madd(xs, top_bytes<3>(pa), acc[1][1]);
    xs = wasm_f32x4_splat(x[k + 2]);
    acc[2][0] = simd_math::madd(xs, top_bytes<0>(pb), acc[2][0]);
    acc[2][1] = simd_math::madd(xs, top_bytes<1>(pb), acc[2][1]);
    xs = wasm_f32x4_splat(x[k + 3]);
    acc[3][0] = simd_math::madd(xs, top_bytes<2>(pb), acc[3][0]);
    acc[3][1] = simd_math::madd(xs, top_bytes<3>(pb), acc[3][1]);
  }
  const v128_t top = wasm_f32x4_splat(16777216.0f);
  for (; k < K; ++k) {
    v128_t w0, w1;
    widen8(w + (ptrdiff_t)k * kNR, &w0, &w1);
    const v128_t xs = wasm_f32x4_splat(x[k]);
    acc[0][0] = simd_math::madd(xs, wasm_f32x4_mul(w0, top), acc[0][0]);
    acc[0][1] = simd_math::madd(xs, wasm_f32x4_mul(w1, top), acc[0][1]);
  }
  const v128_t undo = wasm_f32x4_splat(1.0f / 16777216.0f);
  *o0 = wasm_f32x4_mul(wasm_f32x4_add(wasm_f32x4_add(acc[0][0], acc[1][0]), wasm_f32x4_add(acc[2][0], acc[3][0])), undo);
  *o1 = wasm_f32x4_mul(wasm_f32x4_add(wasm_f32x4_add(acc[0][1], acc[1][1]), wasm_f32x4_add(acc[2][1], acc[3][1])), undo);
}

// Panels [p0, p1), each row a GEMV that widens the panel in registers (m < kGemmRows: there are
// too few rows to share a widened copy with).
void gemv_panels(const WOLINEAR_args* a, int p0, int p1) {
  const int8_t* w = at<const int8_t>(a->w);
  const float* scale = at<const float>(a->scale);
  const float* bias = a->bias ? at<const float>(a->bias) : nullptr;
  float* out = at<float>(a->out);
  for (int p = p0; p < p1; ++p) {
    const int n0 = p * kNR, nr = a->n - n0 < kNR ? a->n - n0 : kNR;
    const int8_t* panel = w + (ptrdiff_t)p * a->k * kNR;
    for (int i = 0; i < a->m; ++i) {
      v128_t o0, o1;
      gemv_panel(at<const float>(a->x) + (ptrdiff_t)i * a->x_stride, panel, a->k, &o0, &o1);
      store_row(out + (ptrdiff_t)i * a->n + n0, o0, o1, scale + n0, bias ? bias + n0 : nullptr, nr);
    }
  }
}

// m >= kGemmRows: kBlockPanels panels at a time are widened to float32 into scratch (the float
// GEMM's packed-B layout: its panels are 8 columns, k-major, as ours) and multiplied by the float
// GEMM (gemm_packed, which splits the rows over the threads), then scaled: the widening is paid
// once per weight and call, as the float GEMM pays its loads, and the inner loop is the float one.
void gemm_blocks(const WOLINEAR_args* a) {
  const int8_t* w = at<const int8_t>(a->w);
  const float* scale = at<const float>(a->scale);
  const float* bias = a->bias ? at<const float>(a->bias) : nullptr;
  float* out = at<float>(a->out);
  float* wide = at<float>(a->scratch);
  const int panels = (a->n + kNR - 1) / kNR;
  for (int p0 = 0; p0 < panels; p0 += kBlockPanels) {
    const int p1 = p0 + kBlockPanels < panels ? p0 + kBlockPanels : panels;
    const int n0 = p0 * kNR, nc = (a->n < p1 * kNR ? a->n : p1 * kNR) - n0;
    const int8_t* src = w + (ptrdiff_t)p0 * a->k * kNR;
    const int64_t steps = (int64_t)(p1 - p0) * a->k;
    for (int64_t s = 0; s < steps; ++s) {
      v128_t w0, w1;
      widen8(src + s * kNR, &w0, &w1);
      wasm_v128_store(wide + s * kNR, w0);
      wasm_v128_store(wide + s * kNR + 4, w1);
    }
    gemm_packed(a->m, nc, a->k, at<const float>(a->x), a->x_stride, wide, out + n0, a->n, nullptr, 0,
                UNARY_IDENTITY, 0.0f, 0.0f);
    for (int i = 0; i < a->m; ++i) {  // sum * scale, then + bias: eager's mul and add
      float* o = out + (ptrdiff_t)i * a->n + n0;
      int c = 0;
      for (; c + 4 <= nc; c += 4) {
        v128_t y = wasm_f32x4_mul(wasm_v128_load(o + c), wasm_v128_load(scale + n0 + c));
        if (bias) y = wasm_f32x4_add(y, wasm_v128_load(bias + n0 + c));
        wasm_v128_store(o + c, y);
      }
      for (; c < nc; ++c) o[c] = bias ? o[c] * scale[n0 + c] + bias[n0 + c] : o[c] * scale[n0 + c];
    }
  }
}

}  // namespace

void k_WOLINEAR(const WOLINEAR_args* a) {
  if (a->m >= kGemmRows && a->k > 0) {
    gemm_blocks(a);
    return;
  }
  // Threads split the output channels: each reads only its share of the weights, once.
  parallel_rows((a->n + kNR - 1) / kNR, 2.0 * a->m * a->n * a->k,
                [&](int64_t p0, int64_t p1) { gemv_panels(a, (int)p0, (int)p1); });
}
