// AVX-512 micro-kernels: float32 14x32 and float64 14x16 (MR x NR).
// 14 rows x 2 zmm = 28 accumulators + 2 B vectors + 1 broadcast = 31 of 32 zmm registers;
// per k: 28 FMAs (14 cycles on two 512-bit FMA pipes) against 2 vector loads and 14
// broadcasts, well inside the load ports. The template is ukr_x86.inl.
#include <immintrin.h>

#include "cpu/gemm/ukr.h"

namespace nnk::cpu::avx512 {

struct VF32 {
  using T = float;
  using reg = __m512;
  static constexpr int L = 16;
  static inline __mmask16 mask(int lanes) { return (__mmask16)((1u << lanes) - 1u); }
  static inline reg zero() { return _mm512_setzero_ps(); }
  static inline reg set1(T x) { return _mm512_set1_ps(x); }
  static inline reg load(const T* p) { return _mm512_loadu_ps(p); }
  static inline reg loadn(const T* p, int lanes) { return _mm512_maskz_loadu_ps(mask(lanes), p); }
  static inline void store(T* p, reg x) { _mm512_storeu_ps(p, x); }
  static inline void storen(T* p, reg x, int lanes) { _mm512_mask_storeu_ps(p, mask(lanes), x); }
  static inline reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static inline reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static inline reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static inline reg relu(reg x) { return _mm512_max_ps(_mm512_setzero_ps(), x); }
};

struct VF64 {
  using T = double;
  using reg = __m512d;
  static constexpr int L = 8;
  static inline __mmask8 mask(int lanes) { return (__mmask8)((1u << lanes) - 1u); }
  static inline reg zero() { return _mm512_setzero_pd(); }
  static inline reg set1(T x) { return _mm512_set1_pd(x); }
  static inline reg load(const T* p) { return _mm512_loadu_pd(p); }
  static inline reg loadn(const T* p, int lanes) { return _mm512_maskz_loadu_pd(mask(lanes), p); }
  static inline void store(T* p, reg x) { _mm512_storeu_pd(p, x); }
  static inline void storen(T* p, reg x, int lanes) { _mm512_mask_storeu_pd(p, mask(lanes), x); }
  static inline reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_pd(a, b, c); }
  static inline reg mul(reg a, reg b) { return _mm512_mul_pd(a, b); }
  static inline reg add(reg a, reg b) { return _mm512_add_pd(a, b); }
  static inline reg relu(reg x) { return _mm512_max_pd(_mm512_setzero_pd(), x); }
};

#include "cpu/gemm/ukr_x86.inl"

void sgemm_ukr_14x32(index_t kc, const float* a, index_t rs_a, index_t cs_a, const float* b,
                     index_t ldb, float* c, index_t ldc, index_t m, index_t n,
                     const UkrEpilogue<float>& ep) {
  ukr_entry<VF32, 14, 2>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
}

void dgemm_ukr_14x16(index_t kc, const double* a, index_t rs_a, index_t cs_a, const double* b,
                     index_t ldb, double* c, index_t ldc, index_t m, index_t n,
                     const UkrEpilogue<double>& ep) {
  ukr_entry<VF64, 14, 2>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
}

}  // namespace nnk::cpu::avx512
