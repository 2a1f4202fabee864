// LSTM / GRU gate kernels for the avx2 kernel set: the vector traits of vec_avx2.h, the
// maths of vec_math.inl and the kernels of rnn_kernels.inl, inside nnk::cpu::avx2.
#include <limits>

#include "cpu/rnn/rnn_isa.h"
#include "cpu/simd/vec_avx2.h"

namespace nnk::cpu::avx2 {
#include "cpu/simd/vec_math.inl"
#include "cpu/rnn/rnn_kernels.inl"
}  // namespace nnk::cpu::avx2
