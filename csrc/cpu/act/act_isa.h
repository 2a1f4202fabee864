// The per-ISA activation and softmax kernels (act_kernels.inl, instantiated in
// act_<isa>.cpp) as a table of function pointers. Every entry is single-threaded over the
// range it is given; act.cpp splits the work across threads.
#pragma once
#include "core/types.h"
#include "cpu/act/act.h"

namespace nnk {

template <typename T>
struct ActIsaKernels {
  // y[i] = act(x[i]), i < n (y may equal x). stream: y's whole aligned vectors by
  // non-temporal stores (fenced before returning), for outputs past the last-level cache.
  void (*fwd)(T* y, const T* x, index_t n, Act act, T param, bool stream);
  // dx[i] = g[i] * act'(.), from v = x (relu, leaky_relu, gelu, gelu_tanh) or v = y
  // (sigmoid, tanh), i < n. stream: as fwd.
  void (*bwd)(T* dx, const T* g, const T* v, index_t n, Act act, T param, bool stream);
  // Softmax over `rows` contiguous rows of length D (the inner == 1 case).
  void (*softmax_rows)(T* y, const T* x, index_t rows, index_t D, bool log);
  void (*softmax_bwd_rows)(T* dx, const T* g, const T* y, index_t rows, index_t D, bool log);
  // Softmax of one (D, inner) slice along D, for the columns [c0, c1) of inner.
  void (*softmax_cols)(T* y, const T* x, index_t D, index_t inner, index_t c0, index_t c1, bool log);
  void (*softmax_bwd_cols)(T* dx, const T* g, const T* y, index_t D, index_t inner, index_t c0,
                           index_t c1, bool log);
};

namespace cpu {
namespace generic {
const ActIsaKernels<float>& act_kernels(float);
const ActIsaKernels<double>& act_kernels(double);
}  // namespace generic
namespace avx2 {
const ActIsaKernels<float>& act_kernels(float);
const ActIsaKernels<double>& act_kernels(double);
}  // namespace avx2
namespace avx512 {
const ActIsaKernels<float>& act_kernels(float);
const ActIsaKernels<double>& act_kernels(double);
}  // namespace avx512
}  // namespace cpu

}  // namespace nnk
