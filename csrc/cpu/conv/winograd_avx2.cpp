// Winograd F(2x2, 3x3) transforms, avx2 build (the kernels: winograd.inl).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/conv/winograd.h"
#include "cpu/simd/vec_avx2.h"

namespace nnk::cpu::avx2 {
#include "cpu/conv/winograd.inl"
}  // namespace nnk::cpu::avx2
