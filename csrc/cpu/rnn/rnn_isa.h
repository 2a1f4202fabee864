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

  // Backward, one step (maths in rnn.h). dh holds dL/dh_t of these units.
  // RNN: d = dh (1 - h^2) (tanh) or d = (h <= 0 ? 0 : dh) (relu; NaN h passes dh).
  void (*rnn_bwd)(T* d, const T* dh, const T* h, bool relu, index_t n);
  // LSTM: gates i f g o are the activated gates of the step, c its cell, cp the previous
  // cell; dc (in/out) carries dL/dc_t in and dL/dc_{t-1} = dc_t f out. Writes the
  // pre-activation gradients di df dg do.
  void (*lstm_bwd)(T* di, T* df, T* dg, T* dout_gate, T* dc, const T* dh, const T* i, const T* f,
                   const T* g, const T* o, const T* c, const T* cp, index_t n);
  // GRU: gates r z n, hn the hidden side of n (h W_hn^T + b_hn), hp = h_{t-1}. Writes the
  // input-side pre-activation gradients dr dz dn and the hidden-side ones hr hz hn_out
  // (= dr, dz, dn r); dh (in/out) becomes its direct part dh z.
  void (*gru_bwd)(T* dr, T* dz, T* dn, T* hr, T* hz, T* hn_out, T* dh, const T* r, const T* z,
                  const T* nn, const T* hn, const T* hp, index_t n);
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
