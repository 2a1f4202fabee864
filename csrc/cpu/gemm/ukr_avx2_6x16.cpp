// AVX2+FMA micro-kernels: float32 6x16 and float64 6x8 (MR x NR).
// 6 rows x 2 ymm = 12 accumulators + 2 B vectors + 1 broadcast = 15 of 16 ymm registers
// (the classic Haswell BLIS shape). The template is ukr_x86.inl.
#include <immintrin.h>

#include "cpu/gemm/ukr.h"

namespace nnk::cpu::avx2 {

static inline __m256i lane_mask32(int lanes) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256i lane_mask64(int lanes) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(lanes), _mm256_setr_epi64x(0, 1, 2, 3));
}

struct VF32 {
  using T = float;
  using reg = __m256;
  static constexpr int L = 8;
  static inline reg zero() { return _mm256_setzero_ps(); }
  static inline reg set1(T x) { return _mm256_set1_ps(x); }
  static inline reg load(const T* p) { return _mm256_loadu_ps(p); }
  static inline reg loadn(const T* p, int lanes) { return _mm256_maskload_ps(p, lane_mask32(lanes)); }
  static inline void store(T* p, reg x) { _mm256_storeu_ps(p, x); }
  static inline void storen(T* p, reg x, int lanes) { _mm256_maskstore_ps(p, lane_mask32(lanes), x); }
  static inline reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static inline reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static inline reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static inline reg relu(reg x) { return _mm256_max_ps(_mm256_setzero_ps(), x); }
};

struct VF64 {
  using T = double;
  using reg = __m256d;
  static constexpr int L = 4;
  static inline reg zero() { return _mm256_setzero_pd(); }
  static inline reg set1(T x) { return _mm256_set1_pd(x); }
  static inline reg load(const T* p) { return _mm256_loadu_pd(p); }
  static inline reg loadn(const T* p, int lanes) { return _mm256_maskload_pd(p, lane_mask64(lanes)); }
  static inline void store(T* p, reg x) { _mm256_storeu_pd(p, x); }
  static inline void storen(T* p, reg x, int lanes) { _mm256_maskstore_pd(p, lane_mask64(lanes), x); }
  static inline reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_pd(a, b, c); }
  static inline reg mul(reg a, reg b) { return _mm256_mul_pd(a, b); }
  static inline reg add(reg a, reg b) { return _mm256_add_pd(a, b); }
  static inline reg relu(reg x) { return _mm256_max_pd(_mm256_setzero_pd(), x); }
};

#include "cpu/gemm/ukr_x86.inl"

void sgemm_ukr_6x16(index_t kc, const float* a, index_t rs_a, index_t cs_a, const float* b,
                    index_t ldb, float* c, index_t ldc, index_t m, index_t n,
                    const UkrEpilogue<float>& ep) {
  ukr_entry<VF32, 6, 2>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
}

void dgemm_ukr_6x8(index_t kc, const double* a, index_t rs_a, index_t cs_a, const double* b,
                   index_t ldb, double* c, index_t ldc, index_t m, index_t n,
                   const UkrEpilogue<double>& ep) {
  ukr_entry<VF64, 6, 2>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
}

}  // namespace nnk::cpu::avx2
