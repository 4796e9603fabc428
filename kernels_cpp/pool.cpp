// k_POOL2D: max / average / adaptive-average pooling of contiguous [planes, h, w] planes.
//
// Max and average pooling run four output columns at once wherever all their taps lie inside the
// input row (stride 1: plain loads; stride 2: two loads de-interleaved with a shuffle), and a
// scalar loop at the borders. Semantics follow torch's cpu_max_pool (`if (v > acc || isnan(v))
// acc = v`, taps in row-major order): padding never wins a max (an all-padding window gives
// -inf); of equal values (-0 and +0 included) the first wins; a NaN wins, the last NaN if
// several. The vector max path gives exactly that with f32x4.pmax(acc, v) = acc < v ? v : acc
// (one x86 maxps; f32x4.max's NaN and signed-zero rules cost V8 and Cranelift ~8 instructions and
// make +0 beat an earlier -0), which skips NaNs: a chunk whose taps hold a NaN is redone by the
// scalar loop. The average divisor counts cells inside the padded bounds (count_include_pad) or
// inside the input, unless `divisor` overrides it.
#include <math.h>
#include <stdint.h>
#include <wasm_simd128.h>
#include "abi.h"
#include "threadpool.h"

namespace {

struct P {
  int H, W, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw;
};

// Tap counts of a window along one axis: inside [0, n) and inside the padded [-pad, n + pad).
inline void axis_counts(int start, int k, int d, int n, int pad, int* valid, int* padded) {
  int v = 0, p = 0;
  for (int t = 0; t < k; ++t) {
    const int i = start + t * d;
    v += (i >= 0 && i < n);
    p += (i >= -pad && i < n + pad);
  }
  *valid = v;
  *padded = p;
}

inline v128_t load_strided4(const float* p, int sw) {
  if (sw == 1) return wasm_v128_load(p);
  return wasm_i32x4_shuffle(wasm_v128_load(p), wasm_v128_load(p + 4), 0, 2, 4, 6);  // sw == 2
}

// Calls f(v) for each tap of the window whose top-left tap is (iy0, ix0) that lies inside the
// input, in row-major order (torch's order).
template <class F>
inline void for_each_tap(const P& q, const float* in, int iy0, int ix0, F f) {
  for (int ky = 0; ky < q.KH; ++ky) {
    const int iy = iy0 + ky * q.dh;
    if (iy < 0 || iy >= q.H) continue;
    const float* r = in + (ptrdiff_t)iy * q.W;
    for (int kx = 0; kx < q.KW; ++kx) {
      const int ix = ix0 + kx * q.dw;
      if (ix >= 0 && ix < q.W) f(r[ix]);
    }
  }
}

// One max window, torch's rule tap for tap (see the header).
inline float max_scalar(const P& q, const float* in, int iy0, int ix0) {
  float acc = -INFINITY;
  for_each_tap(q, in, iy0, ix0, [&](float v) {
    if (v > acc || v != v) acc = v;
  });
  return acc;
}

constexpr int kMaxVectorKH = 16;  // taller max windows take the scalar loop

// The taps of four outputs in one input row (r: the first output's first tap), left to right, into
// acc by pmax. `probe` sums every element read: it ends NaN if one of them is. KW = 0: q.KW taps at
// dilation q.dw (any stride SW); otherwise KW taps at dilation 1, at compile-time offsets.
template <int KW, int SW>
inline v128_t row_max4(const P& q, const float* r, v128_t acc, v128_t* probe) {
  if (KW == 3 && SW == 2) {  // ResNet's pool: taps 2j, 2j+1, 2j+2 = even, odd, even shifted by one
    const v128_t a = wasm_v128_load(r), b = wasm_v128_load(r + 4), c = wasm_v128_load32_splat(r + 8);
    const v128_t even = wasm_i32x4_shuffle(a, b, 0, 2, 4, 6), odd = wasm_i32x4_shuffle(a, b, 1, 3, 5, 7);
    const v128_t even1 = wasm_i32x4_shuffle(even, c, 1, 2, 3, 4);
    *probe = wasm_f32x4_add(*probe, wasm_f32x4_add(wasm_f32x4_add(a, b), c));
    return wasm_f32x4_pmax(wasm_f32x4_pmax(wasm_f32x4_pmax(acc, even), odd), even1);
  }
  const int kw = KW ? KW : q.KW, dw = KW ? 1 : q.dw;
  for (int kx = 0; kx < kw; ++kx) {
    const v128_t v = load_strided4(r + kx * dw, SW);
    *probe = wasm_f32x4_add(*probe, v);
    acc = wasm_f32x4_pmax(acc, v);
  }
  return acc;
}

// Outputs [lo, hi) of a max row, four at a time; every tap of them lies inside the input row. A
// chunk whose probe is NaN (a NaN tap, or a false alarm where +inf meets -inf) is redone by
// max_scalar, so a NaN wins exactly as in torch.
template <int KW, int SW>
void max_chunks(const P& q, const float* in, float* orow, int iy0, int lo, int hi) {
  const float* rows[kMaxVectorKH];  // the window's rows inside the input
  int nrows = 0;
  for (int ky = 0; ky < q.KH; ++ky) {
    const int iy = iy0 + ky * q.dh;
    if (iy >= 0 && iy < q.H) rows[nrows++] = in + (ptrdiff_t)iy * q.W;
  }
  for (int ox = lo; ox + 4 <= hi; ox += 4) {
    const int ix0 = ox * q.sw - q.pw;
    v128_t acc = wasm_f32x4_splat(-INFINITY), probe = wasm_f32x4_splat(0.0f);
    for (int k = 0; k < nrows; ++k) acc = row_max4<KW, SW>(q, rows[k] + ix0, acc, &probe);
    if (wasm_v128_any_true(wasm_f32x4_ne(probe, probe))) {
      for (int j = 0; j < 4; ++j) orow[ox + j] = max_scalar(q, in, iy0, ix0 + j * q.sw);
    } else {
      wasm_v128_store(orow + ox, acc);
    }
  }
}

void max_row(const P& q, const float* in, float* orow, int oy) {
  const int iy0 = oy * q.sh - q.ph;
  // Outputs [lo, hi) have all their taps inside the row, and every element a vector chunk reads
  // (sw == 2 also reads the odd lane after its last tap).
  int lo = (q.pw + q.sw - 1) / q.sw, hi = lo;
  if ((q.sw == 1 || q.sw == 2) && q.KH <= kMaxVectorKH) {
    const int last_read = (q.KW - 1) * q.dw + (q.sw == 2 ? 1 : 0);  // past the output's first tap
    const int room = q.W - 1 - last_read + q.pw;                    // ox * sw <= room
    hi = room < 0 ? lo : room / q.sw + 1;
    if (hi > q.OW) hi = q.OW;
    if (hi < lo) hi = lo;
    hi = lo + (hi - lo) / 4 * 4;
  }
  for (int ox = 0; ox < lo && ox < q.OW; ++ox) orow[ox] = max_scalar(q, in, iy0, ox * q.sw - q.pw);
  if (hi > lo) {
    if (q.sw == 2 && q.dw == 1 && q.KW == 3) max_chunks<3, 2>(q, in, orow, iy0, lo, hi);
    else if (q.sw == 2) max_chunks<0, 2>(q, in, orow, iy0, lo, hi);
    else max_chunks<0, 1>(q, in, orow, iy0, lo, hi);
  }
  for (int ox = hi; ox < q.OW; ++ox) orow[ox] = max_scalar(q, in, iy0, ox * q.sw - q.pw);
}

void avg_row(const P& q, const float* in, float* orow, int oy, bool include_pad, int divisor) {
  const int iy0 = oy * q.sh - q.ph;
  int vy, py;
  axis_counts(iy0, q.KH, q.dh, q.H, q.ph, &vy, &py);
  const bool vec_ok = q.sw == 1 || q.sw == 2;
  // A vector chunk also reads one element past its last tap when sw == 2 (the odd lanes).
  const int extra = q.sw == 2 ? 1 : 0;
  int ox = 0;
  while (ox < q.OW) {
    const int ix0 = ox * q.sw - q.pw;
    if (vec_ok && ox + 4 <= q.OW && ix0 >= 0 &&
        (ox + 3) * q.sw - q.pw + (q.KW - 1) * q.dw + extra <= q.W - 1) {
      v128_t acc = wasm_f32x4_splat(0.0f);
      for (int ky = 0; ky < q.KH; ++ky) {
        const int iy = iy0 + ky * q.dh;
        if (iy < 0 || iy >= q.H) continue;
        const float* r = in + (ptrdiff_t)iy * q.W + ix0;
        for (int kx = 0; kx < q.KW; ++kx) acc = wasm_f32x4_add(acc, load_strided4(r + kx * q.dw, q.sw));
      }
      const int div = divisor != 0 ? divisor : (include_pad ? py : vy) * q.KW;
      wasm_v128_store(orow + ox, wasm_f32x4_div(acc, wasm_f32x4_splat((float)div)));
      ox += 4;
      continue;
    }
    float acc = 0.0f;
    for_each_tap(q, in, iy0, ix0, [&](float v) { acc = acc + v; });
    int vx, px;
    axis_counts(ix0, q.KW, q.dw, q.W, q.pw, &vx, &px);
    const int div = divisor != 0 ? divisor : (include_pad ? py * px : vy * vx);
    orow[ox] = acc / (float)div;
    ++ox;
  }
}

// Max with the winner's index: torch's cpu_max_pool loop, tap for tap.
void max_index_row(const P& q, const float* in, float* orow, int64_t* irow, int oy) {
  for (int ox = 0; ox < q.OW; ++ox) {
    int ih0 = oy * q.sh - q.ph, iw0 = ox * q.sw - q.pw;
    const int ih1 = ih0 + (q.KH - 1) * q.dh + 1 < q.H ? ih0 + (q.KH - 1) * q.dh + 1 : q.H;
    const int iw1 = iw0 + (q.KW - 1) * q.dw + 1 < q.W ? iw0 + (q.KW - 1) * q.dw + 1 : q.W;
    while (ih0 < 0) ih0 += q.dh;
    while (iw0 < 0) iw0 += q.dw;
    int64_t best_i = (int64_t)ih0 * q.W + iw0;
    float best = -INFINITY;
    for (int ih = ih0; ih < ih1; ih += q.dh) {
      for (int iw = iw0; iw < iw1; iw += q.dw) {
        const int64_t i = (int64_t)ih * q.W + iw;
        const float v = in[i];
        if (v > best || v != v) {
          best = v;
          best_i = i;
        }
      }
    }
    orow[ox] = best;
    irow[ox] = best_i;
  }
}

void adaptive_row(const P& q, const float* in, float* orow, int oy) {
  const int y0 = (int)((int64_t)oy * q.H / q.OH);
  const int y1 = (int)(((int64_t)(oy + 1) * q.H + q.OH - 1) / q.OH);
  for (int ox = 0; ox < q.OW; ++ox) {
    const int x0 = (int)((int64_t)ox * q.W / q.OW);
    const int x1 = (int)(((int64_t)(ox + 1) * q.W + q.OW - 1) / q.OW);
    float acc = 0.0f;
    for (int y = y0; y < y1; ++y) {
      const float* r = in + (ptrdiff_t)y * q.W;
      for (int x = x0; x < x1; ++x) acc = acc + r[x];
    }
    orow[ox] = acc / (float)((y1 - y0) * (x1 - x0));
  }
}

}  // namespace

void k_POOL2D(const POOL2D_args* a) {
  const P q{a->h, a->w, a->oh, a->ow, a->kh, a->kw, a->sh, a->sw, a->ph, a->pw,
            a->dh > 0 ? a->dh : 1, a->dw > 0 ? a->dw : 1};
  const long planes = a->planes;
  if (planes <= 0 || q.OH <= 0 || q.OW <= 0) return;
  const float* in = at<const float>(a->in);
  float* out = at<float>(a->out);
  int64_t* indices = a->indices ? at<int64_t>(a->indices) : nullptr;
  const int mode = a->mode;
  if (mode != POOL_MAX && mode != POOL_AVG && mode != POOL_ADAPTIVE_AVG) __builtin_trap();  // a damaged plan
  const bool include_pad = a->count_include_pad != 0;
  const int divisor = a->divisor;
  const long rows = planes * q.OH;
  auto body = [&](long lo, long hi) {
    for (long r = lo; r < hi; ++r) {
      const long p = r / q.OH;
      const int oy = (int)(r % q.OH);
      const float* pin = in + p * (ptrdiff_t)q.H * q.W;
      float* orow = out + r * (ptrdiff_t)q.OW;
      if (mode == POOL_MAX && indices) max_index_row(q, pin, orow, indices + r * (ptrdiff_t)q.OW, oy);
      else if (mode == POOL_MAX) max_row(q, pin, orow, oy);
      else if (mode == POOL_AVG) avg_row(q, pin, orow, oy, include_pad, divisor);
      else if (mode == POOL_ADAPTIVE_AVG) adaptive_row(q, pin, orow, oy);
    }
  };
  double work = (double)rows * q.OW;
  if (mode == POOL_ADAPTIVE_AVG) work *= (double)(q.H / q.OH + 1) * (q.W / q.OW + 1);
  else work *= (double)q.KH * q.KW;
  parallel_rows(rows, work, body);
}
