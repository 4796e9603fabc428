// Int8 (quantized) kernels: QUANTIZE / DEQUANTIZE (PyTorch's quantized_decomposed ops, elementwise),
// the k-in-lanes int8 GEMM behind QGEMM (linear; described here) and QCONV2D (im2col + a
// pixels-in-lanes GEMM, described at its section below; depthwise convs run direct kernels).
//
// Where int8 speed comes from in wasm: i32x4.dot_i16x8_s multiplies 8 int16 pairs and adds adjacent
// products into 4 int32 lanes (8 multiply-adds per instruction). int8/uint8 operands are widened to
// int16 by the load itself (v128.load8x8_s/u), so the reduction runs along k: weights are rows
// [rows, kp] and activations are packed into panels of 4 columns whose 8-element k-blocks sit side by
// side ([kp/8][4][8]). The micro-kernel holds 2 weight rows x 4 columns = 8 i32x4 accumulators plus
// 2 + 4 operands (14 vectors: wasmtime's register allocator spills past ~14 on x86-64), then
// reduces each accumulator's 4 lanes with two shuffle-add rounds.
//
// Zero points: weight zero points are subtracted at pack time (PT2E's int8 weights are symmetric),
// the activation zero point becomes a per-row int32 constant acc_bias = -x_zp * sum_k w[i, k], so
// the inner loop is pure dot products. Requantization runs on 4 columns at once in float32, in the
// order eager's decomposed graph computes it (dequantized conv + bias, relu, * 1/scale, round half
// to even, + zero point, clamp), so results differ from eager only by the float rounding of the
// conv itself (eager sums float products; we sum exact integers): at most 1 LSB after rounding.
#include <math.h>
#include <string.h>
#include <wasm_simd128.h>
#include "abi.h"
#include "quant_round.h"
#include "threadpool.h"

namespace {

constexpr int kCols = kQgemmCols;      // QPACK / QGEMM activation columns per panel (4)
constexpr int kKBlock = kQgemmKBlock;  // k elements per dot_i16x8 step (8)

struct Requant {
  const int32_t* acc_bias;
  const float* scale;
  const float* bias;
  bool relu;
  int out_dtype;
  float inv_out_scale;  // quantized outputs only:
  float lo, hi;         // qmin - out_zp, qmax - out_zp: the clamp before the zero point is added
  int32_t magic_zp;     // magic_minus_zp(out_zp) (quant_round.h)
  // QCONV2D's residual (quantized outputs only): laid out as out, at out's address + res_delta.
  ptrdiff_t res_delta;
  bool has_res, res_signed;
  float res_scale, res_zp;
};

inline int elem_size(int dtype) { return dtype == DT_F32 ? 4 : 1; }

template <bool kSigned>
inline v128_t load_widen(const void* p) {
  return kSigned ? wasm_i16x8_load8x8(p) : wasm_u16x8_load8x8(p);
}

// The low / high 8 of 16 int8 or uint8 lanes widened to int16.
template <bool kSigned>
inline v128_t widen_low(v128_t v) {
  return kSigned ? wasm_i16x8_extend_low_i8x16(v) : wasm_u16x8_extend_low_u8x16(v);
}
template <bool kSigned>
inline v128_t widen_high(v128_t v) {
  return kSigned ? wasm_i16x8_extend_high_i8x16(v) : wasm_u16x8_extend_high_u8x16(v);
}

// [sum(a), sum(b), sum(c), sum(d)] of four i32x4.
inline v128_t reduce4(v128_t a, v128_t b, v128_t c, v128_t d) {
  const v128_t ab = wasm_i32x4_add(wasm_i32x4_shuffle(a, b, 0, 4, 1, 5), wasm_i32x4_shuffle(a, b, 2, 6, 3, 7));
  const v128_t cd = wasm_i32x4_add(wasm_i32x4_shuffle(c, d, 0, 4, 1, 5), wasm_i32x4_shuffle(c, d, 2, 6, 3, 7));
  return wasm_i32x4_add(wasm_i32x4_shuffle(ab, cd, 0, 1, 4, 5), wasm_i32x4_shuffle(ab, cd, 2, 3, 6, 7));
}

// Requantizes the 4 accumulators of row i (columns j0..j0+nc-1) and stores them (si, sj: byte
// strides of out).
inline void store_row(v128_t acc, int i, int j0, int nc, const Requant& rq, uint8_t* out, int si, int sj) {
  v128_t y = wasm_f32x4_convert_i32x4(wasm_i32x4_add(acc, wasm_i32x4_splat(rq.acc_bias[i])));
  y = wasm_f32x4_mul(y, wasm_f32x4_splat(rq.scale[i]));
  if (rq.bias) y = wasm_f32x4_add(y, wasm_f32x4_splat(rq.bias[i]));
  uint8_t* o = out + (ptrdiff_t)i * si + (ptrdiff_t)j0 * sj;
  if (rq.has_res) {  // + dequantized residual, (r - zp) * scale in float32 as eager's dequantize
    alignas(16) float r[4] = {0, 0, 0, 0};
    const uint8_t* rp = o + rq.res_delta;
    for (int c = 0; c < nc; ++c) {
      const uint8_t b = rp[(ptrdiff_t)c * sj];
      r[c] = (float)(rq.res_signed ? (int32_t)(int8_t)b : (int32_t)b);
    }
    const v128_t rv = wasm_f32x4_sub(wasm_v128_load(r), wasm_f32x4_splat(rq.res_zp));
    y = wasm_f32x4_add(y, wasm_f32x4_mul(rv, wasm_f32x4_splat(rq.res_scale)));
  }
  if (rq.relu) y = wasm_f32x4_pmax(wasm_f32x4_splat(0.0f), y);  // (y is never NaN: finite inputs)
  if (rq.out_dtype == DT_F32) {
    if (nc == 4 && sj == 4) {  // contiguous columns (conv): one store
      wasm_v128_store(o, y);
      return;
    }
    alignas(16) float f[4];
    wasm_v128_store(f, y);
    for (int c = 0; c < nc; ++c) memcpy(o + (ptrdiff_t)c * sj, &f[c], 4);
    return;
  }
  // eager: clamp(round(y * inv) + zp, qmin, qmax) = round(clamp(y * inv, qmin - zp, qmax - zp)) + zp
  // (round is monotone and fixes the integer bounds). pmin/pmax are single x86 instructions, where
  // f32x4.min/max's NaN rules cost ~7 each; y is never NaN.
  y = wasm_f32x4_mul(y, wasm_f32x4_splat(rq.inv_out_scale));
  y = wasm_f32x4_pmin(wasm_f32x4_pmax(y, wasm_f32x4_splat(rq.lo)), wasm_f32x4_splat(rq.hi));
  const v128_t q32 = round_plus_zp(y, rq.magic_zp);
  // In [qmin, qmax] already, so the saturating narrows are exact: 4 bytes in lane 0.
  const v128_t q16 = wasm_i16x8_narrow_i32x4(q32, q32);
  const v128_t q8 = rq.out_dtype == DT_U8 ? wasm_u8x16_narrow_i16x8(q16, q16) : wasm_i8x16_narrow_i16x8(q16, q16);
  if (nc == 4 && sj == 1) {  // contiguous columns (conv): one 32-bit store (not 4 byte stores, after
    wasm_v128_store32_lane(o, q8, 0);  // each of which the compiler reloads everything: char aliases all)
    return;
  }
  alignas(16) uint8_t q[16];
  wasm_v128_store(q, q8);
  for (int c = 0; c < nc; ++c) o[(ptrdiff_t)c * sj] = q[c];
}

// store_row's arithmetic for one output channel with its constants splatted once: the common
// case (quantized output, no residual; requant_of folds a ReLU into lo) of the pixels-in-lanes
// kernels, which requantize 8 pixels of one channel at a time. store_row loads each Requant field
// and branches on its flags per 4 outputs; in V8 that epilogue, inlined into the depthwise loop,
// cost several times the loop's dots (its TurboFan code reloads and spills the fields).
struct ChannelRequant {
  v128_t acc_bias, scale, bias, inv, lo, hi, magic, magic_zp;
};

inline bool channel_requant_fits(const Requant& rq) { return rq.out_dtype != DT_F32 && !rq.has_res; }

inline ChannelRequant channel_requant(const Requant& rq, int i) {
  // (+ 0.0f for no bias: it changes only a -0.0f to +0.0f, and both quantize to the zero point)
  return ChannelRequant{wasm_i32x4_splat(rq.acc_bias[i]), wasm_f32x4_splat(rq.scale[i]),
                        wasm_f32x4_splat(rq.bias ? rq.bias[i] : 0.0f), wasm_f32x4_splat(rq.inv_out_scale),
                        wasm_f32x4_splat(rq.lo), wasm_f32x4_splat(rq.hi), wasm_f32x4_splat(kMagic),
                        wasm_i32x4_splat(rq.magic_zp)};
}

// 8 accumulators of one channel (a0: pixels 0-3, a1: 4-7) requantized as store_row does, 8 bytes to o;
// kRes: plus the dequantized residual (res0, res1: float32) after the bias, where store_row adds it.
template <bool kRes = false>
inline void store8(v128_t a0, v128_t a1, const ChannelRequant& c, bool u8, uint8_t* o,
                   v128_t res0 = wasm_f32x4_splat(0.0f), v128_t res1 = wasm_f32x4_splat(0.0f)) {
  auto q = [&c](v128_t acc, v128_t res) {
    v128_t y = wasm_f32x4_mul(wasm_f32x4_convert_i32x4(wasm_i32x4_add(acc, c.acc_bias)), c.scale);
    y = wasm_f32x4_add(y, c.bias);
    if (kRes) y = wasm_f32x4_add(y, res);
    y = wasm_f32x4_pmin(wasm_f32x4_pmax(wasm_f32x4_mul(y, c.inv), c.lo), c.hi);
    return wasm_i32x4_sub(wasm_f32x4_add(y, c.magic), c.magic_zp);
  };
  const v128_t q16 = wasm_i16x8_narrow_i32x4(q(a0, res0), q(a1, res1));
  wasm_v128_store64_lane(o, u8 ? wasm_u8x16_narrow_i16x8(q16, q16) : wasm_i8x16_narrow_i16x8(q16, q16), 0);
}

// store8 with QCONV2D's residual (quantized output; rq.has_res): the 8 residual bytes at o +
// rq.res_delta in one load, dequantized as eager's dequantize, (r - zp) * scale, with the constants
// splatted once per channel. QCONV2D_WINO's output (int8 ResNet-18's block ends): through
// store_row, which reloads every field, branches on its flags and reads the residual byte by byte
// per 4 outputs, the 56x56 residual convs took 1.13x the time of the same convs without one; with
// this, equal
// (profile_records.py --layers, 30 rounds, 2026-12-04). (In QCONV2D's pointwise tiles the same
// epilogue was tried on 2026-12-03 and left the residual layers unchanged; decision 11.)
struct ResidualConsts {
  v128_t scale, zp;
};

inline ResidualConsts residual_consts(const Requant& rq) {
  return ResidualConsts{wasm_f32x4_splat(rq.res_scale), wasm_f32x4_splat(rq.res_zp)};
}

inline void store8_res(v128_t a0, v128_t a1, const ChannelRequant& c, const ResidualConsts& r, const Requant& rq,
                       uint8_t* o) {
  const v128_t b = wasm_v128_load64_zero(o + rq.res_delta);
  const v128_t b16 = rq.res_signed ? wasm_i16x8_extend_low_i8x16(b) : wasm_u16x8_extend_low_u8x16(b);
  const v128_t r0 = rq.res_signed ? wasm_i32x4_extend_low_i16x8(b16) : wasm_u32x4_extend_low_u16x8(b16);
  const v128_t r1 = rq.res_signed ? wasm_i32x4_extend_high_i16x8(b16) : wasm_u32x4_extend_high_u16x8(b16);
  auto dequantize = [&r](v128_t v) {
    return wasm_f32x4_mul(wasm_f32x4_sub(wasm_f32x4_convert_i32x4(v), r.zp), r.scale);
  };
  store8<true>(a0, a1, c, rq.out_dtype == DT_U8, o, dequantize(r0), dequantize(r1));
}

// Rows [i0, i0 + MR) x one panel (columns j0 .. j0 + nc - 1).
template <bool kSigned, int MR>
void micro(const int8_t* w, int kp, const uint8_t* panel, int i0, int j0, int nc, const Requant& rq,
           uint8_t* out, int si, int sj) {
  v128_t acc[MR][kCols];
  for (int r = 0; r < MR; ++r)
    for (int c = 0; c < kCols; ++c) acc[r][c] = wasm_i32x4_splat(0);
  const int8_t* wr[MR];
  for (int r = 0; r < MR; ++r) wr[r] = w + (ptrdiff_t)(i0 + r) * kp;
  for (int kb = 0; kb < kp; kb += kKBlock) {
    const uint8_t* p = panel + (ptrdiff_t)kb * kCols;
    const v128_t b0 = load_widen<kSigned>(p), b1 = load_widen<kSigned>(p + 8);
    const v128_t b2 = load_widen<kSigned>(p + 16), b3 = load_widen<kSigned>(p + 24);
    for (int r = 0; r < MR; ++r) {
      const v128_t a = wasm_i16x8_load8x8(wr[r] + kb);
      acc[r][0] = wasm_i32x4_add(acc[r][0], wasm_i32x4_dot_i16x8(a, b0));
      acc[r][1] = wasm_i32x4_add(acc[r][1], wasm_i32x4_dot_i16x8(a, b1));
      acc[r][2] = wasm_i32x4_add(acc[r][2], wasm_i32x4_dot_i16x8(a, b2));
      acc[r][3] = wasm_i32x4_add(acc[r][3], wasm_i32x4_dot_i16x8(a, b3));
    }
  }
  for (int r = 0; r < MR; ++r)
    store_row(reduce4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]), i0 + r, j0, nc, rq, out, si, sj);
}

// The GEMM, in blocks of kBlockPanels panels (4 * kp bytes each, ~64 KiB a block: in L2 while all
// the weight rows sweep it; a row pair's 2 * kp bytes stay in L1 across the block's panels). The
// (block, row pair) tiles are split into contiguous chunks over the thread pool. Unblocked (every
// row pair sweeping all panels) a 56x56 conv's 1.8 MB of panels streamed from L3 32 times: 10 vs
// 17 GOP/s at 64 x 3136 x 576.
template <bool kSigned>
void qgemm(int rows, int cols, int kp, const int8_t* w, const uint8_t* x, const Requant& rq, uint8_t* out,
           int si, int sj) {
  if (rows <= 0 || cols <= 0) return;
  const int pairs = (rows + 1) / 2, panels = (cols + kCols - 1) / kCols;
  int block = (64 * 1024) / (kCols * kp);
  block = block < 1 ? 1 : block > panels ? panels : block;
  const int blocks = (panels + block - 1) / block;
  const int64_t tiles = (int64_t)blocks * pairs;
  auto run = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int b = (int)(t / pairs), i0 = (int)(t % pairs) * 2;
      const int pn_end = (b + 1) * block < panels ? (b + 1) * block : panels;
      for (int pn = b * block; pn < pn_end; ++pn) {
        const int j0 = pn * kCols, nc = cols - j0 < kCols ? cols - j0 : kCols;
        const uint8_t* panel = x + (ptrdiff_t)pn * kp * kCols;
        if (i0 + 1 < rows) micro<kSigned, 2>(w, kp, panel, i0, j0, nc, rq, out, si, sj);
        else micro<kSigned, 1>(w, kp, panel, i0, j0, nc, rq, out, si, sj);
      }
    }
  };
  const int threads = pool_threads();
  if (threads > 1 && tiles >= 2 * threads && worth_threading(2.0 * rows * cols * kp)) {
    const int tasks = tiles < 4 * threads ? (int)tiles : 4 * threads;
    parallel_for(tasks, [&](int task) { run(tiles * task / tasks, tiles * (task + 1) / tasks); });
  } else {
    run(0, tiles);
  }
}

void qgemm_dispatch(int x_dtype, int rows, int cols, int kp, const int8_t* w, const uint8_t* x, const Requant& rq,
                    uint8_t* out, int si, int sj) {
  if (x_dtype == DT_I8) qgemm<true>(rows, cols, kp, w, x, rq, out, si, sj);
  else qgemm<false>(rows, cols, kp, w, x, rq, out, si, sj);
}

Requant requant_of(const int32_t* acc_bias, const float* scale, const float* bias, int relu, int out_dtype,
                   float inv_out_scale, int out_zp, int qmin, int qmax) {
  if (relu && out_dtype != DT_F32) {
    // round, + zp and clamp are monotone and map 0 to out_zp: relu before them = clamp at out_zp.
    relu = 0;
    if (qmin < out_zp) qmin = out_zp;
  }
  return Requant{acc_bias, scale, bias, relu != 0, out_dtype, inv_out_scale, (float)(qmin - out_zp),
                 (float)(qmax - out_zp), magic_minus_zp(out_zp), 0, false, false, 1.0f, 0.0f};
}

}  // namespace

void k_QUANTIZE(const QUANTIZE_args* a) {
  const float* in = at<const float>(a->in);
  uint8_t* out = at<uint8_t>(a->out);
  const v128_t inv = wasm_f32x4_splat(a->inv_scale), zp = wasm_f32x4_splat((float)a->zp);
  const v128_t lo = wasm_f32x4_splat((float)a->qmin), hi = wasm_f32x4_splat((float)a->qmax);
  auto q4 = [&](const float* p) {
    const v128_t y = wasm_f32x4_add(wasm_f32x4_nearest(wasm_f32x4_mul(wasm_v128_load(p), inv)), zp);
    return wasm_i32x4_trunc_sat_f32x4(wasm_f32x4_min(wasm_f32x4_max(y, lo), hi));
  };
  // 16 at a time, narrowed to one 16-byte store (values in [qmin, qmax]: the saturating narrows are
  // exact). Lane extracts + byte stores ran at ~8 ns per element: 15% of int8 MobileNetV2.
  const bool is_signed = a->out_dtype == DT_I8;
  int i = 0;
  for (; i + 16 <= a->n; i += 16) {
    const v128_t l = wasm_i16x8_narrow_i32x4(q4(in + i), q4(in + i + 4));
    const v128_t h = wasm_i16x8_narrow_i32x4(q4(in + i + 8), q4(in + i + 12));
    wasm_v128_store(out + i, is_signed ? wasm_i8x16_narrow_i16x8(l, h) : wasm_u8x16_narrow_i16x8(l, h));
  }
  for (; i < a->n; ++i) {
    float y = nearbyintf(in[i] * a->inv_scale) + (float)a->zp;
    y = y < (float)a->qmin ? (float)a->qmin : y > (float)a->qmax ? (float)a->qmax : y;
    out[i] = (uint8_t)(int32_t)y;
  }
}

void k_DEQUANTIZE(const DEQUANTIZE_args* a) {
  const int8_t* si = at<const int8_t>(a->in);
  const uint8_t* ui = at<const uint8_t>(a->in);
  const float* scale = at<const float>(a->scale);
  const int32_t* zp = at<const int32_t>(a->zp);
  float* out = at<float>(a->out);
  const bool is_signed = a->in_dtype == DT_I8;
  ptrdiff_t idx = 0;
  for (int o = 0; o < a->outer; ++o)
    for (int c = 0; c < a->channels; ++c) {
      const float s = scale[c], z = (float)zp[c];
      if (is_signed)
        for (int i = 0; i < a->inner; ++i, ++idx) out[idx] = ((float)si[idx] - z) * s;
      else
        for (int i = 0; i < a->inner; ++i, ++idx) out[idx] = ((float)ui[idx] - z) * s;
    }
}

void k_QPACK(const QPACK_args* a) {
  const uint8_t* in = at<const uint8_t>(a->in);
  uint8_t* out = at<uint8_t>(a->out);
  const int panels = (a->cols + kCols - 1) / kCols;
  memset(out, 0, (size_t)panels * kCols * a->kp);
  for (int j = 0; j < a->cols; ++j) {
    const uint8_t* row = in + (ptrdiff_t)j * a->row_stride;
    uint8_t* dst = out + (ptrdiff_t)(j / kCols) * kCols * a->kp + (j % kCols) * kKBlock;
    for (int k = 0; k < a->k; ++k) dst[(k / kKBlock) * kCols * kKBlock + k % kKBlock] = row[k];
  }
}

void k_QGEMM(const QGEMM_args* a) {
  const Requant rq = requant_of(at<const int32_t>(a->acc_bias), at<const float>(a->scale),
                                a->bias ? at<const float>(a->bias) : nullptr, a->relu, a->out_dtype,
                                a->inv_out_scale, a->out_zp, a->qmin, a->qmax);
  qgemm_dispatch(a->x_dtype, a->rows, a->cols, a->kp, at<const int8_t>(a->w), at<const uint8_t>(a->x), rq,
                 at<uint8_t>(a->out), a->out_stride_i * elem_size(a->out_dtype),
                 a->out_stride_j * elem_size(a->out_dtype));
}

namespace {

// Whether QCONV2D's tiles run as functions of their own (micro_cols_call): the JS loader turns it on
// (set_qconv_split_tiles), wasmtime keeps the default. In linear memory: every thread sees it.
int g_qconv_split_tiles = 0;

// ---- QCONV2D's GEMM: output columns (pixels) in lanes ---------------------------------------------
// An NCHW conv is out[c_out, pixels] = W[c_out, K] x B[K, pixels], B's rows (im2col rows: one input
// plane shifted by a tap) contiguous. Packing pairs of B rows interleaved and widened to int16,
// [k/2][8 columns][2] int16 per 8-column panel, makes one 16-byte load hold (x(k0, n), x(k1, n)) for
// 4 columns (widened at pack time, once per block: a widening load in the tile costs a shuffle-port
// op per k pair and panel vector, beside the dots' adds on the same ports), and
// i32x4.dot_i16x8_s against the splatted weight pair (w(m, k0), w(m, k1)) adds both products into
// each column's own lane: 4 pixels' partial sums, no horizontal reduce, and requantization runs on
// 4 pixels of one output row at once. (QGEMM's layout, k in lanes, reduces every output across
// lanes: at MobileNet's K = 16..96 the reduce and its transposed packing cost as much as the dots.)
// Weights are widened to int16 once per call (scratch), so each pair splat is one load32_splat.

constexpr int kNR = kQconvCols;      // columns per panel (8): 2 vectors of 4 lanes
constexpr int kMR = kQconvRows;      // weight rows per micro-tile (4): 8 accumulators + 2 panel vectors + 1 splat
constexpr int kMaxBlockCols = 512;   // im2col row buffers on the stack
constexpr int kBlockBytes = 96 * 1024;  // (int8 bytes of) a column block's panels: in L2 (as int16: 192 KiB)
                                        // while every weight row sweeps them

// Rows [i0, i0 + MR) x one 8-column panel (columns j0 .. j0 + nc - 1; NV: its vectors of 4 columns
// computed, 1 when nc <= 4); wt: the rows' tile of widened weights, [kpairs][4 rows][2] int16; panel:
// [kpairs][8 columns][2] int16.
// kLoadSplat: each row's weight pair by v128.load32_splat (V8: one vbroadcastss, a load-port op)
// instead of a shuffle of one 16-byte load (Cranelift's better form; a shuffle-port op in V8).
template <int MR, int NV, bool kLoadSplat>
__attribute__((always_inline)) inline void micro_cols(const int16_t* wt, int kpairs, const int16_t* panel, int i0,
                                                      int j0, int nc, const Requant& rq, uint8_t* out, int si,
                                                      int sj) {
  v128_t acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) acc0[r] = acc1[r] = wasm_i32x4_splat(0);
  for (int kk = 0; kk < kpairs; ++kk) {
    const int16_t* p = panel + (ptrdiff_t)kk * 2 * kNR;
    const v128_t b0 = wasm_v128_load(p), b1 = NV == 2 ? wasm_v128_load(p + 8) : b0;
    const int16_t* wk = wt + (ptrdiff_t)kk * 2 * kMR;
    const v128_t w4 = kLoadSplat ? wasm_i32x4_splat(0) : wasm_v128_load(wk);
#define TWB_ROW(r)                                                                      \
  if (r < MR) {                                                                         \
    const v128_t a = kLoadSplat ? wasm_v128_load32_splat(wk + 2 * r) : wasm_i32x4_shuffle(w4, w4, r, r, r, r); \
    acc0[r] = wasm_i32x4_add(acc0[r], wasm_i32x4_dot_i16x8(a, b0));                     \
    if (NV == 2) acc1[r] = wasm_i32x4_add(acc1[r], wasm_i32x4_dot_i16x8(a, b1));        \
  }
    TWB_ROW(0) TWB_ROW(1) TWB_ROW(2) TWB_ROW(3)
#undef TWB_ROW
  }
  if (NV == 2 && nc == kNR && channel_requant_fits(rq)) {  // (quantized output: sj is 1)
    for (int r = 0; r < MR; ++r)
      store8(acc0[r], acc1[r], channel_requant(rq, i0 + r), rq.out_dtype == DT_U8, out + (ptrdiff_t)(i0 + r) * si + j0);
    return;
  }
  for (int r = 0; r < MR; ++r) {
    store_row(acc0[r], i0 + r, j0, nc < 4 ? nc : 4, rq, out, si, sj);
    if (NV == 2 && nc > 4) store_row(acc1[r], i0 + r, j0 + 4, nc - 4, rq, out, si, sj);
  }
}

// The tile as a function of its own, for V8 (g_qconv_split_tiles): inlined into gemm_cols (one function
// with every tile variant), V8's TurboFan kept 5 of the 8 accumulators on the stack (a load and a store
// each per k pair); alone, its loop stays in registers. Cranelift does the opposite: inlined is 1.2x
// faster there (a 64-channel 3x3 56x56 conv, one process alternating, 2026-12-03).
template <int MR, int NV>
__attribute__((noinline)) void micro_cols_call(const int16_t* wt, int kpairs, const int16_t* panel, int i0, int j0,
                                               int nc, const Requant& rq, uint8_t* out, int si, int sj) {
  micro_cols<MR, NV, true>(wt, kpairs, panel, i0, j0, nc, rq, out, si, sj);
}

template <int MR, bool kSplit>
void micro_cols_nc(const int16_t* wt, int kpairs, const int16_t* panel, int i0, int j0, int nc, const Requant& rq,
                   uint8_t* out, int si, int sj) {
  if (nc > 4) (kSplit ? micro_cols_call<MR, 2> : micro_cols<MR, 2, false>)(wt, kpairs, panel, i0, j0, nc, rq, out, si, sj);
  else (kSplit ? micro_cols_call<MR, 1> : micro_cols<MR, 1, false>)(wt, kpairs, panel, i0, j0, nc, rq, out, si, sj);
}

// Rows [0, rows) x the column block's panels (cols columns from j0, panels pstride int16 apart).
template <bool kSplit>
void gemm_cols(const int16_t* wq, int rows, int kp, int kpairs, const int16_t* panels, int pstride, int j0,
               int cols, const Requant& rq, uint8_t* out, int si, int sj) {
  for (int i0 = 0; i0 < rows; i0 += kMR) {
    const int mr = rows - i0 < kMR ? rows - i0 : kMR;
    const int16_t* wt = wq + (ptrdiff_t)i0 * kp;
    for (int j = 0; j < cols; j += kNR) {
      const int16_t* p = panels + (ptrdiff_t)(j / kNR) * pstride;
      const int nc = cols - j < kNR ? cols - j : kNR;
      switch (mr) {
        case 4: micro_cols_nc<4, kSplit>(wt, kpairs, p, i0, j0 + j, nc, rq, out, si, sj); break;
        case 3: micro_cols_nc<3, kSplit>(wt, kpairs, p, i0, j0 + j, nc, rq, out, si, sj); break;
        case 2: micro_cols_nc<2, kSplit>(wt, kpairs, p, i0, j0 + j, nc, rq, out, si, sj); break;
        default: micro_cols_nc<1, kSplit>(wt, kpairs, p, i0, j0 + j, nc, rq, out, si, sj);
      }
    }
  }
}

// Row k of one (image, group)'s im2col matrix, columns [j0, j1), into dst (taps in the padding read
// x_zp: eager pads the dequantized input with 0.0 = x_zp), or a pointer into the input itself when
// the row is a plain slice of it (1x1, stride 1, no padding) and the 16-byte reads past j1 stay in
// the plane. k is ordered as the weight rows: (ky, kx, ci) when c_in/groups is a multiple of 8, else
// (ci, ky, kx). Rows k >= K (the odd K's partner) are zeros: their weights are 0.
const uint8_t* im2col_row(const QCONV2D_args* a, const uint8_t* gin, int cin_g, int K, int k, int j0, int j1,
                          uint8_t* dst) {
  const int H = a->h, W = a->w, OW = a->ow, KH = a->kh, KW = a->kw, T = KH * KW;
  const ptrdiff_t HW = (ptrdiff_t)H * W;
  if (k >= K) {
    memset(dst, 0, (size_t)(j1 - j0));
    return dst;
  }
  const bool tap_major = cin_g % kKBlock == 0;
  const int ci = tap_major ? k % cin_g : k / T, t = tap_major ? k / cin_g : k % T, ky = t / KW, kx = t % KW;
  const uint8_t* plane = gin + ci * HW;
  const bool identity = T == 1 && a->sh == 1 && a->sw == 1 && a->ph == 0 && a->pw == 0 && OW == W;
  if (identity && j0 + (j1 - j0 + 15) / 16 * 16 <= HW) return plane + j0;
  const uint8_t zp = (uint8_t)a->x_zp;
  int oy = j0 / OW, ox = j0 % OW;
  uint8_t* d = dst;
  for (int j = j0; j < j1; ++oy, ox = 0) {
    const int seg = OW - ox < j1 - j ? OW - ox : j1 - j;
    const int iy = oy * a->sh - a->ph + ky * a->dh;
    if ((unsigned)iy >= (unsigned)H) {
      memset(d, zp, (size_t)seg);
    } else {
      const uint8_t* row = plane + (ptrdiff_t)iy * W;
      const int ix0 = ox * a->sw - a->pw + kx * a->dw;
      if (a->sw == 1) {  // pad | copy | pad
        int lo = -ix0 > 0 ? -ix0 : 0, hi = W - ix0 < seg ? W - ix0 : seg;
        if (lo > seg) lo = seg;
        if (hi < lo) hi = lo;
        memset(d, zp, (size_t)lo);
        memcpy(d + lo, row + ix0 + lo, (size_t)(hi - lo));
        memset(d + hi, zp, (size_t)(seg - hi));
      } else if (a->sw == 2) {  // pad | the even bytes of 32, 16 at a time | pad (stride-2 stems)
        int lo = ix0 < 0 ? (1 - ix0) / 2 : 0, hi = ix0 < W ? (W - ix0 + 1) / 2 : 0;
        if (lo > seg) lo = seg;
        if (hi > seg) hi = seg;
        if (hi < lo) hi = lo;
        memset(d, zp, (size_t)lo);
        int c = lo;
        for (; c + 16 <= hi && ix0 + 2 * c + 32 <= W; c += 16) {
          const uint8_t* s = row + ix0 + 2 * c;
          wasm_v128_store(d + c, wasm_i8x16_shuffle(wasm_v128_load(s), wasm_v128_load(s + 16), 0, 2, 4, 6, 8, 10, 12,
                                                    14, 16, 18, 20, 22, 24, 26, 28, 30));
        }
        for (; c < hi; ++c) d[c] = row[ix0 + 2 * c];
        memset(d + hi, zp, (size_t)(seg - hi));
      } else {
        for (int c = 0, ix = ix0; c < seg; ++c, ix += a->sw) d[c] = (unsigned)ix < (unsigned)W ? row[ix] : zp;
      }
    }
    d += seg;
    j += seg;
  }
  return dst;
}

// Columns [j0, j1) of the im2col matrix as interleaved-pair panels of int16 (pstride int16 apart).
template <bool kSigned>
void pack_cols(const QCONV2D_args* a, const uint8_t* gin, int cin_g, int K, int kpairs, int j0, int j1,
               int16_t* panels, int pstride) {
  alignas(16) uint8_t buf0[kMaxBlockCols + 16], buf1[kMaxBlockCols + 16];
  const int n = j1 - j0, n8 = (n + kNR - 1) / kNR * kNR;
  for (int kk = 0; kk < kpairs; ++kk) {
    const uint8_t* r0 = im2col_row(a, gin, cin_g, K, 2 * kk, j0, j1, buf0);
    const uint8_t* r1 = im2col_row(a, gin, cin_g, K, 2 * kk + 1, j0, j1, buf1);
    int16_t* dst = panels + (ptrdiff_t)kk * 2 * kNR;
    for (int j = 0; j < n8; j += 16, dst += 2 * pstride) {  // (bytes past n: garbage columns, never stored)
      const v128_t v0 = wasm_v128_load(r0 + j), v1 = wasm_v128_load(r1 + j);
      const v128_t lo = wasm_i8x16_shuffle(v0, v1, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
      wasm_v128_store(dst, widen_low<kSigned>(lo));
      wasm_v128_store(dst + 8, widen_high<kSigned>(lo));
      if (j + kNR < n8) {
        const v128_t hi = wasm_i8x16_shuffle(v0, v1, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        wasm_v128_store(dst + pstride, widen_low<kSigned>(hi));
        wasm_v128_store(dst + pstride + 8, widen_high<kSigned>(hi));
      }
    }
  }
}

// int8 weight rows [rows, kp] -> int16 tiles of 4 rows, [rows/4][kp/2][4][2] (one load holds a
// k pair of 4 rows; rows past the last are zero): per 8 k, a 4x4 transpose of (row, pair) int32s.
void widen_weights(const int8_t* w, int rows, int kp, int16_t* wq) {
  for (int i0 = 0; i0 < rows; i0 += kMR) {
    int16_t* tile = wq + (ptrdiff_t)i0 * kp;  // (4 rows x kp int16)
    for (int kb = 0; kb < kp; kb += kKBlock) {
      v128_t v[kMR];
      for (int r = 0; r < kMR; ++r)
        v[r] = i0 + r < rows ? wasm_i16x8_load8x8(w + (ptrdiff_t)(i0 + r) * kp + kb) : wasm_i32x4_splat(0);
      const v128_t t0 = wasm_i32x4_shuffle(v[0], v[1], 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(v[2], v[3], 0, 4, 1, 5);
      const v128_t t2 = wasm_i32x4_shuffle(v[0], v[1], 2, 6, 3, 7), t3 = wasm_i32x4_shuffle(v[2], v[3], 2, 6, 3, 7);
      int16_t* d = tile + (ptrdiff_t)kb * kMR;  // pair kb / 2: 2 * kMR int16 each
      wasm_v128_store(d, wasm_i32x4_shuffle(t0, t1, 0, 1, 4, 5));
      wasm_v128_store(d + 8, wasm_i32x4_shuffle(t0, t1, 2, 3, 6, 7));
      wasm_v128_store(d + 16, wasm_i32x4_shuffle(t2, t3, 0, 1, 4, 5));
      wasm_v128_store(d + 24, wasm_i32x4_shuffle(t2, t3, 2, 3, 6, 7));
    }
  }
}

// 4 input bytes (unsigned or signed) widened to i32x4.
template <bool kSigned>
inline v128_t load4_widen(const uint8_t* p) {
  const v128_t v = wasm_v128_load32_zero(p);
  return kSigned ? wasm_i32x4_extend_low_i16x8(wasm_i16x8_extend_low_i8x16(v))
                 : wasm_u32x4_extend_low_u16x8(wasm_u16x8_extend_low_u8x16(v));
}

// plane(c) for every channel c of a depthwise conv, the channels split over the threads when the
// conv's flops make it worth it.
template <class F>
void dw_for_planes(int channels, double flops, F&& plane) {
  if (pool_threads() > 1 && channels > 1 && worth_threading(flops)) parallel_for(channels, plane);
  else for (int c = 0; c < channels; ++c) plane(c);
}

// Depthwise conv (one output channel per input channel), direct, general (any stride; the tap-pair
// kernel below takes strides 1 and 2): 4 output pixels of a row at a time
// in i32x4 (i32 multiply-adds, 9 taps are too few to fill dot_i16x8's 8-deep blocks: through
// im2col + GEMM a 96-channel 56x56 layer took 3.7x the float32 depthwise kernel's time). Taps in
// the padding read x_zp as im2col's do, so acc_bias applies unchanged.
constexpr int kMaxTaps = 25;  // depthwise kernels up to 5x5 take the direct path

template <bool kSigned>
void qdepthwise(const QCONV2D_args* a, const uint8_t* in, const int8_t* weight, const Requant& rq, uint8_t* out,
                int es) {
  const int C = a->c_in, H = a->h, W = a->w, OH = a->oh, OW = a->ow, KH = a->kh, KW = a->kw;
  const int SH = a->sh, SW = a->sw, PH = a->ph, PW = a->pw, DH = a->dh, DW = a->dw, kp = a->kp;
  const int P = OH * OW;
  const int32_t zp = a->x_zp;
  auto plane = [&](int c) {
    const uint8_t* x = in + (ptrdiff_t)c * H * W;
    v128_t wv[kMaxTaps];
    for (int t = 0; t < KH * KW; ++t) wv[t] = wasm_i32x4_splat(weight[(ptrdiff_t)c * kp + t]);
    for (int oy = 0; oy < OH; ++oy) {
      for (int ox = 0; ox < OW; ox += kCols) {
        const int nc = OW - ox < kCols ? OW - ox : kCols;
        v128_t acc = wasm_i32x4_splat(0);
        for (int ky = 0; ky < KH; ++ky) {
          const int iy = oy * SH - PH + ky * DH;
          const bool row_in = (unsigned)iy < (unsigned)H;
          for (int kx = 0; kx < KW; ++kx) {
            const int ix0 = ox * SW - PW + kx * DW;
            v128_t xv;
            if (row_in && SW == 1 && nc == kCols && ix0 >= 0 && ix0 + kCols <= W) {
              xv = load4_widen<kSigned>(x + (ptrdiff_t)iy * W + ix0);
            } else {
              alignas(16) int32_t lanes[4] = {zp, zp, zp, zp};
              for (int l = 0; l < nc; ++l) {
                const int ix = ix0 + l * SW;
                if (row_in && (unsigned)ix < (unsigned)W) {
                  const uint8_t b = x[(ptrdiff_t)iy * W + ix];
                  lanes[l] = kSigned ? (int32_t)(int8_t)b : (int32_t)b;
                }
              }
              xv = wasm_v128_load(lanes);
            }
            acc = wasm_i32x4_add(acc, wasm_i32x4_mul(xv, wv[ky * KW + kx]));
          }
        }
        store_row(acc, c, oy * OW + ox, nc, rq, out, P * es, es);
      }
    }
  };
  dw_for_planes(C, 2.0 * C * P * KH * KW, plane);
}

// store8 of a row's last block of 4 < nc < 8 pixels (7x7 and 14x14 planes end every row in one): the
// 8 bytes requantized alike into a buffer, nc of them copied. Not inlined: in V8 a second copy of
// store8, or a buffer in the loop, slowed the kernel's 8-pixel loop on planes without a tail.
__attribute__((noinline)) void store8_tail(v128_t a0, v128_t a1, const ChannelRequant& c, bool u8, uint8_t* o,
                                           int nc) {
  alignas(8) uint8_t q8[8];
  store8(a0, a1, c, u8, q8);
  for (int l = 0; l < nc; ++l) o[l] = q8[l];
}

// Depthwise by tap pairs (the fast path of qdepthwise, for strides 1 and 2): each input row is
// widened once to int16, padded with x_zp and split by column phase (sw == 2: even columns, then
// odd), so a tap's inputs for 8 consecutive output pixels are 8 consecutive int16. Two taps'
// vectors are interleaved (one shuffle each half) and i32x4.dot_i16x8_s with the pair of weights
// does 8 multiply-adds: 2 taps x 4 pixels. Products fit int16 (|u8 * i8| <= 32640), sums do not,
// hence the dot into int32. The last (kh-1)*dh+1 widened rows stay in a ring, so each input row is
// widened once per channel.
constexpr int kDwRing = 8;       // input rows alive at once: (kh - 1) * dh + 1 <= kDwRing (a power of 2)
constexpr int kDwMaxRow = 2048;  // int16 per ring row (all phases)

// Length of one phase of a widened row: 8-pixel blocks of output plus the taps' reach.
inline int dw_phase_len(const QCONV2D_args* a) {
  return (a->ow + 7) / 8 * 8 + ((a->kw - 1) * a->dw) / a->sw + 1;
}

inline bool dw_pairs_fit(const QCONV2D_args* a) {
  return (a->sw == 1 || a->sw == 2) && (a->kh - 1) * a->dh + 1 <= kDwRing && a->sw * dw_phase_len(a) <= kDwMaxRow;
}

// Input row x (w bytes) -> dst: sw phases of len int16, dst[p * len + j] = padded[sw * j + p],
// padded[t] = x[t - pw] inside the row, else zp. kShort (short rows): the vector loads may read past
// the row up to x_end (the input's end: the next row's bytes, widened and then overwritten by the
// padding), so that MobileNet's 7- and 14-pixel rows are not widened byte by byte.
template <bool kSigned, bool kShort>
void dw_widen_row(const uint8_t* x, int w, int pw, int sw, int len, int16_t zp, int16_t* dst, const uint8_t* x_end) {
  const v128_t z = wasm_i16x8_splat(zp);
  for (int j = 0; j + 8 <= sw * len; j += 8) wasm_v128_store(dst + j, z);
  for (int j = sw * len / 8 * 8; j < sw * len; ++j) dst[j] = zp;
  int ix = 0;
  if (sw == 1) {
    for (; ix + 8 <= w && pw + ix + 8 <= len; ix += 8) wasm_v128_store(dst + pw + ix, load_widen<kSigned>(x + ix));
    if (kShort && ix < w && pw + ix + 8 <= len && x + ix + 8 <= x_end) {  // the row's last < 8 bytes, and some past it
      wasm_v128_store(dst + pw + ix, load_widen<kSigned>(x + ix));
      ix += 8;
    }
  } else {
    const int w16 = kShort && x + w + 15 <= x_end ? w + 15 : w;  // (the last < 16 bytes too, where the input goes on)
    for (; ix + 16 <= w16 && ((pw + ix + 1) >> 1) + 8 <= len; ix += 16) {
      const v128_t v = wasm_v128_load(x + ix);
      const v128_t even = wasm_i8x16_shuffle(v, v, 0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
      const v128_t odd = wasm_i8x16_shuffle(v, v, 1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0);
      const int te = pw + ix, to = te + 1;  // padded positions of x[ix] and x[ix + 1]
      wasm_v128_store(dst + (te & 1) * len + (te >> 1), widen_low<kSigned>(even));
      wasm_v128_store(dst + (to & 1) * len + (to >> 1), widen_low<kSigned>(odd));
    }
  }
  const int shift = sw - 1;  // sw is 1 or 2: no divisions per element
  for (int t = pw + w; t < pw + ix && (t >> shift) < len; ++t) dst[(t & shift) * len + (t >> shift)] = zp;  // overrun
  for (; ix < w; ++ix) {
    const int t = pw + ix;
    if ((t >> shift) >= len) break;
    dst[(t & shift) * len + (t >> shift)] = kSigned ? (int16_t)(int8_t)x[ix] : (int16_t)x[ix];
  }
}

// kPairs: the tap pair count when known at compile time (3x3: 5, loop unrolled, source pointers in
// registers), 0 when read from the record. kShort: rows ending in a block of 5-7 pixels, or shorter
// than 16: that block requantized by store8_tail, rows widened past their end. A separate
// instantiation: in V8 the extra code slowed the wider planes' loop by 4-8% (28-112 pixels).
template <bool kSigned, int kPairs, bool kShort>
void qdepthwise_pairs(const QCONV2D_args* a, const uint8_t* in, const int8_t* weight, const Requant& rq,
                      uint8_t* out, int es) {
  const uint8_t* in_end = in + (ptrdiff_t)a->c_in * a->h * a->w;
  const int C = a->c_in, H = a->h, W = a->w, OH = a->oh, OW = a->ow, KH = a->kh, KW = a->kw;
  const int SH = a->sh, SW = a->sw, PH = a->ph, PW = a->pw, DH = a->dh, DW = a->dw, kp = a->kp;
  const int P = OH * OW, T = KH * KW, pairs = kPairs ? kPairs : (T + 1) / 2, len = dw_phase_len(a);
  const int16_t zp = (int16_t)a->x_zp;
  const bool fast = channel_requant_fits(rq), u8 = rq.out_dtype == DT_U8;
  // Per tap (the odd tap's partner, weight 0, repeats the last): its kernel row and its offset in a
  // widened row. Computed once: divisions per tap and output row cost more than the 3x3 dots of a
  // 7x7 plane.
  int tap_ky[2 * ((kMaxTaps + 1) / 2)], tap_off[2 * ((kMaxTaps + 1) / 2)];
  for (int t = 0; t < 2 * pairs; ++t) {
    const int tt = t < T ? t : T - 1, kx = tt % KW;
    tap_ky[t] = tt / KW;
    tap_off[t] = ((kx * DW) % SW) * len + (kx * DW) / SW;
  }
  auto plane = [&](int c) {
    alignas(16) int16_t rows[kDwRing][kDwMaxRow];
    alignas(16) int16_t zrow[kDwMaxRow];  // a row of the vertical padding
    int tag[kDwRing];
    for (int r = 0; r < kDwRing; ++r) tag[r] = -1;
    for (int j = 0; j < SW * len; ++j) zrow[j] = zp;
    const uint8_t* x = in + (ptrdiff_t)c * H * W;
    int32_t wp[(kMaxTaps + 1) / 2];  // tap pairs' weights as (low, high) int16 in one int32
    for (int p = 0; p < pairs; ++p) {
      const int16_t w0 = weight[(ptrdiff_t)c * kp + 2 * p];
      const int16_t w1 = 2 * p + 1 < T ? weight[(ptrdiff_t)c * kp + 2 * p + 1] : 0;
      wp[p] = (int32_t)(uint16_t)w0 | ((int32_t)(uint16_t)w1 << 16);
    }
    const int16_t* rowp[kMaxTaps];
    const int16_t* src[2 * ((kMaxTaps + 1) / 2)];
    const ChannelRequant cr = fast ? channel_requant(rq, c) : ChannelRequant{};
    for (int oy = 0; oy < OH; ++oy) {
      for (int ky = 0; ky < KH; ++ky) {
        const int iy = oy * SH - PH + ky * DH;
        rowp[ky] = zrow;
        if ((unsigned)iy < (unsigned)H) {
          const int r = iy & (kDwRing - 1);  // the rows of one output row span <= kDwRing: distinct slots
          if (tag[r] != iy) {
            dw_widen_row<kSigned, kShort>(x + (ptrdiff_t)iy * W, W, PW, SW, len, zp, rows[r], in_end);
            tag[r] = iy;
          }
          rowp[ky] = rows[r];
        }
      }
      for (int t = 0; t < 2 * pairs; ++t) src[t] = rowp[tap_ky[t]] + tap_off[t];
      int ox = 0;
      if (!kShort && fast) {  // 16 pixels per tap pair's weight splat (V8: 56-112 pixel planes 0.93x the time)
        for (; ox + 16 <= OW; ox += 16) {
          v128_t a0 = wasm_i32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
          for (int p = 0; p < pairs; ++p) {
            const v128_t w = wasm_i32x4_splat(wp[p]);
            const v128_t u0 = wasm_v128_load(src[2 * p] + ox), v0 = wasm_v128_load(src[2 * p + 1] + ox);
            a0 = wasm_i32x4_add(a0, wasm_i32x4_dot_i16x8(wasm_i16x8_shuffle(u0, v0, 0, 8, 1, 9, 2, 10, 3, 11), w));
            a1 = wasm_i32x4_add(a1, wasm_i32x4_dot_i16x8(wasm_i16x8_shuffle(u0, v0, 4, 12, 5, 13, 6, 14, 7, 15), w));
            const v128_t u1 = wasm_v128_load(src[2 * p] + ox + 8), v1 = wasm_v128_load(src[2 * p + 1] + ox + 8);
            a2 = wasm_i32x4_add(a2, wasm_i32x4_dot_i16x8(wasm_i16x8_shuffle(u1, v1, 0, 8, 1, 9, 2, 10, 3, 11), w));
            a3 = wasm_i32x4_add(a3, wasm_i32x4_dot_i16x8(wasm_i16x8_shuffle(u1, v1, 4, 12, 5, 13, 6, 14, 7, 15), w));
          }
          uint8_t* o = out + (ptrdiff_t)c * P + oy * OW + ox;
          store8(a0, a1, cr, u8, o);
          store8(a2, a3, cr, u8, o + 8);
        }
      }
      for (; ox < OW; ox += 8) {
        v128_t acc0 = wasm_i32x4_splat(0), acc1 = wasm_i32x4_splat(0);
        for (int p = 0; p < pairs; ++p) {
          const v128_t u = wasm_v128_load(src[2 * p] + ox), v = wasm_v128_load(src[2 * p + 1] + ox);
          const v128_t w = wasm_i32x4_splat(wp[p]);
          acc0 = wasm_i32x4_add(acc0, wasm_i32x4_dot_i16x8(wasm_i16x8_shuffle(u, v, 0, 8, 1, 9, 2, 10, 3, 11), w));
          acc1 = wasm_i32x4_add(acc1, wasm_i32x4_dot_i16x8(wasm_i16x8_shuffle(u, v, 4, 12, 5, 13, 6, 14, 7, 15), w));
        }
        const int nc = OW - ox;
        if (fast) {
          uint8_t* o = out + (ptrdiff_t)c * P + oy * OW + ox;
          if (nc >= 8) {
            store8(acc0, acc1, cr, u8, o);
            continue;
          }
          if (kShort && nc > kCols) {  // (up to 4: store_row's single 32-bit store below)
            store8_tail(acc0, acc1, cr, u8, o, nc);
            continue;
          }
        }
        store_row(acc0, c, oy * OW + ox, nc < kCols ? nc : kCols, rq, out, P * es, es);
        if (nc > kCols) store_row(acc1, c, oy * OW + ox + kCols, nc - kCols < kCols ? nc - kCols : kCols, rq, out,
                                 P * es, es);
      }
    }
  };
  dw_for_planes(C, 2.0 * C * P * KH * KW, plane);
}

// Depthwise by horizontal tap pairs, for square 3x3 and 5x5 kernels at stride 1 or 2 with columns not
// dilated (MobileNet's and EfficientNet's depthwise convs; qdepthwise_vpairs, stride 1, and
// qdepthwise_hpairs, stride 2). A padded input row is widened to int16 in a layout where the two
// taps (kx, kx + 1) of 4 consecutive output pixels are 8 consecutive int16, so one plain load, one
// i32x4.dot_i16x8_s with the pair's weights and one add do 8 multiply-adds, with no shuffle in the
// loop (qdepthwise_pairs interleaves two taps' vectors per dot: 2 shuffles per 8 pixels and tap
// pair). Stride 2: pixel ox's pair starts at padded column 2 * ox, so the widened row itself is that
// layout (pair q at 2 * ox + 2 * q). Stride 1: the row is stored as overlapping pairs, row[2 * t] =
// padded[t], row[2 * t + 1] = padded[t + 1] (pair q at 2 * (ox + 2 * q)), built by interleaving the
// padded bytes with themselves shifted by one. An odd kernel width pairs its last tap with a weight
// of 0. Both kernels run two output rows at a time, their dots into an int32 row buffer that
// dw_store_row then requantizes (inlined into the dot loop, the requantization's constants and the
// dots' weights and accumulators did not fit V8's 16 vector registers).
constexpr int kHpRow = 2048;  // int16 per widened row

// Padded columns a widened row of qdepthwise_hpairs / qdepthwise_vpairs covers (a multiple of 16):
// every pair that the 8-pixel blocks of ow outputs read, their partners included.
template <int K, int S>
inline int hp_cols(int ow) {
  constexpr int Q = (K + 1) / 2;
  const int ow8 = (ow + 7) / 8 * 8;
  return ((S == 1 ? ow8 + 2 * Q : 2 * ow8 + 2 * Q) + 15) / 16 * 16;
}

template <int K, int S>
inline bool hp_fits(int ow) {
  return (S == 1 ? 2 : 1) * hp_cols<K, S>(ow) <= kHpRow;
}

// Bytes of a padded input row: its bytes are copied by 16-byte vectors where the input goes on past
// the row (x_end: the input's end; the bytes past the row are then overwritten by the padding): a
// memcpy call per row cost the 7x7 and 14x14 planes more than their dots.
constexpr int kHpPadded = kHpRow + 48;

// Input row x (w bytes, pw columns of left padding) -> padded (kHpPadded bytes): cols + 16 bytes of
// the row between zero points.
inline void hp_pad_row(const uint8_t* x, int w, int pw, int cols, uint8_t zp, uint8_t* padded,
                       const uint8_t* x_end) {
  const v128_t z = wasm_i8x16_splat((int8_t)zp);
  for (int j = 0; j < cols + 16; j += 16) wasm_v128_store(padded + j, z);
  const int w16 = (w + 15) / 16 * 16;
  if (pw + w16 + 16 <= kHpPadded && x + w16 <= x_end) {
    for (int j = 0; j < w; j += 16) wasm_v128_store(padded + pw + j, wasm_v128_load(x + j));
    wasm_v128_store(padded + pw + w, z);
  } else {
    const int n = pw + w <= cols + 16 ? w : cols + 16 - pw;
    if (n > 0) memcpy(padded + pw, x, n);
  }
}

// dst[2 * t] = a[t], dst[2 * t + 1] = b[t] for t < cols (a multiple of 16), widened to int16.
template <bool kSigned>
inline void interleave_widen(const uint8_t* a, const uint8_t* b, int cols, int16_t* dst) {
  for (int t = 0; t < cols; t += 16) {
    const v128_t va = wasm_v128_load(a + t), vb = wasm_v128_load(b + t);
    const v128_t lo = wasm_i8x16_shuffle(va, vb, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const v128_t hi = wasm_i8x16_shuffle(va, vb, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    wasm_v128_store(dst + 2 * t, widen_low<kSigned>(lo));
    wasm_v128_store(dst + 2 * t + 8, widen_high<kSigned>(lo));
    wasm_v128_store(dst + 2 * t + 16, widen_low<kSigned>(hi));
    wasm_v128_store(dst + 2 * t + 24, widen_high<kSigned>(hi));
  }
}

// Input row x -> its padded bytes widened to int16 (stride 2's layout above), through padded.
template <bool kSigned>
void hp_widen_row(const uint8_t* x, int w, int pw, int cols, uint8_t zp, uint8_t* padded, int16_t* dst,
                  const uint8_t* x_end) {
  hp_pad_row(x, w, pw, cols, zp, padded, x_end);
  for (int t = 0; t < cols; t += 16) {
    const v128_t v = wasm_v128_load(padded + t);
    wasm_v128_store(dst + t, widen_low<kSigned>(v));
    wasm_v128_store(dst + t + 8, widen_high<kSigned>(v));
  }
}

// Output row oy of channel c requantized from its accumulators (8-pixel blocks: acc holds ow rounded
// up to 8), after the row's dots (see above). Rows are stored in order, so a row's last block is
// stored whole, its bytes past the row overwritten by the rows after it, where all 8 bytes stay in
// the plane (the next plane may be another thread's, and the last one ends the output): else
// store8_tail (in V8 a row ending in 4 pixels, 28 wide, took 1.4x float32's time with store8_tail
// on every row).
inline void dw_store_row(const int32_t* acc, int c, int oy, const QCONV2D_args* a, const Requant& rq,
                         const ChannelRequant& cr, uint8_t* out, int es) {
  const int OW = a->ow, P = a->oh * OW;
  if (channel_requant_fits(rq)) {
    const bool u8 = rq.out_dtype == DT_U8;
    uint8_t* o = out + (ptrdiff_t)c * P + (ptrdiff_t)oy * OW;
    const int room = (a->oh - oy) * OW;  // bytes from o to the plane's end
    int ox = 0;
    for (; ox < OW && ox + 8 <= room; ox += 8)
      store8(wasm_v128_load(acc + ox), wasm_v128_load(acc + ox + 4), cr, u8, o + ox);
    if (ox < OW) store8_tail(wasm_v128_load(acc + ox), wasm_v128_load(acc + ox + 4), cr, u8, o + ox, OW - ox);
    return;
  }
  for (int ox = 0; ox < OW; ox += kCols)
    store_row(wasm_v128_load(acc + ox), c, oy * OW + ox, OW - ox < kCols ? OW - ox : kCols, rq, out, P * es, es);
}

// One 8-pixel block of two output rows' accumulators (a: row oy, b: row oy + 1) kept in acc.
inline void dw_keep_block(int32_t (*acc)[kHpRow / 2], int ox, v128_t a0, v128_t a1, v128_t b0, v128_t b1) {
  wasm_v128_store(acc[0] + ox, a0);
  wasm_v128_store(acc[0] + ox + 4, a1);
  wasm_v128_store(acc[1] + ox, b0);
  wasm_v128_store(acc[1] + ox + 4, b1);
}

// Output rows oy and (if there is one) oy + 1 requantized from acc.
inline void dw_store_rows(int32_t (*acc)[kHpRow / 2], int c, int oy, const QCONV2D_args* a, const Requant& rq,
                          const ChannelRequant& cr, uint8_t* out, int es) {
  dw_store_row(acc[0], c, oy, a, rq, cr, out, es);
  if (oy + 1 < a->oh) dw_store_row(acc[1], c, oy + 1, a, rq, cr, out, es);
}

// Stride 2: input rows widened once per channel into a ring (as in qdepthwise_pairs); the two output
// rows share one input row, loaded once for both. 3x3 in V8: 0.76-0.83x qdepthwise_pairs' time on
// MobileNetV2's 14-56 pixel output rows, equal on its 7-pixel ones (profile_records.py, 2026-12-04).
template <bool kSigned, int K>
void qdepthwise_hpairs(const QCONV2D_args* a, const uint8_t* in, const int8_t* weight, const Requant& rq,
                       uint8_t* out, int es) {
  constexpr int Q = (K + 1) / 2, S = 2;
  const uint8_t* in_end = in + (ptrdiff_t)a->c_in * a->h * a->w;
  const int C = a->c_in, H = a->h, W = a->w, OH = a->oh, OW = a->ow, PH = a->ph, PW = a->pw;
  const int DH = a->dh, kp = a->kp, P = OH * OW, cols = hp_cols<K, S>(OW);
  const uint8_t zp = (uint8_t)a->x_zp;  // (x_zp's byte: the padding holds the stored value)
  const bool fast = channel_requant_fits(rq);
  alignas(16) int16_t zrow[kHpRow];  // a widened row of the vertical padding
  {
    alignas(16) uint8_t padded[kHpPadded];
    hp_widen_row<kSigned>(nullptr, 0, 0, cols, zp, padded, zrow, nullptr);
  }
  auto plane = [&](int c) {
    alignas(16) int16_t rows[kDwRing][kHpRow];
    alignas(16) uint8_t padded[kHpPadded];
    alignas(16) int32_t acc[2][kHpRow / 2];  // two output rows' accumulators (8-pixel blocks)
    int tag[kDwRing];
    for (int r = 0; r < kDwRing; ++r) tag[r] = -1;
    const uint8_t* x = in + (ptrdiff_t)c * H * W;
    int32_t wp[K][Q];  // the pairs' weights as (low, high) int16 in one int32
    for (int ky = 0; ky < K; ++ky)
      for (int q = 0; q < Q; ++q) {
        const int16_t w0 = weight[(ptrdiff_t)c * kp + ky * K + 2 * q];
        const int16_t w1 = 2 * q + 1 < K ? weight[(ptrdiff_t)c * kp + ky * K + 2 * q + 1] : 0;
        wp[ky][q] = (int32_t)(uint16_t)w0 | ((int32_t)(uint16_t)w1 << 16);
      }
    const ChannelRequant cr = fast ? channel_requant(rq, c) : ChannelRequant{};
    auto row = [&](int iy) -> const int16_t* {  // input row iy widened (held in a ring slot)
      if ((unsigned)iy >= (unsigned)H) return zrow;
      const int r = iy & (kDwRing - 1);  // the rows of two output rows span <= kDwRing: distinct slots
      if (tag[r] != iy) {
        hp_widen_row<kSigned>(x + (ptrdiff_t)iy * W, W, PW, cols, zp, padded, rows[r], in_end);
        tag[r] = iy;
      }
      return rows[r];
    };
    for (int oy = 0; oy < OH; oy += 2) {  // two output rows at a time (rows both read are loaded once)
      const int16_t* r0[K];
      const int16_t* r1[K];
      for (int ky = 0; ky < K; ++ky) {
        r0[ky] = row(oy * S - PH + ky * DH);
        r1[ky] = row((oy + 1) * S - PH + ky * DH);
      }
      for (int ox = 0; ox < OW; ox += 8) {
        v128_t a0 = wasm_i32x4_splat(0), a1 = a0, b0 = a0, b1 = a0;
        for (int ky = 0; ky < K; ++ky)
          for (int q = 0; q < Q; ++q) {
            const int off = 2 * ox + 2 * q;
            const v128_t w = wasm_i32x4_splat(wp[ky][q]);
            a0 = wasm_i32x4_add(a0, wasm_i32x4_dot_i16x8(wasm_v128_load(r0[ky] + off), w));
            a1 = wasm_i32x4_add(a1, wasm_i32x4_dot_i16x8(wasm_v128_load(r0[ky] + off + 8), w));
            b0 = wasm_i32x4_add(b0, wasm_i32x4_dot_i16x8(wasm_v128_load(r1[ky] + off), w));
            b1 = wasm_i32x4_add(b1, wasm_i32x4_dot_i16x8(wasm_v128_load(r1[ky] + off + 8), w));
          }
        dw_keep_block(acc, ox, a0, a1, b0, b1);
      }
      dw_store_rows(acc, c, oy, a, rq, cr, out, es);
    }
  };
  dw_for_planes(C, 2.0 * C * P * K * K, plane);
}

// Stride 1, K x K (K odd), rows not dilated: two output rows at a time, sharing vertical tap pairs.
// Output rows oy and oy + 1 read input rows b .. b + K (b = oy - ph). Rows b + 1 .. b + K - 1 are
// interleaved by pairs, V[2 * t] = row(b + 1 + 2m)[t], V[2 * t + 1] = row(b + 2 + 2m)[t]: one
// load of V at 2 * (ox + kx) gives 4 pixels' taps (ky, kx), (ky + 1, kx) for row oy (ky = 1 + 2m) and
// for row oy + 1 (ky = 2m), so each load feeds two dots. Row b (row oy's ky = 0) and row b + K (row
// oy + 1's ky = K - 1) take horizontal pairs as in qdepthwise_hpairs. 3x3: 5 dots per 4 outputs
// where horizontal pairs alone take 6, 7 loads per 16 outputs where they take 12, and no shuffle
// in the loop where qdepthwise_pairs takes 10 per 8 outputs: MobileNetV2's 3x3 stride-1 layers in
// V8 0.68-0.79x qdepthwise_pairs' time (7x7 to 112x112 planes), in wasmtime the whole int8 model
// 0.91-0.93x (benchmarks/test_int8_bench.py; 2026-12-04).
template <bool kSigned, int K>
void qdepthwise_vpairs(const QCONV2D_args* a, const uint8_t* in, const int8_t* weight, const Requant& rq,
                       uint8_t* out, int es) {
  constexpr int Q = (K + 1) / 2, M = (K - 1) / 2;
  const uint8_t* in_end = in + (ptrdiff_t)a->c_in * a->h * a->w;
  const int C = a->c_in, H = a->h, W = a->w, OH = a->oh, OW = a->ow, PH = a->ph, PW = a->pw, kp = a->kp;
  const int P = OH * OW, cols = hp_cols<K, 1>(OW);
  const uint8_t zp = (uint8_t)a->x_zp;
  const bool fast = channel_requant_fits(rq);
  alignas(16) uint8_t zpad[kHpPadded];  // a padded row of the vertical padding
  hp_pad_row(nullptr, 0, 0, cols, zp, zpad, nullptr);
  auto pair = [](int16_t lo, int16_t hi) { return (int32_t)(uint16_t)lo | ((int32_t)(uint16_t)hi << 16); };
  auto plane = [&](int c) {
    alignas(16) uint8_t padded[kDwRing][kHpPadded];
    alignas(16) int16_t top[kHpRow], bot[kHpRow], vrow[M][kHpRow];
    alignas(16) int32_t acc[2][kHpRow / 2];  // two output rows' accumulators (8-pixel blocks)
    int tag[kDwRing];
    for (int r = 0; r < kDwRing; ++r) tag[r] = -1;
    const uint8_t* x = in + (ptrdiff_t)c * H * W;
    const int8_t* wc = weight + (ptrdiff_t)c * kp;
    auto w = [&](int ky, int kx) -> int16_t { return kx < K ? wc[ky * K + kx] : 0; };
    int32_t wtop[Q], wbot[Q], wv0[M][K], wv1[M][K];
    for (int q = 0; q < Q; ++q) {
      wtop[q] = pair(w(0, 2 * q), w(0, 2 * q + 1));
      wbot[q] = pair(w(K - 1, 2 * q), w(K - 1, 2 * q + 1));
    }
    for (int m = 0; m < M; ++m)
      for (int kx = 0; kx < K; ++kx) {
        wv0[m][kx] = pair(w(1 + 2 * m, kx), w(2 + 2 * m, kx));  // row oy
        wv1[m][kx] = pair(w(2 * m, kx), w(2 * m + 1, kx));      // row oy + 1
      }
    const ChannelRequant cr = fast ? channel_requant(rq, c) : ChannelRequant{};
    auto row = [&](int iy) -> const uint8_t* {  // input row iy padded (held in a ring slot)
      if ((unsigned)iy >= (unsigned)H) return zpad;
      const int r = iy & (kDwRing - 1);  // rows b .. b + K span K + 1 <= kDwRing: distinct slots
      if (tag[r] != iy) {
        hp_pad_row(x + (ptrdiff_t)iy * W, W, PW, cols, zp, padded[r], in_end);
        tag[r] = iy;
      }
      return padded[r];
    };
    for (int oy = 0; oy < OH; oy += 2) {
      const int b = oy - PH;
      const uint8_t* t = row(b);
      interleave_widen<kSigned>(t, t + 1, cols, top);
      for (int m = 0; m < M; ++m) interleave_widen<kSigned>(row(b + 1 + 2 * m), row(b + 2 + 2 * m), cols, vrow[m]);
      const uint8_t* u = row(b + K);
      interleave_widen<kSigned>(u, u + 1, cols, bot);
      for (int ox = 0; ox < OW; ox += 8) {
        v128_t a0 = wasm_i32x4_splat(0), a1 = a0, b0 = a0, b1 = a0;
        for (int q = 0; q < Q; ++q) {
          const int16_t* s = top + 2 * ox + 4 * q;
          const v128_t wq = wasm_v128_load32_splat(&wtop[q]);
          a0 = wasm_i32x4_add(a0, wasm_i32x4_dot_i16x8(wasm_v128_load(s), wq));
          a1 = wasm_i32x4_add(a1, wasm_i32x4_dot_i16x8(wasm_v128_load(s + 8), wq));
        }
        for (int m = 0; m < M; ++m)
          for (int kx = 0; kx < K; ++kx) {
            const int16_t* s = vrow[m] + 2 * (ox + kx);
            const v128_t v0 = wasm_v128_load(s), v1 = wasm_v128_load(s + 8);
            const v128_t w0 = wasm_v128_load32_splat(&wv0[m][kx]), w1 = wasm_v128_load32_splat(&wv1[m][kx]);
            a0 = wasm_i32x4_add(a0, wasm_i32x4_dot_i16x8(v0, w0));
            a1 = wasm_i32x4_add(a1, wasm_i32x4_dot_i16x8(v1, w0));
            b0 = wasm_i32x4_add(b0, wasm_i32x4_dot_i16x8(v0, w1));
            b1 = wasm_i32x4_add(b1, wasm_i32x4_dot_i16x8(v1, w1));
          }
        for (int q = 0; q < Q; ++q) {
          const int16_t* s = bot + 2 * ox + 4 * q;
          const v128_t wq = wasm_v128_load32_splat(&wbot[q]);
          b0 = wasm_i32x4_add(b0, wasm_i32x4_dot_i16x8(wasm_v128_load(s), wq));
          b1 = wasm_i32x4_add(b1, wasm_i32x4_dot_i16x8(wasm_v128_load(s + 8), wq));
        }
        dw_keep_block(acc, ox, a0, a1, b0, b1);
      }
      dw_store_rows(acc, c, oy, a, rq, cr, out, es);
    }
  };
  dw_for_planes(C, 2.0 * C * P * K * K, plane);
}

// The qdepthwise_vpairs / qdepthwise_hpairs instantiation for this record, or nullptr (then
// qdepthwise_pairs or qdepthwise).
using QDepthwise = void (*)(const QCONV2D_args*, const uint8_t*, const int8_t*, const Requant&, uint8_t*, int);
template <bool kSigned>
QDepthwise tap_pairs_kernel(const QCONV2D_args* a) {
  if (a->kh != a->kw || a->sh != a->sw || a->dw != 1 || (a->kh - 1) * a->dh + 1 + a->sh > kDwRing) return nullptr;
  const int k = a->kh, s = a->sh, ow = a->ow;
  if (s == 1 && a->dh == 1 && k == 3 && hp_fits<3, 1>(ow)) return qdepthwise_vpairs<kSigned, 3>;
  if (s == 1 && a->dh == 1 && k == 5 && hp_fits<5, 1>(ow)) return qdepthwise_vpairs<kSigned, 5>;
  if (k == 3 && s == 2 && hp_fits<3, 2>(ow)) return qdepthwise_hpairs<kSigned, 3>;
  if (k == 5 && s == 2 && hp_fits<5, 2>(ow)) return qdepthwise_hpairs<kSigned, 5>;
  return nullptr;
}

// rq with QCONV2D's (or QCONV2D_WINO's) residual, if the record has one: at the same element offset
// as out (both 1-byte elements), so one address difference locates it from any output position.
template <class Args>
Requant with_residual(const Args* a, Requant rq) {
  if (!a->res) return rq;
  rq.has_res = true;
  rq.res_delta = at<const uint8_t>(a->res) - at<const uint8_t>(a->out);
  rq.res_signed = a->res_dtype == DT_I8;
  rq.res_scale = a->res_scale;
  rq.res_zp = (float)a->res_zp;
  return rq;
}

}  // namespace

void k_QCONV2D(const QCONV2D_args* a) {
  const int G = a->groups, cin_g = a->c_in / G, cout_g = a->c_out / G, P = a->oh * a->ow;
  const int es = elem_size(a->out_dtype);
  const uint8_t* in = at<const uint8_t>(a->in);
  uint8_t* out = at<uint8_t>(a->out);
  uint8_t* scratch = at<uint8_t>(a->scratch);
  const int8_t* weight = at<const int8_t>(a->weight);
  const int32_t* acc_bias = at<const int32_t>(a->acc_bias);
  const float* scale = at<const float>(a->scale);
  const float* bias = a->bias ? at<const float>(a->bias) : nullptr;
  // Column blocks of ~96 KiB of panels (at least 64 columns: each block sweeps all the weights):
  // im2col of a block, then the GEMM on it while it is in L2. Threads take whole blocks (into their
  // own part of scratch, at the block's first column * kp bytes; the GEMM runs inline).
  const int K = cin_g * a->kh * a->kw, kpairs = (K + 1) / 2;
  int block = kBlockBytes / (2 * kpairs) / kNR * kNR;
  block = block < 8 * kNR ? 8 * kNR : block > kMaxBlockCols ? kMaxBlockCols : block;
  const int blocks = (P + block - 1) / block;
  const bool threaded = pool_threads() > 1 && blocks > 1 && worth_threading(2.0 * cout_g * P * a->kp);
  if (cin_g == 1 && cout_g == 1 && a->kh * a->kw <= kMaxTaps) {
    const Requant rq = with_residual(a, requant_of(acc_bias, scale, bias, a->relu, a->out_dtype,
                                                   a->inv_out_scale, a->out_zp, a->qmin, a->qmax));
    for (int img = 0; img < a->n; ++img) {
      const uint8_t* iin = in + (ptrdiff_t)img * a->c_in * a->h * a->w;
      uint8_t* iout = out + (ptrdiff_t)img * a->c_out * P * es;
      const bool s8 = a->x_dtype == DT_I8, three = a->kh * a->kw == 9;
      const bool short_rows = a->ow < 16 || a->ow % 8 > kCols;
      if (const QDepthwise hp = s8 ? tap_pairs_kernel<true>(a) : tap_pairs_kernel<false>(a)) hp(a, iin, weight, rq, iout, es);
      else if (!dw_pairs_fit(a)) (s8 ? qdepthwise<true> : qdepthwise<false>)(a, iin, weight, rq, iout, es);
      else if (three && short_rows)
        (s8 ? qdepthwise_pairs<true, 5, true> : qdepthwise_pairs<false, 5, true>)(a, iin, weight, rq, iout, es);
      else if (three) (s8 ? qdepthwise_pairs<true, 5, false> : qdepthwise_pairs<false, 5, false>)(a, iin, weight, rq, iout, es);
      else if (short_rows)
        (s8 ? qdepthwise_pairs<true, 0, true> : qdepthwise_pairs<false, 0, true>)(a, iin, weight, rq, iout, es);
      else (s8 ? qdepthwise_pairs<true, 0, false> : qdepthwise_pairs<false, 0, false>)(a, iin, weight, rq, iout, es);
    }
    return;
  }
  // scratch: int16 panels of all P columns (each block in its own place: threads take blocks), then
  // the widened weights
  int16_t* panels = reinterpret_cast<int16_t*>(scratch);
  int16_t* wq = panels + (ptrdiff_t)(P + kNR - 1) / kNR * kNR * a->kp;
  // Fewer column blocks than 2 per thread (MobileNet's 7x7-28x28 layers: one block): the threads
  // split the output channels instead, each widening its own weight rows, after the blocks are
  // packed. Each output comes from the same tile either way, so the bits do not change.
  const bool by_rows = pool_threads() > 1 && blocks < 2 * pool_threads() && cout_g > kMR &&
                       worth_threading(2.0 * cout_g * P * a->kp);
  const int row_tiles = (cout_g + kMR - 1) / kMR;
  for (int img = 0; img < a->n; ++img) {
    for (int g = 0; g < G; ++g) {
      const uint8_t* gin = in + ((ptrdiff_t)img * a->c_in + (ptrdiff_t)g * cin_g) * a->h * a->w;
      const int c0 = g * cout_g;
      const int8_t* gw = weight + (ptrdiff_t)c0 * a->kp;
      const int pstride = kpairs * 2 * kNR;
      const bool s8 = a->x_dtype == DT_I8;
      const auto gemm = g_qconv_split_tiles ? gemm_cols<true> : gemm_cols<false>;
      // Output channels [r0, r1) of the group over the columns [j0, j1) of packed panels.
      auto run_rows = [&](int r0, int r1, int j0, int j1) {
        const int c = c0 + r0;
        const Requant rq = with_residual(a, requant_of(acc_bias + c, scale + c, bias ? bias + c : nullptr, a->relu,
                                                       a->out_dtype, a->inv_out_scale, a->out_zp, a->qmin, a->qmax));
        gemm(wq + (ptrdiff_t)r0 * a->kp, r1 - r0, a->kp, kpairs, panels + (ptrdiff_t)j0 * a->kp, pstride, j0,
             j1 - j0, rq, out + ((ptrdiff_t)img * a->c_out + c) * P * es, P * es, es);
      };
      auto block_end = [&](int b) { return (b + 1) * block < P ? (b + 1) * block : P; };
      auto pack_block = [&](int b) {
        (s8 ? pack_cols<true> : pack_cols<false>)(a, gin, cin_g, K, kpairs, b * block, block_end(b),
                                                  panels + (ptrdiff_t)b * block * a->kp, pstride);
      };
      if (by_rows) {
        if (blocks > 1) parallel_for(blocks, pack_block);
        else pack_block(0);
        const int tasks = row_tiles < 4 * pool_threads() ? row_tiles : 4 * pool_threads();
        parallel_for(tasks, [&](int t) {
          const int r0 = row_tiles * t / tasks * kMR, r1m = row_tiles * (t + 1) / tasks * kMR;
          const int r1 = r1m < cout_g ? r1m : cout_g;
          if (r0 >= r1) return;
          widen_weights(gw + (ptrdiff_t)r0 * a->kp, r1 - r0, a->kp, wq + (ptrdiff_t)r0 * a->kp);
          for (int b = 0; b < blocks; ++b) run_rows(r0, r1, b * block, block_end(b));
        });
        continue;
      }
      widen_weights(gw, cout_g, a->kp, wq);
      auto run_block = [&](int b) {
        pack_block(b);
        run_rows(0, cout_g, b * block, block_end(b));
      };
      if (threaded) parallel_for(blocks, run_block);
      else for (int b = 0; b < blocks; ++b) run_block(b);
    }
  }
}

extern "C" __attribute__((export_name("set_qconv_split_tiles"))) void set_qconv_split_tiles(int32_t on) {
  g_qconv_split_tiles = on != 0;
}

// ---- QCONV2D_WINO: 3x3 stride-1 convs by Winograd F(2x2, 3x3) on exact integers ------------------
// conv_winograd.cpp's algorithm (read its header) on integers, so the accumulators equal QCONV2D's:
// - inputs d = q - x_zp (|d| <= 255; 0 in the padding, where QCONV2D's taps read x_zp), transformed
//   by B^T d B (entries 0, +-1): |V| <= 4 * 255, int16;
// - weights (QCONV2D's packed rows, transformed at run time, 4 output channels at a time, so the
//   exported file keeps 1 byte per weight) by 2G = [[2,0,0],[1,1,1],[1,-1,1],[0,0,2]] on both sides, U = (2G) w (2G)^T:
//   integers, |U| <= 9 * 128, int16;
// - 16 GEMMs M[xi] = U[xi] V[xi] over input channel pairs on i32x4.dot_i16x8_s, QCONV2D's
//   pixels-in-lanes micro-kernel with tiles in lanes (panels [c_in/2][8 tiles][2] int16);
// - A^T M A = 4 * (the integer conv sum S) exactly (2G carries a factor 2 per dimension); >> 2.
//   All of it is linear arithmetic modulo 2^32 (i32 adds wrap), so 4 * S comes out exact whenever it
//   fits in int32: c_in * 4 * 9 * 255 * 128 < 2^31, c_in <= 1827 (the lowering's limit).
// S is what QCONV2D's accumulator + acc_bias equals (sum w (q - zp)), so the output is requantized
// by QCONV2D's own store8 / store_row from S - acc_bias[c]: the same floats, bit for bit.
namespace {

constexpr int kWinoTiles = kQconvCols;  // tiles per panel (8): 2 vectors of 4 lanes
constexpr int kWinoRows = kQconvRows;   // output channels per micro-tile (4)
constexpr int kWinoMaxCin = kQwinoMaxCin;  // the int32 bound above

// The 16 components' strides (U, V, M) are padded by 64 bytes: at ResNet's power-of-2 sizes they were
// multiples of 4 KB, so the transforms' 16 loads / stores per vector all hit one L1 set.
constexpr int kWinoSkewBytes = kQwinoSkewBytes;
inline ptrdiff_t wino_ustride(int Cp) { return (ptrdiff_t)kWinoRows * Cp + kWinoSkewBytes / 2; }       // int16
inline ptrdiff_t wino_vstride(int nt_pad, int Cp) { return (ptrdiff_t)nt_pad * Cp + kWinoSkewBytes / 2; }  // int16
inline ptrdiff_t wino_mstride(int CO4, int nt_pad) { return (ptrdiff_t)CO4 * nt_pad + kWinoSkewBytes / 4; }  // int32

struct WinoGeom {
  int C, CO, H, W, OH, OW, ph, pw, TH, TW, Cp, CO4;
};

struct WinoPos {
  int img, ty, tx;
};
inline WinoPos wino_pos(const WinoGeom& g, ptrdiff_t t) {
  const ptrdiff_t per = (ptrdiff_t)g.TH * g.TW;
  const int r = (int)(t % per);
  return {(int)(t / per), r / g.TW, r % g.TW};
}

// One 4x4 F(2,3) transform step on 4 int16 vectors: v0 - v2, v1 + v2, v2 - v1, v1 - v3 (B^T).
inline void wino_bt(v128_t& v0, v128_t& v1, v128_t& v2, v128_t& v3) {
  const v128_t a = wasm_i16x8_sub(v0, v2), b = wasm_i16x8_add(v1, v2), c = wasm_i16x8_sub(v2, v1);
  v3 = wasm_i16x8_sub(v1, v3);
  v0 = a, v1 = b, v2 = c;
}

// (2G) applied to 3 int16 vectors: 2 g0, g0 + g1 + g2, g0 - g1 + g2, 2 g2.
inline void wino_2g(v128_t g0, v128_t g1, v128_t g2, v128_t o[4]) {
  const v128_t s = wasm_i16x8_add(g0, g2);
  o[0] = wasm_i16x8_shl(g0, 1);
  o[1] = wasm_i16x8_add(s, g1);
  o[2] = wasm_i16x8_sub(s, g1);
  o[3] = wasm_i16x8_shl(g2, 1);
}

// U [16][kWinoRows][Cp] int16 of output channels [co0, co0 + kWinoRows) from QCONV2D's packed rows
// (k order (ky, kx, ci) when c_in is a multiple of 8, else (ci, ky, kx)), 8 input channels per
// vector. Rows past c_out and the channel past an odd c_in are zero. Transformed per micro-tile
// row group, right before its GEMMs, so U stays in cache: all of a 512-channel layer's U at once
// (8 MB, 16/9 x 2 the int8 weights) cost 2.2 of its 4.1 ms in V8 (ResNet-18's 512x7x7 conv).
void wino_weights(const WinoGeom& g, const int8_t* w, int kp, int co0, int16_t* U) {
  const ptrdiff_t us = wino_ustride(g.Cp);
  const bool tap_major = g.C % kKBlock == 0;
  for (int co = co0; co < co0 + kWinoRows; ++co) {
    int16_t* u = U + (ptrdiff_t)(co - co0) * g.Cp;
    if (co >= g.CO) {
      for (int xi = 0; xi < 16; ++xi) memset(u + xi * us, 0, (size_t)g.Cp * 2);
      continue;
    }
    const int8_t* row = w + (ptrdiff_t)co * kp;
    for (int ci = 0; ci < g.Cp; ci += 8) {
      const int nc = g.C - ci < 8 ? g.C - ci : 8;
      v128_t t[9];
      if (tap_major) {
        for (int k = 0; k < 9; ++k) t[k] = wasm_i16x8_load8x8(row + k * g.C + ci);
      } else {
        alignas(16) int16_t buf[9][8] = {};
        for (int l = 0; l < nc; ++l)
          for (int k = 0; k < 9; ++k) buf[k][l] = row[(ci + l) * 9 + k];
        for (int k = 0; k < 9; ++k) t[k] = wasm_v128_load(buf[k]);
      }
      v128_t c[4][3], o[4];  // c[r][kx]: (2G) over ky
      for (int kx = 0; kx < 3; ++kx) {
        wino_2g(t[kx], t[3 + kx], t[6 + kx], o);
        for (int r = 0; r < 4; ++r) c[r][kx] = o[r];
      }
      alignas(16) int16_t ub[16][8];
      for (int r = 0; r < 4; ++r) {  // (2G) over kx
        wino_2g(c[r][0], c[r][1], c[r][2], o);
        for (int j = 0; j < 4; ++j) {
          if (nc == 8) wasm_v128_store(u + (4 * r + j) * us + ci, o[j]);
          else wasm_v128_store(ub[4 * r + j], o[j]);
        }
      }
      if (nc < 8)
        for (int xi = 0; xi < 16; ++xi)
          for (int l = 0; l < g.Cp - ci; ++l) u[xi * us + ci + l] = l < nc ? ub[xi][l] : 0;
    }
  }
}

// d for 8 tiles of one tile row from input row iy: c[j] lane l = d(iy, x0 + 2l + j) (0 outside).
template <bool kSigned>
inline void wino_row(const uint8_t* plane, const WinoGeom& g, int iy, int x0, int zp, v128_t c[4]) {
  if ((unsigned)iy >= (unsigned)g.H) {
    c[0] = c[1] = c[2] = c[3] = wasm_i16x8_splat(0);
    return;
  }
  const uint8_t* row = plane + (ptrdiff_t)iy * g.W;
  v128_t v0, v1;
  if (x0 >= 0 && x0 + 18 <= g.W) {
    v0 = wasm_v128_load(row + x0);
    v1 = wasm_v128_load(row + x0 + 2);
  } else {  // the padding reads x_zp, so d = 0 there
    alignas(16) uint8_t buf[32];
    memset(buf, zp, sizeof buf);
    for (int j = 0; j < 18; ++j)
      if ((unsigned)(x0 + j) < (unsigned)g.W) buf[j] = row[x0 + j];
    v0 = wasm_v128_load(buf);
    v1 = wasm_v128_load(buf + 2);
  }
  const v128_t z = wasm_i16x8_splat((int16_t)zp);
  const v128_t e0 = wasm_i8x16_shuffle(v0, v0, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  const v128_t e1 = wasm_i8x16_shuffle(v1, v1, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  c[0] = wasm_i16x8_sub(widen_low<kSigned>(e0), z);
  c[1] = wasm_i16x8_sub(widen_high<kSigned>(e0), z);
  c[2] = wasm_i16x8_sub(widen_low<kSigned>(e1), z);
  c[3] = wasm_i16x8_sub(widen_high<kSigned>(e1), z);
}

// Phase 1, channel pairs [p_lo, p_hi) of the block's tiles [t0, t0 + nt): V[xi] = [nt_pad / 8
// panels][Cp / 2 pairs][8 tiles][2] int16, zero for tiles past nt.
template <bool kSigned>
void wino_input(const WinoGeom& g, const uint8_t* in, int zp, ptrdiff_t t0, int nt, int nt_pad, int p_lo, int p_hi,
                int16_t* V) {
  const ptrdiff_t vstride = wino_vstride(nt_pad, g.Cp), plane_size = (ptrdiff_t)g.H * g.W;
  for (int q = 0; q < nt_pad; q += kWinoTiles) {
    const WinoPos p = wino_pos(g, t0 + q);
    const bool row_group = q + kWinoTiles <= nt && p.tx + kWinoTiles <= g.TW;
    WinoPos lanes[kWinoTiles];
    if (!row_group)
      for (int l = 0; l < kWinoTiles; ++l) lanes[l] = wino_pos(g, t0 + q + l);
    int16_t* dst = V + (ptrdiff_t)(q / kWinoTiles) * g.Cp * kWinoTiles;
    for (int cp = p_lo; cp < p_hi; ++cp) {
      v128_t d[2][4][4];
      for (int h = 0; h < 2; ++h) {
        const int ci = 2 * cp + h;
        if (ci >= g.C) {
          for (int r = 0; r < 4; ++r) d[h][r][0] = d[h][r][1] = d[h][r][2] = d[h][r][3] = wasm_i16x8_splat(0);
          continue;
        }
        if (row_group) {
          const uint8_t* plane = in + ((ptrdiff_t)p.img * g.C + ci) * plane_size;
          for (int r = 0; r < 4; ++r) wino_row<kSigned>(plane, g, 2 * p.ty - g.ph + r, 2 * p.tx - g.pw, zp, d[h][r]);
        } else {
          alignas(16) int16_t buf[4][4][kWinoTiles];  // [row][col][lane]
          for (int l = 0; l < kWinoTiles; ++l) {
            const WinoPos& tp = lanes[l];
            const uint8_t* plane = in + ((ptrdiff_t)tp.img * g.C + ci) * plane_size;
            for (int r = 0; r < 4; ++r)
              for (int j = 0; j < 4; ++j) {
                const int iy = 2 * tp.ty - g.ph + r, ix = 2 * tp.tx - g.pw + j;
                int v = 0;
                if (q + l < nt && (unsigned)iy < (unsigned)g.H && (unsigned)ix < (unsigned)g.W) {
                  const uint8_t b = plane[(ptrdiff_t)iy * g.W + ix];
                  v = (kSigned ? (int)(int8_t)b : (int)b) - zp;
                }
                buf[r][j][l] = (int16_t)v;
              }
          }
          for (int r = 0; r < 4; ++r)
            for (int j = 0; j < 4; ++j) d[h][r][j] = wasm_v128_load(buf[r][j]);
        }
        for (int r = 0; r < 4; ++r) wino_bt(d[h][r][0], d[h][r][1], d[h][r][2], d[h][r][3]);  // d B
        for (int j = 0; j < 4; ++j) wino_bt(d[h][0][j], d[h][1][j], d[h][2][j], d[h][3][j]);  // B^T (d B)
      }
      int16_t* dc = dst + (ptrdiff_t)cp * 2 * kWinoTiles;
      for (int xi = 0; xi < 16; ++xi) {
        const v128_t a = d[0][xi / 4][xi % 4], b = d[1][xi / 4][xi % 4];
        wasm_v128_store(dc + xi * vstride, wasm_i16x8_shuffle(a, b, 0, 8, 1, 9, 2, 10, 3, 11));
        wasm_v128_store(dc + xi * vstride + 8, wasm_i16x8_shuffle(a, b, 4, 12, 5, 13, 6, 14, 7, 15));
      }
    }
  }
}

// Phase 2's micro-kernel: 4 rows of U[xi] (ldu int16 apart) x one panel of 8 tiles -> M (4 rows,
// ldm int32 apart). A function of its own (not inlined) for V8's register allocation, as
// micro_cols_call.
__attribute__((noinline)) void wino_micro(const int16_t* u, int ldu, const int16_t* panel, int cpairs, int32_t* m,
                                          int ldm) {
  v128_t acc0[kWinoRows], acc1[kWinoRows];
  for (int r = 0; r < kWinoRows; ++r) acc0[r] = acc1[r] = wasm_i32x4_splat(0);
  const int16_t* ur[kWinoRows];
  for (int r = 0; r < kWinoRows; ++r) ur[r] = u + (ptrdiff_t)r * ldu;
  for (int kk = 0; kk < cpairs; ++kk) {
    const v128_t b0 = wasm_v128_load(panel + kk * 2 * kWinoTiles), b1 = wasm_v128_load(panel + kk * 2 * kWinoTiles + 8);
    for (int r = 0; r < kWinoRows; ++r) {
      const v128_t a = wasm_v128_load32_splat(ur[r] + 2 * kk);
      acc0[r] = wasm_i32x4_add(acc0[r], wasm_i32x4_dot_i16x8(a, b0));
      acc1[r] = wasm_i32x4_add(acc1[r], wasm_i32x4_dot_i16x8(a, b1));
    }
  }
  for (int r = 0; r < kWinoRows; ++r) {
    wasm_v128_store(m + (ptrdiff_t)r * ldm, acc0[r]);
    wasm_v128_store(m + (ptrdiff_t)r * ldm + 4, acc1[r]);
  }
}

// Phase 3 for output channels [co_lo, co_hi): S = (A^T M A) >> 2, requantized by store8 / store_row,
// 4 tiles of one tile row (2 output rows of up to 8 pixels) at a time, clipped to the output.
void wino_output(const WinoGeom& g, const int32_t* M, int ldm, const Requant& rq, ptrdiff_t t0, int nt, int co_lo,
                 int co_hi, uint8_t* out, int es) {
  const ptrdiff_t ms = wino_mstride(g.CO4, ldm), P = (ptrdiff_t)g.OH * g.OW;
  const bool fast = channel_requant_fits(rq), u8 = rq.out_dtype == DT_U8;
  const bool fast_res = rq.out_dtype != DT_F32 && rq.has_res;  // (store8_res)
  const ResidualConsts rc = fast_res ? residual_consts(rq) : ResidualConsts{};
  for (int co = co_lo; co < co_hi; ++co) {
    const v128_t ab = wasm_i32x4_splat(rq.acc_bias[co]);
    const ChannelRequant cr = fast || fast_res ? channel_requant(rq, co) : ChannelRequant{};
    for (int q = 0; q < nt;) {
      const WinoPos p = wino_pos(g, t0 + q);
      int n4 = nt - q < 4 ? nt - q : 4;
      if (g.TW - p.tx < n4) n4 = g.TW - p.tx;
      const int32_t* m = M + (ptrdiff_t)co * ldm + q;  // lanes past n4: other tiles' (never stored)
      v128_t s0[4], s1[4];
      for (int j = 0; j < 4; ++j) {  // A^T m, A^T = [[1,1,1,0],[0,1,-1,-1]]
        const v128_t m0 = wasm_v128_load(m + j * ms), m1 = wasm_v128_load(m + (4 + j) * ms);
        const v128_t m2 = wasm_v128_load(m + (8 + j) * ms), m3 = wasm_v128_load(m + (12 + j) * ms);
        s0[j] = wasm_i32x4_add(wasm_i32x4_add(m0, m1), m2);
        s1[j] = wasm_i32x4_sub(wasm_i32x4_sub(m1, m2), m3);
      }
      auto fin = [&ab](v128_t v) { return wasm_i32x4_sub(wasm_i32x4_shr(v, 2), ab); };
      const v128_t y00 = fin(wasm_i32x4_add(wasm_i32x4_add(s0[0], s0[1]), s0[2]));
      const v128_t y01 = fin(wasm_i32x4_sub(wasm_i32x4_sub(s0[1], s0[2]), s0[3]));
      const v128_t y10 = fin(wasm_i32x4_add(wasm_i32x4_add(s1[0], s1[1]), s1[2]));
      const v128_t y11 = fin(wasm_i32x4_sub(wasm_i32x4_sub(s1[1], s1[2]), s1[3]));
      const int npix = 2 * n4 < g.OW - 2 * p.tx ? 2 * n4 : g.OW - 2 * p.tx;
      uint8_t* img_out = out + (ptrdiff_t)p.img * g.CO * P * es;
      for (int rr = 0; rr < 2 && 2 * p.ty + rr < g.OH; ++rr) {
        const v128_t lo = rr ? wasm_i32x4_shuffle(y10, y11, 0, 4, 1, 5) : wasm_i32x4_shuffle(y00, y01, 0, 4, 1, 5);
        const v128_t hi = rr ? wasm_i32x4_shuffle(y10, y11, 2, 6, 3, 7) : wasm_i32x4_shuffle(y00, y01, 2, 6, 3, 7);
        const int j0 = (2 * p.ty + rr) * g.OW + 2 * p.tx;
        if (fast && npix == 8) {
          store8(lo, hi, cr, u8, img_out + co * P + j0);
          continue;
        }
        if (fast_res && npix == 8) {
          store8_res(lo, hi, cr, rc, rq, img_out + co * P + j0);
          continue;
        }
        store_row(lo, co, j0, npix < 4 ? npix : 4, rq, img_out, (int)(P * es), es);
        if (npix > 4) store_row(hi, co, j0 + 4, npix - 4, rq, img_out, (int)(P * es), es);
      }
      q += n4;
    }
  }
}

}  // namespace

void k_QCONV2D_WINO(const QCONV2D_WINO_args* a) {
  const int CO4 = (a->c_out + kWinoRows - 1) / kWinoRows * kWinoRows, Cp = (a->c_in + 1) / 2 * 2;
  const WinoGeom g{a->c_in, a->c_out, a->h, a->w, a->oh, a->ow, a->ph, a->pw, (a->oh + 1) / 2, (a->ow + 1) / 2,
                   Cp, CO4};
  if (a->n <= 0 || g.CO <= 0 || g.OH <= 0 || g.OW <= 0) return;
  const int block = a->tile_block;
  if (block <= 0 || block % kWinoTiles != 0 || g.C > kWinoMaxCin) __builtin_trap();  // the ABI's contract
  const int es = elem_size(a->out_dtype);
  const Requant rq = with_residual(a, requant_of(at<const int32_t>(a->acc_bias), at<const float>(a->scale),
                                                 a->bias ? at<const float>(a->bias) : nullptr, a->relu,
                                                 a->out_dtype, a->inv_out_scale, a->out_zp, a->qmin, a->qmax));
  constexpr int kMaxChunks = 16;
  const ptrdiff_t utile = 16 * wino_ustride(Cp);  // one chunk's U (int16)
  int16_t* U = at<int16_t>(a->scratch);
  int16_t* V = U + kMaxChunks * utile;
  int32_t* M = reinterpret_cast<int32_t*>(V + 16 * wino_vstride(block, Cp));
  const bool threaded = pool_threads() > 1;
  const int8_t* w = at<const int8_t>(a->weight);
  const int rtiles = CO4 / kWinoRows;
  const uint8_t* in = at<const uint8_t>(a->in);
  uint8_t* out = at<uint8_t>(a->out);
  const bool s8 = a->x_dtype == DT_I8;
  const int cpairs = Cp / 2;
  const ptrdiff_t tiles = (ptrdiff_t)a->n * g.TH * g.TW;
  for (ptrdiff_t t0 = 0; t0 < tiles; t0 += block) {
    const int nt = (int)(tiles - t0 < block ? tiles - t0 : block);
    const int nt_pad = (nt + kWinoTiles - 1) / kWinoTiles * kWinoTiles;
    const int in_tasks = cpairs < 16 ? cpairs : 16;
    auto in_task = [&](int t) {
      (s8 ? wino_input<true> : wino_input<false>)(g, in, a->x_zp, t0, nt, nt_pad,
                                                  (int)((int64_t)cpairs * t / in_tasks),
                                                  (int)((int64_t)cpairs * (t + 1) / in_tasks), V);
    };
    if (threaded && in_tasks > 1 && worth_threading(32.0 * g.C * nt)) parallel_for(in_tasks, in_task);
    else (s8 ? wino_input<true> : wino_input<false>)(g, in, a->x_zp, t0, nt, nt_pad, 0, cpairs, V);
    // Phases 2 + 3 by chunks of output channels (whole micro-tiles), as conv_winograd.cpp.
    // Each chunk transforms the weights of one micro-tile row group at a time into its own U.
    const int chunks = rtiles / 2 < 1 ? 1 : (rtiles / 2 > kMaxChunks ? kMaxChunks : rtiles / 2);
    auto rows = [&](int t) {
      const int co_lo = kWinoRows * (int)((int64_t)rtiles * t / chunks);
      const int co_hi = kWinoRows * (int)((int64_t)rtiles * (t + 1) / chunks);
      int16_t* Ut = U + t * utile;
      for (int i0 = co_lo; i0 < co_hi; i0 += kWinoRows) {
        wino_weights(g, w, a->kp, i0, Ut);
        for (int xi = 0; xi < 16; ++xi) {
          const int16_t* Vx = V + xi * wino_vstride(nt_pad, Cp);
          int32_t* Mx = M + xi * wino_mstride(CO4, nt_pad) + (ptrdiff_t)i0 * nt_pad;
          for (int pn = 0; pn < nt_pad / kWinoTiles; ++pn)
            wino_micro(Ut + xi * wino_ustride(Cp), Cp, Vx + (ptrdiff_t)pn * Cp * kWinoTiles, cpairs, Mx + pn * kWinoTiles,
                       nt_pad);
        }
      }
      wino_output(g, M, nt_pad, rq, t0, nt, co_lo, co_hi < g.CO ? co_hi : g.CO, out, es);
    };
    if (threaded && chunks > 1 && worth_threading(32.0 * g.CO * g.C * nt)) parallel_for(chunks, rows);
    else for (int t = 0; t < chunks; ++t) rows(t);
  }
}
