// k_UNARY and k_BINARY: elementwise ops over a 6-d strided index space (strided.h); k_MAP: a chain
// of them fused into one pass; plus the in-place activation helper used by the fused epilogues.
#include <stdint.h>
#include <stddef.h>
#include "abi.h"
#include "elementwise.h"
#include "threadpool.h"
#include "strided.h"

namespace {

inline v128_t gather4(const float* p, ptrdiff_t s) {
  return wasm_f32x4_make(p[0], p[s], p[2 * s], p[3 * s]);
}
inline void scatter4(float* p, ptrdiff_t s, v128_t v) {
  p[0] = wasm_f32x4_extract_lane(v, 0);
  p[s] = wasm_f32x4_extract_lane(v, 1);
  p[2 * s] = wasm_f32x4_extract_lane(v, 2);
  p[3 * s] = wasm_f32x4_extract_lane(v, 3);
}
// Tails go through a zero-padded vector so they run the same code as the body.
inline v128_t load_partial(const float* p, ptrdiff_t s, int n) {
  float buf[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; ++i) buf[i] = p[i * s];
  return wasm_v128_load(buf);
}
inline void store_partial(float* p, ptrdiff_t s, int n, v128_t v) {
  float buf[4];
  wasm_v128_store(buf, v);
  for (int i = 0; i < n; ++i) p[i * s] = buf[i];
}

template <int OP>
void unary_row(float* o, ptrdiff_t os, const float* in, ptrdiff_t is, int32_t n, float p0, float p1) {
  int32_t j = 0;
  if (is == 0) {  // broadcast input: one value for the whole row
    const v128_t v = unary_v<OP>(wasm_f32x4_splat(in[0]), p0, p1);
    if (os == 1) {
      for (; j + 4 <= n; j += 4) wasm_v128_store(o + j, v);
    }
    const float x = wasm_f32x4_extract_lane(v, 0);
    for (; j < n; ++j) o[j * os] = x;
    return;
  }
  if (os == 1 && is == 1) {
    for (; j + 16 <= n; j += 16) {
      const v128_t a0 = wasm_v128_load(in + j), a1 = wasm_v128_load(in + j + 4);
      const v128_t a2 = wasm_v128_load(in + j + 8), a3 = wasm_v128_load(in + j + 12);
      wasm_v128_store(o + j, unary_v<OP>(a0, p0, p1));
      wasm_v128_store(o + j + 4, unary_v<OP>(a1, p0, p1));
      wasm_v128_store(o + j + 8, unary_v<OP>(a2, p0, p1));
      wasm_v128_store(o + j + 12, unary_v<OP>(a3, p0, p1));
    }
    for (; j + 4 <= n; j += 4) wasm_v128_store(o + j, unary_v<OP>(wasm_v128_load(in + j), p0, p1));
  } else {
    for (; j + 4 <= n; j += 4)
      scatter4(o + j * os, os, unary_v<OP>(gather4(in + j * is, is), p0, p1));
  }
  if (j < n) store_partial(o + j * os, os, n - j, unary_v<OP>(load_partial(in + j * is, is, n - j), p0, p1));
}

// PyTorch's div_floor_floating (c10/util/generic_math.h), step for step, so results match eager
// bit for bit (floor(a / b) differs from it when a / b rounds up to an integer).
inline float div_floor(float a, float b) {
  if (b == 0) return a / b;
  const float mod = __builtin_fmodf(a, b);
  float div = (a - mod) / b;
  if (mod != 0 && (b < 0) != (mod < 0)) div -= 1.0f;
  if (div != 0) {
    float fl = __builtin_floorf(div);
    if (div - fl > 0.5f) fl += 1.0f;
    return fl;
  }
  return __builtin_copysignf(0.0f, a / b);
}

template <int OP>
inline v128_t binary_v(v128_t a, v128_t b) {
  switch (OP) {
    case BINARY_ADD: return wasm_f32x4_add(a, b);
    case BINARY_SUB: return wasm_f32x4_sub(a, b);
    case BINARY_MUL: return wasm_f32x4_mul(a, b);
    case BINARY_DIV: return wasm_f32x4_div(a, b);
    case BINARY_MAXIMUM: return wasm_f32x4_max(a, b);  // propagates NaN, like torch.maximum
    case BINARY_MINIMUM: return wasm_f32x4_min(a, b);
    case BINARY_POW: return simd_math::pow_vv(a, b);
    case BINARY_FLOOR_DIVIDE: {
      float x[4], y[4];
      wasm_v128_store(x, a);
      wasm_v128_store(y, b);
      return wasm_f32x4_make(div_floor(x[0], y[0]), div_floor(x[1], y[1]), div_floor(x[2], y[2]),
                             div_floor(x[3], y[3]));
    }
    default: return a;
  }
}

inline v128_t load_any(const float* p, ptrdiff_t s) {
  if (s == 1) return wasm_v128_load(p);
  if (s == 0) return wasm_f32x4_splat(p[0]);
  return gather4(p, s);
}

template <int OP>
void binary_row(float* o, ptrdiff_t os, const float* a, ptrdiff_t as, const float* b, ptrdiff_t bs,
                int32_t n) {
  int32_t j = 0;
  if (os == 1 && as == 1 && bs == 1) {
    for (; j + 8 <= n; j += 8) {
      wasm_v128_store(o + j, binary_v<OP>(wasm_v128_load(a + j), wasm_v128_load(b + j)));
      wasm_v128_store(o + j + 4, binary_v<OP>(wasm_v128_load(a + j + 4), wasm_v128_load(b + j + 4)));
    }
    for (; j + 4 <= n; j += 4)
      wasm_v128_store(o + j, binary_v<OP>(wasm_v128_load(a + j), wasm_v128_load(b + j)));
  } else if (os == 1 && as == 1 && bs == 0) {
    const v128_t vb = wasm_f32x4_splat(b[0]);
    for (; j + 8 <= n; j += 8) {
      wasm_v128_store(o + j, binary_v<OP>(wasm_v128_load(a + j), vb));
      wasm_v128_store(o + j + 4, binary_v<OP>(wasm_v128_load(a + j + 4), vb));
    }
    for (; j + 4 <= n; j += 4) wasm_v128_store(o + j, binary_v<OP>(wasm_v128_load(a + j), vb));
  } else if (os == 1 && as == 0 && bs == 1) {
    const v128_t va = wasm_f32x4_splat(a[0]);
    for (; j + 8 <= n; j += 8) {
      wasm_v128_store(o + j, binary_v<OP>(va, wasm_v128_load(b + j)));
      wasm_v128_store(o + j + 4, binary_v<OP>(va, wasm_v128_load(b + j + 4)));
    }
    for (; j + 4 <= n; j += 4) wasm_v128_store(o + j, binary_v<OP>(va, wasm_v128_load(b + j)));
  } else if (as == 0 && bs == 0) {
    const v128_t v = binary_v<OP>(wasm_f32x4_splat(a[0]), wasm_f32x4_splat(b[0]));
    const float x = wasm_f32x4_extract_lane(v, 0);
    for (; j < n; ++j) o[j * os] = x;
    return;
  } else {
    for (; j + 4 <= n; j += 4) {
      const v128_t v = binary_v<OP>(load_any(a + j * as, as), load_any(b + j * bs, bs));
      if (os == 1) wasm_v128_store(o + j, v);
      else scatter4(o + j * os, os, v);
    }
  }
  if (j < n) {
    const int r = n - j;
    store_partial(o + j * os, os, r,
                  binary_v<OP>(load_partial(a + j * as, as, r), load_partial(b + j * bs, bs, r)));
  }
}

double unary_cost(int op) {
  switch (op) {
    case UNARY_GELU_ERF: case UNARY_GELU_TANH: case UNARY_SILU: case UNARY_SIGMOID:
    case UNARY_TANH: case UNARY_EXP: case UNARY_LOG: case UNARY_ERF: return 30.0;
    case UNARY_POW: return 60.0;
    default: return 4.0;
  }
}

template <int OP>
void unary_space(const UNARY_args* a) {
  const int32_t* strides[2] = {a->out_stride, a->in_stride};
  const Space s = collapse(a->size, strides, 2);
  float* out = at<float>(a->out);
  const float* in = at<float>(a->in);
  const float p0 = a->p0, p1 = a->p1;
  const int inner = s.nd - 1;
  const ptrdiff_t os = s.st[0][inner], is = s.st[1][inner];
  run_space(s, 2, unary_cost(OP), [&](const ptrdiff_t* off, int32_t len) {
    unary_row<OP>(out + off[0], os, in + off[1], is, len, p0, p1);
  });
}

template <int OP>
void binary_space(const BINARY_args* a) {
  const int32_t* strides[3] = {a->out_stride, a->a_stride, a->b_stride};
  const Space s = collapse(a->size, strides, 3);
  float* out = at<float>(a->out);
  const float* pa = at<float>(a->a);
  const float* pb = at<float>(a->b);
  const int inner = s.nd - 1;
  const ptrdiff_t os = s.st[0][inner], as = s.st[1][inner], bs = s.st[2][inner];
  run_space(s, 3, 4.0, [&](const ptrdiff_t* off, int32_t len) {
    binary_row<OP>(out + off[0], os, pa + off[1], as, pb + off[2], bs, len);
  });
}

}  // namespace

void k_UNARY(const UNARY_args* a) {
  switch (a->op) {
#define UNARY_OP(name, code) case UNARY_##name: unary_space<UNARY_##name>(a); break;
#include "kernel_abi.def"
    default: __builtin_trap();  // an unknown sub-op: a damaged plan must not silently write nothing
  }
}

void k_BINARY(const BINARY_args* a) {
  switch (a->op) {
#define BINARY_OP(name, code) case BINARY_##name: binary_space<BINARY_##name>(a); break;
#include "kernel_abi.def"
    default: __builtin_trap();  // an unknown sub-op: a damaged plan must not silently write nothing
  }
}

namespace {

constexpr int kMapChunk = 256;  // elements per instruction step: kMapMaxInstr results x 1 KiB stay in L1

struct MapInstr {
  int32_t kind, op, a, b;
  float p0, p1;
};

// One chunk of one MAP instruction, kept out of map_row (noinline): with every sub-op's row
// function inlined, map_row was a 38 KB wasm function that V8's optimizing compiler took 0.4-1.3 s
// to compile, during which MAP ran in V8's baseline code (Liftoff). A call per 256-element chunk
// costs nothing, and V8 compiles each sub-op that runs on its own, in a few ms.
template <int OP>
__attribute__((noinline)) void map_unary(float* dst, ptrdiff_t ds, const float* pa, ptrdiff_t as, int32_t m, float p0, float p1) {
  unary_row<OP>(dst, ds, pa, as, m, p0, p1);
}
template <int OP>
__attribute__((noinline)) void map_binary(float* dst, ptrdiff_t ds, const float* pa, ptrdiff_t as, const float* pb, ptrdiff_t bs, int32_t m) {
  binary_row<OP>(dst, ds, pa, as, pb, bs, m);
}

// One MAP row: the chain runs chunk by chunk, each instruction over the whole chunk with the same
// row functions UNARY / BINARY use, so a fused chain gives the bits the separate kernels give.
void map_row(const MapInstr* prog, int n, const float* const* in, const ptrdiff_t* is, float* out,
             ptrdiff_t os, int32_t len) {
  alignas(16) float tmp[kMapMaxInstr - 1][kMapChunk];
  for (int32_t j0 = 0; j0 < len; j0 += kMapChunk) {
    const int32_t m = len - j0 < kMapChunk ? len - j0 : kMapChunk;
    auto reg = [&](int r, const MapInstr& ins, ptrdiff_t* stride) -> const float* {
      if (r == kMapImmediate) {
        *stride = 0;
        return &ins.p0;
      }
      if (r < kMapInputs) {
        *stride = is[r];
        return in[r] + (ptrdiff_t)j0 * is[r];
      }
      *stride = 1;
      return tmp[r - kMapInputs];
    };
    for (int i = 0; i < n; ++i) {
      const MapInstr& ins = prog[i];
      const bool last = i == n - 1;
      float* dst = last ? out + (ptrdiff_t)j0 * os : tmp[i];
      const ptrdiff_t ds = last ? os : 1;
      ptrdiff_t as, bs = 0;
      const float* pa = reg(ins.a, ins, &as);
      if (ins.kind == 0) {
        switch (ins.op) {
#define UNARY_OP(name, code) case UNARY_##name: map_unary<UNARY_##name>(dst, ds, pa, as, m, ins.p0, ins.p1); break;
#include "kernel_abi.def"
          default: __builtin_trap();  // an unknown sub-op: a damaged plan must not silently write nothing
        }
      } else {
        const float* pb = reg(ins.b, ins, &bs);
        switch (ins.op) {
#define BINARY_OP(name, code) case BINARY_##name: map_binary<BINARY_##name>(dst, ds, pa, as, pb, bs, m); break;
#include "kernel_abi.def"
          default: __builtin_trap();  // an unknown sub-op: a damaged plan must not silently write nothing
        }
      }
    }
  }
}

}  // namespace

void k_MAP(const MAP_args* a) {
  const int n = a->n_instr;
  if (n < 1 || n > kMapMaxInstr) __builtin_trap();
  MapInstr prog[kMapMaxInstr];
  double cost = 0.0;
  for (int i = 0; i < n; ++i) {
    const int32_t* w = a->prog + 6 * i;
    prog[i] = MapInstr{w[0], w[1], w[2], w[3], __builtin_bit_cast(float, w[4]), __builtin_bit_cast(float, w[5])};
    // An operand must be an input or an earlier result: anything else would read stale stack.
    const int limit = kMapInputs + i;
    auto bad = [&](int r) { return r != kMapImmediate && (r < 0 || r >= limit); };
    if (bad(prog[i].a) || (prog[i].kind == 1 && bad(prog[i].b))) __builtin_trap();
    cost += prog[i].kind == 0 ? unary_cost(prog[i].op) : 4.0;
  }
  const int32_t* strides[1 + kMapInputs] = {a->out_stride, a->in0_stride, a->in1_stride, a->in2_stride};
  const Space s = collapse(a->size, strides, 1 + kMapInputs);
  float* out = at<float>(a->out);
  const float* base[kMapInputs] = {at<float>(a->in0), at<float>(a->in1), at<float>(a->in2)};
  const int inner = s.nd - 1;
  ptrdiff_t is[kMapInputs];
  for (int k = 0; k < kMapInputs; ++k) is[k] = s.st[1 + k][inner];
  run_space(s, 1 + kMapInputs, cost, [&](const ptrdiff_t* off, int32_t len) {
    const float* in[kMapInputs] = {base[0] + off[1], base[1] + off[2], base[2] + off[3]};
    map_row(prog, n, in, is, out + off[0], s.st[0][inner], len);
  });
}

namespace {
template <int OP>
void activation_row(float* p, long n, float p0, float p1) {
  long j = 0;
  for (; j + 4 <= n; j += 4) wasm_v128_store(p + j, unary_v<OP>(wasm_v128_load(p + j), p0, p1));
  if (j < n) store_partial(p + j, 1, (int)(n - j), unary_v<OP>(load_partial(p + j, 1, (int)(n - j)), p0, p1));
}
}  // namespace

void activation_inplace(float* p, long n, int act, float p0, float p1) {
  if (act == UNARY_IDENTITY) return;
  switch (act) {
#define UNARY_OP(name, code) case UNARY_##name: activation_row<UNARY_##name>(p, n, p0, p1); break;
#include "kernel_abi.def"
    default: __builtin_trap();  // an unknown sub-op: a damaged plan must not silently write nothing
  }
}
