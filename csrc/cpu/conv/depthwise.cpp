// Depthwise forward, generic build (the kernel: depthwise.inl).
#include <algorithm>

#include "cpu/conv/depthwise.h"

namespace nnk::cpu::generic {
#include "cpu/conv/depthwise.inl"
}  // namespace nnk::cpu::generic
