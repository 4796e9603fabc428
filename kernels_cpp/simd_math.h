// Vectorized transcendental functions on f32x4 (exp, tanh, erf, sigmoid) shared by the
// elementwise, softmax and epilogue code, plus scalar twins.
//
// The scalar twins run the vector code on a splatted value and take lane 0, so a tensor's tail
// elements (and the strided/scalar paths) get bit-identical results to the SIMD body: the result of
// an op never depends on where in a tensor an element sits.
//
// Max error measured against float64 references (dense sweeps: exp over [-110, 90], the others over
// [-20, 20] plus [-1e-3, 1e-3]; script in the kernel report):
//   exp_v:     0.99 ulp (rel 8e-8) over the normal range, < 1 denormal ulp below it (Cephes
//              polynomial, Cody-Waite reduction); +inf above 88.72, 0 below about -103.9, NaN -> NaN.
//   tanh_v:    abs 7.7e-8, 1.3 ulp (odd polynomial for |x| < 0.625 keeps small inputs accurate in
//              relative terms; 1 - 2/(exp(2|x|)+1) above, saturating to exactly +-1).
//   erf_v:     abs 4.2e-7, 7 ulp (rational approximation on [-4, 4] as in Eigen; +-1 outside).
//   sigmoid_v: abs 8.9e-8, 2.5 ulp (1 / (1 + exp(-x)); exactly 0 / 1 in the far tails).
//   (sigmoid, silu and tanh take exp_sat_v: exp_v's bits wherever they can differ in the result)
//   sincos_v:  1.52 ulp over [-5.2e5, 5.2e5] (1.0 ulp at multiples of pi/2), 1.14 ulp beyond.
// The polynomials are mul+add in both kernel builds (the accuracy figures above are for that);
// only the multiply-accumulate loops of GEMM and convolution use madd below.
#pragma once
#include <wasm_simd128.h>
#include <stdint.h>

namespace simd_math {

static inline v128_t splat(float x) { return wasm_f32x4_splat(x); }

// a * b + c. The relaxed-SIMD kernel build (-mrelaxed-simd) emits f32x4.relaxed_madd, which an
// engine may run as one fused multiply-add (one rounding: results differ from mul+add in the last
// bit) or as mul+add; the baseline build runs mul then add.
static inline v128_t madd(v128_t a, v128_t b, v128_t c) {
#ifdef __wasm_relaxed_simd__
  return wasm_f32x4_relaxed_madd(a, b, c);
#else
  return wasm_f32x4_add(wasm_f32x4_mul(a, b), c);
#endif
}

// min(max(x, lo), hi), NaN in x stays NaN: pmax(a, b) = a < b ? b : a keeps a when a is NaN.
static inline v128_t clamp_keep_nan(v128_t x, float lo, float hi) {
  return wasm_f32x4_pmin(wasm_f32x4_pmax(x, splat(lo)), splat(hi));
}

// Multiplies by 2^n for integer lanes n in [-150, 129] without the exponent field overflowing:
// the scale is split into two factors that are each representable, so results that round to
// denormals or to infinity do so once, at the final multiply.
static inline v128_t ldexp_v(v128_t p, v128_t n) {
  const v128_t n1 = wasm_i32x4_shr(n, 1);
  const v128_t n2 = wasm_i32x4_sub(n, n1);
  const v128_t bias = wasm_i32x4_splat(127);
  const v128_t s1 = wasm_i32x4_shl(wasm_i32x4_add(n1, bias), 23);
  const v128_t s2 = wasm_i32x4_shl(wasm_i32x4_add(n2, bias), 23);
  return wasm_f32x4_mul(wasm_f32x4_mul(p, s1), s2);
}

// e^(x - n ln2) for n = round(x / ln2), so |x - n ln2| <= ln(2)/2 + a little: Cody-Waite reduction
// (ln2 split so n * ln2_hi is exact for |n| < 2^8), then Cephes expf's polynomial 1 + r + r^2 P(r).
static inline v128_t exp_remainder(v128_t x, v128_t n) {
  v128_t r = wasm_f32x4_sub(x, wasm_f32x4_mul(n, splat(0.693359375f)));
  r = wasm_f32x4_sub(r, wasm_f32x4_mul(n, splat(-2.12194440e-4f)));
  const v128_t r2 = wasm_f32x4_mul(r, r);
  v128_t p = splat(1.9875691500E-4f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), splat(1.3981999507E-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), splat(8.3334519073E-3f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), splat(4.1665795894E-2f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), splat(1.6666665459E-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), splat(5.0000001201E-1f));
  return wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_mul(p, r2), r), splat(1.0f));
}

static inline v128_t exp_v(v128_t x) {
  // The clamp bounds n so ldexp_v gets overflow (exp(89) = inf) and underflow (exp(-104) = 0)
  // right. pmin/pmax with x first return x when it is NaN, and cost one instruction on x86, where
  // the NaN-propagating f32x4.min/max expand to a long sequence.
  x = clamp_keep_nan(x, -104.0f, 89.0f);
  const v128_t n = wasm_f32x4_nearest(wasm_f32x4_mul(x, splat(1.44269504088896341f)));
  // NaN lanes convert to 0 here; the polynomial is already NaN so the result stays NaN.
  return ldexp_v(exp_remainder(x, n), wasm_i32x4_trunc_sat_f32x4(n));
}

// exp_v for callers that only add its result to 1 or more (sigmoid, silu, tanh): bit-identical to
// exp_v for x in [-87.68, 88.38]; inf above (also for x in (88.38, 88.72], where e^x < FLT_MAX:
// a quotient by 1 + e^x there is below 1e-36 in these callers, so 0 is as good); below -87.68 it
// returns e^-87.68 (~1e-38, and 1 + it rounds to 1 like 1 + e^x does). That range lets the
// scale 2^n be built with one shift from the rounding add (no nearest, no float->int conversion,
// which V8 expands to ~8 instructions on x86) and applied with one multiply (no two-factor ldexp).
static inline v128_t exp_sat_v(v128_t x) {
  x = clamp_keep_nan(x, -87.68f, 88.72f);
  // 1.5 * 2^23 + 127: adding it rounds x * log2(e) to the nearest integer n (ties to even, as
  // f32x4.nearest) and leaves n + 127, in [1, 255] here, in the low mantissa bits; shifted into the
  // exponent field that is 2^n (n = 128 gives inf). A NaN x shifts to 0, and NaN * 0 stays NaN.
  const v128_t magic = splat(12583039.0f);
  const v128_t nb = wasm_f32x4_add(wasm_f32x4_mul(x, splat(1.44269504088896341f)), magic);
  const v128_t scale = wasm_i32x4_shl(nb, 23);
  const v128_t n = wasm_f32x4_sub(nb, magic);
  return wasm_f32x4_mul(exp_remainder(x, n), scale);  // (the same reduction and polynomial as exp_v)
}

static inline v128_t sigmoid_v(v128_t x) {
  // exp(-x) = inf for very negative x gives 1/inf = 0, the right limit.
  return wasm_f32x4_div(splat(1.0f), wasm_f32x4_add(splat(1.0f), exp_sat_v(wasm_f32x4_neg(x))));
}

static inline v128_t tanh_v(v128_t x) {
  const v128_t sign = wasm_v128_and(x, wasm_i32x4_splat(INT32_MIN));
  const v128_t ax = wasm_f32x4_abs(x);
  // Large |x|: 1 - 2/(e^{2|x|} + 1); e^{2|x|} = inf saturates to exactly 1.
  const v128_t e = exp_sat_v(wasm_f32x4_add(ax, ax));
  const v128_t big = wasm_f32x4_sub(splat(1.0f), wasm_f32x4_div(splat(2.0f), wasm_f32x4_add(e, splat(1.0f))));
  // Small |x|: the formula above cancels catastrophically, so use the Cephes odd polynomial.
  const v128_t z = wasm_f32x4_mul(ax, ax);
  v128_t p = splat(-5.70498872745E-3f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, z), splat(2.06390887954E-2f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, z), splat(-5.37397155531E-2f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, z), splat(1.33314422036E-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, z), splat(-3.33332819422E-1f));
  const v128_t small = wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_mul(p, z), ax), ax);
  // NaN compares false -> takes `big`, which is NaN too.
  const v128_t use_small = wasm_f32x4_lt(ax, splat(0.625f));
  return wasm_v128_or(wasm_v128_bitselect(small, big, use_small), sign);
}

static inline v128_t erf_v(v128_t x) {
  // Rational minimax approximation (as in Eigen/TensorFlow); erf rounds to +-1 in float beyond 4.
  x = clamp_keep_nan(x, -4.0f, 4.0f);
  const v128_t x2 = wasm_f32x4_mul(x, x);
  v128_t p = splat(-2.72614225801306e-10f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, x2), splat(2.77068142495902e-08f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, x2), splat(-2.10102402082508e-06f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, x2), splat(-5.69250639462346e-05f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, x2), splat(-7.34990630326855e-04f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, x2), splat(-2.95459980854025e-03f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, x2), splat(-1.60960333262415e-02f));
  p = wasm_f32x4_mul(p, x);
  v128_t q = splat(-1.45660718464996e-05f);
  q = wasm_f32x4_add(wasm_f32x4_mul(q, x2), splat(-2.13374055278905e-04f));
  q = wasm_f32x4_add(wasm_f32x4_mul(q, x2), splat(-1.68282697438203e-03f));
  q = wasm_f32x4_add(wasm_f32x4_mul(q, x2), splat(-7.37332916720468e-03f));
  q = wasm_f32x4_add(wasm_f32x4_mul(q, x2), splat(-1.42647390514189e-02f));
  return wasm_f32x4_div(p, q);
}

// Natural log (Cephes logf: x = m 2^e with m in [sqrt(1/2), sqrt(2)), degree-8 polynomial in m-1,
// ln2 split in two so e*ln2 adds exactly). Denormals are scaled by 2^23 first. log(0) = -inf,
// log(x < 0) = NaN, log(inf) = inf, NaN -> NaN. About 1 ulp on normal inputs.
static inline v128_t log_v(v128_t x) {
  const v128_t tiny = wasm_f32x4_lt(x, splat(1.17549435e-38f));  // denormal, zero or negative
  const v128_t xs = wasm_v128_bitselect(wasm_f32x4_mul(x, splat(8388608.0f)), x, tiny);
  v128_t e = wasm_i32x4_sub(wasm_u32x4_shr(xs, 23), wasm_i32x4_splat(126));
  e = wasm_i32x4_sub(e, wasm_v128_and(tiny, wasm_i32x4_splat(23)));
  // m in [0.5, 1)
  v128_t m = wasm_v128_or(wasm_v128_and(xs, wasm_i32x4_splat(0x007fffff)), wasm_i32x4_splat(0x3f000000));
  const v128_t small = wasm_f32x4_lt(m, splat(0.707106781186547524f));
  // m < sqrt(1/2): f = 2m - 1 and e -= 1; else f = m - 1.
  const v128_t f = wasm_f32x4_sub(wasm_f32x4_add(m, wasm_v128_and(small, m)), splat(1.0f));
  e = wasm_i32x4_add(e, small);  // small lanes are all-ones = -1
  const v128_t ef = wasm_f32x4_convert_i32x4(e);
  const v128_t z = wasm_f32x4_mul(f, f);
  v128_t p = splat(7.0376836292E-2f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), splat(-1.1514610310E-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), splat(1.1676998740E-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), splat(-1.2420140846E-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), splat(1.4249322787E-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), splat(-1.6668057665E-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), splat(2.0000714765E-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), splat(-2.4999993993E-1f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, f), splat(3.3333331174E-1f));
  v128_t y = wasm_f32x4_mul(wasm_f32x4_mul(p, f), z);
  y = wasm_f32x4_add(y, wasm_f32x4_mul(ef, splat(-2.12194440e-4f)));
  y = wasm_f32x4_sub(y, wasm_f32x4_mul(z, splat(0.5f)));
  v128_t r = wasm_f32x4_add(wasm_f32x4_add(f, y), wasm_f32x4_mul(ef, splat(0.693359375f)));
  // Special values: x == 0 -> -inf, x < 0 or NaN -> NaN, x == inf -> inf.
  r = wasm_v128_bitselect(splat(-__builtin_inff()), r, wasm_f32x4_eq(x, splat(0.0f)));
  r = wasm_v128_bitselect(splat(__builtin_inff()), r, wasm_f32x4_eq(x, splat(__builtin_inff())));
  const v128_t bad = wasm_v128_or(wasm_f32x4_lt(x, splat(0.0f)), wasm_f32x4_ne(x, x));
  return wasm_v128_bitselect(splat(__builtin_nanf("")), r, bad);
}

// x ** p for a scalar exponent p not handled exactly by the caller (0, 1, 2, 3, 0.5, -0.5, -1, -2
// are special-cased in lowering like eager does): exp(p log|x|), negated for negative x and odd
// integer p; NaN for negative x and non-integer p.
static inline v128_t pow_v(v128_t x, float p) {
  const v128_t ax = wasm_f32x4_abs(x);
  v128_t r = exp_v(wasm_f32x4_mul(splat(p), log_v(ax)));
  const float pi = __builtin_truncf(p);
  const bool p_int = pi == p;
  const bool p_odd = p_int && __builtin_fabsf(p) < 16777216.0f && ((long long)pi & 1);
  // negative finite x: NaN (pow(-inf, p) = pow(inf, p), as C's pow)
  const v128_t neg = wasm_v128_and(wasm_f32x4_lt(x, splat(0.0f)), wasm_f32x4_ne(x, splat(-__builtin_inff())));
  if (!p_int) return wasm_v128_bitselect(splat(__builtin_nanf("")), r, neg);
  // odd power: the sign of x (r >= 0 here, so OR-ing the sign bit in negates it; -0 ** 3 = -0)
  if (p_odd) r = wasm_v128_or(r, wasm_v128_and(x, wasm_i32x4_splat(INT32_MIN)));
  return r;
}

// x ** y lane by lane (tensor exponents), following C's pow on the special cases: y == 0 or x == 1
// give 1 (even for NaN), (-1) ** +-inf = 1, negative finite x with non-integer y is NaN, odd
// integer y keeps the sign of x. Same accuracy as pow_v.
static inline v128_t pow_vv(v128_t x, v128_t y) {
  const v128_t ax = wasm_f32x4_abs(x);
  v128_t r = exp_v(wasm_f32x4_mul(y, log_v(ax)));
  const v128_t y_int = wasm_f32x4_eq(wasm_f32x4_trunc(y), y);
  const v128_t small = wasm_f32x4_lt(wasm_f32x4_abs(y), splat(16777216.0f));
  const v128_t odd_bit = wasm_v128_and(wasm_i32x4_trunc_sat_f32x4(y), wasm_i32x4_splat(1));
  const v128_t y_odd = wasm_v128_and(wasm_v128_and(y_int, small), wasm_i32x4_eq(odd_bit, wasm_i32x4_splat(1)));
  r = wasm_v128_bitselect(wasm_v128_or(r, wasm_v128_and(x, wasm_i32x4_splat(INT32_MIN))), r, y_odd);
  const v128_t neg_finite = wasm_v128_and(wasm_f32x4_lt(x, splat(0.0f)), wasm_f32x4_ne(x, splat(-__builtin_inff())));
  r = wasm_v128_bitselect(splat(__builtin_nanf("")), r, wasm_v128_andnot(neg_finite, y_int));
  const v128_t one = wasm_v128_or(wasm_v128_or(wasm_f32x4_eq(y, splat(0.0f)), wasm_f32x4_eq(x, splat(1.0f))),
                                  wasm_v128_and(wasm_f32x4_eq(ax, splat(1.0f)),
                                                wasm_f32x4_eq(wasm_f32x4_abs(y), splat(__builtin_inff()))));
  return wasm_v128_bitselect(splat(1.0f), r, one);
}

// sin (COS = false) or cos (COS = true). |x| < 2^19: x = j * pi/2 + r, reduced in double (pi/2 in
// two parts, fdlibm's pio2_1 / pio2_1t: j * pio2_1 is exact for j < 2^20, so r keeps its relative
// accuracy even next to a multiple of pi/2), then Cephes' float minimax polynomials on
// |r| <= pi/4 picked and negated by the quadrant j mod 4. Lanes with |x| >= 2^19 (or inf) take
// libm's sin/cos in double (full-range reduction), rounded once to float. NaN -> NaN.
template <bool COS>
static inline v128_t sincos_v(v128_t x) {
  const v128_t huge = wasm_f32x4_ge(wasm_f32x4_abs(x), splat(524288.0f));
  const v128_t two_over_pi = wasm_f64x2_splat(0.63661977236758134308);
  const v128_t p1 = wasm_f64x2_splat(1.57079632673412561417e+00);
  const v128_t p1t = wasm_f64x2_splat(6.07710050650619224932e-11);
  const v128_t xlo = wasm_f64x2_promote_low_f32x4(x);
  const v128_t xhi = wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(x, x, 2, 3, 2, 3));
  const v128_t jlo = wasm_f64x2_nearest(wasm_f64x2_mul(xlo, two_over_pi));
  const v128_t jhi = wasm_f64x2_nearest(wasm_f64x2_mul(xhi, two_over_pi));
  const v128_t rlo = wasm_f64x2_sub(wasm_f64x2_sub(xlo, wasm_f64x2_mul(jlo, p1)), wasm_f64x2_mul(jlo, p1t));
  const v128_t rhi = wasm_f64x2_sub(wasm_f64x2_sub(xhi, wasm_f64x2_mul(jhi, p1)), wasm_f64x2_mul(jhi, p1t));
  const v128_t r = wasm_i32x4_shuffle(wasm_f32x4_demote_f64x2_zero(rlo), wasm_f32x4_demote_f64x2_zero(rhi), 0, 1, 4, 5);
  v128_t q = wasm_i32x4_shuffle(wasm_i32x4_trunc_sat_f64x2_zero(jlo), wasm_i32x4_trunc_sat_f64x2_zero(jhi), 0, 1, 4, 5);
  if (COS) q = wasm_i32x4_add(q, wasm_i32x4_splat(1));  // cos(x) = sin(x + pi/2)
  const v128_t z = wasm_f32x4_mul(r, r);
  v128_t s = splat(-1.9515295891E-4f);
  s = wasm_f32x4_add(wasm_f32x4_mul(s, z), splat(8.3321608736E-3f));
  s = wasm_f32x4_add(wasm_f32x4_mul(s, z), splat(-1.6666654611E-1f));
  s = wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_mul(s, z), r), r);
  v128_t c = splat(2.443315711809948E-5f);
  c = wasm_f32x4_add(wasm_f32x4_mul(c, z), splat(-1.388731625493765E-3f));
  c = wasm_f32x4_add(wasm_f32x4_mul(c, z), splat(4.166664568298827E-2f));
  c = wasm_f32x4_add(wasm_f32x4_sub(wasm_f32x4_mul(wasm_f32x4_mul(c, z), z), wasm_f32x4_mul(z, splat(0.5f))),
                     splat(1.0f));
  const v128_t odd = wasm_i32x4_eq(wasm_v128_and(q, wasm_i32x4_splat(1)), wasm_i32x4_splat(1));
  v128_t y = wasm_v128_bitselect(c, s, odd);
  const v128_t flip = wasm_i32x4_shl(wasm_v128_and(q, wasm_i32x4_splat(2)), 30);  // quadrants 2, 3
  y = wasm_v128_xor(y, flip);
  if (__builtin_expect(wasm_v128_any_true(huge), 0)) {
    float lanes[4], xs[4];
    wasm_v128_store(lanes, y);
    wasm_v128_store(xs, x);
    for (int i = 0; i < 4; ++i)
      if (__builtin_fabsf(xs[i]) >= 524288.0f)
        lanes[i] = (float)(COS ? __builtin_cos((double)xs[i]) : __builtin_sin((double)xs[i]));
    y = wasm_v128_load(lanes);
  }
  return y;
}

// Scalar twins: same code path, lane 0.
static inline float exp_s(float x) { return wasm_f32x4_extract_lane(exp_v(splat(x)), 0); }
static inline float sigmoid_s(float x) { return wasm_f32x4_extract_lane(sigmoid_v(splat(x)), 0); }
static inline float tanh_s(float x) { return wasm_f32x4_extract_lane(tanh_v(splat(x)), 0); }
static inline float erf_s(float x) { return wasm_f32x4_extract_lane(erf_v(splat(x)), 0); }

}  // namespace simd_math
