// Layer norm row kernels for the avx512 kernel set: vec_avx512.h traits and norm_kernels.inl,
// instantiated inside nnk::cpu::avx512.
#include <cmath>

#include "cpu/norm/norm_isa.h"
#include "cpu/simd/vec_avx512.h"

namespace nnk::cpu::avx512 {
#include "cpu/norm/norm_kernels.inl"
}  // namespace nnk::cpu::avx512
