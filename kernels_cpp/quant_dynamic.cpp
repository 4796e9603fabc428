// Dynamic int8 linear (PT2E's dynamic config: X86InductorQuantizer with is_dynamic=True): the float
// activation is quantized per tensor at run time with parameters chosen from its own range
// (QDYNPACK), then multiplied on the static path's int8 GEMM (QGEMM_DYN: k_QGEMM with an epilogue
// whose activation scale / zero point are only known now). The GEMM stays on i32x4.dot_i16x8_s,
// which is where the speed over float32 comes from; quantizing costs two passes over the
// activation (min/max, then quantize + pack), small next to the GEMM's k-fold reuse of it.
#include <math.h>
#include <string.h>
#include <wasm_simd128.h>
#include "abi.h"
#include "quant_panels.h"
#include "threadpool.h"

namespace {

using quant_panels::kCols;
using quant_panels::kKBlock;

// min and max of the [cols, k] rows (NaN propagates as in torch.aminmax, through f32x4.min/max;
// the output is then meaningless, as eager's).
void min_max(const QDYNPACK_args* a, const float* in, float* mn_out, float* mx_out) {
  v128_t mn = wasm_f32x4_splat(INFINITY), mx = wasm_f32x4_splat(-INFINITY);
  float smn = INFINITY, smx = -INFINITY;
  for (int j = 0; j < a->cols; ++j) {
    const float* row = in + (ptrdiff_t)j * a->row_stride;
    int k = 0;
    for (; k + 4 <= a->k; k += 4) {
      const v128_t v = wasm_v128_load(row + k);
      mn = wasm_f32x4_min(mn, v);
      mx = wasm_f32x4_max(mx, v);
    }
    for (; k < a->k; ++k) {
      mn = wasm_f32x4_min(mn, wasm_f32x4_splat(row[k]));
      mx = wasm_f32x4_max(mx, wasm_f32x4_splat(row[k]));
    }
  }
  alignas(16) float lo[4], hi[4];
  wasm_v128_store(lo, mn);
  wasm_v128_store(hi, mx);
  for (int l = 0; l < 4; ++l) {
    smn = (lo[l] < smn || lo[l] != lo[l]) ? lo[l] : smn;
    smx = (hi[l] > smx || hi[l] != hi[l]) ? hi[l] : smx;
  }
  *mn_out = smn;
  *mx_out = smx;
}

// Quantizes 8 floats (round(x * inv) + zp, clamped, as QUANTIZE) into 8 bytes at dst.
template <bool kSigned>
inline void quantize8(const float* x, v128_t inv, v128_t zp, v128_t lo, v128_t hi, uint8_t* dst) {
  v128_t y0 = wasm_f32x4_add(wasm_f32x4_nearest(wasm_f32x4_mul(wasm_v128_load(x), inv)), zp);
  v128_t y1 = wasm_f32x4_add(wasm_f32x4_nearest(wasm_f32x4_mul(wasm_v128_load(x + 4), inv)), zp);
  y0 = wasm_i32x4_trunc_sat_f32x4(wasm_f32x4_min(wasm_f32x4_max(y0, lo), hi));
  y1 = wasm_i32x4_trunc_sat_f32x4(wasm_f32x4_min(wasm_f32x4_max(y1, lo), hi));
  const v128_t q16 = wasm_i16x8_narrow_i32x4(y0, y1);  // in [qmin, qmax]: the narrows are exact
  const v128_t q8 = kSigned ? wasm_i8x16_narrow_i16x8(q16, q16) : wasm_u8x16_narrow_i16x8(q16, q16);
  wasm_v128_store64_lane(dst, q8, 0);
}

// Quantizes and packs columns [j0, j1) (whole panels; columns past cols are zero filled).
template <bool kSigned>
void quantize_pack(const QDYNPACK_args* a, const float* in, float inv_scale, int zp, int j0, int j1,
                   uint8_t* out) {
  const v128_t inv = wasm_f32x4_splat(inv_scale), zpv = wasm_f32x4_splat((float)zp);
  const v128_t lo = wasm_f32x4_splat((float)a->qmin), hi = wasm_f32x4_splat((float)a->qmax);
  const int K = a->k, kp = a->kp, full = K / kKBlock * kKBlock;
  for (int j = j0; j < j1; ++j) {
    uint8_t* dst = out + (ptrdiff_t)(j / kCols) * kCols * kp + (j % kCols) * kKBlock;
    if (j >= a->cols) {
      for (int kb = 0; kb < kp; kb += kKBlock) memset(dst + kb * kCols, 0, kKBlock);
      continue;
    }
    const float* row = in + (ptrdiff_t)j * a->row_stride;
    for (int kb = 0; kb < full; kb += kKBlock) quantize8<kSigned>(row + kb, inv, zpv, lo, hi, dst + kb * kCols);
    for (int kb = full; kb < kp; kb += kKBlock) {  // the k tail, zero padded to kp
      uint8_t* d = dst + kb * kCols;
      for (int e = 0; e < kKBlock; ++e) {
        if (kb + e >= K) {
          d[e] = 0;
          continue;
        }
        float y = nearbyintf(row[kb + e] * inv_scale) + (float)zp;
        y = y < (float)a->qmin ? (float)a->qmin : y > (float)a->qmax ? (float)a->qmax : y;
        d[e] = (uint8_t)(int32_t)y;
      }
    }
  }
}

}  // namespace

void k_QDYNPACK(const QDYNPACK_args* a) {
  const float* in = at<const float>(a->in);
  uint8_t* out = at<uint8_t>(a->out);
  // choose_qparams.tensor in float32, step by step as torch/ao/quantization/utils.py's
  // determine_qparams computes it (per_tensor_affine).
  float mn, mx;
  min_max(a, in, &mn, &mx);
  const float min_neg = mn < 0.0f ? mn : 0.0f, max_pos = mx > 0.0f ? mx : 0.0f;
  float scale = (max_pos - min_neg) / (float)(a->qmax - a->qmin);
  scale = scale > a->eps ? scale : a->eps;
  int zp = a->qmin - (int)nearbyintf(min_neg / scale);
  zp = zp < a->qmin ? a->qmin : zp > a->qmax ? a->qmax : zp;
  float* qparams = at<float>(a->qparams);
  qparams[0] = scale;
  memcpy(qparams + 1, &zp, 4);
  // quantize_per_tensor: x * float32(1.0 / double(scale)) (eager's inv_scale is a Python float).
  const float inv_scale = (float)(1.0 / (double)scale);
  const int panels = (a->cols + kCols - 1) / kCols;
  auto run = [&](int p0, int p1) {
    if (a->x_dtype == DT_I8) quantize_pack<true>(a, in, inv_scale, zp, p0 * kCols, p1 * kCols, out);
    else quantize_pack<false>(a, in, inv_scale, zp, p0 * kCols, p1 * kCols, out);
  };
  const int threads = pool_threads();
  if (threads > 1 && panels >= 2 * threads && worth_threading(8.0 * a->cols * a->k)) {
    parallel_for(threads, [&](int t) { run(panels * t / threads, panels * (t + 1) / threads); });
  } else {
    run(0, panels);
  }
}

void k_QGEMM_DYN(const QGEMM_DYN_args* a) {
  const float x_scale = at<const float>(a->qparams)[0];
  const int32_t x_zp = at<const int32_t>(a->qparams)[1];
  const int32_t* row_sum = at<const int32_t>(a->row_sum);
  const float* w_scale = at<const float>(a->w_scale);
  int32_t* acc_bias = at<int32_t>(a->scratch);
  float* scale = reinterpret_cast<float*>(acc_bias + a->rows);
  for (int i = 0; i < a->rows; ++i) {
    acc_bias[i] = -x_zp * row_sum[i];
    scale[i] = (float)((double)x_scale * (double)w_scale[i]);  // rounded once, as the static path's
  }
  QGEMM_args g;
  memset(&g, 0, sizeof g);
  g.rows = a->rows;
  g.cols = a->cols;
  g.kp = a->kp;
  g.x_dtype = a->x_dtype;
  g.w = a->w;
  g.x = a->x;
  g.acc_bias = a->scratch;
  g.scale = a->scratch + 4u * (uint32_t)a->rows;
  g.bias = a->bias;
  g.out_dtype = DT_F32;
  g.inv_out_scale = 1.0f;
  g.out = a->out;
  g.out_stride_i = 1;
  g.out_stride_j = a->rows;
  k_QGEMM(&g);
}
