// Winograd F(2x2, 3x3) transforms, avx512 build (the kernels: winograd.inl).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/conv/winograd.h"
#include "cpu/simd/vec_avx512.h"

namespace nnk::cpu::avx512 {
#include "cpu/conv/winograd.inl"
}  // namespace nnk::cpu::avx512
