// Portable vector traits: Vec<float> (4 lanes) and Vec<double> (2 lanes) as plain arrays the
// compiler may auto-vectorise (SSE2 on x86-64, NEON on aarch64). Lives in nnk::cpu::generic.
//
// The interface of every vec_<isa>.h (Vec<T> for T = float, double):
//   T, reg, mask, L (lanes)
//   zero(), set1(x), load(p), loadn(p, n, fill = 0) (lanes >= n get `fill`; nothing past
//   p + n is read), store(p, x), storen(p, x, n) (only lanes < n written)
//   add, sub, mul, div, fmadd(a, b, c) = a*b + c, fnmadd(a, b, c) = c - a*b
//   min(a, b), max(a, b): x86 semantics, b is returned when either is NaN
//   abs, neg, copysign(mag, sgn)
//   lt, gt, eq (ordered: false with NaN), isnan -> mask; mask_or; select(m, t, f) = m ? t : f
//   round(x): to nearest even (|x| < 2^22 for float in the generic version)
//   pow2n(n): 2^n for an integer-valued n with a normal result (|n| <= bias - 1)
//   scale2n(x, n): x 2^n for an integer-valued n, |n| <= 2 (bias - 1), rounded once (gradual
//   underflow, overflow to inf; NaN n gives NaN)
//   rcp(x): 1 / x, relative error < 2^-23 (float) for finite normal x with a normal 1/x
//   (AVX-512 float: rcp14 + one Newton step; elsewhere a division)
//   exponent(x): the biased exponent field as a value; mantissa(x): x with its exponent
//   field set to the bias (a value in [1, 2) for normal x)
//   hsum(x), hmax(x): across lanes, in a fixed order
// No FMA is assumed here: fmadd rounds twice (the generic math keeps enough accuracy).
#pragma once
#include <cstdint>
#include <cstring>

#include "core/types.h"
#include "cpu/simd/stream.h"

namespace nnk::cpu::generic {

template <typename T> struct Bits;
template <> struct Bits<float> {
  using U = uint32_t;
  static constexpr int mant = 23;
  static constexpr U exp_mask = 0xff, bias = 127;
};
template <> struct Bits<double> {
  using U = uint64_t;
  static constexpr int mant = 52;
  static constexpr U exp_mask = 0x7ff, bias = 1023;
};

template <typename E>
struct Vec {
  using T = E;
  using B = Bits<T>;
  using U = typename B::U;
  static constexpr int L = 16 / int(sizeof(T));
  struct reg { T v[L]; };
  struct mask { bool m[L]; };

  static inline U bits(T x) { U u; std::memcpy(&u, &x, sizeof u); return u; }
  static inline T from_bits(U u) { T x; std::memcpy(&x, &u, sizeof x); return x; }
  template <class F> static inline reg map(reg a, F f) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = f(a.v[i]);
    return r;
  }
  template <class F> static inline reg map(reg a, reg b, F f) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = f(a.v[i], b.v[i]);
    return r;
  }
  template <class F> static inline mask cmp(reg a, reg b, F f) {
    mask r;
    for (int i = 0; i < L; ++i) r.m[i] = f(a.v[i], b.v[i]);
    return r;
  }

  static inline reg zero() { return set1(T(0)); }
  static inline reg set1(T x) { reg r; for (int i = 0; i < L; ++i) r.v[i] = x; return r; }
  static inline reg load(const T* p) { reg r; for (int i = 0; i < L; ++i) r.v[i] = p[i]; return r; }
  static inline reg loadn(const T* p, index_t n, T fill = 0) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = i < n ? p[i] : fill;
    return r;
  }
  static inline void store(T* p, reg x) { for (int i = 0; i < L; ++i) p[i] = x.v[i]; }
  static inline void stream(T* p, reg x) { store(p, x); }  // no streaming store here
  static inline void fence() {}
  static inline void storen(T* p, reg x, index_t n) { for (int i = 0; i < n; ++i) p[i] = x.v[i]; }
  static inline reg add(reg a, reg b) { return map(a, b, [](T x, T y) { return x + y; }); }
  static inline reg sub(reg a, reg b) { return map(a, b, [](T x, T y) { return x - y; }); }
  static inline reg mul(reg a, reg b) { return map(a, b, [](T x, T y) { return x * y; }); }
  static inline reg div(reg a, reg b) { return map(a, b, [](T x, T y) { return x / y; }); }
  static inline reg fmadd(reg a, reg b, reg c) { return add(mul(a, b), c); }
  static inline reg fnmadd(reg a, reg b, reg c) { return sub(c, mul(a, b)); }
  static inline reg min(reg a, reg b) { return map(a, b, [](T x, T y) { return x < y ? x : y; }); }
  static inline reg max(reg a, reg b) { return map(a, b, [](T x, T y) { return x > y ? x : y; }); }
  static inline reg abs(reg a) {
    return map(a, [](T x) { return from_bits(bits(x) & ~(U(1) << (8 * sizeof(T) - 1))); });
  }
  static inline reg neg(reg a) {
    return map(a, [](T x) { return from_bits(bits(x) ^ (U(1) << (8 * sizeof(T) - 1))); });
  }
  static inline reg copysign(reg mag, reg sgn) {
    const U s = U(1) << (8 * sizeof(T) - 1);
    return map(mag, sgn, [s](T m, T g) { return from_bits((bits(m) & ~s) | (bits(g) & s)); });
  }
  static inline mask lt(reg a, reg b) { return cmp(a, b, [](T x, T y) { return x < y; }); }
  static inline mask gt(reg a, reg b) { return cmp(a, b, [](T x, T y) { return x > y; }); }
  static inline mask eq(reg a, reg b) { return cmp(a, b, [](T x, T y) { return x == y; }); }
  static inline mask isnan(reg a) { return cmp(a, a, [](T x, T y) { return x != y; }); }
  static inline mask mask_or(mask a, mask b) {
    mask r;
    for (int i = 0; i < L; ++i) r.m[i] = a.m[i] || b.m[i];
    return r;
  }
  static inline reg select(mask m, reg t, reg f) {
    reg r;
    for (int i = 0; i < L; ++i) r.v[i] = m.m[i] ? t.v[i] : f.v[i];
    return r;
  }
  // Adding and subtracting 1.5 * 2^mant rounds to an integer (current rounding mode).
  static inline reg round(reg x) {
    const T magic = T(1.5) * T(U(1) << B::mant);
    return map(x, [magic](T v) { return (v + magic) - magic; });  // not folded without -ffast-math
  }
  static inline reg pow2n(reg n) {
    // NaN lanes give 0 (the callers' other factor carries the NaN).
    return map(n, [](T v) { return v == v ? from_bits(U(int64_t(v) + int64_t(B::bias)) << B::mant) : T(0); });
  }
  // x 2^n in two steps (2^n1 2^n2, n1 + n2 = n, each factor normal): one rounding.
  static inline reg scale2n(reg x, reg n) {
    const reg n1 = round(mul(n, set1(T(0.5))));
    return mul(mul(x, pow2n(n1)), pow2n(sub(n, n1)));
  }
  static inline reg rcp(reg x) { return div(set1(T(1)), x); }
  static inline reg exponent(reg x) {
    return map(x, [](T v) { return T((bits(v) >> B::mant) & B::exp_mask); });
  }
  static inline reg mantissa(reg x) {
    const U m = (U(1) << B::mant) - 1;
    return map(x, [m](T v) { return from_bits((bits(v) & m) | (B::bias << B::mant)); });
  }
  static inline T hsum(reg x) { T s = 0; for (int i = 0; i < L; ++i) s += x.v[i]; return s; }
  static inline T hmax(reg x) {
    T m = x.v[0];
    for (int i = 1; i < L; ++i) m = x.v[i] > m ? x.v[i] : m;
    return m;
  }
};

}  // namespace nnk::cpu::generic
