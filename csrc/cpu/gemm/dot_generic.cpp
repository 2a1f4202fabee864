// The dot-product kernel (dot.inl) for the generic kernel set.
#include "cpu/gemm/ukr.h"
#include "cpu/simd/vec_generic.h"

namespace nnk::cpu::generic {
#include "cpu/gemm/dot.inl"
}  // namespace nnk::cpu::generic
