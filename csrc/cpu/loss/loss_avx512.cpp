// Loss chunk kernels for the avx512 kernel set: AVX-512 (F/DQ/BW/VL + FMA), 64-byte vectors.
// The kernels are the templates of loss_kernels.inl (math in loss.h).
#include <math.h>

#include <cstdint>

#include "cpu/loss/loss.h"
#include "cpu/simd/vec_avx512.h"

namespace nnk::cpu::avx512 {

constexpr int kVecBytes = 64;

#include "cpu/simd/vec_math.inl"
#include "cpu/loss/loss_kernels.inl"

}  // namespace nnk::cpu::avx512
