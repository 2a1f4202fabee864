// AVX2+FMA micro-kernels: float32 6x16 and float64 6x8 (MR x NR).
// 6 rows x 2 ymm = 12 accumulators + 2 B vectors + 1 broadcast = 15 of 16 ymm registers
// (the classic Haswell BLIS shape). The template is ukr_x86.inl over the
// vector traits of cpu/simd/vec_avx2.h.
#include <immintrin.h>

#include "cpu/gemm/ukr.h"
#include "cpu/simd/vec_avx2.h"

namespace nnk::cpu::avx2 {

#include "cpu/gemm/ukr_x86.inl"

void sgemm_ukr_6x16(index_t kc, const float* a, index_t rs_a, index_t cs_a, const float* b,
                    index_t ldb, float* c, index_t ldc, index_t m, index_t n,
                    const UkrEpilogue<float>& ep) {
  ukr_entry<Vec<float>, 6, 2>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
}

void dgemm_ukr_6x8(index_t kc, const double* a, index_t rs_a, index_t cs_a, const double* b,
                   index_t ldb, double* c, index_t ldc, index_t m, index_t n,
                   const UkrEpilogue<double>& ep) {
  ukr_entry<Vec<double>, 6, 2>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
}

}  // namespace nnk::cpu::avx2
