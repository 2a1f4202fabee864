// Winograd F(2x2, 3x3) transforms, generic build (the kernels: winograd.inl).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/conv/winograd.h"
#include "cpu/simd/vec_generic.h"

namespace nnk::cpu::generic {
#include "cpu/conv/winograd.inl"
}  // namespace nnk::cpu::generic
