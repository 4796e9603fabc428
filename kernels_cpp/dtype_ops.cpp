// The dtype-generic kernels: CAST (element type conversion), COMPARE (-> bool), WHERE (select by a
// bool mask), INDEX_SELECT (rows picked by int64/int32 indices), GATHER (torch.gather), and CUMSUM (float32).
//
// These move few bytes per element next to GEMM/conv, so they are plain scalar loops over the shared
// strided iterator (strided.h), templated on the element types so the inner loop has no switch;
// WHERE on float32 rows, the one on the attention path, gets a SIMD body.
#include <stdint.h>
#include <string.h>
#include <type_traits>
#include <wasm_simd128.h>
#include "abi.h"
#include "strided.h"
#include "threadpool.h"

namespace {

// An element type code -> its C++ type, for dispatch.
template <int DT> struct Elem;
template <> struct Elem<DT_F32> { typedef float T; };
template <> struct Elem<DT_F64> { typedef double T; };
template <> struct Elem<DT_I64> { typedef int64_t T; };
template <> struct Elem<DT_I32> { typedef int32_t T; };
template <> struct Elem<DT_I16> { typedef int16_t T; };
template <> struct Elem<DT_I8> { typedef int8_t T; };
template <> struct Elem<DT_U8> { typedef uint8_t T; };
template <> struct Elem<DT_BOOL> { typedef uint8_t T; };

// Float -> integer as eager on x86 (measured on torch 2.13): truncation toward zero through a
// 32-bit conversion for int32/int16/int8 (NaN and values outside int32 give INT32_MIN, what
// cvttss2si returns, then wrap to the target width) and through a 64-bit one for int64 and uint8
// (INT64_MIN outside int64, then wrap). The range checks also keep wasm's trapping truncation
// instructions from ever seeing an out-of-range value.
template <class To, class From>
inline To convert(From v) {
  return static_cast<To>(v);
}
template <class To>
inline To float_to_int64_then_wrap(double v) {
  if (!(v > -9223372036854775808.0 && v < 9223372036854775808.0)) return static_cast<To>(INT64_MIN);
  return static_cast<To>(static_cast<int64_t>(v));
}
template <class To>
inline To float_to_int32_then_wrap(double v) {
  if (!(v > -2147483649.0 && v < 2147483648.0)) return static_cast<To>(INT32_MIN);
  return static_cast<To>(static_cast<int32_t>(v));
}
#define FLOAT_TO_INT(To, via)                                                               \
  template <> inline To convert<To, float>(float v) { return float_to_##via##_then_wrap<To>(v); } \
  template <> inline To convert<To, double>(double v) { return float_to_##via##_then_wrap<To>(v); }
FLOAT_TO_INT(int64_t, int64)
FLOAT_TO_INT(int32_t, int32)
FLOAT_TO_INT(int16_t, int32)
FLOAT_TO_INT(int8_t, int32)
FLOAT_TO_INT(uint8_t, int64)
#undef FLOAT_TO_INT

template <int OUT, int IN>
void cast_space(const CAST_args* a) {
  typedef typename Elem<OUT>::T To;
  typedef typename Elem<IN>::T From;
  const int32_t* strides[2] = {a->out_stride, a->in_stride};
  const Space s = collapse(a->size, strides, 2);
  To* out = at<To>(a->out);
  const From* in = at<From>(a->in);
  const int inner = s.nd - 1;
  const ptrdiff_t os = s.st[0][inner], is = s.st[1][inner];
  run_space(s, 2, 2.0, [&](const ptrdiff_t* off, int32_t len) {
    To* o = out + off[0];
    const From* x = in + off[1];
    for (int32_t j = 0; j < len; ++j) {
      if (OUT == DT_BOOL) o[j * os] = x[j * is] != 0;
      else o[j * os] = convert<To, From>(x[j * is]);
    }
  });
}

template <int OUT>
void cast_from(const CAST_args* a) {
  switch (a->in_dtype) {
#define DTYPE(name, code) case DT_##name: cast_space<OUT, DT_##name>(a); break;
#include "kernel_abi.def"
    default: __builtin_trap();
  }
}

template <int OP, class T>
inline uint8_t compare(T x, T y) {
  switch (OP) {
    case CMP_EQ: return x == y;
    case CMP_NE: return x != y;
    case CMP_LT: return x < y;
    case CMP_LE: return x <= y;
    case CMP_GT: return x > y;
    case CMP_GE: return x >= y;
    case CMP_AND: return (x != 0) & (y != 0);
    case CMP_OR: return (x != 0) | (y != 0);
    case CMP_XOR: return (x != 0) ^ (y != 0);
    default: return 0;
  }
}

template <int OP, int DT>
void compare_space(const COMPARE_args* a) {
  typedef typename Elem<DT>::T T;
  const int32_t* strides[3] = {a->out_stride, a->a_stride, a->b_stride};
  const Space s = collapse(a->size, strides, 3);
  uint8_t* out = at<uint8_t>(a->out);
  const T* pa = at<T>(a->a);
  const T* pb = at<T>(a->b);
  const int inner = s.nd - 1;
  const ptrdiff_t os = s.st[0][inner], as = s.st[1][inner], bs = s.st[2][inner];
  run_space(s, 3, 2.0, [&](const ptrdiff_t* off, int32_t len) {
    uint8_t* o = out + off[0];
    const T* x = pa + off[1];
    const T* y = pb + off[2];
    for (int32_t j = 0; j < len; ++j) o[j * os] = compare<OP, T>(x[j * as], y[j * bs]);
  });
}

template <int OP>
void compare_dtype(const COMPARE_args* a) {
  switch (a->dtype) {
#define DTYPE(name, code) case DT_##name: compare_space<OP, DT_##name>(a); break;
#include "kernel_abi.def"
    default: __builtin_trap();
  }
}

template <class T>
void where_space(const WHERE_args* w) {
  const int32_t* strides[4] = {w->out_stride, w->cond_stride, w->a_stride, w->b_stride};
  const Space s = collapse(w->size, strides, 4);
  T* out = at<T>(w->out);
  const uint8_t* cond = at<uint8_t>(w->cond);
  const T* pa = at<T>(w->a);
  const T* pb = at<T>(w->b);
  const int inner = s.nd - 1;
  const ptrdiff_t os = s.st[0][inner], cs = s.st[1][inner], as = s.st[2][inner], bs = s.st[3][inner];
  run_space(s, 4, 2.0, [&](const ptrdiff_t* off, int32_t len) {
    T* o = out + off[0];
    const uint8_t* c = cond + off[1];
    const T* x = pa + off[2];
    const T* y = pb + off[3];
    int32_t j = 0;
    if (sizeof(T) == 4 && os == 1 && cs == 1 && (as == 1 || as == 0) && (bs == 1 || bs == 0)) {
      // 4 bool bytes -> 4 lane masks (0 or -1), then a bitwise select.
      const v128_t zero = wasm_i32x4_splat(0);
      for (; j + 4 <= len; j += 4) {
        uint32_t c4;
        memcpy(&c4, c + j, 4);
        const v128_t m = wasm_i32x4_ne(wasm_u32x4_extend_low_u16x8(wasm_u16x8_extend_low_u8x16(
            wasm_i32x4_splat((int32_t)c4))), zero);
        const v128_t vx = as ? wasm_v128_load(x + j) : wasm_v128_load32_splat(x);
        const v128_t vy = bs ? wasm_v128_load(y + j) : wasm_v128_load32_splat(y);
        wasm_v128_store(o + j, wasm_v128_bitselect(vx, vy, m));
      }
    }
    for (; j < len; ++j) o[j * os] = c[j * cs] ? x[j * as] : y[j * bs];
  });
}

}  // namespace

void k_CAST(const CAST_args* a) {
  switch (a->out_dtype) {
#define DTYPE(name, code) case DT_##name: cast_from<DT_##name>(a); break;
#include "kernel_abi.def"
    default: __builtin_trap();
  }
}

void k_COMPARE(const COMPARE_args* a) {
  switch (a->op) {
    case CMP_EQ: compare_dtype<CMP_EQ>(a); break;
    case CMP_NE: compare_dtype<CMP_NE>(a); break;
    case CMP_LT: compare_dtype<CMP_LT>(a); break;
    case CMP_LE: compare_dtype<CMP_LE>(a); break;
    case CMP_GT: compare_dtype<CMP_GT>(a); break;
    case CMP_GE: compare_dtype<CMP_GE>(a); break;
    case CMP_AND: compare_dtype<CMP_AND>(a); break;
    case CMP_OR: compare_dtype<CMP_OR>(a); break;
    case CMP_XOR: compare_dtype<CMP_XOR>(a); break;
    default: __builtin_trap();
  }
}

void k_WHERE(const WHERE_args* a) {
  switch (a->elem_size) {
    case 1: where_space<uint8_t>(a); break;
    case 2: where_space<uint16_t>(a); break;
    case 4: where_space<uint32_t>(a); break;
    case 8: where_space<uint64_t>(a); break;
    default: __builtin_trap();
  }
}

void k_INDEX_SELECT(const INDEX_SELECT_args* a) {
  const int64_t n_idx = a->n_idx, dim = a->src_dim;
  if (n_idx == 0 || a->outer == 0) return;
  // Validate every index first, on the calling thread: a bad one is reported as an input error
  // before anything is written (the host raises eager's IndexError), never inside a worker.
  const int64_t* i64 = at<int64_t>(a->idx);
  const int32_t* i32 = at<int32_t>(a->idx);
  const bool wide = a->idx_dtype == DT_I64;
  if (!wide && a->idx_dtype != DT_I32) __builtin_trap();
  const int64_t lowest = a->negative ? -dim : 0;
  for (int64_t i = 0; i < n_idx; ++i) {
    const int64_t v = wide ? i64[i] : i32[i];
    if (v < lowest || v >= dim) {
      input_error();
      return;
    }
  }
  const size_t row = (size_t)a->inner * a->elem_size;
  const uint8_t* in = at<uint8_t>(a->in);
  uint8_t* out = at<uint8_t>(a->out);
  const int64_t rows = (int64_t)a->outer * n_idx;
  auto copy_rows = [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t o = r / n_idx, i = r - o * n_idx;
      int64_t v = wide ? i64[i] : i32[i];
      if (v < 0) v += dim;
      memcpy(out + (size_t)r * row, in + ((size_t)o * dim + v) * row, row);
    }
  };
  parallel_rows(rows, (double)rows * row, copy_rows);
}

void k_INDEX_ND(const INDEX_ND_args* a) {
  const int nd = a->n_dims;
  if (nd < 1 || nd > 4) __builtin_trap();
  const int64_t n_idx = a->n_idx;
  if (n_idx == 0 || a->outer == 0) return;
  const int64_t* idx[4] = {at<int64_t>(a->idx0), at<int64_t>(a->idx1), at<int64_t>(a->idx2), at<int64_t>(a->idx3)};
  int64_t stride[4], span = 1;
  for (int k = nd - 1; k >= 0; --k) {
    stride[k] = span;
    span *= a->src_size[k];
  }
  for (int k = 0; k < nd; ++k)  // validate first, on the calling thread (see INDEX_SELECT)
    for (int64_t j = 0; j < n_idx; ++j)
      if (idx[k][j] < -a->src_size[k] || idx[k][j] >= a->src_size[k]) {
        input_error();
        return;
      }
  const size_t row = (size_t)a->inner * a->elem_size;
  const uint8_t* in = at<uint8_t>(a->in);
  uint8_t* out = at<uint8_t>(a->out);
  for (int64_t o = 0; o < a->outer; ++o) {
    for (int64_t j = 0; j < n_idx; ++j) {
      int64_t flat = 0;
      for (int k = 0; k < nd; ++k) {
        int64_t v = idx[k][j];
        if (v < 0) v += a->src_size[k];
        flat += v * stride[k];
      }
      memcpy(out + (size_t)(o * n_idx + j) * row, in + (size_t)(o * span + flat) * row, row);
    }
  }
}

void k_CUMSUM(const CUMSUM_args* a) {
  const int64_t outer = a->outer, dim = a->dim, inner = a->inner;
  const float* in = at<float>(a->in);
  float* out = at<float>(a->out);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      double acc = 0.0;  // eager's CPU cumsum accumulates float in double
      const float* x = in + o * dim * inner + i;
      float* y = out + o * dim * inner + i;
      for (int64_t d = 0; d < dim; ++d) {
        acc += x[d * inner];
        y[d * inner] = (float)acc;
      }
    }
  }
}

namespace {

template <int OP, class T>
inline T int_op(T x, T y) {
  typedef typename std::make_unsigned<T>::type U;
  switch (OP) {
    case BINARY_ADD: return (T)((U)x + (U)y);
    case BINARY_SUB: return (T)((U)x - (U)y);
    case BINARY_MUL: return (T)((U)x * (U)y);
    case BINARY_MAXIMUM: return x > y ? x : y;
    case BINARY_MINIMUM: return x < y ? x : y;
    default: return 0;
  }
}

template <int OP, int DT>
void int_binary_space(const INT_BINARY_args* a) {
  typedef typename Elem<DT>::T T;
  const int32_t* strides[3] = {a->out_stride, a->a_stride, a->b_stride};
  const Space s = collapse(a->size, strides, 3);
  T* out = at<T>(a->out);
  const T* pa = at<T>(a->a);
  const T* pb = at<T>(a->b);
  const int inner = s.nd - 1;
  const ptrdiff_t os = s.st[0][inner], as = s.st[1][inner], bs = s.st[2][inner];
  run_space(s, 3, 2.0, [&](const ptrdiff_t* off, int32_t len) {
    T* o = out + off[0];
    const T* x = pa + off[1];
    const T* y = pb + off[2];
    for (int32_t j = 0; j < len; ++j) o[j * os] = int_op<OP, T>(x[j * as], y[j * bs]);
  });
}

template <int OP>
void int_binary_dtype(const INT_BINARY_args* a) {
  switch (a->dtype) {
    case DT_I64: int_binary_space<OP, DT_I64>(a); break;
    case DT_I32: int_binary_space<OP, DT_I32>(a); break;
    case DT_I16: int_binary_space<OP, DT_I16>(a); break;
    case DT_I8: int_binary_space<OP, DT_I8>(a); break;
    case DT_U8: int_binary_space<OP, DT_U8>(a); break;
    default: __builtin_trap();
  }
}

template <class T>
inline bool arg_better(int op, T v, T best) {
  if (op == REDUCE_AMAX) return v > best;
  return v < best;
}
template <>
inline bool arg_better<float>(int op, float v, float best) {
  if (best != best) return false;  // a NaN already won
  if (v != v) return true;
  return op == REDUCE_AMAX ? v > best : v < best;
}

template <class T>
void arg_reduce(const ARG_REDUCE_args* a) {
  const T* in = at<T>(a->in);
  int64_t* out = at<int64_t>(a->out);
  const int64_t red = a->red, inner = a->inner;
  for (int64_t o = 0; o < a->outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const T* x = in + o * red * inner + i;
      T best = x[0];
      int64_t best_j = 0;
      for (int64_t j = 1; j < red; ++j) {
        if (arg_better<T>(a->op, x[j * inner], best)) {
          best = x[j * inner];
          best_j = j;
        }
      }
      out[o * inner + i] = best_j;
    }
  }
}

}  // namespace

void k_INT_BINARY(const INT_BINARY_args* a) {
  switch (a->op) {
    case BINARY_ADD: int_binary_dtype<BINARY_ADD>(a); break;
    case BINARY_SUB: int_binary_dtype<BINARY_SUB>(a); break;
    case BINARY_MUL: int_binary_dtype<BINARY_MUL>(a); break;
    case BINARY_MAXIMUM: int_binary_dtype<BINARY_MAXIMUM>(a); break;
    case BINARY_MINIMUM: int_binary_dtype<BINARY_MINIMUM>(a); break;
    default: __builtin_trap();
  }
}

void k_INT_REDUCE(const INT_REDUCE_args* a) {
  const int64_t* in = at<int64_t>(a->in);
  int64_t* out = at<int64_t>(a->out);
  const int64_t red = a->red, inner = a->inner;
  if (a->op != REDUCE_SUM && a->op != REDUCE_AMAX && a->op != REDUCE_AMIN) __builtin_trap();
  for (int64_t o = 0; o < a->outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const int64_t* x = in + o * red * inner + i;
      int64_t acc = a->op == REDUCE_SUM ? 0 : (red ? x[0] : 0);
      for (int64_t j = 0; j < red; ++j) {
        const int64_t v = x[j * inner];
        if (a->op == REDUCE_SUM) acc = (int64_t)((uint64_t)acc + (uint64_t)v);
        else if (a->op == REDUCE_AMAX) acc = v > acc ? v : acc;
        else acc = v < acc ? v : acc;
        if (a->cumulative) out[(o * red + j) * inner + i] = acc;
      }
      if (!a->cumulative) out[o * inner + i] = acc;
    }
  }
}

void k_ARG_REDUCE(const ARG_REDUCE_args* a) {
  if (a->red <= 0) __builtin_trap();  // eager raises on an empty reduction
  if (a->dtype == DT_F32) arg_reduce<float>(a);
  else if (a->dtype == DT_I64) arg_reduce<int64_t>(a);
  else __builtin_trap();
}

namespace {

// GATHER's bounds check, in one place: every index must lie in [0, src_dim) (torch.gather takes no
// negative indices). Run on the calling thread before anything is written; a bad index is the
// caller's input error, as INDEX_SELECT's are (run_plan returns it; the host raises eager's error).
template <class I>
bool gather_indices_in_range(const I* idx, int64_t n, int64_t src_dim) {
  for (int64_t i = 0; i < n; ++i)
    if (idx[i] < 0 || idx[i] >= src_dim) return false;
  return true;
}

template <class I, size_t ELEM>
void gather_rows(const GATHER_args* a, const I* idx, int64_t lo, int64_t hi) {
  const int64_t inner = a->inner, n_idx = a->n_idx, dim = a->src_dim;
  const uint8_t* in = at<uint8_t>(a->in);
  uint8_t* out = at<uint8_t>(a->out);
  for (int64_t row = lo; row < hi; ++row) {  // row = o * n_idx + j
    const int64_t o = row / n_idx;
    const I* ir = idx + row * inner;
    uint8_t* orow = out + (size_t)(row * inner) * ELEM;
    const uint8_t* base = in + (size_t)(o * dim * inner) * ELEM;
    for (int64_t r = 0; r < inner; ++r)
      memcpy(orow + (size_t)r * ELEM, base + (size_t)((int64_t)ir[r] * inner + r) * ELEM, ELEM);
  }
}

template <class I>
void gather(const GATHER_args* a) {
  const I* idx = at<I>(a->idx);
  const int64_t rows = (int64_t)a->outer * a->n_idx;
  if (!gather_indices_in_range(idx, rows * a->inner, a->src_dim)) {
    input_error();
    return;
  }
  auto run = [&](int64_t lo, int64_t hi) {
    switch (a->elem_size) {
      case 1: gather_rows<I, 1>(a, idx, lo, hi); break;
      case 2: gather_rows<I, 2>(a, idx, lo, hi); break;
      case 4: gather_rows<I, 4>(a, idx, lo, hi); break;
      case 8: gather_rows<I, 8>(a, idx, lo, hi); break;
      default: __builtin_trap();
    }
  };
  parallel_rows(rows, (double)rows * a->inner * 4, run);
}

}  // namespace

void k_GATHER(const GATHER_args* a) {
  if (a->outer == 0 || a->n_idx == 0 || a->inner == 0) return;
  if (a->idx_dtype == DT_I64) gather<int64_t>(a);
  else if (a->idx_dtype == DT_I32) gather<int32_t>(a);
  else __builtin_trap();
}
