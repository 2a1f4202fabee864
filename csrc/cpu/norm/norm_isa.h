// The per-ISA layer norm row kernels (norm_kernels.inl, instantiated in norm_<isa>.cpp) as a
// table of function pointers; single-threaded over the rows they are given (norm.cpp splits).
#pragma once
#include "core/types.h"

namespace nnk {

template <typename T>
struct NormIsaKernels {
  // rows x D rows of x -> y, mean, rstd (w, b may be null). stream: y written with
  // non-temporal stores (then fenced).
  void (*ln_fwd)(T* y, T* mean, T* rstd, const T* x, const T* w, const T* b, index_t rows,
                 index_t D, T eps, bool stream);
  // dx for the rows; dw_acc, db_acc (D each, may be null) accumulate sum_r g xhat and sum_r g
  // over these rows (+=). stream: dx written with non-temporal stores (then fenced).
  void (*ln_bwd)(T* dx, T* dw_acc, T* db_acc, const T* g, const T* x, const T* mean,
                 const T* rstd, const T* w, index_t rows, index_t D, bool stream);
};

namespace cpu {
namespace generic {
const NormIsaKernels<float>& norm_kernels(float);
const NormIsaKernels<double>& norm_kernels(double);
}  // namespace generic
namespace avx2 {
const NormIsaKernels<float>& norm_kernels(float);
const NormIsaKernels<double>& norm_kernels(double);
}  // namespace avx2
namespace avx512 {
const NormIsaKernels<float>& norm_kernels(float);
const NormIsaKernels<double>& norm_kernels(double);
}  // namespace avx512
}  // namespace cpu

}  // namespace nnk
