// Small-image conv gather / scatter, avx512 build (the kernels: gather.inl).
#include <algorithm>
#include <cstdint>

#include "cpu/conv/gather.h"

namespace nnk::cpu::avx512 {
#include "cpu/conv/gather.inl"
}  // namespace nnk::cpu::avx512
