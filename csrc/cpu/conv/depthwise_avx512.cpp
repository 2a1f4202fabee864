// Depthwise forward and backward, avx512 build (the kernel: depthwise.inl).
#include <algorithm>
#include <vector>

#include "cpu/conv/depthwise.h"
#include "cpu/simd/vec_avx512.h"

namespace nnk::cpu::avx512 {
#include "cpu/conv/depthwise.inl"
}  // namespace nnk::cpu::avx512
