// The dot-product kernel (dot.inl) for the avx512 kernel set.
#include "cpu/gemm/ukr.h"
#include "cpu/simd/vec_avx512.h"

namespace nnk::cpu::avx512 {
#include "cpu/gemm/dot.inl"
}  // namespace nnk::cpu::avx512
