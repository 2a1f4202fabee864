// Activation and softmax kernels for the generic kernel set: the vector traits of
// vec_generic.h, the maths of vec_math.inl and the kernels of act_kernels.inl, all
// instantiated inside nnk::cpu::generic.
#include <limits>

#include "cpu/act/act_isa.h"
#include "cpu/simd/vec_generic.h"

namespace nnk::cpu::generic {
#include "cpu/simd/vec_math.inl"
#include "cpu/act/act_kernels.inl"
}  // namespace nnk::cpu::generic
