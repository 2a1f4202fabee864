// Depthwise forward, avx512 build (the kernel: depthwise.inl).
#include <algorithm>

#include "cpu/conv/depthwise.h"

namespace nnk::cpu::avx512 {
#include "cpu/conv/depthwise.inl"
}  // namespace nnk::cpu::avx512
