// Activation kinds shared by the elementwise family and the GEMM epilogue, and the
// elementwise activation kernels of one ISA.
#pragma once
#include "core/cpu_features.h"
#include "core/types.h"

namespace nnk {

enum class Act : int { none = 0, relu, leaky_relu, gelu, gelu_tanh, tanh, sigmoid };

// y[i] = act(x[i]) for i < n; contiguous; y may equal x (in place). Single-threaded:
// callers split the work (the GEMM epilogue calls it per tile row while the tile is in L1).
template <typename T>
void act_forward_contig(Isa isa, T* y, const T* x, index_t n, Act act, T param);

}  // namespace nnk
