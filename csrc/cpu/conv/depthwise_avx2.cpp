// Depthwise forward and backward, avx2 build (the kernel: depthwise.inl).
#include <algorithm>
#include <vector>

#include "cpu/conv/depthwise.h"
#include "cpu/simd/vec_avx2.h"

namespace nnk::cpu::avx2 {
#include "cpu/conv/depthwise.inl"
}  // namespace nnk::cpu::avx2
