// Stride-1 im2col packing, AVX2 build (the kernel: shift_pack.inl): masked loads are
// vmaskmov (masked-off lanes neither read nor fault) merged by a blend.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/conv/shift_pack.h"
#include "cpu/simd/transpose_avx2.h"

namespace nnk::cpu::avx2 {

struct VF {
  static constexpr int L = 8;
  using reg = __m256;
  using msk = __m256i;
  static msk mask(uint32_t b) {
    const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(int(b)), bits), bits);
  }
  static reg load(msk m, const float* p) { return _mm256_maskload_ps(p, m); }
  static reg load_merge(reg r, msk m, const float* p) {
    return _mm256_blendv_ps(r, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  static void store(float* p, reg r) { _mm256_storeu_ps(p, r); }
  static void transpose(const float* s, index_t lds, float* d, index_t ldd) {
    __m256 r[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + i * lds);
    transpose8(r);
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(d + i * ldd, r[i]);
  }
};
struct VD {
  static constexpr int L = 4;
  using reg = __m256d;
  using msk = __m256i;
  static msk mask(uint32_t b) {
    const __m256i bits = _mm256_setr_epi64x(1, 2, 4, 8);
    return _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_set1_epi64x(b), bits), bits);
  }
  static reg load(msk m, const double* p) { return _mm256_maskload_pd(p, m); }
  static reg load_merge(reg r, msk m, const double* p) {
    return _mm256_blendv_pd(r, _mm256_maskload_pd(p, m), _mm256_castsi256_pd(m));
  }
  static void store(double* p, reg r) { _mm256_storeu_pd(p, r); }
  static void transpose(const double* s, index_t lds, double* d, index_t ldd) {
    __m256d r[4];
    for (int i = 0; i < 4; ++i) r[i] = _mm256_loadu_pd(s + i * lds);
    transpose4(r);
    for (int i = 0; i < 4; ++i) _mm256_storeu_pd(d + i * ldd, r[i]);
  }
};

#include "cpu/conv/shift_pack.inl"

}  // namespace nnk::cpu::avx2
