// Layer norm row kernels for the avx2 kernel set: vec_avx2.h traits and norm_kernels.inl,
// instantiated inside nnk::cpu::avx2.
#include <cmath>

#include "cpu/norm/norm_isa.h"
#include "cpu/simd/vec_avx2.h"

namespace nnk::cpu::avx2 {
#include "cpu/norm/norm_kernels.inl"
}  // namespace nnk::cpu::avx2
