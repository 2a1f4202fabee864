// Small-image conv gather / scatter, avx2 build (the kernels: gather.inl).
#include <algorithm>
#include <cstdint>

#include "cpu/conv/gather.h"

namespace nnk::cpu::avx2 {
#include "cpu/conv/gather.inl"
}  // namespace nnk::cpu::avx2
