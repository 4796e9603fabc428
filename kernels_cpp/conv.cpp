// k_CONV2D: NCHW 2-D convolution. Depthwise convolutions run a direct kernel (their GEMM would have
// k = kh*kw, far too thin to pay for an im2col), and so do the first convs that read the image (c_in
// <= 4: conv_small_cin.cpp); everything else becomes, per (image, group), an
// im2col written straight into GEMM panel layout followed by one packed GEMM whose epilogue adds
// the per-output-channel bias and the fused activation.
#include <string.h>
#include "abi.h"
#include "conv_small_cin.h"
#include "elementwise.h"
#include "gemm.h"
#include "threadpool.h"

namespace {

constexpr int NR = kGemmNR;

// One output plane of a depthwise conv: out = act(bias + sum_{ky,kx} w[ky,kx] * in[iy, ix]).
// The vector (interior, sw == 1) and scalar (border / strided) paths add the taps in the same order
// and skip the same out-of-bounds taps, so results do not depend on which path an output took.
void depthwise_plane(const CONV2D_args* a, const float* in, const float* w, float bias, float* out) {
  const int H = a->h, W = a->w, OH = a->oh, OW = a->ow, KH = a->kh, KW = a->kw;
  const int sh = a->sh, sw = a->sw, ph = a->ph, pw = a->pw, dh = a->dh, dw = a->dw;
  // Output columns whose taps are all inside the row (only used when sw == 1).
  int ox_lo = OW, ox_hi = OW;
  if (sw == 1) {
    ox_lo = pw;
    ox_hi = W - (KW - 1) * dw + pw;  // exclusive
    if (ox_lo > OW) ox_lo = OW;
    if (ox_hi > OW) ox_hi = OW;
    if (ox_hi < ox_lo) ox_hi = ox_lo;
  }
  const v128_t vbias = wasm_f32x4_splat(bias);
  for (int oy = 0; oy < OH; ++oy) {
    float* orow = out + (ptrdiff_t)oy * OW;
    const int iy0 = oy * sh - ph;
    auto scalar_at = [&](int ox) {
      float acc = bias;
      const int ix0 = ox * sw - pw;
      for (int ky = 0; ky < KH; ++ky) {
        const int iy = iy0 + ky * dh;
        if (iy < 0 || iy >= H) continue;
        const float* irow = in + (ptrdiff_t)iy * W;
        for (int kx = 0; kx < KW; ++kx) {
          const int ix = ix0 + kx * dw;
          if (ix < 0 || ix >= W) continue;
          acc = acc + w[ky * KW + kx] * irow[ix];
        }
      }
      return acc;
    };
    int ox = 0;
    for (; ox < ox_lo; ++ox) orow[ox] = scalar_at(ox);
    for (; ox + 4 <= ox_hi; ox += 4) {
      v128_t acc = vbias;
      const int ix0 = ox - pw;
      for (int ky = 0; ky < KH; ++ky) {
        const int iy = iy0 + ky * dh;
        if (iy < 0 || iy >= H) continue;
        const float* irow = in + (ptrdiff_t)iy * W + ix0;
        for (int kx = 0; kx < KW; ++kx)
          acc = simd_math::madd(wasm_f32x4_splat(w[ky * KW + kx]), wasm_v128_load(irow + kx * dw), acc);
      }
      wasm_v128_store(orow + ox, acc);
    }
    for (; ox < OW; ++ox) orow[ox] = scalar_at(ox);
  }
  activation_inplace(out, (long)OH * OW, a->act, a->p0, a->p1);
}

// Floats of stack one depthwise_plane_k call uses for its zero-padded input lines (32 KiB: worker
// stacks are 256 KiB); a plane whose lines do not fit runs depthwise_plane.
constexpr int kDepthwiseLineFloats = 8192;

// Floats per padded input line of depthwise_plane_k<K, S> for output width ow: stride 1 keeps the
// padded row (ow rounded up to 4, plus K - 1 columns of reach); stride 2 keeps it deinterleaved,
// even columns then odd ones, `half` floats each.
inline int depthwise_line(int K, int S, int ow) {
  const int ow4 = (ow + 3) / 4 * 4;
  return S == 1 ? ow4 + K - 1 : 2 * (ow4 + K / 2 + 1);
}

// One output plane of a K x K depthwise conv (K = 3 or 5), stride S (1 or 2), dilation 1, any
// padding, 4 output columns per vector (XNNPACK's CHW depthwise kernels work the same way). Each
// input row the plane reads is copied once into a zero-padded line (a ring of K lines; rows above
// and below the input read one line of zeros), so every block of 4 outputs loads its taps straight
// from the lines: no edge cases, no per-tap bounds checks. Stride 2 lines are stored deinterleaved
// (even, odd padded columns), so tap kx of outputs ox..ox+3 is one plain load at ox + kx / 2 of the
// even or odd half, where a strided load would need two loads and a shuffle per tap. The K*K
// weights are splatted once per plane, and bias and activation are applied in registers before
// the one store, except SiLU (below). Taps add in (ky, kx) order, padding taps included (as zeros).
template <int K, int S, int ACT>
void depthwise_plane_k(const CONV2D_args* a, const float* in, const float* w, float bias, float* out) {
  const int H = a->h, W = a->w, OH = a->oh, OW = a->ow, ph = a->ph, pw = a->pw, act = a->act;
  const float p0 = a->p0, p1 = a->p1;
  const int L = depthwise_line(K, S, OW), half = L / 2;
  alignas(16) float lines[kDepthwiseLineFloats];  // K ring slots of L floats, then a zero line
  memset(lines, 0, sizeof(float) * (K + 1) * L);  // the pads are never written after this
  const float* zero = lines + K * L;
  int held[K];  // padded row index held by each ring slot
  for (int i = 0; i < K; ++i) held[i] = -1;
  v128_t wv[K * K];
  for (int i = 0; i < K * K; ++i) wv[i] = wasm_f32x4_splat(w[i]);
  const v128_t vbias = wasm_f32x4_splat(bias);
  constexpr bool kRowPass = ACT == UNARY_SILU;

  // The line of padded row prow (input row prow - ph), filled into its ring slot if not there yet.
  auto line = [&](int prow) -> const float* {
    const int iy = prow - ph;
    if (iy < 0 || iy >= H) return zero;
    float* dst = lines + (prow % K) * L;
    if (held[prow % K] == prow) return dst;
    held[prow % K] = prow;
    const float* src = in + (ptrdiff_t)iy * W;
    if constexpr (S == 1) {
      const int n = W < L - pw ? W : L - pw;
      if (n > 0) memcpy(dst + pw, src, sizeof(float) * n);
    } else {
      // Padded column pw + q goes to dst[(pw + q) / 2] (even) or dst[half + (pw + q) / 2] (odd).
      float* ev = dst;
      float* od = dst + half;
      float* to_even_q = (pw & 1) ? od : ev;  // where the even q land
      float* to_odd_q = (pw & 1) ? ev : od;
      int q = 0;
      for (; q + 8 <= W && ((pw + q + 1) >> 1) + 4 <= half; q += 8) {
        const v128_t lo = wasm_v128_load(src + q), hi = wasm_v128_load(src + q + 4);
        wasm_v128_store(to_even_q + ((pw + q) >> 1), wasm_i32x4_shuffle(lo, hi, 0, 2, 4, 6));
        wasm_v128_store(to_odd_q + ((pw + q + 1) >> 1), wasm_i32x4_shuffle(lo, hi, 1, 3, 5, 7));
      }
      for (; q < W; ++q) {
        const int idx = pw + q;
        if ((idx >> 1) >= half) break;
        ((idx & 1) ? od : ev)[idx >> 1] = src[q];
      }
    }
    return dst;
  };

  for (int oy = 0; oy < OH; ++oy) {
    const float* rows[K];
    for (int ky = 0; ky < K; ++ky) rows[ky] = line(oy * S + ky);
    float* orow = out + (ptrdiff_t)oy * OW;
    auto block = [&](int ox) {
      v128_t acc = vbias;
      for (int ky = 0; ky < K; ++ky) {
        const float* r = rows[ky] + ox;
        for (int kx = 0; kx < K; ++kx) {
          const float* tap = S == 1 ? r + kx : r + (kx & 1) * half + kx / 2;
          acc = simd_math::madd(wv[ky * K + kx], wasm_v128_load(tap), acc);
        }
      }
      if constexpr (kRowPass) return acc;
      else return fused_act<ACT>(acc, act, p0, p1);
    };
    int ox = 0;
    for (; ox + 4 <= OW; ox += 4) wasm_v128_store(orow + ox, block(ox));
    if (ox < OW) {
      alignas(16) float buf[4];
      wasm_v128_store(buf, block(ox));
      if constexpr (kRowPass) wasm_v128_store(buf, unary_v<ACT>(wasm_v128_load(buf), p0, p1));
      for (int j = 0; ox + j < OW; ++j) orow[ox + j] = buf[j];
    }
    if constexpr (kRowPass) {
      // SiLU (EfficientNet's activation: exp, divide, ~30 dependent ops per vector, about twice a
      // 3x3 block's taps) runs as a second pass over the row just written, still in L1, two
      // independent vectors at a time. Fused into each block it left the CPU one long chain per
      // block next to the taps' loads; this pass made EfficientNet-B0 8-12% faster in V8 and
      // wasmtime (docs/design.md). Same unary_v bits either way.
      int j = 0;
      for (; j + 8 <= OW; j += 8) {
        const v128_t a0 = unary_v<ACT>(wasm_v128_load(orow + j), p0, p1);
        const v128_t a1 = unary_v<ACT>(wasm_v128_load(orow + j + 4), p0, p1);
        wasm_v128_store(orow + j, a0);
        wasm_v128_store(orow + j + 4, a1);
      }
      for (; j + 4 <= OW; j += 4) wasm_v128_store(orow + j, unary_v<ACT>(wasm_v128_load(orow + j), p0, p1));
    }
  }
}

using DepthwisePlane = void (*)(const CONV2D_args*, const float*, const float*, float, float*);

// depthwise_plane_k<K, S, ACT> as for_fused_act wants it.
template <int K, int S>
struct DepthwisePlanes {
  template <int ACT>
  struct For {
    static constexpr DepthwisePlane fn = depthwise_plane_k<K, S, ACT>;
  };
};

template <int K, int S>
DepthwisePlane depthwise_for_act(int act) {
  return for_fused_act<DepthwisePlanes<K, S>::template For>(act);
}

// The vectorised plane kernel for this conv, or the general depthwise_plane.
DepthwisePlane depthwise_kernel(const CONV2D_args* a) {
  if (a->kh != a->kw || a->sh != a->sw || a->dh != 1 || a->dw != 1 ||
      (a->kh + 1) * depthwise_line(a->kh, a->sh, a->ow) > kDepthwiseLineFloats)
    return depthwise_plane;
  if (a->kh == 3 && a->sh == 1) return depthwise_for_act<3, 1>(a->act);
  if (a->kh == 3 && a->sh == 2) return depthwise_for_act<3, 2>(a->act);
  if (a->kh == 5 && a->sh == 1) return depthwise_for_act<5, 1>(a->act);
  if (a->kh == 5 && a->sh == 2) return depthwise_for_act<5, 2>(a->act);
  return depthwise_plane;
}

// im2col of output columns [c0, c1) straight into GEMM panel layout: element (r, q) of the
// [K, c1 - c0] block goes to dst[((q - c0) / NR) * K * NR + r * NR + (q - c0) % NR]; taps outside
// the input and columns past c1 (up to the block's last full panel) are zero.
void im2col_block(const CONV2D_args* a, const float* in, int K, int r_lo, int r_hi, int c0, int c1,
                  float* dst) {
  const int H = a->h, W = a->w, OW = a->ow, KH = a->kh, KW = a->kw;
  const int sh = a->sh, sw = a->sw, ph = a->ph, pw = a->pw, dh = a->dh, dw = a->dw;
  const int cols = c1 - c0, cols_pad = (cols + NR - 1) / NR * NR;
  const ptrdiff_t pstride = (ptrdiff_t)K * NR;
  for (int r = r_lo; r < r_hi; ++r) {
    const int ci = r / (KH * KW), kyx = r % (KH * KW), ky = kyx / KW, kx = kyx % KW;
    const float* plane = in + (ptrdiff_t)ci * H * W;
    float* d = dst + (ptrdiff_t)r * NR;
    const int off = kx * dw - pw;
    int q = 0, oy = c0 / OW, ox = c0 % OW;
    while (q < cols) {
      // One output row segment [ox, ox + run): the same input row, consecutive (strided) columns.
      const int run = OW - ox < cols - q ? OW - ox : cols - q;
      const int iy = oy * sh - ph + ky * dh;
      if (iy < 0 || iy >= H) {
        for (int i = 0; i < run; ++i, ++q) d[(q / NR) * pstride + (q % NR)] = 0.0f;
      } else {
        const float* irow = plane + (ptrdiff_t)iy * W;
        for (int i = 0; i < run;) {
          const int ix = (ox + i) * sw + off;
          if ((q & 3) == 0 && i + 4 <= run && ix >= 0) {
            // 4 consecutive interior taps land in one half of a panel row: one vector store.
            if (sw == 1 && ix + 4 <= W) {
              wasm_v128_store(d + (q / NR) * pstride + (q % NR), wasm_v128_load(irow + ix));
              i += 4;
              q += 4;
              continue;
            }
            if (sw == 2 && ix + 8 <= W) {  // even lanes of 8 consecutive inputs (stem, downsampling)
              const v128_t lo = wasm_v128_load(irow + ix), hi = wasm_v128_load(irow + ix + 4);
              wasm_v128_store(d + (q / NR) * pstride + (q % NR), wasm_i32x4_shuffle(lo, hi, 0, 2, 4, 6));
              i += 4;
              q += 4;
              continue;
            }
          }
          d[(q / NR) * pstride + (q % NR)] = (unsigned)ix < (unsigned)W ? irow[ix] : 0.0f;
          ++i;
          ++q;
        }
      }
      ox = 0;
      ++oy;
    }
    for (; q < cols_pad; ++q) d[(q / NR) * pstride + (q % NR)] = 0.0f;
  }
}

}  // namespace

constexpr int kBlockFloats = 64 * 1024;  // 256 KiB of im2col panels per column block

// Panels per column block of K x NR panels: kBlockFloats of them, at least 8, at most `panels`.
static int column_block(int K, int panels) {
  int block = kBlockFloats / (K * NR);
  block = block < 8 ? 8 : block;
  return block > panels ? panels : block;
}

void k_CONV2D(const CONV2D_args* a) {
  const int N = a->n, C = a->c_in, G = a->groups > 0 ? a->groups : 1, CO = a->c_out;
  const int OH = a->oh, OW = a->ow, H = a->h, W = a->w;
  if (N <= 0 || CO <= 0 || OH <= 0 || OW <= 0) return;
  const int cin_g = C / G, cout_g = CO / G;
  const float* in = at<const float>(a->in);
  const float* weight = at<const float>(a->weight);
  const float* bias = a->bias ? at<const float>(a->bias) : nullptr;
  float* out = at<float>(a->out);
  const ptrdiff_t in_plane = (ptrdiff_t)H * W, out_plane = (ptrdiff_t)OH * OW;
  const int KHW = a->kh * a->kw;

  if (cin_g == 1 && cout_g == 1) {
    const int planes = N * CO;
    const DepthwisePlane kernel = depthwise_kernel(a);
    auto plane = [&](int t) {
      const int c = t % CO;
      kernel(a, in + (ptrdiff_t)t * in_plane, weight + (ptrdiff_t)c * KHW,
                      bias ? bias[c] : 0.0f, out + (ptrdiff_t)t * out_plane);
    };
    if (pool_threads() > 1 && worth_threading(2.0 * planes * out_plane * KHW))
      parallel_for(planes, plane);
    else
      for (int t = 0; t < planes; ++t) plane(t);
    return;
  }
  if (small_cin_conv_applies(a)) {  // the image-reading first conv (conv_small_cin.cpp)
    small_cin_conv(a);
    return;
  }

  const int K = cin_g * KHW;
  const int NC = OH * OW;
  float* scratch = at<float>(a->scratch);
  const bool pointwise = a->kh == 1 && a->kw == 1 && a->sh == 1 && a->sw == 1 && a->ph == 0 &&
                         a->pw == 0 && OH == H && OW == W;
  for (int img = 0; img < N; ++img) {
    for (int g = 0; g < G; ++g) {
      const float* gin = in + ((ptrdiff_t)img * C + (ptrdiff_t)g * cin_g) * in_plane;
      float* gout = out + ((ptrdiff_t)img * CO + (ptrdiff_t)g * cout_g) * out_plane;
      const float* gw = weight + (ptrdiff_t)g * cout_g * K;
      const float* gb = bias ? bias + g * cout_g : nullptr;
      if (K == 0) {
        gemm_packed(cout_g, NC, 0, gw, 1, scratch, gout, NC, gb, gb ? 2 : 0, a->act, a->p0, a->p1);
        continue;
      }
      if (pointwise) {
        // The input planes already are B[K = c_in_g, N = h*w]; only the panel pack remains. Pack a
        // column block (the im2col path's blocks, capped at the GEMM's own L2 block of kGemmNCB
        // panels) right before its GEMM, so the GEMM reads the panels from cache, not from a pack
        // of all of B written to memory first. V8 standalone (benchmarks/gemm_micro :m1 vs :m132),
        // 24x3136x96: 34.8 -> 37.8 GFLOP/s; bit-identical.
        const int panels = (NC + NR - 1) / NR;
        int block = column_block(K, panels);
        block = block > kGemmNCB ? kGemmNCB : block;
        auto columns = [&](int p_lo, int p_hi, float* cols) {   // panels [p_lo, p_hi), all output channels
          for (int p0 = p_lo; p0 < p_hi; p0 += block) {
            const int p1 = p0 + block < p_hi ? p0 + block : p_hi;
            const int c0 = p0 * NR, c1 = p1 * NR < NC ? p1 * NR : NC;
            pack_b(K, c1 - c0, gin + c0, (int)in_plane, 1, cols);
            gemm_packed(cout_g, c1 - c0, K, gw, K, cols, gout + c0, NC, gb, gb ? 2 : 0, a->act, a->p0, a->p1);
          }
        };
        const int threads = pool_threads();
        if (threads == 1 || !worth_threading(2.0 * cout_g * NC * K)) {
          columns(0, panels, scratch);
        } else if (NC >= cout_g && panels >= 8 * threads) {
          // More columns than rows (B, K x NC, at least A's size, K x c_out): threads take column
          // ranges, each packing its own panels (into its own part of scratch) and running all
          // output channels over them (the nested GEMM runs inline): one join per conv, and packed
          // panels never cross cores. Packing all of B in one parallel_for and splitting the
          // GEMM's rows in another (below) made each thread read the panels the other core packed:
          // MobileNetV3-Large's 672->112 and 24->72 at 2 threads 0.84-0.86x the time, the model 0.955x.
          // Ranges are even splits of whole panels, 2 per thread so that a thread slowed by a
          // neighbour's load can hand work to the other.
          const int tasks = 2 * threads;
          parallel_for(tasks, [&](int t) {
            const int p_lo = (int)((int64_t)panels * t / tasks), p_hi = (int)((int64_t)panels * (t + 1) / tasks);
            columns(p_lo, p_hi, scratch + (ptrdiff_t)p_lo * K * NR);
          });
        } else {
          // More rows than columns (expansions to many channels at 14x14 and 7x7): each thread's
          // share of the rows reads all of B, which the threads pack together first.
          auto pack = [&](int t) {
            const int p_lo = (int)((int64_t)panels * t / 16), p_hi = (int)((int64_t)panels * (t + 1) / 16);
            if (p_lo < p_hi)
              pack_b(K, (p_hi * NR < NC ? p_hi * NR : NC) - p_lo * NR, gin + p_lo * NR, (int)in_plane, 1,
                     scratch + (ptrdiff_t)p_lo * K * NR);
          };
          if (panels >= 16 && worth_threading((double)K * NC)) parallel_for(16, pack);
          else pack_b(K, NC, gin, (int)in_plane, 1, scratch);
          gemm_packed(cout_g, NC, K, gw, K, scratch, gout, NC, gb, gb ? 2 : 0, a->act, a->p0, a->p1);
        }
        continue;
      } else {
        // Column blocks small enough (kBlockFloats) that the im2col panels of a block are still in
        // cache while the GEMM reads them; im2col of the whole output first made the GEMM stream B
        // from memory (the conv ran ~30% below the GEMM alone on ResNet layers). At least 8 panels
        // though (for K = 4608, 1.2 MB): 1-panel blocks left the GEMM only 1 x 8 column tiles,
        // whose 4 accumulators wait on the add latency (ResNet-18 7x7x512: 20.5 -> 22.5 GFLOP/s).
        const int panels = (NC + NR - 1) / NR;
        int block = column_block(K, panels);
        const int threads = pool_threads();
        if (threads > 1 && panels >= 4 * threads && worth_threading(2.0 * cout_g * NC * K)) {
          // Wide outputs: threads take whole column blocks (im2col + GEMM each, into their own part
          // of scratch; the nested GEMM runs inline). Splitting each block's im2col and GEMM
          // instead cost a join per block and ran the small im2cols serially (ResNet-18's
          // 56x56 layer: 1.35x on 2 threads). Blocks shrink to give each thread ~4 of them.
          const int per_task = (panels + 4 * threads - 1) / (4 * threads);
          if (block > per_task) block = per_task;
          parallel_for((panels + block - 1) / block, [&](int t) {
            const int p0 = t * block, c0 = p0 * NR, c1 = (p0 + block) * NR < NC ? (p0 + block) * NR : NC;
            float* cols = scratch + (ptrdiff_t)p0 * K * NR;
            im2col_block(a, gin, K, 0, K, c0, c1, cols);
            gemm_packed(cout_g, c1 - c0, K, gw, K, cols, gout + c0, NC, gb, gb ? 2 : 0, a->act, a->p0, a->p1);
          });
          continue;
        }
        for (int p0 = 0; p0 < panels; p0 += block) {
          const int c0 = p0 * NR, c1 = (p0 + block) * NR < NC ? (p0 + block) * NR : NC;
          const int tasks = K < 16 ? K : 16;
          auto cols = [&](int t) {
            im2col_block(a, gin, K, (int)((int64_t)K * t / tasks), (int)((int64_t)K * (t + 1) / tasks), c0, c1,
                         scratch);
          };
          if (pool_threads() > 1 && worth_threading((double)K * (c1 - c0))) parallel_for(tasks, cols);
          else im2col_block(a, gin, K, 0, K, c0, c1, scratch);
          gemm_packed(cout_g, c1 - c0, K, gw, K, scratch, gout + c0, NC, gb, gb ? 2 : 0, a->act, a->p0, a->p1);
        }
        continue;
      }
      gemm_packed(cout_g, NC, K, gw, K, scratch, gout, NC, gb, gb ? 2 : 0, a->act, a->p0, a->p1);
    }
  }
}
