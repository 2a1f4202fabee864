// LSTM / GRU gate kernels for the generic kernel set: the vector traits of vec_generic.h, the
// maths of vec_math.inl and the kernels of rnn_kernels.inl, inside nnk::cpu::generic.
#include <limits>

#include "cpu/rnn/rnn_isa.h"
#include "cpu/simd/vec_generic.h"

namespace nnk::cpu::generic {
#include "cpu/simd/vec_math.inl"
#include "cpu/rnn/rnn_kernels.inl"
}  // namespace nnk::cpu::generic
