// AVX-512 row kernel of the 2x2 / stride-2 max pool (the common CNN case), 16 float or 8
// double outputs per step: even and odd columns of the two input rows are separated with
// one two-source permute each, then the four taps are compared in torch's order (a later
// tap wins when greater or NaN), and the flat indices built from the winning tap.
//   y[ow] = max(r0[2ow], r0[2ow+1], r1[2ow], r1[2ow+1]); idx[ow] = (2 oh + k/2) W + 2 ow + k%2
#include <immintrin.h>

#include <cstdint>

#include "cpu/pool/pool.h"

namespace nnk::cpu::avx512 {

namespace {

struct F32 {
  using T = float;
  using reg = __m512;
  using mask = __mmask16;
  static constexpr int L = 16;
  static inline mask lanes(index_t n) { return mask((1u << n) - 1u); }
  static inline reg load(const T* p, index_t n) { return _mm512_maskz_loadu_ps(lanes(n), p); }
  static inline void store(T* p, reg x, index_t n) { _mm512_mask_storeu_ps(p, lanes(n), x); }
  // (even, odd) columns of 2L consecutive values
  static inline void split(const T* p, index_t n2, reg& ev, reg& od) {
    const reg lo = load(p, n2 < L ? n2 : L), hi = load(p + L, n2 > L ? n2 - L : 0);
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    ev = _mm512_permutex2var_ps(lo, ie, hi);
    od = _mm512_permutex2var_ps(lo, io, hi);
  }
  static inline mask wins(reg v, reg m) {
    return _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  }
  static inline reg blend(mask k, reg a, reg b) { return _mm512_mask_blend_ps(k, a, b); }
};

struct F64 {
  using T = double;
  using reg = __m512d;
  using mask = __mmask8;
  static constexpr int L = 8;
  static inline mask lanes(index_t n) { return mask((1u << n) - 1u); }
  static inline reg load(const T* p, index_t n) { return _mm512_maskz_loadu_pd(lanes(n), p); }
  static inline void store(T* p, reg x, index_t n) { _mm512_mask_storeu_pd(p, lanes(n), x); }
  static inline void split(const T* p, index_t n2, reg& ev, reg& od) {
    const reg lo = load(p, n2 < L ? n2 : L), hi = load(p + L, n2 > L ? n2 - L : 0);
    ev = _mm512_permutex2var_pd(lo, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), hi);
    od = _mm512_permutex2var_pd(lo, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), hi);
  }
  static inline mask wins(reg v, reg m) {
    return _mm512_cmp_pd_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q);
  }
  static inline reg blend(mask k, reg a, reg b) { return _mm512_mask_blend_pd(k, a, b); }
};

template <class V>
void row(const typename V::T* r0, const typename V::T* r1, typename V::T* y, int64_t* idx,
         index_t Wo, int64_t base, int64_t W) {
  using R = typename V::reg;
  for (index_t o = 0; o < Wo; o += V::L) {
    const index_t n = Wo - o < V::L ? Wo - o : V::L;
    R a, b, c, d;
    V::split(r0 + 2 * o, 2 * n, a, b);
    V::split(r1 + 2 * o, 2 * n, c, d);
    const auto tb = V::wins(b, a);
    R m = V::blend(tb, a, b);
    const auto tc = V::wins(c, m);
    m = V::blend(tc, m, c);
    const auto td = V::wins(d, m);
    m = V::blend(td, m, d);
    V::store(y + o, m, n);
    if (idx) {
      // k = tap number (0..3) of the winner; index = base + (k >> 1) W + 2 (o + lane) + (k & 1)
      for (int h = 0; h < V::L; h += 8) {
        if (h >= n) break;
        const __mmask8 b8 = __mmask8(tb >> h), c8 = __mmask8(tc >> h), d8 = __mmask8(td >> h);
        __m512i k = _mm512_setzero_si512();
        k = _mm512_mask_mov_epi64(k, b8, _mm512_set1_epi64(1));
        k = _mm512_mask_mov_epi64(k, c8, _mm512_set1_epi64(2));
        k = _mm512_mask_mov_epi64(k, d8, _mm512_set1_epi64(3));
        const __m512i col = _mm512_add_epi64(_mm512_set1_epi64(2 * (o + h)),
                                             _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14));
        __m512i v = _mm512_add_epi64(_mm512_set1_epi64(base), col);
        v = _mm512_add_epi64(v, _mm512_and_si512(k, _mm512_set1_epi64(1)));
        v = _mm512_add_epi64(v, _mm512_mullo_epi64(_mm512_srli_epi64(k, 1), _mm512_set1_epi64(W)));
        const index_t nh = n - h < 8 ? n - h : 8;
        _mm512_mask_storeu_epi64(idx + o + h, __mmask8((1u << nh) - 1u), v);
      }
    }
  }
}

}  // namespace

void max_pool2x2_row(const float* r0, const float* r1, float* y, int64_t* idx, index_t Wo,
                     int64_t base, int64_t W) {
  row<F32>(r0, r1, y, idx, Wo, base, W);
}
void max_pool2x2_row(const double* r0, const double* r1, double* y, int64_t* idx, index_t Wo,
                     int64_t base, int64_t W) {
  row<F64>(r0, r1, y, idx, Wo, base, W);
}

}  // namespace nnk::cpu::avx512
