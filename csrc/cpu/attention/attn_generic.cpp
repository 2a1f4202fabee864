// Attention tile operations for the generic kernel set: the vector traits of vec_generic.h, the
// maths of vec_math.inl and the tiles of attn_kernels.inl, instantiated inside nnk::cpu::generic.
#include <limits>

#include "cpu/attention/attn_isa.h"
#include "cpu/simd/vec_generic.h"

namespace nnk::cpu::generic {
#include "cpu/simd/vec_math.inl"
#include "cpu/attention/attn_kernels.inl"
}  // namespace nnk::cpu::generic
