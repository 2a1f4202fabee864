// Attention tile operations for the avx512 kernel set: the vector traits of vec_avx512.h, the
// maths of vec_math.inl and the tiles of attn_kernels.inl, instantiated inside nnk::cpu::avx512.
#include <limits>

#include "cpu/attention/attn_isa.h"
#include "cpu/simd/vec_avx512.h"

namespace nnk::cpu::avx512 {
#include "cpu/simd/vec_math.inl"
#include "cpu/attention/attn_kernels.inl"
}  // namespace nnk::cpu::avx512
