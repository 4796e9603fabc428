// The UNARY_OP functions as inline f32x4 code, shared by k_UNARY and by the fused activation
// epilogues of GEMM / CONV2D / CHANNEL_AFFINE, so a fused activation gives exactly the same bits
// as a separate UNARY op would.
#pragma once
#include <wasm_simd128.h>
#include "abi.h"
#include "simd_math.h"

// Compile-time op so hot loops are specialised. NaN handling follows PyTorch: relu/clamp keep a NaN
// input, done with pmin/pmax with x as the first operand (they return it when it is NaN).
template <int OP>
static inline v128_t unary_v(v128_t x, float p0, float p1) {
  using namespace simd_math;
  switch (OP) {
    case UNARY_IDENTITY: return x;
    case UNARY_RELU:
      // pmax(x, 0) = x < 0 ? 0 : x keeps a NaN x (torch: relu(nan) = nan) in one x86 instruction.
      return wasm_f32x4_pmax(x, wasm_f32x4_splat(0.0f));
    case UNARY_GELU_ERF: {
      const v128_t e = erf_v(wasm_f32x4_mul(x, splat(0.70710678118654752f)));
      return wasm_f32x4_mul(wasm_f32x4_mul(x, splat(0.5f)), wasm_f32x4_add(splat(1.0f), e));
    }
    case UNARY_GELU_TANH: {
      const v128_t x3 = wasm_f32x4_mul(wasm_f32x4_mul(x, x), x);
      const v128_t inner = wasm_f32x4_mul(splat(0.79788456080286536f),
                                          wasm_f32x4_add(x, wasm_f32x4_mul(splat(0.044715f), x3)));
      return wasm_f32x4_mul(wasm_f32x4_mul(x, splat(0.5f)), wasm_f32x4_add(splat(1.0f), tanh_v(inner)));
    }
    case UNARY_SILU:
      return wasm_f32x4_div(x, wasm_f32x4_add(splat(1.0f), exp_sat_v(wasm_f32x4_neg(x))));
    case UNARY_SIGMOID: return sigmoid_v(x);
    case UNARY_TANH: return tanh_v(x);
    case UNARY_EXP: return exp_v(x);
    case UNARY_NEG: return wasm_f32x4_neg(x);
    case UNARY_SQRT: return wasm_f32x4_sqrt(x);
    case UNARY_RSQRT: return wasm_f32x4_div(splat(1.0f), wasm_f32x4_sqrt(x));
    case UNARY_CLAMP:
      return wasm_f32x4_pmin(wasm_f32x4_pmax(x, wasm_f32x4_splat(p0)), wasm_f32x4_splat(p1));
    case UNARY_AFFINE:
      return wasm_f32x4_add(wasm_f32x4_mul(x, wasm_f32x4_splat(p0)), wasm_f32x4_splat(p1));
    case UNARY_HARDSWISH:  // eager: x * min(max(x + 3, 0), 6) / 6, in this order
      return wasm_f32x4_div(wasm_f32x4_mul(x, clamp_keep_nan(wasm_f32x4_add(x, splat(3.0f)), 0.0f, 6.0f)),
                            splat(6.0f));
    case UNARY_HARDSIGMOID:
      return wasm_f32x4_div(clamp_keep_nan(wasm_f32x4_add(x, splat(3.0f)), 0.0f, 6.0f), splat(6.0f));
    case UNARY_ABS: return wasm_f32x4_abs(x);
    case UNARY_LOG: return log_v(x);
    case UNARY_RECIPROCAL: return wasm_f32x4_div(splat(1.0f), x);
    case UNARY_ERF: return erf_v(x);
    case UNARY_POW: return pow_v(x, p0);
    case UNARY_FLOOR: return wasm_f32x4_floor(x);
    case UNARY_CEIL: return wasm_f32x4_ceil(x);
    case UNARY_TRUNC: return wasm_f32x4_trunc(x);
    case UNARY_ROUND: return wasm_f32x4_nearest(x);
    case UNARY_LEAKY_RELU:  // NaN > 0 is false: NaN * slope stays NaN
      return wasm_v128_bitselect(x, wasm_f32x4_mul(x, splat(p0)), wasm_f32x4_gt(x, splat(0.0f)));
    case UNARY_SIN: return sincos_v<false>(x);
    case UNARY_COS: return sincos_v<true>(x);
    default: return x;
  }
}

template <int OP>
static inline float unary_s(float x, float p0, float p1) {
  return wasm_f32x4_extract_lane(unary_v<OP>(wasm_f32x4_splat(x), p0, p1), 0);
}

// Runtime-op activation for epilogues (O(outputs) work, so the switch per vector is cheap next to
// the O(k) work that produced each output). An unknown op traps (a damaged plan).
static inline v128_t apply_activation(v128_t v, int act, float p0, float p1) {
  switch (act) {
#define UNARY_OP(name, code) case UNARY_##name: return unary_v<UNARY_##name>(v, p0, p1);
#include "kernel_abi.def"
    default: __builtin_trap();
  }
}

static inline float apply_activation_s(float x, int act, float p0, float p1) {
  return wasm_f32x4_extract_lane(apply_activation(wasm_f32x4_splat(x), act, p0, p1), 0);
}

// The activation of an output vector in a kernel specialised for activation ACT: compiled in for
// the ones CNNs fuse into convs (ACT >= 0), apply_activation's switch otherwise (ACT = -1); both
// give unary_v's bits, as a separate UNARY op would.
template <int ACT>
inline v128_t fused_act(v128_t v, int act, float p0, float p1) {
  if constexpr (ACT >= 0) return unary_v<ACT>(v, p0, p1);
  else return apply_activation(v, act, p0, p1);
}

// Kernel<ACT>::fn for the activations CNNs fuse into convs, Kernel<-1>::fn (fused_act's runtime
// switch) for any other: picks a conv kernel specialised for the record's activation.
template <template <int> class Kernel>
inline auto for_fused_act(int act) {
  switch (act) {
    case UNARY_IDENTITY: return Kernel<UNARY_IDENTITY>::fn;
    case UNARY_RELU: return Kernel<UNARY_RELU>::fn;
    case UNARY_CLAMP: return Kernel<UNARY_CLAMP>::fn;  // ReLU6
    case UNARY_HARDSWISH: return Kernel<UNARY_HARDSWISH>::fn;  // MobileNetV3
    case UNARY_SILU: return Kernel<UNARY_SILU>::fn;  // EfficientNet
    default: return Kernel<-1>::fn;
  }
}

// Applies `act` in place to n contiguous floats (tail through a padded vector so tails match).
void activation_inplace(float* p, long n, int act, float p0, float p1);
