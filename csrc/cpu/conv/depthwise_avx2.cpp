// Depthwise forward, avx2 build (the kernel: depthwise.inl).
#include <algorithm>

#include "cpu/conv/depthwise.h"

namespace nnk::cpu::avx2 {
#include "cpu/conv/depthwise.inl"
}  // namespace nnk::cpu::avx2
