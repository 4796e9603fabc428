// The int8 kernels' rounding step (quant.cpp, quant_dynamic.cpp, quant_elementwise.cpp): round half
// to even and conversion to int32 in one float add. For a float v with |v| <= 2^22, v + 1.5 * 2^23
// has exponent 2^23, so its mantissa holds 2^22 + round(v) (the add rounds half to even, as eager's
// torch.round) and its bits are kMagicBits + round(v). It replaces f32x4.nearest + i32x4.trunc_sat
// (~8 x86 instructions with their NaN and overflow fix-ups). Callers clamp v first (to [qmin - zp,
// qmax - zp]: round is monotone, so clamping before rounding equals eager's clamp after it).
#pragma once
#include <stdint.h>
#include <string.h>
#include <wasm_simd128.h>

constexpr float kMagic = 12582912.0f;
constexpr int32_t kMagicBits = 0x4B400000;

// The constant round_plus_zp subtracts for zero point zp.
inline int32_t magic_minus_zp(int32_t zp) { return kMagicBits - zp; }

// round(v) + zp per lane, for lanes already clamped (|v| <= 2^22); magic_zp = magic_minus_zp(zp).
inline v128_t round_plus_zp(v128_t v, int32_t magic_zp) {
  return wasm_i32x4_sub(wasm_f32x4_add(v, wasm_f32x4_splat(kMagic)), wasm_i32x4_splat(magic_zp));
}

inline int32_t round_plus_zp(float v, int32_t magic_zp) {
  const float m = v + kMagic;
  int32_t bits;
  memcpy(&bits, &m, 4);
  return bits - magic_zp;
}
