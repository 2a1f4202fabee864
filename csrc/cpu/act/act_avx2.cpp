// Activation and softmax kernels for the avx2 kernel set: the vector traits of
// vec_avx2.h, the maths of vec_math.inl and the kernels of act_kernels.inl, all
// instantiated inside nnk::cpu::avx2.
#include <limits>

#include "cpu/act/act_isa.h"
#include "cpu/simd/vec_avx2.h"

namespace nnk::cpu::avx2 {
#include "cpu/simd/vec_math.inl"
#include "cpu/act/act_kernels.inl"
}  // namespace nnk::cpu::avx2
