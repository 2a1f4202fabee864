// The dot-product kernel (dot.inl) for the avx512 kernel set.
#include "cpu/gemm/ukr.h"
#include "cpu/simd/vec_avx512.h"

namespace nnk::cpu::avx512 {

#include "cpu/gemm/dot.inl"

void sdot_kernel(index_t K, const float* a, index_t lda, index_t m, const float* b, index_t ldb,
                 index_t n, float* out, index_t ldo) {
  dot_kernel<Vec<float>>(K, a, lda, m, b, ldb, n, out, ldo);
}
void ddot_kernel(index_t K, const double* a, index_t lda, index_t m, const double* b, index_t ldb,
                 index_t n, double* out, index_t ldo) {
  dot_kernel<Vec<double>>(K, a, lda, m, b, ldb, n, out, ldo);
}

}  // namespace nnk::cpu::avx512
