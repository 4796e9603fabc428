// k_CONV2D_WINOGRAD: 3x3, stride-1 convolution by Winograd F(2x2, 3x3) (Lavin & Gray 2015).
//
// Each 2x2 output tile is A^T [ sum_ci U[ci] (.) V[ci] ] A, with V = B^T d B the transform of the
// tile's 4x4 input patch d and U = G g G^T the transformed 3x3 filter (done at compile time). The
// 16 elementwise products summed over ci are 16 independent GEMMs M[xi] = U[xi] @ V[xi] of
// [c_out, c_in] x [c_in, tiles]: 16 multiply-adds per tile and channel pair instead of 36 (2.25x
// fewer). Tiles are numbered across the whole batch (img, tile row, tile column) and processed in
// blocks of `tile_block` so one block's V (and M) stays in cache between the three phases:
//   1. input transform of the block, written straight into GEMM panel layout (NR columns per panel);
//   2. 16 gemm_packed calls (no epilogue) into M[16][c_out][tile_block], by chunks of output
//      channels, each chunk followed by
//   3. its output transform + bias + activation into the NCHW output, clipped at the right/bottom
//      edge.
// The transforms handle 4 consecutive tiles per f32x4 (one lane per tile).
#include "abi.h"
#include "elementwise.h"
#include "gemm.h"
#include "threadpool.h"

namespace {

constexpr int NR = kGemmNR;
static_assert(NR % 4 == 0, "a group of 4 tiles must not straddle a panel");

struct Geometry {
  int C, CO, H, W, OH, OW, ph, pw, TH, TW;
  ptrdiff_t tiles_per_image() const { return (ptrdiff_t)TH * TW; }
};

// Columns x0 + 2l + j (j = 0..3) of one input row for the 4 tiles l = 0..3 of a group: c[j] lane l.
// Out-of-range rows and columns are zero (the conv's padding).
inline void patch_row(const float* plane, const Geometry& g, int iy, int x0, v128_t c[4]) {
  if (iy < 0 || iy >= g.H) {
    c[0] = c[1] = c[2] = c[3] = wasm_f32x4_splat(0.0f);
    return;
  }
  const float* row = plane + (ptrdiff_t)iy * g.W;
  v128_t v0, v1, v2;
  if (x0 >= 0 && x0 + 12 <= g.W) {
    v0 = wasm_v128_load(row + x0);
    v1 = wasm_v128_load(row + x0 + 4);
    v2 = wasm_v128_load(row + x0 + 8);
  } else {
    alignas(16) float buf[12];
    for (int j = 0; j < 12; ++j) {
      const int ix = x0 + j;
      buf[j] = (unsigned)ix < (unsigned)g.W ? row[ix] : 0.0f;
    }
    v0 = wasm_v128_load(buf);
    v1 = wasm_v128_load(buf + 4);
    v2 = wasm_v128_load(buf + 8);
  }
  c[0] = wasm_i32x4_shuffle(v0, v1, 0, 2, 4, 6);
  c[1] = wasm_i32x4_shuffle(v0, v1, 1, 3, 5, 7);
  c[2] = wasm_i32x4_shuffle(c[0], v2, 1, 2, 3, 4);
  c[3] = wasm_i32x4_shuffle(c[1], v2, 1, 2, 3, 5);
}

// V = B^T d B with B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]], in place on d[row][col].
inline void input_transform(v128_t d[4][4]) {
  for (int r = 0; r < 4; ++r) {  // d B
    const v128_t c0 = d[r][0], c1 = d[r][1], c2 = d[r][2], c3 = d[r][3];
    d[r][0] = wasm_f32x4_sub(c0, c2);
    d[r][1] = wasm_f32x4_add(c1, c2);
    d[r][2] = wasm_f32x4_sub(c2, c1);
    d[r][3] = wasm_f32x4_sub(c1, c3);
  }
  for (int j = 0; j < 4; ++j) {  // B^T (d B)
    const v128_t r0 = d[0][j], r1 = d[1][j], r2 = d[2][j], r3 = d[3][j];
    d[0][j] = wasm_f32x4_sub(r0, r2);
    d[1][j] = wasm_f32x4_add(r1, r2);
    d[2][j] = wasm_f32x4_sub(r2, r1);
    d[3][j] = wasm_f32x4_sub(r1, r3);
  }
}

// Where tile t sits: image, tile row, tile column.
struct TilePos {
  int img, ty, tx;
};
inline TilePos tile_pos(const Geometry& g, ptrdiff_t t) {
  const ptrdiff_t per = g.tiles_per_image();
  const int img = (int)(t / per), r = (int)(t % per);
  return {img, r / g.TW, r % g.TW};
}

// Phase 1 for channels [c_lo, c_hi) of the block's tiles [t0, t0 + nt): V[xi] is a [C, nt] GEMM B
// operand in panel layout (panel p holds tiles 8p..8p+7 of the block, C rows of NR floats), zero
// in the lanes past nt.
void transform_input_block(const Geometry& g, const float* in, ptrdiff_t t0, int nt, int nt_pad,
                           int c_lo, int c_hi, float* V) {
  const ptrdiff_t vstride = (ptrdiff_t)nt_pad * g.C;  // one component's panels
  const ptrdiff_t in_plane = (ptrdiff_t)g.H * g.W;
  for (int q = 0; q < nt_pad; q += 4) {
    const TilePos p = tile_pos(g, t0 + q);
    // Fast path: 4 real tiles in one tile row (their patches are rows of one input row band).
    const bool row_group = q + 4 <= nt && p.tx + 4 <= g.TW;
    TilePos lanes[4];
    if (!row_group)
      for (int l = 0; l < 4; ++l) lanes[l] = tile_pos(g, t0 + q + l);
    float* dst = V + (ptrdiff_t)(q / NR) * g.C * NR + q % NR;
    for (int ci = c_lo; ci < c_hi; ++ci) {
      v128_t d[4][4];
      if (row_group) {
        const float* plane = in + ((ptrdiff_t)p.img * g.C + ci) * in_plane;
        for (int r = 0; r < 4; ++r) patch_row(plane, g, 2 * p.ty - g.ph + r, 2 * p.tx - g.pw, d[r]);
      } else {
        alignas(16) float buf[4][4][4];  // [row][col][lane]
        for (int l = 0; l < 4; ++l) {
          const bool real = q + l < nt;
          const TilePos& tp = lanes[l];
          const float* plane = in + ((ptrdiff_t)tp.img * g.C + ci) * in_plane;
          for (int r = 0; r < 4; ++r) {
            const int iy = 2 * tp.ty - g.ph + r;
            for (int j = 0; j < 4; ++j) {
              const int ix = 2 * tp.tx - g.pw + j;
              buf[r][j][l] = real && (unsigned)iy < (unsigned)g.H && (unsigned)ix < (unsigned)g.W
                                 ? plane[(ptrdiff_t)iy * g.W + ix] : 0.0f;
            }
          }
        }
        for (int r = 0; r < 4; ++r)
          for (int j = 0; j < 4; ++j) d[r][j] = wasm_v128_load(buf[r][j]);
      }
      input_transform(d);
      float* dc = dst + (ptrdiff_t)ci * NR;
      for (int xi = 0; xi < 16; ++xi) wasm_v128_store(dc + xi * vstride, d[xi / 4][xi % 4]);
    }
  }
}

// Phase 3 for output channels [co_lo, co_hi): y = A^T m A (A^T = [[1,1,1,0],[0,1,-1,-1]]) + bias,
// activation, stored for the real tiles, clipped to the output.
void transform_output_block(const Geometry& g, const float* M, int ldm, const float* bias, int act,
                            float p0, float p1, ptrdiff_t t0, int nt, int co_lo, int co_hi, float* out) {
  const ptrdiff_t mstride = (ptrdiff_t)g.CO * ldm;
  const ptrdiff_t out_plane = (ptrdiff_t)g.OH * g.OW;
  for (int q = 0; q < nt; q += 4) {
    const TilePos p = tile_pos(g, t0 + q);
    // Fast path: 4 real tiles in one tile row whose 2x8 output block is inside the output.
    const bool full = q + 4 <= nt && p.tx + 4 <= g.TW && 2 * p.tx + 8 <= g.OW && 2 * p.ty + 2 <= g.OH;
    TilePos lanes[4];
    if (!full)
      for (int l = 0; l < 4; ++l) lanes[l] = tile_pos(g, t0 + q + l);
    for (int co = co_lo; co < co_hi; ++co) {
      const float* m = M + (ptrdiff_t)co * ldm + q;
      v128_t s0[4], s1[4];
      for (int j = 0; j < 4; ++j) {  // A^T m
        const v128_t m0 = wasm_v128_load(m + (0 * 4 + j) * mstride), m1 = wasm_v128_load(m + (1 * 4 + j) * mstride);
        const v128_t m2 = wasm_v128_load(m + (2 * 4 + j) * mstride), m3 = wasm_v128_load(m + (3 * 4 + j) * mstride);
        const v128_t m12 = wasm_f32x4_sub(m1, m2);
        s0[j] = wasm_f32x4_add(wasm_f32x4_add(m0, m1), m2);
        s1[j] = wasm_f32x4_sub(m12, m3);
      }
      const v128_t b = wasm_f32x4_splat(bias ? bias[co] : 0.0f);
      v128_t y[4];  // y00, y01, y10, y11 (row, column within the tile)
      y[0] = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(s0[0], s0[1]), s0[2]), b);
      y[1] = wasm_f32x4_add(wasm_f32x4_sub(wasm_f32x4_sub(s0[1], s0[2]), s0[3]), b);
      y[2] = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(s1[0], s1[1]), s1[2]), b);
      y[3] = wasm_f32x4_add(wasm_f32x4_sub(wasm_f32x4_sub(s1[1], s1[2]), s1[3]), b);
      if (act != UNARY_IDENTITY)
        for (int i = 0; i < 4; ++i) y[i] = apply_activation(y[i], act, p0, p1);
      if (full) {
        float* o = out + ((ptrdiff_t)p.img * g.CO + co) * out_plane + (ptrdiff_t)(2 * p.ty) * g.OW + 2 * p.tx;
        wasm_v128_store(o, wasm_i32x4_shuffle(y[0], y[1], 0, 4, 1, 5));
        wasm_v128_store(o + 4, wasm_i32x4_shuffle(y[0], y[1], 2, 6, 3, 7));
        wasm_v128_store(o + g.OW, wasm_i32x4_shuffle(y[2], y[3], 0, 4, 1, 5));
        wasm_v128_store(o + g.OW + 4, wasm_i32x4_shuffle(y[2], y[3], 2, 6, 3, 7));
        continue;
      }
      alignas(16) float ys[4][4];  // [y index][lane]
      for (int i = 0; i < 4; ++i) wasm_v128_store(ys[i], y[i]);
      for (int l = 0; l < 4 && q + l < nt; ++l) {
        const TilePos& tp = lanes[l];
        float* o = out + ((ptrdiff_t)tp.img * g.CO + co) * out_plane;
        for (int i = 0; i < 4; ++i) {
          const int oy = 2 * tp.ty + i / 2, ox = 2 * tp.tx + i % 2;
          if (oy < g.OH && ox < g.OW) o[(ptrdiff_t)oy * g.OW + ox] = ys[i][l];
        }
      }
    }
  }
}

}  // namespace

void k_CONV2D_WINOGRAD(const CONV2D_WINOGRAD_args* a) {
  const Geometry g{a->c_in, a->c_out, a->h, a->w, a->oh, a->ow, a->ph, a->pw, (a->oh + 1) / 2, (a->ow + 1) / 2};
  if (a->n <= 0 || g.CO <= 0 || g.OH <= 0 || g.OW <= 0) return;
  const float* in = at<const float>(a->in);
  const float* U = at<const float>(a->weight);
  const float* bias = a->bias ? at<const float>(a->bias) : nullptr;
  float* out = at<float>(a->out);
  const int block = a->tile_block;
  if (block <= 0 || block % NR != 0) __builtin_trap();  // the ABI's contract; 0 would never advance
  float* V = at<float>(a->scratch);
  float* M = V + (ptrdiff_t)16 * g.C * block;
  const ptrdiff_t tiles = (ptrdiff_t)a->n * g.tiles_per_image();
  const bool threaded = pool_threads() > 1;
  for (ptrdiff_t t0 = 0; t0 < tiles; t0 += block) {
    const int nt = (int)(tiles - t0 < block ? tiles - t0 : block);
    const int nt_pad = (nt + NR - 1) / NR * NR;
    // Phase 1: input transform, split over input channels.
    const int in_tasks = g.C < 16 ? g.C : 16;
    auto in_task = [&](int t) {
      transform_input_block(g, in, t0, nt, nt_pad, (int)((int64_t)g.C * t / in_tasks),
                            (int)((int64_t)g.C * (t + 1) / in_tasks), V);
    };
    if (threaded && in_tasks > 1 && worth_threading(32.0 * g.C * nt)) parallel_for(in_tasks, in_task);
    else transform_input_block(g, in, t0, nt, nt_pad, 0, g.C, V);
    // Phases 2 + 3 by chunks of output channels: a chunk's 16 GEMMs produce exactly the M rows its
    // output transform needs, while they are still in cache; with threads the chunks are the tasks
    // (gemm_packed runs inline inside a task), so both phases share one fork/join.
    // Chunks of whole GEMM row tiles: chunks of CO / 8 rows left a partial tile (8 = 6 + 2 rows) in
    // every chunk (ResNet-18's Winograd convs in Node, 1 thread: 0.91-0.93x the time at 64 and 128
    // channels, 0.93-1.0x at 256 and 512; benchmarks/web/profile_records.py, 2026-12-04).
    const int row_tiles = (g.CO + kGemmMR - 1) / kGemmMR, chunks = row_tiles < 16 ? row_tiles : 16;
    auto rows = [&](int t) {
      const int co_lo = gemm_chunk_row(g.CO, chunks, t), co_hi = gemm_chunk_row(g.CO, chunks, t + 1);
      for (int xi = 0; xi < 16; ++xi)
        gemm_packed(co_hi - co_lo, nt, g.C, U + ((ptrdiff_t)xi * g.CO + co_lo) * g.C, g.C,
                    V + (ptrdiff_t)xi * nt_pad * g.C, M + ((ptrdiff_t)xi * g.CO + co_lo) * nt_pad, nt_pad,
                    nullptr, 0, UNARY_IDENTITY, 0.0f, 0.0f);
      transform_output_block(g, M, nt_pad, bias, a->act, a->p0, a->p1, t0, nt, co_lo, co_hi, out);
    };
    if (threaded && chunks > 1 && worth_threading(32.0 * g.CO * g.C * nt)) parallel_for(chunks, rows);
    else for (int t = 0; t < chunks; ++t) rows(t);
  }
}
