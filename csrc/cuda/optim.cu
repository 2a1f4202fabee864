// Optimizer steps, in place, one thread per element (grid-stride). The same maths as the CPU
// loops (cpu/optim/optim_impl.inl, after torch.optim):
//   SGD:  d = g + wd * p; buf = first step ? d : momentum * buf + (1 - dampening) * d;
//         u = nesterov ? d + momentum * buf : buf (d without momentum); p -= lr * u.
//   Adam: (decoupled: p *= 1 - lr * wd; else g += wd * p); m += (1 - b1) * (g - m);
//         v = b2 * v + (1 - b2) * g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
#include <cuda_runtime.h>

#include <cmath>

#include "cuda/api.h"
#include "cuda/cuda_check.h"
#include "cuda/device.cuh"
#include "cuda/launch.h"

namespace nnk::cuda {

namespace {

template <typename T>
__global__ void sgd_kernel(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf, index_t n,
                           T lr, T mom, T damp, T wd, bool use_mom, bool nesterov, bool first) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n;
       i += index_t(gridDim.x) * blockDim.x) {
    const T d = wd != T(0) ? g[i] + wd * p[i] : g[i];
    T u = d;
    if (use_mom) {
      const T b = first ? d : mom * buf[i] + damp * d;
      buf[i] = b;
      u = nesterov ? d + mom * b : b;
    }
    p[i] = p[i] - lr * u;
  }
}

template <typename T>
__global__ void adam_kernel(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                            T* __restrict__ v, index_t n, T step_size, T bc2_sqrt, T w1, T b2, T w2,
                            T eps, T wd, T decay, bool decoupled) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n;
       i += index_t(gridDim.x) * blockDim.x) {
    T pi = p[i], gi = g[i];
    if (wd != T(0)) {
      if (decoupled) pi = pi * decay;
      else gi = gi + wd * pi;
    }
    const T mi = m[i] + w1 * (gi - m[i]);
    const T vi = b2 * v[i] + w2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - step_size * (mi / (dev::sqrt_(vi) / bc2_sqrt + eps));
  }
}

}  // namespace

void sgd_step(DType dt, void* param, const void* grad, void* buf, index_t n, double lr,
              double momentum, double dampening, double weight_decay, bool nesterov,
              bool first_step) {
  if (n == 0) return;
  const Launch l = elementwise_launch(n);
  const bool use_mom = momentum != 0.0;
  if (dt == DType::f32)
    sgd_kernel<float><<<unsigned(l.grid_x), l.block>>>(
        static_cast<float*>(param), static_cast<const float*>(grad), static_cast<float*>(buf), n,
        float(lr), float(momentum), float(1.0 - dampening), float(weight_decay), use_mom, nesterov,
        first_step);
  else
    sgd_kernel<double><<<unsigned(l.grid_x), l.block>>>(
        static_cast<double*>(param), static_cast<const double*>(grad), static_cast<double*>(buf), n,
        lr, momentum, 1.0 - dampening, weight_decay, use_mom, nesterov, first_step);
  CUDA_CHECK(cudaGetLastError());
}

void adam_step(DType dt, void* param, const void* grad, void* m, void* v, index_t n, double lr,
               double beta1, double beta2, double eps, double weight_decay, bool decoupled,
               int64_t step) {
  if (n == 0) return;
  const double bc1 = 1.0 - std::pow(beta1, double(step));
  const double bc2 = 1.0 - std::pow(beta2, double(step));
  const double step_size = lr / bc1, bc2_sqrt = std::sqrt(bc2), decay = 1.0 - lr * weight_decay;
  const Launch l = elementwise_launch(n);
  if (dt == DType::f32)
    adam_kernel<float><<<unsigned(l.grid_x), l.block>>>(
        static_cast<float*>(param), static_cast<const float*>(grad), static_cast<float*>(m),
        static_cast<float*>(v), n, float(step_size), float(bc2_sqrt), float(1.0 - beta1),
        float(beta2), float(1.0 - beta2), float(eps), float(weight_decay), float(decay), decoupled);
  else
    adam_kernel<double><<<unsigned(l.grid_x), l.block>>>(
        static_cast<double*>(param), static_cast<const double*>(grad), static_cast<double*>(m),
        static_cast<double*>(v), n, step_size, bc2_sqrt, 1.0 - beta1, beta2, 1.0 - beta2, eps,
        weight_decay, decay, decoupled);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace nnk::cuda
