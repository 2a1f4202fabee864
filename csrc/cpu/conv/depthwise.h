// Depthwise convolution forward (groups == C, Cout a multiple of C): a direct kernel per
// ISA (depthwise.inl), since a GEMM per channel (M = Cout/C rows) is too thin.
// Computes output planes q in [q0, q1) (q = n * Cout + o) of y (N, Cout, Ho, Wo).
#pragma once
#include "cpu/conv/conv.h"

namespace nnk::cpu {
namespace generic {
void depthwise_forward(DType dt, const ConvGeom& g, void* y, const void* x, const void* w, const void* bias,
                       index_t q0, index_t q1);
}
namespace avx2 {
void depthwise_forward(DType dt, const ConvGeom& g, void* y, const void* x, const void* w, const void* bias,
                       index_t q0, index_t q1);
}
namespace avx512 {
void depthwise_forward(DType dt, const ConvGeom& g, void* y, const void* x, const void* w, const void* bias,
                       index_t q0, index_t q1);
}
}  // namespace nnk::cpu
