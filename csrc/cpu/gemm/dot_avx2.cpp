// The dot-product kernel (dot.inl) for the avx2 kernel set.
#include "cpu/gemm/ukr.h"
#include "cpu/simd/vec_avx2.h"

namespace nnk::cpu::avx2 {
#include "cpu/gemm/dot.inl"
}  // namespace nnk::cpu::avx2
