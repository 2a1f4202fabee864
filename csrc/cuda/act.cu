// Elementwise activations (forward, backward) and softmax / log_softmax (forward, backward).
//
// Activations: y[i] = act(x[i]); dx[i] = g[i] * act'(v[i]) (device.cuh has the formulas, the
// same as torch's). Grid-stride loops over contiguous data.
// Softmax over the middle dim of (outer, C, inner): one warp per row r = (o, i), lanes
// striding over C (element stride `inner`). Pass 1: the row max (warp reduction); pass 2:
// sum of exp(x - max); pass 3: y = exp(x - max) / sum, or for log_softmax
// y = x - max - log(sum). Backward: softmax dx = y * (g - sum(g * y)); log_softmax
// dx = g - exp(y) * sum(g).
#include <cuda_runtime.h>

#include "cuda/api.h"
#include "cuda/cuda_check.h"
#include "cuda/device.cuh"
#include "cuda/launch.h"

namespace nnk::cuda {

namespace {

template <typename T>
__global__ void act_fwd_kernel(T* __restrict__ y, const T* __restrict__ x, index_t n, Act a, T param) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n;
       i += index_t(gridDim.x) * blockDim.x)
    y[i] = dev::act_apply(a, x[i], param);
}

template <typename T>
__global__ void act_bwd_kernel(T* __restrict__ dx, const T* __restrict__ g, const T* __restrict__ v,
                               index_t n, Act a, T param) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n;
       i += index_t(gridDim.x) * blockDim.x)
    dx[i] = dev::act_grad(a, g[i], v[i], param);
}

template <typename T>
__global__ void softmax_kernel(T* __restrict__ y, const T* __restrict__ x, index_t rows, index_t C,
                               index_t inner, bool log) {
  const index_t r = index_t(blockIdx.x) * kRowWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const index_t base = (r / inner) * C * inner + r % inner;
  const T* xr = x + base;
  T* yr = y + base;
  T mx = -INFINITY;
  for (index_t c = lane; c < C; c += 32) mx = fmax(mx, xr[c * inner]);
  mx = dev::warp_max(mx);
  T s = 0;
  for (index_t c = lane; c < C; c += 32) s += dev::exp_(xr[c * inner] - mx);
  s = dev::warp_sum(s);
  if (log) {
    const T ls = dev::log_(s);
    for (index_t c = lane; c < C; c += 32) yr[c * inner] = xr[c * inner] - mx - ls;
  } else {
    const T inv = T(1) / s;
    for (index_t c = lane; c < C; c += 32) yr[c * inner] = dev::exp_(xr[c * inner] - mx) * inv;
  }
}

template <typename T>
__global__ void softmax_bwd_kernel(T* __restrict__ dx, const T* __restrict__ g, const T* __restrict__ y,
                                   index_t rows, index_t C, index_t inner, bool log) {
  const index_t r = index_t(blockIdx.x) * kRowWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const index_t base = (r / inner) * C * inner + r % inner;
  T s = 0;
  for (index_t c = lane; c < C; c += 32)
    s += log ? g[base + c * inner] : g[base + c * inner] * y[base + c * inner];
  s = dev::warp_sum(s);
  for (index_t c = lane; c < C; c += 32) {
    const index_t i = base + c * inner;
    dx[i] = log ? g[i] - dev::exp_(y[i]) * s : y[i] * (g[i] - s);
  }
}

}  // namespace

void act_forward(DType dt, void* y, const void* x, index_t n, Act act, double param) {
  if (n == 0) return;
  const Launch l = elementwise_launch(n);
  if (dt == DType::f32)
    act_fwd_kernel<float><<<unsigned(l.grid_x), l.block>>>(
        static_cast<float*>(y), static_cast<const float*>(x), n, act, float(param));
  else
    act_fwd_kernel<double><<<unsigned(l.grid_x), l.block>>>(
        static_cast<double*>(y), static_cast<const double*>(x), n, act, param);
  CUDA_CHECK(cudaGetLastError());
}

void act_backward(DType dt, void* dx, const void* grad, const void* v, index_t n, Act act,
                  double param) {
  if (n == 0) return;
  const Launch l = elementwise_launch(n);
  if (dt == DType::f32)
    act_bwd_kernel<float><<<unsigned(l.grid_x), l.block>>>(
        static_cast<float*>(dx), static_cast<const float*>(grad), static_cast<const float*>(v), n,
        act, float(param));
  else
    act_bwd_kernel<double><<<unsigned(l.grid_x), l.block>>>(
        static_cast<double*>(dx), static_cast<const double*>(grad), static_cast<const double*>(v),
        n, act, param);
  CUDA_CHECK(cudaGetLastError());
}

void softmax(DType dt, void* y, const void* x, index_t outer, index_t C, index_t inner, bool log) {
  const index_t rows = outer * inner;
  if (rows == 0 || C == 0) return;
  const Launch l = rows_launch(rows);
  if (dt == DType::f32)
    softmax_kernel<float><<<unsigned(l.grid_x), l.block>>>(
        static_cast<float*>(y), static_cast<const float*>(x), rows, C, inner, log);
  else
    softmax_kernel<double><<<unsigned(l.grid_x), l.block>>>(
        static_cast<double*>(y), static_cast<const double*>(x), rows, C, inner, log);
  CUDA_CHECK(cudaGetLastError());
}

void softmax_backward(DType dt, void* dx, const void* grad, const void* y, index_t outer,
                      index_t C, index_t inner, bool log) {
  const index_t rows = outer * inner;
  if (rows == 0 || C == 0) return;
  const Launch l = rows_launch(rows);
  if (dt == DType::f32)
    softmax_bwd_kernel<float><<<unsigned(l.grid_x), l.block>>>(
        static_cast<float*>(dx), static_cast<const float*>(grad), static_cast<const float*>(y),
        rows, C, inner, log);
  else
    softmax_bwd_kernel<double><<<unsigned(l.grid_x), l.block>>>(
        static_cast<double*>(dx), static_cast<const double*>(grad), static_cast<const double*>(y),
        rows, C, inner, log);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace nnk::cuda
