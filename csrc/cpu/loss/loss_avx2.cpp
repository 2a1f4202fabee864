// Loss chunk kernels for the avx2 kernel set: AVX2 + FMA, 32-byte vectors.
// The kernels are the templates of loss_kernels.inl (math in loss.h).
#include <math.h>

#include <cstdint>

#include "cpu/loss/loss.h"
#include "cpu/simd/vec_avx2.h"

namespace nnk::cpu::avx2 {

constexpr int kVecBytes = 32;

#include "cpu/simd/vec_math.inl"
#include "cpu/loss/loss_kernels.inl"

}  // namespace nnk::cpu::avx2
