// Loss chunk kernels for the generic kernel set: baseline flags (SSE2 on x86-64), 16-byte vectors.
// The kernels are the templates of loss_kernels.inl (math in loss.h).
#include <math.h>

#include <cstdint>

#include "cpu/loss/loss.h"
#include "cpu/simd/vec_generic.h"

namespace nnk::cpu::generic {

constexpr int kVecBytes = 16;

#include "cpu/simd/vec_math.inl"
#include "cpu/loss/loss_kernels.inl"

}  // namespace nnk::cpu::generic
