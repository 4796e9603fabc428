// Row-wise kernels over contiguous [outer, dim, inner] layouts: k_CHANNEL_AFFINE (folded inference
// batch norm), k_SOFTMAX, k_LAYERNORM and k_REDUCE.
//
// Two layouts recur: inner == 1 (the reduced/normalised dim is contiguous: SIMD along it, then a
// horizontal reduction) and inner > 1 (SIMD across inner, walking the dim with a stride). Long
// sums are blocked (float partials per block, combined in double) so their error does not grow
// with the length the way a single running float sum's does.
#include <math.h>
#include <stdint.h>
#include "abi.h"
#include "elementwise.h"
#include "simd_math.h"
#include "threadpool.h"

namespace {

inline float hsum(v128_t v) {
  return (wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1)) +
         (wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3));
}
// Max/min that keep NaN (wasm f32x4.max/min do), in scalar form with the same result.
inline float max_nan(float a, float b) {
  return wasm_f32x4_extract_lane(wasm_f32x4_max(wasm_f32x4_splat(a), wasm_f32x4_splat(b)), 0);
}
inline float min_nan(float a, float b) {
  return wasm_f32x4_extract_lane(wasm_f32x4_min(wasm_f32x4_splat(a), wasm_f32x4_splat(b)), 0);
}
inline float hmax(v128_t v) {
  return max_nan(max_nan(wasm_f32x4_extract_lane(v, 0), wasm_f32x4_extract_lane(v, 1)),
                 max_nan(wasm_f32x4_extract_lane(v, 2), wasm_f32x4_extract_lane(v, 3)));
}
inline float hmin(v128_t v) {
  return min_nan(min_nan(wasm_f32x4_extract_lane(v, 0), wasm_f32x4_extract_lane(v, 1)),
                 min_nan(wasm_f32x4_extract_lane(v, 2), wasm_f32x4_extract_lane(v, 3)));
}

constexpr int kSumBlock = 1024;

// Sum of n contiguous floats: 4 vector accumulators per block, blocks combined in double.
double sum_contig(const float* p, long n) {
  double total = 0.0;
  for (long b0 = 0; b0 < n; b0 += kSumBlock) {
    const long e = b0 + kSumBlock < n ? b0 + kSumBlock : n;
    v128_t s0 = wasm_f32x4_splat(0), s1 = s0, s2 = s0, s3 = s0;
    long j = b0;
    for (; j + 16 <= e; j += 16) {
      s0 = wasm_f32x4_add(s0, wasm_v128_load(p + j));
      s1 = wasm_f32x4_add(s1, wasm_v128_load(p + j + 4));
      s2 = wasm_f32x4_add(s2, wasm_v128_load(p + j + 8));
      s3 = wasm_f32x4_add(s3, wasm_v128_load(p + j + 12));
    }
    for (; j + 4 <= e; j += 4) s0 = wasm_f32x4_add(s0, wasm_v128_load(p + j));
    float s = hsum(wasm_f32x4_add(wasm_f32x4_add(s0, s1), wasm_f32x4_add(s2, s3)));
    for (; j < e; ++j) s += p[j];
    total += s;
  }
  return total;
}

// Sum of (p[j] - mean)^2, same blocking.
double sqdev_contig(const float* p, long n, float mean) {
  const v128_t vm = wasm_f32x4_splat(mean);
  double total = 0.0;
  for (long b0 = 0; b0 < n; b0 += kSumBlock) {
    const long e = b0 + kSumBlock < n ? b0 + kSumBlock : n;
    v128_t s0 = wasm_f32x4_splat(0), s1 = s0;
    long j = b0;
    for (; j + 8 <= e; j += 8) {
      const v128_t d0 = wasm_f32x4_sub(wasm_v128_load(p + j), vm);
      const v128_t d1 = wasm_f32x4_sub(wasm_v128_load(p + j + 4), vm);
      s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(d0, d0));
      s1 = wasm_f32x4_add(s1, wasm_f32x4_mul(d1, d1));
    }
    for (; j + 4 <= e; j += 4) {
      const v128_t d0 = wasm_f32x4_sub(wasm_v128_load(p + j), vm);
      s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(d0, d0));
    }
    float s = hsum(wasm_f32x4_add(s0, s1));
    for (; j < e; ++j) {
      const float d = p[j] - mean;
      s += d * d;
    }
    total += s;
  }
  return total;
}

template <int ACT>
void affine_rows(const CHANNEL_AFFINE_args* a, long lo, long hi) {
  const long C = a->channels, I = a->inner;
  const float* in = at<const float>(a->in);
  float* out = at<float>(a->out);
  const float* scale = at<const float>(a->scale);
  const float* shift = at<const float>(a->shift);
  const float p0 = a->p0, p1 = a->p1;
  if (I == 1) {
    // Rows are [outer]; vector across channels.
    for (long o = lo; o < hi; ++o) {
      const float* x = in + o * C;
      float* y = out + o * C;
      long c = 0;
      for (; c + 4 <= C; c += 4)
        wasm_v128_store(y + c, unary_v<ACT>(wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(x + c),
                                                                          wasm_v128_load(scale + c)),
                                                           wasm_v128_load(shift + c)), p0, p1));
      for (; c < C; ++c) y[c] = unary_s<ACT>(x[c] * scale[c] + shift[c], p0, p1);
    }
    return;
  }
  // Rows are (outer, channel) pairs.
  for (long r = lo; r < hi; ++r) {
    const long c = r % C;
    const v128_t vs = wasm_f32x4_splat(scale[c]), vb = wasm_f32x4_splat(shift[c]);
    const float* x = in + r * I;
    float* y = out + r * I;
    long j = 0;
    for (; j + 4 <= I; j += 4)
      wasm_v128_store(y + j, unary_v<ACT>(wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(x + j), vs), vb), p0, p1));
    for (; j < I; ++j) y[j] = unary_s<ACT>(x[j] * scale[c] + shift[c], p0, p1);
  }
}

template <int ACT>
void affine(const CHANNEL_AFFINE_args* a) {
  const long rows = a->inner == 1 ? a->outer : (long)a->outer * a->channels;
  parallel_rows(rows, 2.0 * a->outer * a->channels * (double)a->inner,
             [&](long lo, long hi) { affine_rows<ACT>(a, lo, hi); });
}

// ---- softmax ---------------------------------------------------------------------------------

void softmax_row(const float* x, float* y, long n, bool log_, bool safe) {
  using namespace simd_math;
  v128_t vm = wasm_f32x4_splat(-INFINITY);
  long j = 0;
  for (; j + 4 <= n; j += 4) vm = wasm_f32x4_max(vm, wasm_v128_load(x + j));
  float mx = hmax(vm);
  for (; j < n; ++j) mx = max_nan(mx, x[j]);
  if (safe && mx == -INFINITY) {  // fully masked row: _safe_softmax gives zeros, not NaN
    for (j = 0; j < n; ++j) y[j] = 0.0f;
    return;
  }
  const v128_t vmx = wasm_f32x4_splat(mx);
  double total = 0.0;
  // Write exp(x - max) (or nothing, for log) while summing, blocked as in sum_contig.
  for (long b0 = 0; b0 < n; b0 += kSumBlock) {
    const long e = b0 + kSumBlock < n ? b0 + kSumBlock : n;
    v128_t s = wasm_f32x4_splat(0);
    j = b0;
    for (; j + 4 <= e; j += 4) {
      const v128_t ev = exp_v(wasm_f32x4_sub(wasm_v128_load(x + j), vmx));
      if (!log_) wasm_v128_store(y + j, ev);
      s = wasm_f32x4_add(s, ev);
    }
    float sf = hsum(s);
    for (; j < e; ++j) {
      const float ev = exp_s(x[j] - mx);
      if (!log_) y[j] = ev;
      sf += ev;
    }
    total += sf;
  }
  if (log_) {
    // (x - max) - log(sum): subtracting max first keeps precision for large-magnitude rows.
    const float ls = (float)log(total);
    const v128_t vls = wasm_f32x4_splat(ls);
    for (j = 0; j + 4 <= n; j += 4)
      wasm_v128_store(y + j, wasm_f32x4_sub(wasm_f32x4_sub(wasm_v128_load(x + j), vmx), vls));
    for (; j < n; ++j) y[j] = (x[j] - mx) - ls;
  } else {
    const v128_t vs = wasm_f32x4_splat((float)(1.0 / total));
    for (j = 0; j + 4 <= n; j += 4) wasm_v128_store(y + j, wasm_f32x4_mul(wasm_v128_load(y + j), vs));
    const float inv = (float)(1.0 / total);
    for (; j < n; ++j) y[j] = y[j] * inv;
  }
}

constexpr int kInnerBlock = 64;

// Softmax over dim for inner columns [i0, i1) (i1 - i0 <= kInnerBlock) of one outer slice.
void softmax_cols(const float* x, float* y, long dim, long inner, long i0, long i1, bool log_, bool safe) {
  using namespace simd_math;
  float mx[kInnerBlock], sm[kInnerBlock];
  const long w = i1 - i0;
  for (long i = 0; i < w; ++i) mx[i] = -INFINITY, sm[i] = 0.0f;
  for (long d = 0; d < dim; ++d) {
    const float* r = x + d * inner + i0;
    long i = 0;
    for (; i + 4 <= w; i += 4)
      wasm_v128_store(mx + i, wasm_f32x4_max(wasm_v128_load(mx + i), wasm_v128_load(r + i)));
    for (; i < w; ++i) mx[i] = max_nan(mx[i], r[i]);
  }
  for (long d = 0; d < dim; ++d) {
    const float* r = x + d * inner + i0;
    float* o = y + d * inner + i0;
    long i = 0;
    for (; i + 4 <= w; i += 4) {
      const v128_t ev = exp_v(wasm_f32x4_sub(wasm_v128_load(r + i), wasm_v128_load(mx + i)));
      if (!log_) wasm_v128_store(o + i, ev);
      wasm_v128_store(sm + i, wasm_f32x4_add(wasm_v128_load(sm + i), ev));
    }
    for (; i < w; ++i) {
      const float ev = exp_s(r[i] - mx[i]);
      if (!log_) o[i] = ev;
      sm[i] += ev;
    }
  }
  if (log_) {
    for (long i = 0; i < w; ++i) sm[i] = logf(sm[i]);
  } else {
    for (long i = 0; i < w; ++i) sm[i] = 1.0f / sm[i];
  }
  for (long d = 0; d < dim; ++d) {
    const float* r = x + d * inner + i0;
    float* o = y + d * inner + i0;
    long i = 0;
    if (log_) {
      for (; i + 4 <= w; i += 4)
        wasm_v128_store(o + i, wasm_f32x4_sub(wasm_f32x4_sub(wasm_v128_load(r + i), wasm_v128_load(mx + i)),
                                              wasm_v128_load(sm + i)));
      for (; i < w; ++i) o[i] = (r[i] - mx[i]) - sm[i];
    } else {
      for (; i + 4 <= w; i += 4)
        wasm_v128_store(o + i, wasm_f32x4_mul(wasm_v128_load(o + i), wasm_v128_load(sm + i)));
      for (; i < w; ++i) o[i] = o[i] * sm[i];
    }
  }
  if (safe) {
    for (long i = 0; i < w; ++i)
      if (mx[i] == -INFINITY)
        for (long d = 0; d < dim; ++d) y[d * inner + i0 + i] = 0.0f;
  }
}

// ---- reduce ----------------------------------------------------------------------------------

template <int OP>
inline v128_t red_v(v128_t acc, v128_t x) {
  if (OP == REDUCE_AMAX) return wasm_f32x4_max(acc, x);
  if (OP == REDUCE_AMIN) return wasm_f32x4_min(acc, x);
  return wasm_f32x4_add(acc, x);
}
template <int OP>
inline float red_s(float acc, float x) {
  if (OP == REDUCE_AMAX) return max_nan(acc, x);
  if (OP == REDUCE_AMIN) return min_nan(acc, x);
  return acc + x;
}
template <int OP>
constexpr float red_init() {
  return OP == REDUCE_AMAX ? -INFINITY : OP == REDUCE_AMIN ? INFINITY : 0.0f;
}

template <int OP>
void reduce_impl(const REDUCE_args* a) {
  const long outer = a->outer, red = a->red, inner = a->inner;
  const float* in = at<const float>(a->in);
  float* out = at<float>(a->out);
  const bool is_sum = OP == REDUCE_SUM || OP == REDUCE_MEAN;
  if (inner == 1) {
    parallel_rows(outer, (double)outer * red, [&](long lo, long hi) {
      for (long o = lo; o < hi; ++o) {
        const float* x = in + o * red;
        float r;
        if (is_sum) {
          const double s = sum_contig(x, red);
          r = OP == REDUCE_MEAN ? (red > 0 ? (float)(s / (double)red) : NAN) : (float)s;
        } else {
          v128_t acc = wasm_f32x4_splat(red_init<OP>());
          long j = 0;
          for (; j + 4 <= red; j += 4) acc = red_v<OP>(acc, wasm_v128_load(x + j));
          r = OP == REDUCE_AMAX ? hmax(acc) : hmin(acc);
          for (; j < red; ++j) r = red_s<OP>(r, x[j]);
        }
        out[o] = r;
      }
    });
    return;
  }
  // inner > 1: columns of one outer slice in blocks, accumulated across red; sums blocked over red.
  const long iblocks = (inner + kInnerBlock - 1) / kInnerBlock;
  parallel_rows(outer * iblocks, (double)outer * red * inner, [&](long lo, long hi) {
    for (long t = lo; t < hi; ++t) {
      const long o = t / iblocks, i0 = (t % iblocks) * kInnerBlock;
      const long w = inner - i0 < kInnerBlock ? inner - i0 : kInnerBlock;
      const float* x = in + o * red * inner + i0;
      float total[kInnerBlock], part[kInnerBlock];
      for (long i = 0; i < w; ++i) total[i] = red_init<OP>();
      const long rblock = is_sum ? 256 : red;
      for (long r0 = 0; r0 < red; r0 += rblock) {
        const long re = r0 + rblock < red ? r0 + rblock : red;
        for (long i = 0; i < w; ++i) part[i] = red_init<OP>();
        for (long r = r0; r < re; ++r) {
          const float* row = x + r * inner;
          long i = 0;
          for (; i + 4 <= w; i += 4)
            wasm_v128_store(part + i, red_v<OP>(wasm_v128_load(part + i), wasm_v128_load(row + i)));
          for (; i < w; ++i) part[i] = red_s<OP>(part[i], row[i]);
        }
        for (long i = 0; i < w; ++i) total[i] = red_s<OP>(total[i], part[i]);
      }
      float* y = out + o * inner + i0;
      for (long i = 0; i < w; ++i) y[i] = OP == REDUCE_MEAN ? (red > 0 ? total[i] / (float)red : NAN) : total[i];
    }
  });
}

}  // namespace

void k_CHANNEL_AFFINE(const CHANNEL_AFFINE_args* a) {
  if (a->outer <= 0 || a->channels <= 0 || a->inner <= 0) return;
  switch (a->act) {
#define UNARY_OP(name, code) case UNARY_##name: affine<UNARY_##name>(a); break;
#include "kernel_abi.def"
    default: __builtin_trap();  // an unknown activation: a damaged plan
  }
}

void k_SOFTMAX(const SOFTMAX_args* a) {
  const long outer = a->outer, dim = a->dim, inner = a->inner;
  if (outer <= 0 || dim <= 0 || inner <= 0) return;
  const float* in = at<const float>(a->in);
  float* out = at<float>(a->out);
  const bool log_ = a->mode == 1, safe = a->mode == 2;
  const double flops = 40.0 * outer * dim * (double)inner;
  if (inner == 1) {
    parallel_rows(outer, flops, [&](long lo, long hi) {
      for (long o = lo; o < hi; ++o) softmax_row(in + o * dim, out + o * dim, dim, log_, safe);
    });
    return;
  }
  const long iblocks = (inner + kInnerBlock - 1) / kInnerBlock;
  parallel_rows(outer * iblocks, flops, [&](long lo, long hi) {
    for (long t = lo; t < hi; ++t) {
      const long o = t / iblocks, i0 = (t % iblocks) * kInnerBlock;
      const long i1 = i0 + kInnerBlock < inner ? i0 + kInnerBlock : inner;
      softmax_cols(in + o * dim * inner, out + o * dim * inner, dim, inner, i0, i1, log_, safe);
    }
  });
}

void k_LAYERNORM(const LAYERNORM_args* a) {
  const long rows = a->rows, cols = a->cols;
  if (rows <= 0) return;
  const float* in = at<const float>(a->in);
  float* out = at<float>(a->out);
  const float* wt = a->weight ? at<const float>(a->weight) : nullptr;
  const float* bs = a->bias ? at<const float>(a->bias) : nullptr;
  float* mean_out = a->mean ? at<float>(a->mean) : nullptr;
  float* rstd_out = a->rstd ? at<float>(a->rstd) : nullptr;
  const float eps = a->eps;
  parallel_rows(rows, 8.0 * rows * (double)cols, [&](long lo, long hi) {
    for (long r = lo; r < hi; ++r) {
      const float* x = in + r * cols;
      float* y = out + r * cols;
      const float mean = (float)(sum_contig(x, cols) / (double)cols);
      const float var = (float)(sqdev_contig(x, cols, mean) / (double)cols);
      const float rstd = 1.0f / sqrtf(var + eps);
      if (mean_out) mean_out[r] = mean;
      if (rstd_out) rstd_out[r] = rstd;
      const v128_t vm = wasm_f32x4_splat(mean), vr = wasm_f32x4_splat(rstd);
      long j = 0;
      for (; j + 4 <= cols; j += 4) {
        v128_t v = wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(x + j), vm), vr);
        if (wt) v = wasm_f32x4_mul(v, wasm_v128_load(wt + j));
        if (bs) v = wasm_f32x4_add(v, wasm_v128_load(bs + j));
        wasm_v128_store(y + j, v);
      }
      for (; j < cols; ++j) {
        float v = (x[j] - mean) * rstd;
        if (wt) v = v * wt[j];
        if (bs) v = v + bs[j];
        y[j] = v;
      }
    }
  });
}

void k_REDUCE(const REDUCE_args* a) {
  if (a->outer <= 0 || a->inner <= 0) return;
  switch (a->op) {
    case REDUCE_SUM: reduce_impl<REDUCE_SUM>(a); break;
    case REDUCE_MEAN: reduce_impl<REDUCE_MEAN>(a); break;
    case REDUCE_AMAX: reduce_impl<REDUCE_AMAX>(a); break;
    case REDUCE_AMIN: reduce_impl<REDUCE_AMIN>(a); break;
    default: __builtin_trap();  // an unknown sub-op: a damaged plan must not silently write nothing
  }
}
