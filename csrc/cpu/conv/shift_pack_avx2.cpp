// Stride-1 im2col packing, AVX2 build (the kernel: shift_pack.inl): masked loads are
// vmaskmov (masked-off lanes neither read nor fault) merged by a blend.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/conv/shift_pack.h"

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
};

#include "cpu/conv/shift_pack.inl"

}  // namespace nnk::cpu::avx2
