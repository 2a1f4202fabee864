// Depthwise convolution (groups == C, Cout a multiple of C): direct kernels per ISA
// (depthwise.inl), since a GEMM per channel (M = Cout/C rows) is too thin.
//   forward: output planes q in [q0, q1) (q = n * Cout + o) of y (N, Cout, Ho, Wo);
//   backward_data: input planes p in [p0, p1) (p = n * C + c) of dx (overwritten);
//   backward_weight: channels o in [o0, o1) of dw (Cout, 1, kh, kw) (overwritten).
#pragma once
#include "cpu/conv/conv.h"

namespace nnk::cpu {
#define NNK_DEPTHWISE_DECL                                                                               \
  void depthwise_forward(DType dt, const ConvGeom& g, void* y, const void* x, const void* w,             \
                         const void* bias, index_t q0, index_t q1);                                      \
  void depthwise_backward_data(DType dt, const ConvGeom& g, void* dx, const void* dy, const void* w,     \
                               index_t p0, index_t p1);                                                  \
  void depthwise_backward_weight(DType dt, const ConvGeom& g, void* dw, const void* dy, const void* x,   \
                                 index_t o0, index_t o1);
namespace generic { NNK_DEPTHWISE_DECL }
namespace avx2 { NNK_DEPTHWISE_DECL }
namespace avx512 { NNK_DEPTHWISE_DECL }
#undef NNK_DEPTHWISE_DECL
}  // namespace nnk::cpu
