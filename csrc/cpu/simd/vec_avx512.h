// AVX-512 (F/DQ/BW/VL) vector traits: Vec<float> (16 lanes) and Vec<double> (8 lanes).
// Include only from *_avx512.cpp files. The traits live inside nnk::cpu::avx512 (ODR rule:
// nothing compiled with AVX-512 flags may share a name with code of another ISA).
// The interface every vec_<isa>.h provides is described in vec_generic.h.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "core/types.h"
#include "cpu/simd/stream.h"

namespace nnk::cpu::avx512 {

template <typename T> struct Vec;

template <>
struct Vec<float> {
  using T = float;
  using reg = __m512;
  using mask = __mmask16;
  static constexpr int L = 16;
  static inline mask lanes(index_t n) { return mask((1u << n) - 1u); }
  static inline reg zero() { return _mm512_setzero_ps(); }
  static inline reg set1(T x) { return _mm512_set1_ps(x); }
  static inline reg load(const T* p) { return _mm512_loadu_ps(p); }
  static inline reg loadn(const T* p, index_t n, T fill = 0) { return _mm512_mask_loadu_ps(set1(fill), lanes(n), p); }
  static inline void store(T* p, reg x) { _mm512_storeu_ps(p, x); }
  static inline void stream(T* p, reg x) { _mm512_stream_ps(p, x); }  // p: 64-byte aligned
  static inline void fence() { _mm_sfence(); }  // orders the streaming stores before later ones
  static inline void storen(T* p, reg x, index_t n) { _mm512_mask_storeu_ps(p, lanes(n), x); }
  static inline reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static inline reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static inline reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static inline reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static inline reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static inline reg fnmadd(reg a, reg b, reg c) { return _mm512_fnmadd_ps(a, b, c); }
  static inline reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static inline reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static inline reg abs(reg a) { return _mm512_abs_ps(a); }
  static inline reg neg(reg a) { return _mm512_xor_ps(a, set1(-0.0f)); }
  static inline reg copysign(reg mag, reg sgn) {
    return _mm512_or_ps(_mm512_abs_ps(mag), _mm512_and_ps(sgn, set1(-0.0f)));
  }
  static inline mask lt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static inline mask gt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static inline mask eq(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static inline mask isnan(reg a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  static inline mask mask_or(mask a, mask b) { return mask(a | b); }
  static inline reg select(mask m, reg t, reg f) { return _mm512_mask_blend_ps(m, f, t); }
  static inline reg round(reg x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static inline reg pow2n(reg n) {
    const reg t = add(n, set1(12583039.0f));  // 0x1.8p23 + 127: low mantissa bits = n + 127
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(t), 23));
  }
  static inline reg scale2n(reg x, reg n) { return _mm512_scalef_ps(x, n); }
  static inline reg rcp(reg x) {
    const reg r = _mm512_rcp14_ps(x);  // relative error < 2^-14
    return fmadd(r, fnmadd(x, r, set1(1.0f)), r);  // one Newton step: < 2^-23
  }
  static inline reg exponent(reg x) {
    const __m512i e = _mm512_srli_epi32(_mm512_castps_si512(x), 23);
    return _mm512_cvtepi32_ps(_mm512_and_si512(e, _mm512_set1_epi32(0xff)));
  }
  static inline reg mantissa(reg x) {
    const __m512i m = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x007fffff));
    return _mm512_castsi512_ps(_mm512_or_si512(m, _mm512_set1_epi32(0x3f800000)));
  }
  static inline T hsum(reg x) { return _mm512_reduce_add_ps(x); }
  static inline T hmax(reg x) { return _mm512_reduce_max_ps(x); }
};

template <>
struct Vec<double> {
  using T = double;
  using reg = __m512d;
  using mask = __mmask8;
  static constexpr int L = 8;
  static inline mask lanes(index_t n) { return mask((1u << n) - 1u); }
  static inline reg zero() { return _mm512_setzero_pd(); }
  static inline reg set1(T x) { return _mm512_set1_pd(x); }
  static inline reg load(const T* p) { return _mm512_loadu_pd(p); }
  static inline reg loadn(const T* p, index_t n, T fill = 0) { return _mm512_mask_loadu_pd(set1(fill), lanes(n), p); }
  static inline void store(T* p, reg x) { _mm512_storeu_pd(p, x); }
  static inline void stream(T* p, reg x) { _mm512_stream_pd(p, x); }  // p: 64-byte aligned
  static inline void fence() { _mm_sfence(); }
  static inline void storen(T* p, reg x, index_t n) { _mm512_mask_storeu_pd(p, lanes(n), x); }
  static inline reg add(reg a, reg b) { return _mm512_add_pd(a, b); }
  static inline reg sub(reg a, reg b) { return _mm512_sub_pd(a, b); }
  static inline reg mul(reg a, reg b) { return _mm512_mul_pd(a, b); }
  static inline reg div(reg a, reg b) { return _mm512_div_pd(a, b); }
  static inline reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_pd(a, b, c); }
  static inline reg fnmadd(reg a, reg b, reg c) { return _mm512_fnmadd_pd(a, b, c); }
  static inline reg min(reg a, reg b) { return _mm512_min_pd(a, b); }
  static inline reg max(reg a, reg b) { return _mm512_max_pd(a, b); }
  static inline reg abs(reg a) { return _mm512_abs_pd(a); }
  static inline reg neg(reg a) { return _mm512_xor_pd(a, set1(-0.0)); }
  static inline reg copysign(reg mag, reg sgn) {
    return _mm512_or_pd(_mm512_abs_pd(mag), _mm512_and_pd(sgn, set1(-0.0)));
  }
  static inline mask lt(reg a, reg b) { return _mm512_cmp_pd_mask(a, b, _CMP_LT_OQ); }
  static inline mask gt(reg a, reg b) { return _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ); }
  static inline mask eq(reg a, reg b) { return _mm512_cmp_pd_mask(a, b, _CMP_EQ_OQ); }
  static inline mask isnan(reg a) { return _mm512_cmp_pd_mask(a, a, _CMP_UNORD_Q); }
  static inline mask mask_or(mask a, mask b) { return mask(a | b); }
  static inline reg select(mask m, reg t, reg f) { return _mm512_mask_blend_pd(m, f, t); }
  static inline reg round(reg x) { return _mm512_roundscale_pd(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static inline reg pow2n(reg n) {
    const reg t = add(n, set1(6755399441056767.0));  // 0x1.8p52 + 1023
    return _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_castpd_si512(t), 52));
  }
  static inline reg scale2n(reg x, reg n) { return _mm512_scalef_pd(x, n); }
  static inline reg rcp(reg x) { return div(set1(1.0), x); }
  static inline reg exponent(reg x) {
    const __m512i e = _mm512_srli_epi64(_mm512_castpd_si512(x), 52);
    return _mm512_cvtepi64_pd(_mm512_and_si512(e, _mm512_set1_epi64(0x7ff)));
  }
  static inline reg mantissa(reg x) {
    const __m512i m = _mm512_and_si512(_mm512_castpd_si512(x), _mm512_set1_epi64(0x000fffffffffffffLL));
    return _mm512_castsi512_pd(_mm512_or_si512(m, _mm512_set1_epi64(0x3ff0000000000000LL)));
  }
  static inline T hsum(reg x) { return _mm512_reduce_add_pd(x); }
  static inline T hmax(reg x) { return _mm512_reduce_max_pd(x); }
};

}  // namespace nnk::cpu::avx512
