// Activation kinds shared by the elementwise family and the GEMM epilogue, and the entry
// points of the activation / softmax family (act.cpp: threaded drivers over the per-ISA
// kernels of act_kernels.inl; act_ref.cpp: the scalar reference, the oracle).
//
// Elementwise: x, y, g, dx hold n contiguous values.
//   act_forward:  y = act(x)
//   act_backward: dx = g * act'(.) where v is x for relu, leaky_relu, gelu, gelu_tanh and
//                 the forward output y for sigmoid and tanh (what torch's autograd saves).
//   param: leaky_relu's negative slope (ignored otherwise).
// Softmax along D of a contiguous array viewed as (outer, D, inner) (axis -> D):
//   softmax_forward:  y = softmax(x) or log_softmax(x) (`log`)
//   softmax_backward: dx from g and the forward output y:
//                     softmax: y (g - sum_D g y); log_softmax: g - e^y sum_D g
// Outputs are written with `=`; dx / y may not alias the inputs except where noted.
// Threaded (parallel_for, static split), deterministic; results do not depend on the
// thread count (each element / each softmax row is computed by one fixed code path).
#pragma once
#include "core/cpu_features.h"
#include "core/types.h"

namespace nnk {

enum class Act : int { none = 0, relu, leaky_relu, gelu, gelu_tanh, tanh, sigmoid };

// y[i] = act(x[i]) for i < n; contiguous; y may equal x (in place). Single-threaded:
// callers split the work (the GEMM epilogue calls it per tile row while the tile is in L1).
template <typename T>
void act_forward_contig(Isa isa, T* y, const T* x, index_t n, Act act, T param);

template <typename T>
void act_forward(Isa isa, T* y, const T* x, index_t n, Act act, T param);
template <typename T>
void act_backward(Isa isa, T* dx, const T* g, const T* v, index_t n, Act act, T param);
template <typename T>
void softmax_forward(Isa isa, T* y, const T* x, index_t outer, index_t D, index_t inner, bool log);
template <typename T>
void softmax_backward(Isa isa, T* dx, const T* g, const T* y, index_t outer, index_t D,
                      index_t inner, bool log);

namespace ref {
// Scalar loops with the same contracts (single-threaded; std:: maths in the input dtype,
// softmax in three plain passes: max, sum, write).
template <typename T>
void act_forward(T* y, const T* x, index_t n, Act act, T param);
template <typename T>
void act_backward(T* dx, const T* g, const T* v, index_t n, Act act, T param);
template <typename T>
void softmax_forward(T* y, const T* x, index_t outer, index_t D, index_t inner, bool log);
template <typename T>
void softmax_backward(T* dx, const T* g, const T* y, index_t outer, index_t D, index_t inner, bool log);
}  // namespace ref

}  // namespace nnk
