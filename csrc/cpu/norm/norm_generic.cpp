// Layer norm row kernels for the generic kernel set: vec_generic.h traits and norm_kernels.inl,
// instantiated inside nnk::cpu::generic.
#include <cmath>

#include "cpu/norm/norm_isa.h"
#include "cpu/simd/vec_generic.h"

namespace nnk::cpu::generic {
#include "cpu/norm/norm_kernels.inl"
}  // namespace nnk::cpu::generic
