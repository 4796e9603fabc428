// Direct NCHW convolution for c_in <= 4 (groups 1): the first conv of a CNN, which reads the
// 3-channel image. Its im2col + GEMM has K = c_in * kh * kw = 27 for a 3x3 stem: a k-loop so short
// that the column packing and the GEMM's per-tile work weigh heavily next to the multiply-adds.
//
// Here, per output row, each input row the row's taps read is copied once per channel into a
// zero-padded line (a ring of kh lines per channel, on the stack; stride 2 lines deinterleaved into
// even and odd padded columns, as the depthwise kernel in conv.cpp does), so the 4 output columns
// of a vector load each tap with one plain load, with no bounds checks. A block of kOCB output
// channels x kCV vectors of 4 columns accumulates in registers: per tap, kCV input loads and kOCB
// weights splat-loaded from a copy packed [channel block][tap][kOCB] feed kOCB * kCV multiply-adds.
// Bias and the fused activation are applied in registers before the one store per vector.
#include <string.h>
#include "conv_small_cin.h"
#include "elementwise.h"
#include "simd_math.h"
#include "threadpool.h"

namespace {

constexpr int kMaxCin = 4;
// A block of output: kOCB channels x kCV vectors of 4 columns, kOCB * kCV accumulator registers.
// 4 x 2 ran MobileNetV2's / V3's stems 0.82x / 0.74x the im2col + GEMM path's time in V8; 8 x 1,
// 6 x 2 and 4 x 3 1.07-1.19x 4 x 2's time there, 0.93-0.94x on EfficientNet-B0's SiLU stem (one
// Node process alternating, 10th percentile of 200 profiled runs).
constexpr int kOCB = 4;
constexpr int kCV = 2;
// The most taps (c_in * kh * kw) it runs: 3x3 stems (27) ran 0.74-0.84x the im2col + GEMM path's
// time, ResNet-18's 7x7 one (147) 1.1-1.3x in V8 and 1.3-1.8x in wasmtime (every block shape):
// with long k the GEMM's 6 x 8 tile does more multiply-adds per load than kOCB splats.
constexpr int kMaxTaps = 36;
constexpr int kLineFloats = 8192;   // stack floats of one task's lines (32 KiB; worker stacks: 256 KiB)
constexpr int kPackFloats = 16384;  // stack floats of the packed weights and bias (64 KiB)

// Floats per padded input line for output width ow (rounded up to whole vectors): stride 1 keeps
// the padded row up to the last column a tap reads; stride 2 keeps `half` even padded columns,
// then `half` odd ones.
int line_floats(int k, int s, int ow) {
  const int ow4 = (ow + 4 * kCV - 1) / (4 * kCV) * (4 * kCV);
  return s == 1 ? ow4 + k - 1 : 2 * (ow4 + k / 2);
}

// Floats of the packed weights, then the packed bias.
int packed_floats(const CONV2D_args* a) {
  return (a->c_out + kOCB - 1) / kOCB * kOCB * (a->c_in * a->kh * a->kw + 1);
}

struct Conv {
  const CONV2D_args* a;
  const float* in;        // image 0
  float* out;             // image 0
  const float* wpack;     // [c_out / kOCB blocks][c_in * kh * kw taps][kOCB], zero past c_out
  const float* bpack;     // [blocks * kOCB], zero past c_out (and without bias)
};

// Output rows [oy_lo, oy_hi) of image img. KT: the kernel size when known at compile time
// (kh == kw == KT), 0 for any kh x kw. Taps add in (channel, ky, kx) order, padding taps included
// (as zeros), the order of the im2col + GEMM path's k loop.
template <int KT, int S, int ACT>
void conv_rows(const Conv& c, int img, int oy_lo, int oy_hi) {
  const CONV2D_args* a = c.a;
  const int CI = a->c_in, H = a->h, W = a->w, OH = a->oh, OW = a->ow, CO = a->c_out;
  const int KH = KT ? KT : a->kh, KW = KT ? KT : a->kw, ph = a->ph, pw = a->pw, act = a->act;
  const float p0 = a->p0, p1 = a->p1;
  const int L = line_floats(KW, S, OW), half = L / 2, taps = CI * KH * KW;
  const ptrdiff_t in_plane = (ptrdiff_t)H * W, out_plane = (ptrdiff_t)OH * OW;
  const float* in = c.in + (ptrdiff_t)img * CI * in_plane;
  float* out = c.out + (ptrdiff_t)img * CO * out_plane;

  alignas(16) float lines[kLineFloats];  // CI * KH ring slots of L floats, then a zero line
  memset(lines, 0, sizeof(float) * (CI * KH + 1) * L);  // the pads are never written after this
  const float* zero = lines + CI * KH * L;
  int held[kMaxTaps];  // padded row held by each ring slot (CI * KH <= kMaxTaps)
  for (int i = 0; i < CI * KH; ++i) held[i] = -1;

  // The line of padded row prow of channel ci, copied into its ring slot if not there yet.
  auto line = [&](int ci, int prow) -> const float* {
    const int iy = prow - ph;
    if (iy < 0 || iy >= H) return zero;
    const int slot = ci * KH + prow % KH;
    float* dst = lines + slot * L;
    if (held[slot] == prow) return dst;
    held[slot] = prow;
    const float* src = in + ci * in_plane + (ptrdiff_t)iy * W;
    if constexpr (S == 1) {
      const int n = W < L - pw ? W : L - pw;
      if (n > 0) memcpy(dst + pw, src, sizeof(float) * n);
    } else {
      // Input column q is padded column pw + q: half (pw + q) & 1, index (pw + q) / 2. Even q all
      // land in one half from `from_even` on, odd q in the other from `from_odd` on.
      float* from_even = dst + (pw & 1) * half + pw / 2;
      float* from_odd = dst + ((pw + 1) & 1) * half + (pw + 1) / 2;
      int q = 0;
      for (; q + 8 <= W && (pw + q + 7) / 2 < half; q += 8) {
        const v128_t lo = wasm_v128_load(src + q), hi = wasm_v128_load(src + q + 4);
        wasm_v128_store(from_even + q / 2, wasm_i32x4_shuffle(lo, hi, 0, 2, 4, 6));
        wasm_v128_store(from_odd + q / 2, wasm_i32x4_shuffle(lo, hi, 1, 3, 5, 7));
      }
      for (; q < W && (pw + q) / 2 < half; ++q) ((q & 1) ? from_odd : from_even)[q / 2] = src[q];
    }
    return dst;
  };

  const int blocks = (CO + kOCB - 1) / kOCB;
  const float* rows[kMaxTaps];
  for (int oy = oy_lo; oy < oy_hi; ++oy) {
    for (int ci = 0; ci < CI; ++ci)
      for (int ky = 0; ky < KH; ++ky) rows[ci * KH + ky] = line(ci, oy * S + ky);
    for (int b = 0; b < blocks; ++b) {
      const float* wb = c.wpack + (ptrdiff_t)b * taps * kOCB;
      const float* bb = c.bpack + b * kOCB;
      const int oc0 = b * kOCB, n_oc = CO - oc0 < kOCB ? CO - oc0 : kOCB;
      float* ob = out + (ptrdiff_t)oc0 * out_plane + (ptrdiff_t)oy * OW;
      for (int ox = 0; ox < OW; ox += 4 * kCV) {
        v128_t acc[kOCB][kCV];
        for (int o = 0; o < kOCB; ++o)
          for (int v = 0; v < kCV; ++v) acc[o][v] = wasm_v128_load32_splat(bb + o);
        const float* wt = wb;
        for (int r = 0; r < CI * KH; ++r) {
          const float* row = rows[r] + ox;
          for (int kx = 0; kx < KW; ++kx, wt += kOCB) {
            v128_t x[kCV];
            for (int v = 0; v < kCV; ++v)
              x[v] = wasm_v128_load((S == 1 ? row + kx : row + (kx & 1) * half + kx / 2) + 4 * v);
            for (int o = 0; o < kOCB; ++o) {
              const v128_t w = wasm_v128_load32_splat(wt + o);
              for (int v = 0; v < kCV; ++v) acc[o][v] = simd_math::madd(w, x[v], acc[o][v]);
            }
          }
        }
        for (int v = 0; v < kCV; ++v) {
          const int x0 = ox + 4 * v;
          if (x0 + 4 <= OW) {
            for (int o = 0; o < n_oc; ++o)
              wasm_v128_store(ob + o * out_plane + x0, fused_act<ACT>(acc[o][v], act, p0, p1));
          } else if (x0 < OW) {
            alignas(16) float buf[4];
            for (int o = 0; o < n_oc; ++o) {
              wasm_v128_store(buf, fused_act<ACT>(acc[o][v], act, p0, p1));
              for (int j = 0; x0 + j < OW; ++j) ob[o * out_plane + x0 + j] = buf[j];
            }
          }
        }
      }
    }
  }
}

using RowsFn = void (*)(const Conv&, int, int, int);

// conv_rows<KT, S, ACT> as for_fused_act wants it.
template <int KT, int S>
struct ConvRows {
  template <int ACT>
  struct For {
    static constexpr RowsFn fn = conv_rows<KT, S, ACT>;
  };
};

template <int KT, int S>
RowsFn rows_for_act(int act) {
  return for_fused_act<ConvRows<KT, S>::template For>(act);
}

template <int S>
RowsFn rows_for(const CONV2D_args* a) {
  return a->kh == 3 && a->kw == 3 ? rows_for_act<3, S>(a->act) : rows_for_act<0, S>(a->act);
}

}  // namespace

bool small_cin_conv_applies(const CONV2D_args* a) {
  return a->groups <= 1 && a->c_in >= 1 && a->c_in <= kMaxCin && a->c_in * a->kh * a->kw <= kMaxTaps &&
         a->sh == a->sw &&
         (a->sh == 1 || a->sh == 2) && a->dh == 1 && a->dw == 1 &&
         (a->c_in * a->kh + 1) * line_floats(a->kw, a->sh, a->ow) <= kLineFloats &&
         packed_floats(a) <= kPackFloats;
}

void small_cin_conv(const CONV2D_args* a) {
  const int CO = a->c_out, taps = a->c_in * a->kh * a->kw, blocks = (CO + kOCB - 1) / kOCB;
  const float* weight = at<const float>(a->weight);
  const float* bias = a->bias ? at<const float>(a->bias) : nullptr;
  alignas(16) float wpack[kPackFloats];
  float* bpack = wpack + (ptrdiff_t)blocks * taps * kOCB;
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < taps; ++t)
      for (int o = 0; o < kOCB; ++o) {
        const int oc = b * kOCB + o;
        wpack[((ptrdiff_t)b * taps + t) * kOCB + o] = oc < CO ? weight[(ptrdiff_t)oc * taps + t] : 0.0f;
      }
  for (int oc = 0; oc < blocks * kOCB; ++oc) bpack[oc] = bias && oc < CO ? bias[oc] : 0.0f;
  const Conv c{a, at<const float>(a->in), at<float>(a->out), wpack, bpack};
  const RowsFn rows = a->sh == 1 ? rows_for<1>(a) : rows_for<2>(a);

  // Threads take bands of output rows (numbered across the batch); each band refills its ring.
  const int OH = a->oh;
  parallel_rows((int64_t)a->n * OH, 2.0 * a->n * CO * OH * a->ow * taps, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi;) {
      const int img = (int)(r / OH), oy = (int)(r % OH);
      const int end = hi - (int64_t)img * OH < OH ? (int)(hi - (int64_t)img * OH) : OH;
      rows(c, img, oy, end);
      r += end - oy;
    }
  });
}
