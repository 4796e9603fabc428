// Int8 kernels for the ops between a quantized CNN's convolutions: requantization (QREQUANT: a
// dequantize -> quantize pair with other output parameters, e.g. a concat input), the int8 add
// (QADD) and int8 pooling (QPOOL2D: max, average, adaptive average).
//
// Every kernel computes what eager's decomposed graph computes, in the same float32 operations:
// dequantize (float32(x) - zp) * scale, the float op (add / relu / max / window sum / divide),
// then quantize clamp(round_half_even(y * inv_out_scale) + out_zp, qmin, qmax). So QREQUANT, QADD
// and max pooling equal eager exactly, and average pooling too wherever eager sums its window in
// the same (row-major) order. The elementwise paths run 16 elements at a time: one v128 of
// uint8/int8, widened to four f32x4 and narrowed back.
#include <math.h>
#include <string.h>
#include <wasm_simd128.h>
#include "abi.h"
#include "quant_round.h"
#include "strided.h"
#include "threadpool.h"

namespace {

// Dequantization of one uint8/int8 operand.
struct Deq {
  bool is_signed;
  float zp, scale;
};

// Quantization of float32 values to out_dtype: y * inv clamped to [qmin - zp, qmax - zp] (round is
// monotone, so clamping before rounding equals eager's clamp after it), rounded, + zp.
struct Quant {
  bool is_signed;
  float inv, lo, hi;
  int32_t magic_zp;  // magic_minus_zp(zp)
  Quant(int dtype, float inv_scale, int zp, int qmin, int qmax)
      : is_signed(dtype == DT_I8), inv(inv_scale), lo((float)(qmin - zp)), hi((float)(qmax - zp)),
        magic_zp(magic_minus_zp(zp)) {}
  int32_t one(float y) const {
    float v = y * inv;
    v = v < lo ? lo : (v > hi ? hi : v);  // (also maps -inf, an all-padding max window, to qmin)
    return round_plus_zp(v, magic_zp);
  }
  v128_t four(v128_t y) const {
    y = wasm_f32x4_mul(y, wasm_f32x4_splat(inv));
    y = wasm_f32x4_pmin(wasm_f32x4_pmax(y, wasm_f32x4_splat(lo)), wasm_f32x4_splat(hi));
    return round_plus_zp(y, magic_zp);
  }
  // Four i32x4 already in [qmin, qmax] -> 16 bytes (the saturating narrows are exact there).
  v128_t narrow(const v128_t q[4]) const {
    const v128_t a = wasm_i16x8_narrow_i32x4(q[0], q[1]), b = wasm_i16x8_narrow_i32x4(q[2], q[3]);
    return is_signed ? wasm_i8x16_narrow_i16x8(a, b) : wasm_u8x16_narrow_i16x8(a, b);
  }
};

inline int32_t load1(const uint8_t* p, bool is_signed) { return is_signed ? (int32_t)(int8_t)*p : (int32_t)*p; }

inline float deq1(const uint8_t* p, const Deq& d) { return ((float)load1(p, d.is_signed) - d.zp) * d.scale; }

// 16 bytes -> four f32x4 of dequantized values.
inline void deq16(v128_t v, const Deq& d, v128_t f[4]) {
  const v128_t lo = d.is_signed ? wasm_i16x8_extend_low_i8x16(v) : wasm_u16x8_extend_low_u8x16(v);
  const v128_t hi = d.is_signed ? wasm_i16x8_extend_high_i8x16(v) : wasm_u16x8_extend_high_u8x16(v);
  const v128_t i32[4] = {wasm_i32x4_extend_low_i16x8(lo), wasm_i32x4_extend_high_i16x8(lo),
                         wasm_i32x4_extend_low_i16x8(hi), wasm_i32x4_extend_high_i16x8(hi)};
  for (int k = 0; k < 4; ++k)
    f[k] = wasm_f32x4_mul(wasm_f32x4_sub(wasm_f32x4_convert_i32x4(i32[k]), wasm_f32x4_splat(d.zp)),
                          wasm_f32x4_splat(d.scale));
}

// The 6-d index space of the elementwise kernels (kernel_abi.def: UNARY) collapsed and split over
// threads by strided.h; each contiguous piece of a row goes to row(out, a, b, len, out_stride,
// a_stride, b_stride) as byte pointers (the operands are bytes, so element strides are byte strides).
template <class Row>
void for_rows(const int32_t* size, const int32_t* os, const int32_t* as, const int32_t* bs, uint8_t* out,
              const uint8_t* a, const uint8_t* b, Row&& row) {
  static const int32_t kNoStrides[kMaxDims] = {0};
  const int32_t* strides[3] = {os, as, bs ? bs : kNoStrides};
  const Space s = collapse(size, strides, 3);
  const int inner = s.nd - 1;
  // (8 flops per element: two dequantizes, the add, the quantize)
  run_space(s, 3, 8.0, [&](const ptrdiff_t* o, int32_t len) {
    row(out + o[0], a + o[1], b ? b + o[2] : nullptr, len, s.st[0][inner], s.st[1][inner], s.st[2][inner]);
  });
}

}  // namespace

void k_QREQUANT(const QREQUANT_args* a) {
  const Deq d{a->in_dtype == DT_I8, (float)a->in_zp, a->in_scale};
  const Quant q(a->out_dtype, a->inv_out_scale, a->out_zp, a->qmin, a->qmax);
  for_rows(a->size, a->out_stride, a->in_stride, nullptr, at<uint8_t>(a->out), at<const uint8_t>(a->in), nullptr,
           [&](uint8_t* o, const uint8_t* x, const uint8_t*, int len, int so, int sx, int) {
             int i = 0;
             if (so == 1 && sx == 1) {
               for (; i + 16 <= len; i += 16) {
                 v128_t f[4], r[4];
                 deq16(wasm_v128_load(x + i), d, f);
                 for (int k = 0; k < 4; ++k) r[k] = q.four(f[k]);
                 wasm_v128_store(o + i, q.narrow(r));
               }
             }
             for (; i < len; ++i) o[(ptrdiff_t)i * so] = (uint8_t)q.one(deq1(x + (ptrdiff_t)i * sx, d));
           });
}

void k_QADD(const QADD_args* a) {
  const Deq da{a->a_dtype == DT_I8, (float)a->a_zp, a->a_scale}, db{a->b_dtype == DT_I8, (float)a->b_zp, a->b_scale};
  const Quant q(a->out_dtype, a->inv_out_scale, a->out_zp, a->qmin, a->qmax);
  const bool relu = a->relu != 0;
  for_rows(a->size, a->out_stride, a->a_stride, a->b_stride, at<uint8_t>(a->out), at<const uint8_t>(a->a),
           at<const uint8_t>(a->b), [&](uint8_t* o, const uint8_t* x, const uint8_t* y, int len, int so, int sx, int sy) {
             int i = 0;
             if (so == 1 && sx == 1 && (sy == 1 || sy == 0)) {  // (sy 0: b broadcast along the row)
               v128_t fb[4];
               if (sy == 0) deq16(wasm_u8x16_splat(*y), db, fb);
               for (; i + 16 <= len; i += 16) {
                 v128_t fa[4], r[4];
                 deq16(wasm_v128_load(x + i), da, fa);
                 if (sy == 1) deq16(wasm_v128_load(y + i), db, fb);
                 for (int k = 0; k < 4; ++k) {
                   v128_t s = wasm_f32x4_add(fa[k], fb[k]);
                   if (relu) s = wasm_f32x4_pmax(wasm_f32x4_splat(0.0f), s);
                   r[k] = q.four(s);
                 }
                 wasm_v128_store(o + i, q.narrow(r));
               }
             }
             for (; i < len; ++i) {
               float s = deq1(x + (ptrdiff_t)i * sx, da) + deq1(y + (ptrdiff_t)i * sy, db);
               if (relu && s < 0.0f) s = 0.0f;
               o[(ptrdiff_t)i * so] = (uint8_t)q.one(s);
             }
           });
}

namespace {

struct Window {
  int H, W, OH, OW, KH, KW, SH, SW, PH, PW, DH, DW;
};

// The max over the in-bounds tap rows of output row oy, 16 columns at a time (u8x16 / i8x16 max),
// into colmax[0, W). Returns false (colmax unused) when no tap row lies inside the input.
bool column_max(const Window& g, const uint8_t* plane, bool is_signed, int oy, uint8_t* colmax) {
  bool any = false;
  for (int ky = 0; ky < g.KH; ++ky) {
    const int y = oy * g.SH - g.PH + ky * g.DH;
    if (y < 0 || y >= g.H) continue;
    const uint8_t* r = plane + (ptrdiff_t)y * g.W;
    if (!any) {
      memcpy(colmax, r, g.W);
      any = true;
      continue;
    }
    int x = 0;
    for (; x + 16 <= g.W; x += 16) {
      const v128_t m = wasm_v128_load(colmax + x), v = wasm_v128_load(r + x);
      wasm_v128_store(colmax + x, is_signed ? wasm_i8x16_max(m, v) : wasm_u8x16_max(m, v));
    }
    for (; x < g.W; ++x) {
      if (load1(r + x, is_signed) > load1(colmax + x, is_signed)) colmax[x] = r[x];
    }
  }
  return any;
}

// The max over output column ox's in-bounds taps of one row of W bytes (colmax, or an input row);
// INT32_MIN if none is in bounds.
int32_t window_max(const Window& g, const uint8_t* row, int ox, bool is_signed) {
  int32_t best = INT32_MIN;
  for (int kx = 0; kx < g.KW; ++kx) {
    const int x = ox * g.SW - g.PW + kx * g.DW;
    if (x >= 0 && x < g.W && load1(row + x, is_signed) > best) best = load1(row + x, is_signed);
  }
  return best;
}

// Max pooling of one output row from its column maxima (colmax: W bytes, readable 32 past W): the
// max integer of each window into imax[0, OW), 16 windows at a time where all their taps lie inside
// the row and the stride is 1 or 2 (16 bytes, or the even bytes of 32, per tap), the edge windows by
// window_max. false (imax unusable) if some window has no tap inside the row: the caller's per-pixel
// path maps those to -inf.
bool row_window_max(const Window& g, const uint8_t* colmax, bool is_signed, uint8_t* imax) {
  // interior windows: ox * SW - PW >= 0 and ox * SW - PW + (KW - 1) * DW < W
  const int reach = (g.KW - 1) * g.DW;
  const int first = (g.PW + g.SW - 1) / g.SW;
  const int last = g.W - 1 - reach + g.PW < 0 ? -1 : (g.W - 1 - reach + g.PW) / g.SW;  // (inclusive)
  int ox = 0;
  auto edge = [&](int o) {
    const int32_t v = window_max(g, colmax, o, is_signed);
    if (v == INT32_MIN) return false;
    imax[o] = (uint8_t)v;
    return true;
  };
  for (; ox < g.OW && ox < first; ++ox)
    if (!edge(ox)) return false;
  if (g.SW <= 2) {
    for (; ox + 16 <= g.OW && ox + 15 <= last; ox += 16) {
      const uint8_t* base = colmax + ox * g.SW - g.PW;
      v128_t m = wasm_i32x4_splat(0);
      for (int kx = 0; kx < g.KW; ++kx) {
        const uint8_t* t = base + kx * g.DW;
        const v128_t v = g.SW == 1 ? wasm_v128_load(t)
                                   : wasm_i8x16_shuffle(wasm_v128_load(t), wasm_v128_load(t + 16), 0, 2, 4, 6, 8, 10,
                                                        12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        m = kx == 0 ? v : (is_signed ? wasm_i8x16_max(m, v) : wasm_u8x16_max(m, v));
      }
      wasm_v128_store(imax + ox, m);
    }
  }
  for (; ox < g.OW; ++ox)
    if (!edge(ox)) return false;
  return true;
}

}  // namespace

void k_QPOOL2D(const QPOOL2D_args* a) {
  const Window g{a->h, a->w, a->oh, a->ow, a->kh, a->kw, a->sh, a->sw, a->ph, a->pw,
                 a->dh > 0 ? a->dh : 1, a->dw > 0 ? a->dw : 1};
  const int mode = a->mode;
  if (mode != POOL_MAX && mode != POOL_AVG && mode != POOL_ADAPTIVE_AVG) __builtin_trap();  // a damaged plan
  const long rows = (long)a->planes * g.OH;
  if (rows <= 0 || g.OW <= 0) return;
  const Deq d{a->in_dtype == DT_I8, (float)a->in_zp, a->in_scale};
  const Quant q(a->out_dtype, a->inv_out_scale, a->out_zp, a->qmin, a->qmax);
  const uint8_t* in = at<const uint8_t>(a->in);
  uint8_t* out = at<uint8_t>(a->out);
  const bool include_pad = a->count_include_pad != 0;
  // Output parameters equal to the input's (PT2E quantizers share them across a max pool): the max
  // integer is the answer. round((x - zp) * scale * inv_out_scale) is x - zp exactly when
  // |scale * inv_out_scale - 1| * 255 is far below 0.5, and a full-range clamp keeps every x.
  const int type_min = d.is_signed ? -128 : 0, type_max = d.is_signed ? 127 : 255;
  const bool same_params = mode == POOL_MAX && a->out_dtype == a->in_dtype && a->out_zp == a->in_zp &&
                           fabsf(a->in_scale * a->inv_out_scale - 1.0f) < 1e-4f && a->qmin <= type_min &&
                           a->qmax >= type_max;
  double work = (double)rows * g.OW;
  work *= mode == POOL_ADAPTIVE_AVG ? (double)(g.H / g.OH + 1) * (g.W / g.OW + 1) : (double)g.KH * g.KW;
  parallel_rows(rows, work, [&](int64_t lo, int64_t hi) {
    // Per-thread row buffers, in chunks of the output row when it is wider than they are.
    constexpr int kChunk = 256;
    alignas(16) float ys[kChunk];
    constexpr int kMaxRow = 4096;
    alignas(16) uint8_t colmax_buf[kMaxRow + 32], imax[kMaxRow + 16];
    uint8_t* colmax = mode == POOL_MAX && g.W <= kMaxRow ? colmax_buf : nullptr;
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t p = r / g.OH;
      const int oy = (int)(r % g.OH);
      const uint8_t* plane = in + p * (ptrdiff_t)g.H * g.W;
      uint8_t* orow = out + r * (ptrdiff_t)g.OW;
      const bool have_rows = colmax && column_max(g, plane, d.is_signed, oy, colmax);
      // The vector path writes the max integers straight into the output row when they are the
      // answer (same_params), else into imax, dequantized and requantized 16 at a time (the
      // per-pixel path's arithmetic).
      if (have_rows && g.OW <= kMaxRow && row_window_max(g, colmax, d.is_signed, same_params ? orow : imax)) {
        if (!same_params) {
          for (int c = 0; c < g.OW; c += 16) {
            v128_t f[4], qs[4];
            deq16(wasm_v128_load(imax + c), d, f);
            for (int k = 0; k < 4; ++k) qs[k] = q.four(f[k]);
            const v128_t bytes = q.narrow(qs);
            if (c + 16 <= g.OW) {
              wasm_v128_store(orow + c, bytes);
            } else {
              alignas(16) uint8_t tail[16];
              wasm_v128_store(tail, bytes);
              memcpy(orow + c, tail, (size_t)(g.OW - c));
            }
          }
        }
        continue;
      }
      for (int c0 = 0; c0 < g.OW; c0 += kChunk) {
        const int nc = g.OW - c0 < kChunk ? g.OW - c0 : kChunk;
        if (mode == POOL_MAX) {
          // max commutes with the increasing dequantization: the max integer, dequantized once
          for (int i = 0; i < nc; ++i) {
            int32_t best = INT32_MIN;
            if (colmax) {
              if (have_rows) best = window_max(g, colmax, c0 + i, d.is_signed);
            } else {  // (rows wider than the buffer: every tap row of the input)
              for (int ky = 0; ky < g.KH; ++ky) {
                const int y = oy * g.SH - g.PH + ky * g.DH;
                if (y < 0 || y >= g.H) continue;
                const int32_t v = window_max(g, plane + (ptrdiff_t)y * g.W, c0 + i, d.is_signed);
                if (v > best) best = v;
              }
            }
            ys[i] = best == INT32_MIN ? -INFINITY : ((float)best - d.zp) * d.scale;
          }
        } else if (mode == POOL_AVG) {
          // eager's NCHW kernel: float32 sum of the dequantized in-bounds taps, row-major, / divisor
          const int y0 = oy * g.SH - g.PH;
          const int ye = y0 + g.KH < g.H + g.PH ? y0 + g.KH : g.H + g.PH;
          const int ya = y0 > 0 ? y0 : 0, yb = ye < g.H ? ye : g.H;
          for (int i = 0; i < nc; ++i) {
            const int x0 = (c0 + i) * g.SW - g.PW;
            const int xe = x0 + g.KW < g.W + g.PW ? x0 + g.KW : g.W + g.PW;
            const int xa = x0 > 0 ? x0 : 0, xb = xe < g.W ? xe : g.W;
            float sum = 0.0f;
            for (int y = ya; y < yb; ++y)
              for (int x = xa; x < xb; ++x) sum += deq1(plane + (ptrdiff_t)y * g.W + x, d);
            const int count = a->divisor ? a->divisor
                              : include_pad ? (ye - y0) * (xe - x0)
                                            : (yb - ya) * (xb - xa);
            ys[i] = sum / (float)count;
          }
        } else {  // ADAPTIVE_AVG: window i = [floor(i*H/OH), ceil((i+1)*H/OH)), / kh / kw as eager
          const int y0 = (int)((int64_t)oy * g.H / g.OH);
          const int y1 = (int)(((int64_t)(oy + 1) * g.H + g.OH - 1) / g.OH);
          for (int i = 0; i < nc; ++i) {
            const int ox = c0 + i;
            const int x0 = (int)((int64_t)ox * g.W / g.OW);
            const int x1 = (int)(((int64_t)(ox + 1) * g.W + g.OW - 1) / g.OW);
            float sum = 0.0f;
            for (int y = y0; y < y1; ++y)
              for (int x = x0; x < x1; ++x) sum += deq1(plane + (ptrdiff_t)y * g.W + x, d);
            ys[i] = sum / (float)(y1 - y0) / (float)(x1 - x0);
          }
        }
        for (int i = 0; i < nc; ++i) orow[c0 + i] = (uint8_t)q.one(ys[i]);
      }
    }
  });
}
