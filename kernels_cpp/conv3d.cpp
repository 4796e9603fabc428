// k_CONV3D and k_POOL3D: the 3-d (NCDHW) convolution and pooling of video models (r3d_18, S3D...).
//
// CONV3D is CONV2D's scheme with a depth axis: per (image, group), vol2col of a block of output
// columns straight into GEMM panel layout, then one packed GEMM whose epilogue adds the bias per
// output channel. Depthwise 3-d convs take the same path (correct, not tuned). POOL3D is a scalar
// loop per output (pooling is memory-bound next to the convs around it), threaded over planes;
// its semantics are POOL2D's with a depth axis.
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "abi.h"
#include "elementwise.h"
#include "gemm.h"
#include "threadpool.h"

namespace {

constexpr int NR = kGemmNR;
constexpr int kBlockFloats = 64 * 1024;  // 256 KiB of vol2col panels per column block (as CONV2D)

// vol2col of output columns [c0, c1) (column q = (oz * OH + oy) * OW + ox) into panel layout:
// element (r, q) of the [K, c1 - c0] block goes to dst[((q - c0) / NR) * K * NR + r * NR + (q - c0) % NR],
// row r = ((ci * KD + kz) * KH + ky) * KW + kx. Taps outside the input and columns past c1 (to the
// block's last full panel) are zero.
void vol2col_block(const CONV3D_args* a, const float* in, int K, int c0, int c1, float* dst) {
  const int D = a->d, H = a->h, W = a->w, OH = a->oh, OW = a->ow, KD = a->kd, KH = a->kh, KW = a->kw;
  const int cols = c1 - c0, cols_pad = (cols + NR - 1) / NR * NR;
  const ptrdiff_t pstride = (ptrdiff_t)K * NR;
  for (int r = 0; r < K; ++r) {
    const int kx = r % KW, ky = (r / KW) % KH, kz = (r / (KW * KH)) % KD, ci = r / (KW * KH * KD);
    const float* vol = in + (ptrdiff_t)ci * D * H * W;
    float* d = dst + (ptrdiff_t)r * NR;
    const int off = kx * a->dw - a->pw;
    int q = 0, ox = c0 % OW, oy = (c0 / OW) % OH, oz = c0 / (OW * OH);
    while (q < cols) {
      // One output row segment [ox, ox + run): the same input row, consecutive (strided) columns.
      const int run = OW - ox < cols - q ? OW - ox : cols - q;
      const int iz = oz * a->sd - a->pd + kz * a->dd, iy = oy * a->sh - a->ph + ky * a->dh;
      if (iz < 0 || iz >= D || iy < 0 || iy >= H) {
        for (int i = 0; i < run; ++i, ++q) d[(q / NR) * pstride + (q % NR)] = 0.0f;
      } else {
        const float* irow = vol + ((ptrdiff_t)iz * H + iy) * W;
        for (int i = 0; i < run;) {
          const int ix = (ox + i) * a->sw + off;
          if (a->sw == 1 && (q & 3) == 0 && i + 4 <= run && ix >= 0 && ix + 4 <= W) {
            // 4 consecutive interior taps land in one half of a panel row: one vector store.
            wasm_v128_store(d + (q / NR) * pstride + (q % NR), wasm_v128_load(irow + ix));
            i += 4;
            q += 4;
            continue;
          }
          d[(q / NR) * pstride + (q % NR)] = (unsigned)ix < (unsigned)W ? irow[ix] : 0.0f;
          ++i;
          ++q;
        }
      }
      ox = 0;
      if (++oy == OH) {
        oy = 0;
        ++oz;
      }
    }
    for (; q < cols_pad; ++q) d[(q / NR) * pstride + (q % NR)] = 0.0f;
  }
}

}  // namespace

void k_CONV3D(const CONV3D_args* a) {
  const int N = a->n, C = a->c_in, G = a->groups > 0 ? a->groups : 1, CO = a->c_out;
  const int NC = a->od * a->oh * a->ow;
  if (N <= 0 || CO <= 0 || NC <= 0) return;
  const int cin_g = C / G, cout_g = CO / G;
  const int K = cin_g * a->kd * a->kh * a->kw;
  const float* in = at<const float>(a->in);
  const float* weight = at<const float>(a->weight);
  const float* bias = a->bias ? at<const float>(a->bias) : nullptr;
  float* out = at<float>(a->out);
  float* scratch = at<float>(a->scratch);
  const ptrdiff_t in_vol = (ptrdiff_t)a->d * a->h * a->w;
  const int panels = (NC + NR - 1) / NR;
  const int slots = a->scratch_panels < 1 ? 1 : a->scratch_panels;  // panels the scratch holds
  int block = kBlockFloats / (K * NR);
  block = block < 8 ? 8 : block;
  block = block > panels ? panels : block;
  block = block > slots ? slots : block;
  const int threads = pool_threads();
  for (int img = 0; img < N; ++img) {
    for (int g = 0; g < G; ++g) {
      const float* gin = in + ((ptrdiff_t)img * C + (ptrdiff_t)g * cin_g) * in_vol;
      float* gout = out + ((ptrdiff_t)img * CO + (ptrdiff_t)g * cout_g) * NC;
      const float* gw = weight + (ptrdiff_t)g * cout_g * K;
      const float* gb = bias ? bias + g * cout_g : nullptr;
      auto column_block = [&](int p0, int blk, float* cols) {
        const int c0 = p0 * NR, c1 = (p0 + blk) * NR < NC ? (p0 + blk) * NR : NC;
        vol2col_block(a, gin, K, c0, c1, cols);
        gemm_packed(cout_g, c1 - c0, K, gw, K, cols, gout + c0, NC, gb, gb ? 2 : 0, a->act, a->p0, a->p1);
      };
      if (K == 0) {
        gemm_packed(cout_g, NC, 0, gw, 1, scratch, gout, NC, gb, gb ? 2 : 0, a->act, a->p0, a->p1);
        continue;
      }
      int blk = block;
      if (threads > 1 && panels >= 4 * threads && worth_threading(2.0 * cout_g * NC * K)) {
        // Threads take whole column blocks (vol2col + GEMM each, into their own scratch slot; the
        // nested GEMM runs inline), as CONV2D does for wide outputs, in waves of as many blocks as
        // the scratch holds.
        const int per_task = (panels + 4 * threads - 1) / (4 * threads);
        if (blk > per_task) blk = per_task;
        const int n_blocks = (panels + blk - 1) / blk, per_wave = slots / blk;
        for (int first = 0; first < n_blocks; first += per_wave) {
          const int count = n_blocks - first < per_wave ? n_blocks - first : per_wave;
          parallel_for(count, [&](int t) { column_block((first + t) * blk, blk, scratch + (ptrdiff_t)t * blk * K * NR); });
        }
        continue;
      }
      for (int p0 = 0; p0 < panels; p0 += blk) column_block(p0, blk, scratch);
    }
  }
}

namespace {

// Taps of a pooling window along one axis: the first in-bounds tap's index (or -1), the number
// inside [0, n) and the number inside the padded [-pad, n + pad) (the avg divisor with
// count_include_pad; ceil_mode windows may run past the padding).
struct Axis {
  int first, valid, padded;
};
inline Axis axis_taps(int start, int k, int dil, int n, int pad) {
  Axis r = {-1, 0, 0};
  for (int t = 0; t < k; ++t) {
    const int i = start + t * dil;
    if (i >= 0 && i < n) {
      if (r.first < 0) r.first = i;
      ++r.valid;
    }
    r.padded += (i >= -pad && i < n + pad);
  }
  return r;
}

void pool3d_plane(const POOL3D_args* a, const float* in, float* out, int64_t* indices) {
  const int D = a->d, H = a->h, W = a->w, OD = a->od, OH = a->oh, OW = a->ow;
  for (int oz = 0; oz < OD; ++oz) {
    for (int oy = 0; oy < OH; ++oy) {
      for (int ox = 0; ox < OW; ++ox) {
        const int64_t o = ((int64_t)oz * OH + oy) * OW + ox;
        int z0, z1, y0, y1, x0, x1, dd = 1, dh = 1, dw = 1;
        if (a->mode == POOL_ADAPTIVE_AVG) {
          z0 = (int)((int64_t)oz * D / OD), z1 = (int)(((int64_t)(oz + 1) * D + OD - 1) / OD);
          y0 = (int)((int64_t)oy * H / OH), y1 = (int)(((int64_t)(oy + 1) * H + OH - 1) / OH);
          x0 = (int)((int64_t)ox * W / OW), x1 = (int)(((int64_t)(ox + 1) * W + OW - 1) / OW);
          float acc = 0.0f;
          for (int z = z0; z < z1; ++z)
            for (int y = y0; y < y1; ++y)
              for (int x = x0; x < x1; ++x) acc += in[((int64_t)z * H + y) * W + x];
          out[o] = acc / (float)((z1 - z0) * (y1 - y0) * (x1 - x0));
          continue;
        }
        dd = a->dd, dh = a->dh, dw = a->dw;
        z0 = oz * a->sd - a->pd, y0 = oy * a->sh - a->ph, x0 = ox * a->sw - a->pw;
        const Axis az = axis_taps(z0, a->kd, dd, D, a->pd), ay = axis_taps(y0, a->kh, dh, H, a->ph),
                   ax = axis_taps(x0, a->kw, dw, W, a->pw);
        if (a->mode == POOL_MAX) {
          float best = -INFINITY;
          // torch: the first in-bounds tap until something beats it (an all-padding window too)
          int64_t best_i = ((int64_t)(az.first < 0 ? 0 : az.first) * H + (ay.first < 0 ? 0 : ay.first)) * W +
                           (ax.first < 0 ? 0 : ax.first);
          for (int kz = 0; kz < a->kd; ++kz) {
            const int z = z0 + kz * dd;
            if (z < 0 || z >= D) continue;
            for (int ky = 0; ky < a->kh; ++ky) {
              const int y = y0 + ky * dh;
              if (y < 0 || y >= H) continue;
              for (int kx = 0; kx < a->kw; ++kx) {
                const int x = x0 + kx * dw;
                if (x < 0 || x >= W) continue;
                const int64_t i = ((int64_t)z * H + y) * W + x;
                const float v = in[i];
                if (v > best || v != v) {  // torch's test: a NaN wins, and a later NaN wins again
                  best = v;
                  best_i = i;
                }
              }
            }
          }
          out[o] = best;
          if (indices) indices[o] = best_i;
        } else {
          float acc = 0.0f;
          for (int kz = 0; kz < a->kd; ++kz) {
            const int z = z0 + kz * dd;
            if (z < 0 || z >= D) continue;
            for (int ky = 0; ky < a->kh; ++ky) {
              const int y = y0 + ky * dh;
              if (y < 0 || y >= H) continue;
              for (int kx = 0; kx < a->kw; ++kx) {
                const int x = x0 + kx * dw;
                if (x >= 0 && x < W) acc += in[((int64_t)z * H + y) * W + x];
              }
            }
          }
          const int div = a->divisor != 0 ? a->divisor
                          : a->count_include_pad ? az.padded * ay.padded * ax.padded
                                                 : az.valid * ay.valid * ax.valid;
          out[o] = acc / (float)div;
        }
      }
    }
  }
}

}  // namespace

void k_POOL3D(const POOL3D_args* a) {
  const int64_t in_vol = (int64_t)a->d * a->h * a->w, out_vol = (int64_t)a->od * a->oh * a->ow;
  if (a->planes <= 0 || out_vol <= 0) return;
  const float* in = at<const float>(a->in);
  float* out = at<float>(a->out);
  int64_t* indices = a->indices ? at<int64_t>(a->indices) : nullptr;
  auto plane = [&](int p) {
    pool3d_plane(a, in + p * in_vol, out + p * out_vol, indices ? indices + p * out_vol : nullptr);
  };
  const double work = (double)a->planes * out_vol * a->kd * a->kh * a->kw;
  if (pool_threads() > 1 && a->planes > 1 && worth_threading(work)) parallel_for(a->planes, plane);
  else
    for (int p = 0; p < a->planes; ++p) plane(p);
}
