// Dynamic int8 linear (PT2E's dynamic config: X86InductorQuantizer with is_dynamic=True): the float
// activation is quantized per tensor at run time with parameters chosen from its own range
// (QDYNPACK), then multiplied by the int8 weight (QGEMM_DYN), float32 out.
//
// Where the speed comes from: i32x4.dot_i16x8_s (8 multiply-adds per instruction) with output
// features in lanes. The weight is packed at compile time in panels of 8 output features whose k
// pairs sit side by side ([kp/2][8][2] int8: one widening load8x8_s gives (w(i, k0), w(i, k1)) for
// 4 features); the activation is quantized into int16 minus its zero point, so one
// load32_splat gives the pair (x(j, k0) - zp, x(j, k1) - zp) in every lane, and the dot adds both
// products into each feature's own lane. The activation rows are interleaved in panels of 4 tokens
// ([kp/2][4][2] int16), so a tile's operands sit at constant offsets from two pointers. Per k pair a
// tile of 4 tokens x 8 features costs 2 widening loads, 4 splat loads (load-port only) and 8 dot +
// 8 add for 64 multiply-adds, with no horizontal reduce, no zero-point correction (the int16 values
// already hold x_q - zp) and one contiguous 8-float store per token. (The k-in-lanes QGEMM this replaced widened 6 operands per 64
// multiply-adds on the shuffle port, reduced every output across lanes and stored the [tokens,
// features] output column by column: ~1.2x float32 at the encoder's shapes in V8.)
#include <math.h>
#include <string.h>
#include <wasm_simd128.h>
#include "abi.h"
#include "quant_round.h"
#include "threadpool.h"

namespace {

constexpr int kNR = kQdynFeatures;  // output features per weight panel (8): 2 vectors of 4 lanes
constexpr int kMR = kQdynTokens;    // tokens per micro-tile (4): 8 accumulators + 2 weight vectors + 1 splat

// min and max of the [cols, k] rows; both NaN if any element is (torch.aminmax's NaN propagation).
// pmin / pmax are one x86 instruction each where f32x4.min / max (NaN-propagating) are ~6, so NaN is
// tracked apart, by a lane mask of x != x.
void min_max(const QDYNPACK_args* a, const float* in, float* mn_out, float* mx_out) {
  v128_t mn = wasm_f32x4_splat(INFINITY), mx = wasm_f32x4_splat(-INFINITY), nan = wasm_i32x4_splat(0);
  v128_t mn2 = mn, mx2 = mx;  // two chains
  for (int j = 0; j < a->cols; ++j) {
    const float* row = in + (ptrdiff_t)j * a->row_stride;
    int k = 0;
    for (; k + 8 <= a->k; k += 8) {
      const v128_t v = wasm_v128_load(row + k), u = wasm_v128_load(row + k + 4);
      mn = wasm_f32x4_pmin(mn, v);
      mx = wasm_f32x4_pmax(mx, v);
      mn2 = wasm_f32x4_pmin(mn2, u);
      mx2 = wasm_f32x4_pmax(mx2, u);
      nan = wasm_v128_or(nan, wasm_v128_or(wasm_f32x4_ne(v, v), wasm_f32x4_ne(u, u)));
    }
    for (; k < a->k; ++k) {
      const v128_t v = wasm_f32x4_splat(row[k]);
      mn = wasm_f32x4_pmin(mn, v);
      mx = wasm_f32x4_pmax(mx, v);
      nan = wasm_v128_or(nan, wasm_f32x4_ne(v, v));
    }
  }
  mn = wasm_f32x4_pmin(mn, mn2);
  mx = wasm_f32x4_pmax(mx, mx2);
  alignas(16) float lo[4], hi[4];
  wasm_v128_store(lo, mn);
  wasm_v128_store(hi, mx);
  float smn = INFINITY, smx = -INFINITY;
  for (int l = 0; l < 4; ++l) {
    smn = lo[l] < smn ? lo[l] : smn;
    smx = hi[l] > smx ? hi[l] : smx;
  }
  if (wasm_v128_any_true(nan)) smn = smx = NAN;
  *mn_out = smn;
  *mx_out = smx;
}

// Quantized values minus the zero point: eager's clamp(round(x * inv) + zp, qmin, qmax) - zp =
// round(clamp(x * inv, qmin - zp, qmax - zp)) (round is monotone and fixes the integer bounds).
// pmax/pmin: a NaN product becomes lo (eager's byte for NaN is unspecified; the scale is NaN then,
// so every output is NaN either way).
struct Quantizer {
  v128_t inv, lo, hi;
  inline v128_t q4(const float* x) const {
    const v128_t y = wasm_f32x4_pmin(wasm_f32x4_pmax(lo, wasm_f32x4_mul(wasm_v128_load(x), inv)), hi);
    return round_plus_zp(y, magic_minus_zp(0));
  }
};

// Rows [j0, j1) of x (multiples of kMR) quantized into token panels: int16 [kp/2][kMR][2] per kMR
// rows, zero padded past k (and past cols, in the last panel).
void quantize_rows(const QDYNPACK_args* a, const float* in, const Quantizer& q, float inv, float lo, float hi,
                   int j0, int j1, int16_t* out) {
  for (int j = j0; j < j1; ++j) {
    int16_t* dst = out + (ptrdiff_t)(j / kMR) * kMR * a->kp + (j % kMR) * 2;  // pair p at dst + p * 2 * kMR
    if (j >= a->cols) {
      for (int k = 0; k < a->kp; k += 2) memset(dst + k * kMR, 0, 4);
      continue;
    }
    const float* row = in + (ptrdiff_t)j * a->row_stride;
    int k = 0;
    for (; k + 8 <= a->k; k += 8) {  // values in [qmin - zp, qmax - zp] ⊂ [-255, 255]: the narrow is exact
      const v128_t v = wasm_i16x8_narrow_i32x4(q.q4(row + k), q.q4(row + k + 4));
      wasm_v128_store32_lane(dst + k * kMR, v, 0);
      wasm_v128_store32_lane(dst + (k + 2) * kMR, v, 1);
      wasm_v128_store32_lane(dst + (k + 4) * kMR, v, 2);
      wasm_v128_store32_lane(dst + (k + 6) * kMR, v, 3);
    }
    for (; k < a->kp; ++k) {
      int16_t v = 0;
      if (k < a->k) {
        float y = row[k] * inv;
        y = y > lo ? y : lo;
        y = y < hi ? y : hi;
        v = (int16_t)nearbyintf(y);
      }
      dst[(k & ~1) * kMR + (k & 1)] = v;
    }
  }
}

// Token panel `xp` (tokens j0 .. j0 + nt - 1) x weight panel `wp` (features i0 .. i0 + nf - 1):
// out = acc * scale + bias.
void micro(const int8_t* wp, const int16_t* xp, int kp, int j0, int nt, int i0, int nf, const float* scale,
           const float* bias, float* out, int rows) {
  v128_t acc[kMR][2];
  for (int r = 0; r < kMR; ++r) acc[r][0] = acc[r][1] = wasm_i32x4_splat(0);
  for (int k = 0; k < kp; k += 2) {  // one base per operand, constant offsets: no address math per load
    const int8_t* w = wp + k * kNR;
    const int16_t* x = xp + k * kMR;
    const v128_t w0 = wasm_i16x8_load8x8(w), w1 = wasm_i16x8_load8x8(w + 8);
    for (int r = 0; r < kMR; ++r) {
      const v128_t s = wasm_v128_load32_splat(x + 2 * r);
      acc[r][0] = wasm_i32x4_add(acc[r][0], wasm_i32x4_dot_i16x8(w0, s));
      acc[r][1] = wasm_i32x4_add(acc[r][1], wasm_i32x4_dot_i16x8(w1, s));
    }
  }
  const v128_t s0 = wasm_v128_load(scale), s1 = wasm_v128_load(scale + 4);
  const v128_t b0 = wasm_v128_load(bias), b1 = wasm_v128_load(bias + 4);
  for (int r = 0; r < nt; ++r) {
    const v128_t y0 = wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_convert_i32x4(acc[r][0]), s0), b0);
    const v128_t y1 = wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_convert_i32x4(acc[r][1]), s1), b1);
    float* o = out + (ptrdiff_t)(j0 + r) * rows + i0;
    if (nf == kNR) {
      wasm_v128_store(o, y0);
      wasm_v128_store(o + 4, y1);
    } else {
      alignas(16) float f[kNR];
      wasm_v128_store(f, y0);
      wasm_v128_store(f + 4, y1);
      memcpy(o, f, 4 * (size_t)nf);
    }
  }
}

}  // namespace

void k_QDYNPACK(const QDYNPACK_args* a) {
  const float* in = at<const float>(a->in);
  int16_t* out = at<int16_t>(a->out);
  // choose_qparams.tensor in float32, step by step as torch/ao/quantization/utils.py's
  // determine_qparams computes it (per_tensor_affine); a NaN (or infinite) range gives a NaN (or
  // infinite) scale, as eager's, so the linear's output is NaN as eager's.
  float mn, mx;
  min_max(a, in, &mn, &mx);
  const float min_neg = (mn < 0.0f || mn != mn) ? mn : 0.0f;  // torch.min / max propagate NaN
  const float max_pos = (mx > 0.0f || mx != mx) ? mx : 0.0f;
  float scale = (max_pos - min_neg) / (float)(a->qmax - a->qmin);
  if (scale <= a->eps) scale = a->eps;
  int zp = 0;
  if (scale == scale && scale != INFINITY) {
    zp = a->qmin - (int)nearbyintf(min_neg / scale);
    zp = zp < a->qmin ? a->qmin : zp > a->qmax ? a->qmax : zp;
  }
  float* qparams = at<float>(a->qparams);
  qparams[0] = scale;
  memcpy(qparams + 1, &zp, 4);
  // quantize_per_tensor: x * float32(1.0 / double(scale)) (eager's inv_scale is a Python float).
  const float inv = (float)(1.0 / (double)scale), lo = (float)(a->qmin - zp), hi = (float)(a->qmax - zp);
  const Quantizer q{wasm_f32x4_splat(inv), wasm_f32x4_splat(lo), wasm_f32x4_splat(hi)};
  parallel_rows((a->cols + kMR - 1) / kMR, 8.0 * a->cols * a->k, [&](int64_t p0, int64_t p1) {
    quantize_rows(a, in, q, inv, lo, hi, (int)p0 * kMR, (int)p1 * kMR, out);
  });
}

void k_QGEMM_DYN(const QGEMM_DYN_args* a) {
  const float x_scale = at<const float>(a->qparams)[0];
  const float* w_scale = at<const float>(a->w_scale);
  const float* bias = a->bias ? at<const float>(a->bias) : nullptr;
  const int8_t* w = at<const int8_t>(a->w);
  const int16_t* x = at<const int16_t>(a->x);
  float* out = at<float>(a->out);
  const int rows = a->rows, cols = a->cols, kp = a->kp, panels = (rows + kNR - 1) / kNR;
  if (rows <= 0 || cols <= 0) return;
  // Weight panels [p0, p1): each panel's 8 * kp bytes stay in L1 while all tokens sweep it.
  parallel_rows(panels, 2.0 * rows * cols * kp, [&](int64_t p0, int64_t p1) {
    for (int p = (int)p0; p < (int)p1; ++p) {
      const int i0 = p * kNR, nf = rows - i0 < kNR ? rows - i0 : kNR;
      alignas(16) float sc[kNR] = {}, bs[kNR] = {};
      for (int c = 0; c < nf; ++c) {
        sc[c] = (float)((double)x_scale * (double)w_scale[i0 + c]);  // rounded once, as the static path's
        bs[c] = bias ? bias[i0 + c] : 0.0f;
      }
      const int8_t* wp = w + (ptrdiff_t)p * kNR * kp;
      for (int j = 0; j < cols; j += kMR)
        micro(wp, x + (ptrdiff_t)j * kp, kp, j, cols - j < kMR ? cols - j : kMR, i0, nf, sc, bs, out, rows);
    }
  });
}
