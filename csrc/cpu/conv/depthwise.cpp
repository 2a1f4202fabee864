// Depthwise forward and backward, generic build (the kernel: depthwise.inl).
#include <algorithm>
#include <vector>

#include "cpu/conv/depthwise.h"
#include "cpu/simd/vec_generic.h"

namespace nnk::cpu::generic {
#include "cpu/conv/depthwise.inl"
}  // namespace nnk::cpu::generic
