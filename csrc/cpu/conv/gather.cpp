// Small-image conv gather / scatter, generic build (the kernels: gather.inl).
#include <algorithm>
#include <cstdint>

#include "cpu/conv/gather.h"

namespace nnk::cpu::generic {
#include "cpu/conv/gather.inl"
}  // namespace nnk::cpu::generic
