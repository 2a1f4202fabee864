// The per-ISA elementwise kernels of the recurrent family (rnn_kernels.inl, instantiated in
// rnn_<isa>.cpp with that ISA's Vec<T>, vsigmoid and vtanh) as a table of function
// pointers. Each works on one contiguous run of n hidden units of one batch row.
#pragma once
#include "core/types.h"

namespace nnk {

template <typename T>
struct RnnIsaKernels {
  // LSTM: i f g o hold pre-activations (n each), replaced by sigmoid, sigmoid, tanh,
  // sigmoid; c := f c + i g (in place; c_out may equal c_in); h = o tanh(c).
  void (*lstm)(T* i, T* f, T* g, T* o, const T* c_in, T* c_out, T* h, index_t n);
  // GRU: r z hold the summed pre-activations, nx the input side of n, s the hidden side
  // (h W_hn^T + b_hn); r z nx become r z n; h = n + z (hp - n).
  void (*gru)(T* r, T* z, T* nx, const T* s, const T* hp, T* h, index_t n);
};

namespace cpu {
namespace generic {
const RnnIsaKernels<float>& rnn_kernels(float);
const RnnIsaKernels<double>& rnn_kernels(double);
}  // namespace generic
namespace avx2 {
const RnnIsaKernels<float>& rnn_kernels(float);
const RnnIsaKernels<double>& rnn_kernels(double);
}  // namespace avx2
namespace avx512 {
const RnnIsaKernels<float>& rnn_kernels(float);
const RnnIsaKernels<double>& rnn_kernels(double);
}  // namespace avx512
}  // namespace cpu

}  // namespace nnk
