// Device helpers shared by the .cu files: activations and their derivatives, warp
// reductions. Header-only device code; every function is inline (internal to each .cu).
#pragma once
#include <cuda_runtime.h>

#include "cuda/api.h"

namespace nnk::cuda::dev {

template <typename T> __device__ __forceinline__ T erf_(T x) { return erf(x); }
template <> __device__ __forceinline__ float erf_(float x) { return erff(x); }
template <typename T> __device__ __forceinline__ T exp_(T x) { return exp(x); }
template <> __device__ __forceinline__ float exp_(float x) { return expf(x); }
template <typename T> __device__ __forceinline__ T log_(T x) { return log(x); }
template <> __device__ __forceinline__ float log_(float x) { return logf(x); }
template <typename T> __device__ __forceinline__ T log1p_(T x) { return log1p(x); }
template <> __device__ __forceinline__ float log1p_(float x) { return log1pf(x); }
template <typename T> __device__ __forceinline__ T tanh_(T x) { return tanh(x); }
template <> __device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
template <typename T> __device__ __forceinline__ T sqrt_(T x) { return sqrt(x); }
template <> __device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }

// act(x) as torch computes it (NaN propagates: relu(nan) = nan).
template <typename T>
__device__ __forceinline__ T act_apply(Act a, T x, T param) {
  switch (a) {
    case Act::relu: return x > T(0) ? x : (x != x ? x : T(0));
    case Act::leaky_relu: return x > T(0) ? x : x * param;
    case Act::sigmoid: return T(1) / (T(1) + exp_(-x));
    case Act::tanh: return tanh_(x);
    case Act::gelu: return T(0.5) * x * (T(1) + erf_(x * T(0.70710678118654752440)));
    case Act::gelu_tanh: {
      const T k0 = T(0.79788456080286535588), k1 = T(0.044715);
      return T(0.5) * x * (T(1) + tanh_(k0 * (x + k1 * x * x * x)));
    }
    default: return x;
  }
}

// grad * act'(v): v is x for relu / leaky_relu / gelu*, the forward's y for sigmoid / tanh.
template <typename T>
__device__ __forceinline__ T act_grad(Act a, T g, T v, T param) {
  switch (a) {
    case Act::relu: return v > T(0) ? g : T(0);
    case Act::leaky_relu: return v > T(0) ? g : g * param;
    case Act::sigmoid: return g * v * (T(1) - v);
    case Act::tanh: return g * (T(1) - v * v);
    case Act::gelu: {
      const T cdf = T(0.5) * (T(1) + erf_(v * T(0.70710678118654752440)));
      const T pdf = exp_(T(-0.5) * v * v) * T(0.39894228040143267794);
      return g * (cdf + v * pdf);
    }
    case Act::gelu_tanh: {
      const T k0 = T(0.79788456080286535588), k1 = T(0.044715);
      const T t = tanh_(k0 * (v + k1 * v * v * v));
      return g * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * k0 * (T(1) + T(3) * k1 * v * v));
    }
    default: return g;
  }
}

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename T> __device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace nnk::cuda::dev
