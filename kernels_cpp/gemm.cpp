// k_GEMM and k_PACK_B: register-blocked f32x4 matrix multiply over a pre-packed B.
//
// Micro-kernel: MR rows x NP panels (NP*8 columns) in 2*MR*NP f32x4 accumulators. Per k step it
// loads one 8-float row from each B panel and broadcasts one A element per row; each update is
// simd_math::madd (mul then add in the baseline build, f32x4.relaxed_madd in the relaxed one). The
// tile (6x8, see GEMM_MR) and the broadcast (g_load_splat) were measured in V8 (Node.js 20) and
// wasmtime, the two engines exported files run in: the tile wins in both, the broadcast is per engine.
// The load32_splat form (V8's) is a noinline function of its own (ukernel_splat), the shuffle form
// is inlined into gemm_block_t (micro_tile); both add the same products in the same order.
//
// Cache blocking: k is cut into KC-deep slices (the A micro-panel MR x KC stays in L1 while it
// sweeps a block of NCB panels, which stays in L2); slices after the first accumulate into C,
// and the bias epilogue runs on the last slice only, the activation after it over each block row
// (activation_inplace: one call per row of up to NCB panels, not one per vector). The GEMM_* macros exist so
// other shapes can be benchmarked with -D flags; the defaults are the tuned ones.
#include <string.h>
#include "abi.h"
#include "elementwise.h"
#include "gemm.h"
#include "threadpool.h"

namespace {

constexpr int NR = kGemmNR;
// The tile is 6x8 (6 rows x 1 panel, 12 accumulators) in both builds. Relaxed: one fused madd per
// update leaves the broadcasts and loads as the cost per k step, which 6 rows x 1 panel amortize
// best. A/B of exported Linear layers, one Node.js 20 process alternating the builds (machine loaded,
// so ratios only; 2026-12-03), speedup over the baseline build's then 2x16: 128x768x3072 1.50,
// 128x3072x768 1.49, 3136x96x24 1.27, 3136x24x144 1.18, 784x1152x128 1.28 (2x16 relaxed: 1.19,
// 1.04, 1.11, 0.40, 1.15); in wasmtime 0.96-1.16. Baseline (mul + add): 6x8 over 2x16 is 1.3-1.5x
// in V8 and 1.05-1.15x in wasmtime on MobileNetV2's pointwise convs, the encoder's and the MLP's
// linears (benchmarks/gemm_micro, one process alternating tiles, min of 15 rounds,
// load average 4-5, 2026-12-03; 4x8 and 5x8 land between). How A elements are broadcast is chosen
// at run time (g_load_splat), as the engines disagree.
#ifndef GEMM_NP
#define GEMM_NP 1
#endif
constexpr int MR = kGemmMR;
#ifndef GEMM_KC
#define GEMM_KC 256
#endif
constexpr int KC = GEMM_KC;  // k slice
constexpr int NCB = kGemmNCB;  // panels per L2 block (gemm.h)

static_assert(NR == 8, "the micro-kernel holds a panel row in two f32x4");

// Broadcast each A element with v128.load32_splat (1) or by one v128 load per 4 k and
// i32x4.shuffle (0, the default). V8 lowers load32_splat to vbroadcastss, a plain load, and the
// shuffle form's 6 live A vectors next to 12 accumulators overflow its 16 xmm registers (its
// TurboFan code spills): load32_splat is 1.10-1.15x faster there. wasmtime (Cranelift) lowers
// load32_splat to a load plus a shuffle: there it is 1.3x slower. (Standalone 6x8 GEMM at the
// shapes of MobileNetV2's pointwise convs and the encoder's linears, one process alternating, min of
// 11-15 rounds, 2026-12-03.) The JS loader sets it (set_gemm_load_splat); the compile path and
// wasmtime keep the default. It lives in linear memory, so it holds for every thread. The relaxed
// build ignores it: with relaxed_madd the shuffle is the faster one in V8 too (1.08-1.4x, same run).
// Since 2026-12-03 (issue #13) the load32_splat form is ukernel_splat, a separate function with a
// one-step k loop (docs/design.md decision 4 has the numbers and what else was tried).
int g_load_splat = 0;
#ifdef __wasm_relaxed_simd__
constexpr bool kLoadSplatPays = false;
#else
constexpr bool kLoadSplatPays = true;
#endif

struct Epilogue {
  const float* bias;  // already offset to this C block's row/col origin
  int bias_mode;
  int act;
  float p0, p1;
};

// Bias (col_bias: this chunk's 8 column biases, for bias_mode 1), on the last k slice. The
// activation runs later, over whole rows of a block (gemm_block_t).
inline void add_bias(v128_t& v0, v128_t& v1, const float* col_bias, const Epilogue& e, int row) {
  if (e.bias_mode == 1) {
    v0 = wasm_f32x4_add(v0, wasm_v128_load(col_bias));
    v1 = wasm_f32x4_add(v1, wasm_v128_load(col_bias + 4));
  } else if (e.bias_mode == 2) {
    const v128_t bv = wasm_v128_load32_splat(e.bias + row);
    v0 = wasm_f32x4_add(v0, bv);
    v1 = wasm_f32x4_add(v1, bv);
  }
}

// Adds C (unless first), then the bias (if last), and stores one 8-column row chunk of a
// tile; chunks at the right edge (nc < 8) go through a buffer so nothing past column n is touched.
inline void finish_row8(float* cr, v128_t v0, v128_t v1, int nc, bool first, bool last,
                        const Epilogue& e, int row, int col) {
  if (nc >= NR) {
    if (!first) {
      v0 = wasm_f32x4_add(wasm_v128_load(cr), v0);
      v1 = wasm_f32x4_add(wasm_v128_load(cr + 4), v1);
    }
    if (last) add_bias(v0, v1, e.bias_mode == 1 ? e.bias + col : nullptr, e, row);
    wasm_v128_store(cr, v0);
    wasm_v128_store(cr + 4, v1);
    return;
  }
  alignas(16) float buf[NR] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (!first) {
    for (int j = 0; j < nc; ++j) buf[j] = cr[j];
    v0 = wasm_f32x4_add(wasm_v128_load(buf), v0);
    v1 = wasm_f32x4_add(wasm_v128_load(buf + 4), v1);
  }
  if (last) {
    alignas(16) float bb[NR] = {0, 0, 0, 0, 0, 0, 0, 0};  // bias columns past n stay 0
    if (e.bias_mode == 1)
      for (int j = 0; j < nc; ++j) bb[j] = e.bias[col + j];
    add_bias(v0, v1, bb, e, row);
  }
  wasm_v128_store(buf, v0);
  wasm_v128_store(buf + 4, v1);
  for (int j = 0; j < nc; ++j) cr[j] = buf[j];
}

// One MR_ x (NP*8) tile: C[0:MR_, 0:nc] (+)= A[0:MR_, 0:kc] @ [NP consecutive B panels][0:kc],
// A broadcast by one v128 load per 4 k and i32x4.shuffle (g_load_splat off: wasmtime, the relaxed
// build), inlined into gemm_block_t. bps = distance between panels in floats.
template <int MR_, int NP>
inline void micro_tile(int kc, const float* __restrict a, int lda, const float* __restrict b,
                       int bps, float* __restrict c, int ldc, int nc, bool first, bool last,
                       const Epilogue& e, int row0, int col0) {
  v128_t acc[MR_][2 * NP];
  for (int i = 0; i < MR_; ++i)
    for (int j = 0; j < 2 * NP; ++j) acc[i][j] = wasm_f32x4_splat(0.0f);
  const float* ap[MR_];
  for (int i = 0; i < MR_; ++i) ap[i] = a + i * lda;
  int kk = 0;
  for (; kk + 4 <= kc; kk += 4) {
    v128_t av[MR_];
    for (int i = 0; i < MR_; ++i) av[i] = wasm_v128_load(ap[i] + kk);
#define STEP(L)                                                                    \
    {                                                                              \
      v128_t s[MR_];                                                               \
      for (int i = 0; i < MR_; ++i) s[i] = wasm_i32x4_shuffle(av[i], av[i], L, L, L, L); \
      for (int p = 0; p < NP; ++p) {                                               \
        const v128_t b0 = wasm_v128_load(b + p * bps + (kk + L) * NR);             \
        const v128_t b1 = wasm_v128_load(b + p * bps + (kk + L) * NR + 4);         \
        for (int i = 0; i < MR_; ++i) {                                            \
          acc[i][2 * p] = simd_math::madd(s[i], b0, acc[i][2 * p]);  \
          acc[i][2 * p + 1] = simd_math::madd(s[i], b1, acc[i][2 * p + 1]); \
        }                                                                          \
      }                                                                            \
    }
    STEP(0) STEP(1) STEP(2) STEP(3)
#undef STEP
  }
  for (; kk < kc; ++kk) {
    v128_t s[MR_];
    for (int i = 0; i < MR_; ++i) s[i] = wasm_v128_load32_splat(ap[i] + kk);
    for (int p = 0; p < NP; ++p) {
      const v128_t b0 = wasm_v128_load(b + p * bps + kk * NR);
      const v128_t b1 = wasm_v128_load(b + p * bps + kk * NR + 4);
      for (int i = 0; i < MR_; ++i) {
        acc[i][2 * p] = simd_math::madd(s[i], b0, acc[i][2 * p]);
        acc[i][2 * p + 1] = simd_math::madd(s[i], b1, acc[i][2 * p + 1]);
      }
    }
  }
  for (int i = 0; i < MR_; ++i)
    for (int p = 0; p < NP; ++p) {
      const int ncp = nc - p * NR;
      if (ncp > 0)
        finish_row8(c + i * ldc + p * NR, acc[i][2 * p], acc[i][2 * p + 1], ncp, first, last, e,
                    row0 + i, col0 + p * NR);
    }
}

// The load32_splat form (g_load_splat on: V8), as a function of its own, not inlined: one MR_ x 8
// tile, sum over k of A[i, k] * B[k, j] in k order (the shuffle form's sums, bit for bit), then
// + C (add_out) and + bias, stored at out (row stride ldo). XNNPACK's
// structure: A rows and B walked by incremented pointers, one k step per iteration, each row's
// broadcast used at once by its two mul+adds, so 12 accumulators + 2 B rows + 1 broadcast + 1
// product is all that is live, and TurboFan allocates this loop on its own rather than as part of
// gemm_block_t's. That is 16 values for TurboFan's 15 allocatable xmm registers on x64: its code
// (node --print-wasm-code) keeps one accumulator in a stack slot, a load and a store per k step;
// broadcasting each A element twice (15 live; an empty asm kept LLVM from merging the loads) was
// 1.3x slower. In V8 at the shapes of benchmarks/gemm_micro its GFLOP/s are 0.95-1.08x the
// inlined 4-step form's (mostly 1.00-1.07x), exported models run 2-4% faster (design.md decision
// 4); the same function with its k loop unrolled 4 steps was 1.2-1.3x slower.
template <int MR_>
__attribute__((noinline)) void ukernel_splat(int kc, const float* __restrict a, int lda,
                                             const float* __restrict b, float* __restrict out,
                                             int ldo, bool add_out, const float* col_bias,
                                             const float* row_bias) {
  v128_t acc[MR_][2];
  const float* ap[MR_];
  for (int i = 0; i < MR_; ++i) {
    acc[i][0] = acc[i][1] = wasm_f32x4_splat(0.0f);
    ap[i] = a + i * lda;
  }
  int k = kc;
#pragma clang loop unroll(disable)
  for (; k > 0; --k) {
    const v128_t b0 = wasm_v128_load(b), b1 = wasm_v128_load(b + 4);
    b += NR;
    for (int i = 0; i < MR_; ++i) {
      const v128_t s = wasm_v128_load32_splat(ap[i]);
      ap[i] += 1;
      acc[i][0] = simd_math::madd(s, b0, acc[i][0]);
      acc[i][1] = simd_math::madd(s, b1, acc[i][1]);
    }
  }
  // finish_row8's full-width path in its order (+ C, + column or row bias), on plain pointers:
  // passing the Epilogue and calling finish_row8 here made this function 1.2-1.9x slower in V8.
  for (int i = 0; i < MR_; ++i) {
    float* o = out + i * ldo;
    v128_t v0 = acc[i][0], v1 = acc[i][1];
    if (add_out) {
      v0 = wasm_f32x4_add(wasm_v128_load(o), v0);
      v1 = wasm_f32x4_add(wasm_v128_load(o + 4), v1);
    }
    if (col_bias) {
      v0 = wasm_f32x4_add(v0, wasm_v128_load(col_bias));
      v1 = wasm_f32x4_add(v1, wasm_v128_load(col_bias + 4));
    } else if (row_bias) {
      const v128_t bv = wasm_v128_load32_splat(row_bias + i);
      v0 = wasm_f32x4_add(v0, bv);
      v1 = wasm_f32x4_add(v1, bv);
    }
    wasm_v128_store(o, v0);
    wasm_v128_store(o + 4, v1);
  }
}

// One MR_ x 8 tile through ukernel_splat: straight into C when the tile is 8 columns wide, else
// into a buffer and through finish_row8 (which keeps C past column n untouched).
template <int MR_>
inline void micro_tile_uk(int kc, const float* a, int lda, const float* b, float* c, int ldc, int nc,
                          bool first, bool last, const Epilogue& e, int row0, int col0) {
  if (nc >= NR) {
    ukernel_splat<MR_>(kc, a, lda, b, c, ldc, !first, last && e.bias_mode == 1 ? e.bias + col0 : nullptr,
                       last && e.bias_mode == 2 ? e.bias + row0 : nullptr);
    return;
  }
  alignas(16) float t[MR_ * NR];
  ukernel_splat<MR_>(kc, a, lda, b, t, NR, false, nullptr, nullptr);  // the raw sums
  for (int i = 0; i < MR_; ++i)
    finish_row8(c + i * ldc, wasm_v128_load(t + i * NR), wasm_v128_load(t + i * NR + 4), nc, first,
                last, e, row0 + i, col0);
}

template <int MR_, bool SPLAT>
inline void tile_row(int kc, const float* ai, int lda, const float* bpp, int bps, float* ci, int ldc,
                     int nc, bool first, bool last, const Epilogue& e, int i0, int col0, bool two) {
  if constexpr (SPLAT) {
    for (int q = 0; q < (two ? GEMM_NP : 1) && q * NR < nc; ++q)
      micro_tile_uk<MR_>(kc, ai, lda, bpp + q * bps, ci + q * NR, ldc, nc - q * NR, first, last, e, i0, col0 + q * NR);
  } else if (two) {
    micro_tile<MR_, GEMM_NP>(kc, ai, lda, bpp, bps, ci, ldc, nc, first, last, e, i0, col0);
  } else {
    micro_tile<MR_, 1>(kc, ai, lda, bpp, bps, ci, ldc, nc, first, last, e, i0, col0);
  }
}

// Rows [m_lo, m_hi) x panels [p_lo, p_hi) of one GEMM, with k slicing.
template <bool SPLAT>
void gemm_block_t(int m_lo, int m_hi, int p_lo, int p_hi, int n, int k, const float* a, int lda,
                const float* bp, float* c, int ldc, const Epilogue& e) {
  const int bps = k * NR;
  for (int pb = p_lo; pb < p_hi; pb += NCB) {
    const int pe = pb + NCB < p_hi ? pb + NCB : p_hi;
    int k0 = 0;
    do {
      const int kc = k - k0 < KC ? k - k0 : KC;
      const bool first = k0 == 0, last = k0 + kc >= k;
      for (int i0 = m_lo; i0 < m_hi; i0 += MR) {
        const int mr = m_hi - i0 < MR ? m_hi - i0 : MR;
        const float* ai = a + (ptrdiff_t)i0 * lda + k0;
        float* ci = c + (ptrdiff_t)i0 * ldc;
        for (int p = pb; p < pe;) {
          const bool two = p + GEMM_NP <= pe;
          const int step = two ? GEMM_NP : 1;
          const int col0 = p * NR;
          const int nc = n - col0;
          const float* bpp = bp + (ptrdiff_t)p * bps + (ptrdiff_t)k0 * NR;
          switch (mr) {
#if GEMM_MR >= 6
            case 6: tile_row<6, SPLAT>(kc, ai, lda, bpp, bps, ci + col0, ldc, nc, first, last, e, i0, col0, two); break;
#endif
#if GEMM_MR >= 5
            case 5: tile_row<5, SPLAT>(kc, ai, lda, bpp, bps, ci + col0, ldc, nc, first, last, e, i0, col0, two); break;
#endif
#if GEMM_MR >= 4
            case 4: tile_row<4, SPLAT>(kc, ai, lda, bpp, bps, ci + col0, ldc, nc, first, last, e, i0, col0, two); break;
#endif
#if GEMM_MR >= 3
            case 3: tile_row<3, SPLAT>(kc, ai, lda, bpp, bps, ci + col0, ldc, nc, first, last, e, i0, col0, two); break;
#endif
            case 2: tile_row<2, SPLAT>(kc, ai, lda, bpp, bps, ci + col0, ldc, nc, first, last, e, i0, col0, two); break;
            default: tile_row<1, SPLAT>(kc, ai, lda, bpp, bps, ci + col0, ldc, nc, first, last, e, i0, col0, two); break;
          }
          p += step;
        }
        // The activation, once the rows of this block are final: one call per row of up to NCB
        // panels (in L1 now) instead of one call of apply_activation per vector in the tile
        // epilogue, which re-made the activation's constants on every call (EfficientNet-B0's
        // SiLU: 17% of its run in V8, `perf` with node --perf-basic-prof).
        if (last && e.act != UNARY_IDENTITY) {
          const int c_lo = pb * NR, c_hi = pe * NR < n ? pe * NR : n;
          for (int i = 0; i < mr; ++i)
            activation_inplace(ci + (ptrdiff_t)i * ldc + c_lo, c_hi - c_lo, e.act, e.p0, e.p1);
        }
      }
      k0 += kc;
    } while (k0 < k);
  }
}

void gemm_block(int m_lo, int m_hi, int p_lo, int p_hi, int n, int k, const float* a, int lda,
                const float* bp, float* c, int ldc, const Epilogue& e) {
  if (kLoadSplatPays && g_load_splat) gemm_block_t<true>(m_lo, m_hi, p_lo, p_hi, n, k, a, lda, bp, c, ldc, e);
  else gemm_block_t<false>(m_lo, m_hi, p_lo, p_hi, n, k, a, lda, bp, c, ldc, e);
}

// Task grid for a GEMM: m cut into mt chunks of whole row tiles (gemm_chunk_row), the panels (in
// groups of GEMM_NP: a tile's panels stay together) into pt chunks, each as even as whole units
// allow. (Chunks of a fixed ceil(tiles / tasks) size left the last task short: 22 row tiles in 7
// chunks of 3 and one of 1 cap 2 threads at 1.78x on the encoder's 128-token linears.)
struct Grid {
  int mt, units, pt;
  int p_lo(int pi) const { return units * pi / pt * GEMM_NP; }
};

Grid make_grid(int m, int panels, int threads, double flops) {
  const int mtiles = (m + MR - 1) / MR, units = (panels + GEMM_NP - 1) / GEMM_NP;
  Grid g{1, units, 1};
  if (threads <= 1 || !worth_threading(flops)) return g;
  const int target = threads * 4;
  // Prefer splitting m (B panels then stay shared in L2 between tasks). With too few rows for an m
  // split to feed the threads (a linear layer at small batch), m stays whole and only n is split,
  // so each task reads its share of B (the big operand) once instead of every row chunk re-reading
  // it (8 x 4096 x 1024 on 2 threads: 1.55-1.70x -> 1.86-1.89x).
  if (mtiles >= target) g.mt = target;
  else g.pt = units < target ? units : target;
  return g;
}

}  // namespace

void gemm_packed(int m, int n, int k, const float* a, int lda, const float* bp, float* c, int ldc,
                 const float* bias, int bias_mode, int act, float p0, float p1) {
  if (m <= 0 || n <= 0) return;
  if (k < 0) k = 0;
  const Epilogue e{bias, bias ? bias_mode : 0, act, p0, p1};
  const int panels = (n + NR - 1) / NR;
  const Grid g = make_grid(m, panels, pool_threads(), 2.0 * m * n * (double)k);
  if (g.mt * g.pt == 1) {
    gemm_block(0, m, 0, panels, n, k, a, lda, bp, c, ldc, e);
    return;
  }
  parallel_for(g.mt * g.pt, [&](int t) {
    const int mi = t / g.pt, pi = t % g.pt;
    const int m_lo = gemm_chunk_row(m, g.mt, mi), m_hi = gemm_chunk_row(m, g.mt, mi + 1);
    const int p_lo = g.p_lo(pi), p_hi = g.p_lo(pi + 1) < panels ? g.p_lo(pi + 1) : panels;
    if (m_lo < m_hi && p_lo < p_hi) gemm_block(m_lo, m_hi, p_lo, p_hi, n, k, a, lda, bp, c, ldc, e);
  });
}

void pack_b(int k, int n, const float* b, int stride_k, int stride_n, float* out) {
  const int panels = (n + NR - 1) / NR;
  for (int p = 0; p < panels; ++p) {
    float* dst = out + (ptrdiff_t)p * k * NR;
    const int col0 = p * NR;
    const int nc = n - col0 < NR ? n - col0 : NR;
    const float* src = b + (ptrdiff_t)col0 * stride_n;
    if (nc == NR && stride_n == 1) {
      for (int r = 0; r < k; ++r) {
        const float* s = src + (ptrdiff_t)r * stride_k;
        wasm_v128_store(dst + r * NR, wasm_v128_load(s));
        wasm_v128_store(dst + r * NR + 4, wasm_v128_load(s + 4));
      }
    } else {
      for (int r = 0; r < k; ++r) {
        const float* s = src + (ptrdiff_t)r * stride_k;
        float* d = dst + r * NR;
        int j = 0;
        for (; j < nc; ++j) d[j] = s[(ptrdiff_t)j * stride_n];
        for (; j < NR; ++j) d[j] = 0.0f;
      }
    }
  }
}

extern "C" __attribute__((export_name("set_gemm_load_splat"))) void set_gemm_load_splat(int32_t on) {
  g_load_splat = on != 0;
}

void k_GEMM(const GEMM_args* a) {
  const int m = a->m, n = a->n, k = a->k;
  if (a->batch <= 0 || m <= 0 || n <= 0) return;
  const double flops = 2.0 * m * n * (double)(k > 0 ? k : 1) * a->batch;
  const float* bias = a->bias ? at<const float>(a->bias) : nullptr;
  // Batches with little work each: spread batches over threads and run each GEMM inline;
  // otherwise let gemm_packed split inside each batch.
  const bool by_batch = a->batch >= pool_threads() * 2 && pool_threads() > 1 && worth_threading(flops);
  auto one = [&](int bi) {
    gemm_packed(m, n, k, at<const float>(a->a) + (ptrdiff_t)bi * a->a_batch_stride, a->lda,
                at<const float>(a->b_packed) + (ptrdiff_t)bi * a->b_batch_stride,
                at<float>(a->c) + (ptrdiff_t)bi * a->c_batch_stride, a->ldc, bias, a->bias_mode,
                a->act, a->p0, a->p1);
  };
  if (by_batch) {
    parallel_for(a->batch, one);
  } else {
    for (int bi = 0; bi < a->batch; ++bi) one(bi);
  }
}

void k_PACK_B(const PACK_B_args* a) {
  if (a->batch <= 0 || a->n <= 0) return;
  const ptrdiff_t packed = (ptrdiff_t)((a->n + NR - 1) / NR) * NR * (a->k > 0 ? a->k : 0);
  const float* b = at<const float>(a->b);
  float* out = at<float>(a->out);
  if (a->k <= 0) return;
  auto one = [&](int bi) {
    pack_b(a->k, a->n, b + (ptrdiff_t)bi * a->b_batch_stride, a->stride_k, a->stride_n, out + bi * packed);
  };
  if (pool_threads() > 1 && a->batch > 1 && worth_threading((double)packed * a->batch))
    parallel_for(a->batch, one);
  else
    for (int bi = 0; bi < a->batch; ++bi) one(bi);
}
