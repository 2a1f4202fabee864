// AVX2 + FMA vector traits: Vec<float> (8 lanes) and Vec<double> (4 lanes).
// Include only from *_avx2.cpp files; the traits live inside nnk::cpu::avx2 (ODR rule).
// The interface every vec_<isa>.h provides is described in vec_generic.h.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "core/types.h"
#include "cpu/simd/stream.h"

namespace nnk::cpu::avx2 {

template <typename T> struct Vec;

template <>
struct Vec<float> {
  using T = float;
  using reg = __m256;
  using mask = __m256;
  static constexpr int L = 8;
  static inline __m256i lanes(index_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static inline reg zero() { return _mm256_setzero_ps(); }
  static inline reg set1(T x) { return _mm256_set1_ps(x); }
  static inline reg load(const T* p) { return _mm256_loadu_ps(p); }
  static inline reg loadn(const T* p, index_t n, T fill = 0) {
    const __m256i m = lanes(n);
    return _mm256_blendv_ps(set1(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  static inline void store(T* p, reg x) { _mm256_storeu_ps(p, x); }
  static inline void stream(T* p, reg x) { _mm256_stream_ps(p, x); }  // p: 32-byte aligned
  static inline void fence() { _mm_sfence(); }  // orders the streaming stores before later ones
  static inline void storen(T* p, reg x, index_t n) { _mm256_maskstore_ps(p, lanes(n), x); }
  static inline reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static inline reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static inline reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static inline reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static inline reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static inline reg fnmadd(reg a, reg b, reg c) { return _mm256_fnmadd_ps(a, b, c); }
  static inline reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static inline reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static inline reg abs(reg a) { return _mm256_andnot_ps(set1(-0.0f), a); }
  static inline reg neg(reg a) { return _mm256_xor_ps(a, set1(-0.0f)); }
  static inline reg copysign(reg mag, reg sgn) {
    return _mm256_or_ps(abs(mag), _mm256_and_ps(sgn, set1(-0.0f)));
  }
  static inline mask lt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static inline mask gt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static inline mask eq(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static inline mask isnan(reg a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
  static inline mask mask_or(mask a, mask b) { return _mm256_or_ps(a, b); }
  static inline reg select(mask m, reg t, reg f) { return _mm256_blendv_ps(f, t, m); }
  static inline reg round(reg x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static inline reg pow2n(reg n) {
    const reg t = add(n, set1(12583039.0f));  // 0x1.8p23 + 127: low mantissa bits = n + 127
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23));
  }
  // x 2^n in two steps (2^n1 2^n2, n1 + n2 = n, each factor normal): one rounding.
  static inline reg scale2n(reg x, reg n) {
    const reg n1 = round(mul(n, set1(T(0.5))));
    return mul(mul(x, pow2n(n1)), pow2n(sub(n, n1)));
  }
  static inline reg rcp(reg x) { return div(set1(T(1)), x); }
  static inline reg exponent(reg x) {
    const __m256i e = _mm256_srli_epi32(_mm256_castps_si256(x), 23);
    return _mm256_cvtepi32_ps(_mm256_and_si256(e, _mm256_set1_epi32(0xff)));
  }
  static inline reg mantissa(reg x) {
    const __m256i m = _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x007fffff));
    return _mm256_castsi256_ps(_mm256_or_si256(m, _mm256_set1_epi32(0x3f800000)));
  }
  static inline T hsum(reg x) {
    alignas(32) T v[L];
    _mm256_store_ps(v, x);
    T s = 0;
    for (int i = 0; i < L; ++i) s += v[i];
    return s;
  }
  static inline T hmax(reg x) {
    alignas(32) T v[L];
    _mm256_store_ps(v, x);
    T m = v[0];
    for (int i = 1; i < L; ++i) m = v[i] > m ? v[i] : m;
    return m;
  }
};

template <>
struct Vec<double> {
  using T = double;
  using reg = __m256d;
  using mask = __m256d;
  static constexpr int L = 4;
  static inline __m256i lanes(index_t n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static inline reg zero() { return _mm256_setzero_pd(); }
  static inline reg set1(T x) { return _mm256_set1_pd(x); }
  static inline reg load(const T* p) { return _mm256_loadu_pd(p); }
  static inline reg loadn(const T* p, index_t n, T fill = 0) {
    const __m256i m = lanes(n);
    return _mm256_blendv_pd(set1(fill), _mm256_maskload_pd(p, m), _mm256_castsi256_pd(m));
  }
  static inline void store(T* p, reg x) { _mm256_storeu_pd(p, x); }
  static inline void stream(T* p, reg x) { _mm256_stream_pd(p, x); }  // p: 32-byte aligned
  static inline void fence() { _mm_sfence(); }
  static inline void storen(T* p, reg x, index_t n) { _mm256_maskstore_pd(p, lanes(n), x); }
  static inline reg add(reg a, reg b) { return _mm256_add_pd(a, b); }
  static inline reg sub(reg a, reg b) { return _mm256_sub_pd(a, b); }
  static inline reg mul(reg a, reg b) { return _mm256_mul_pd(a, b); }
  static inline reg div(reg a, reg b) { return _mm256_div_pd(a, b); }
  static inline reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_pd(a, b, c); }
  static inline reg fnmadd(reg a, reg b, reg c) { return _mm256_fnmadd_pd(a, b, c); }
  static inline reg min(reg a, reg b) { return _mm256_min_pd(a, b); }
  static inline reg max(reg a, reg b) { return _mm256_max_pd(a, b); }
  static inline reg abs(reg a) { return _mm256_andnot_pd(set1(-0.0), a); }
  static inline reg neg(reg a) { return _mm256_xor_pd(a, set1(-0.0)); }
  static inline reg copysign(reg mag, reg sgn) {
    return _mm256_or_pd(abs(mag), _mm256_and_pd(sgn, set1(-0.0)));
  }
  static inline mask lt(reg a, reg b) { return _mm256_cmp_pd(a, b, _CMP_LT_OQ); }
  static inline mask gt(reg a, reg b) { return _mm256_cmp_pd(a, b, _CMP_GT_OQ); }
  static inline mask eq(reg a, reg b) { return _mm256_cmp_pd(a, b, _CMP_EQ_OQ); }
  static inline mask isnan(reg a) { return _mm256_cmp_pd(a, a, _CMP_UNORD_Q); }
  static inline mask mask_or(mask a, mask b) { return _mm256_or_pd(a, b); }
  static inline reg select(mask m, reg t, reg f) { return _mm256_blendv_pd(f, t, m); }
  static inline reg round(reg x) { return _mm256_round_pd(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static inline reg pow2n(reg n) {
    const reg t = add(n, set1(6755399441056767.0));  // 0x1.8p52 + 1023
    return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(t), 52));
  }
  // x 2^n in two steps (2^n1 2^n2, n1 + n2 = n, each factor normal): one rounding.
  static inline reg scale2n(reg x, reg n) {
    const reg n1 = round(mul(n, set1(T(0.5))));
    return mul(mul(x, pow2n(n1)), pow2n(sub(n, n1)));
  }
  static inline reg rcp(reg x) { return div(set1(T(1)), x); }
  static inline reg exponent(reg x) {
    // The 11-bit field as a double without an int64 conversion: OR it into 2^52's mantissa.
    const __m256i e = _mm256_srli_epi64(_mm256_castpd_si256(x), 52);
    const __m256i f = _mm256_and_si256(e, _mm256_set1_epi64x(0x7ff));
    const __m256i two52 = _mm256_set1_epi64x(0x4330000000000000LL);
    return _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(f, two52)), set1(4503599627370496.0));
  }
  static inline reg mantissa(reg x) {
    const __m256i m = _mm256_and_si256(_mm256_castpd_si256(x), _mm256_set1_epi64x(0x000fffffffffffffLL));
    return _mm256_castsi256_pd(_mm256_or_si256(m, _mm256_set1_epi64x(0x3ff0000000000000LL)));
  }
  static inline T hsum(reg x) {
    alignas(32) T v[L];
    _mm256_store_pd(v, x);
    return (v[0] + v[1]) + (v[2] + v[3]);
  }
  static inline T hmax(reg x) {
    alignas(32) T v[L];
    _mm256_store_pd(v, x);
    T m = v[0];
    for (int i = 1; i < L; ++i) m = v[i] > m ? v[i] : m;
    return m;
  }
};

}  // namespace nnk::cpu::avx2
