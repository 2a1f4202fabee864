// AVX-512 micro-kernels: float32 14x32 and float64 14x16 (MR x NR), and 8-row variants
// (8x32, 8x16) for problems whose M wastes much of a 14-row tile (M = 32: 42 rows computed
// for 32; an RNN's batch, a conv's 64 output channels). 8 rows x 2 zmm = 16 accumulators:
// still FMA-bound (16 FMAs, 8 cycles, against 2 loads and 8 broadcasts per k).
// 14 rows x 2 zmm = 28 accumulators + 2 B vectors + 1 broadcast = 31 of 32 zmm registers;
// per k: 28 FMAs (14 cycles on two 512-bit FMA pipes) against 2 vector loads and 14
// broadcasts, well inside the load ports. The template is ukr_x86.inl over the
// vector traits of cpu/simd/vec_avx512.h.
#include <immintrin.h>

#include "cpu/gemm/ukr.h"
#include "cpu/simd/vec_avx512.h"

namespace nnk::cpu::avx512 {

#include "cpu/gemm/ukr_x86.inl"

void sgemm_ukr_14x32(index_t kc, const float* a, index_t rs_a, index_t cs_a, const float* b,
                     index_t ldb, float* c, index_t ldc, index_t m, index_t n,
                     const UkrEpilogue<float>& ep) {
  ukr_entry<Vec<float>, 14, 2>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
}

void dgemm_ukr_14x16(index_t kc, const double* a, index_t rs_a, index_t cs_a, const double* b,
                     index_t ldb, double* c, index_t ldc, index_t m, index_t n,
                     const UkrEpilogue<double>& ep) {
  ukr_entry<Vec<double>, 14, 2>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
}

void sgemm_ukr_8x32(index_t kc, const float* a, index_t rs_a, index_t cs_a, const float* b,
                    index_t ldb, float* c, index_t ldc, index_t m, index_t n,
                    const UkrEpilogue<float>& ep) {
  ukr_entry<Vec<float>, 8, 2>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
}

void dgemm_ukr_8x16(index_t kc, const double* a, index_t rs_a, index_t cs_a, const double* b,
                    index_t ldb, double* c, index_t ldc, index_t m, index_t n,
                    const UkrEpilogue<double>& ep) {
  ukr_entry<Vec<double>, 8, 2>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
}

}  // namespace nnk::cpu::avx512
