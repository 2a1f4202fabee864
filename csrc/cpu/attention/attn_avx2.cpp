// Attention tile operations for the avx2 kernel set: the vector traits of vec_avx2.h, the
// maths of vec_math.inl and the tiles of attn_kernels.inl, instantiated inside nnk::cpu::avx2.
#include <limits>

#include "cpu/attention/attn_isa.h"
#include "cpu/simd/vec_avx2.h"

namespace nnk::cpu::avx2 {
#include "cpu/simd/vec_math.inl"
#include "cpu/attention/attn_kernels.inl"
}  // namespace nnk::cpu::avx2
