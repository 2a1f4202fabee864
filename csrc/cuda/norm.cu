// Layer norm over the last D values of each row (forward, backward).
//
// Forward, one block per row: mean = sum(x) / D, var = sum((x - mean)^2) / D (two passes
// over the row, which stays in L1/L2), rstd = 1 / sqrt(var + eps),
// y = (x - mean) * rstd * w + b.
// Backward: xhat = (x - mean) * rstd, gw = g * w; dx = rstd * (gw - mean(gw) - xhat *
// mean(gw * xhat)) (one block per row); dw[j] = sum_r g[r, j] xhat[r, j], db[j] = sum_r
// g[r, j]: one thread per column summing the rows in order (deterministic, coalesced).
// Block sums: warp shuffles, then the 8 warp results through shared memory, in a fixed order.
#include <cuda_runtime.h>

#include "cuda/api.h"
#include "cuda/cuda_check.h"
#include "cuda/device.cuh"
#include "cuda/launch.h"

namespace nnk::cuda {

namespace {

template <typename T>
__device__ T block_sum(T v, T* sh) {
  v = dev::warp_sum(v);
  const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // sh may still be read from the previous call
  if (lane == 0) sh[w] = v;
  __syncthreads();
  T s = 0;
  for (int i = 0; i < kNormBlock / 32; ++i) s += sh[i];
  return s;
}

template <typename T>
__global__ void ln_fwd_kernel(T* __restrict__ y, T* __restrict__ mean, T* __restrict__ rstd,
                              const T* __restrict__ x, const T* __restrict__ w,
                              const T* __restrict__ b, index_t D, T eps) {
  __shared__ T sh[kNormBlock / 32];
  const index_t r = blockIdx.x;
  const T* xr = x + r * D;
  T* yr = y + r * D;
  T s = 0;
  for (index_t j = threadIdx.x; j < D; j += blockDim.x) s += xr[j];
  const T mu = block_sum(s, sh) / T(D);
  T q = 0;
  for (index_t j = threadIdx.x; j < D; j += blockDim.x) {
    const T d = xr[j] - mu;
    q += d * d;
  }
  const T rs = T(1) / dev::sqrt_(block_sum(q, sh) / T(D) + eps);
  for (index_t j = threadIdx.x; j < D; j += blockDim.x) {
    T v = (xr[j] - mu) * rs;
    if (w) v *= w[j];
    if (b) v += b[j];
    yr[j] = v;
  }
  if (threadIdx.x == 0) {
    mean[r] = mu;
    rstd[r] = rs;
  }
}

template <typename T>
__global__ void ln_bwd_dx_kernel(T* __restrict__ dx, const T* __restrict__ g, const T* __restrict__ x,
                                 const T* __restrict__ mean, const T* __restrict__ rstd,
                                 const T* __restrict__ w, index_t D) {
  __shared__ T sh[kNormBlock / 32];
  const index_t r = blockIdx.x;
  const T mu = mean[r], rs = rstd[r];
  const T *gr = g + r * D, *xr = x + r * D;
  T s1 = 0, s2 = 0;
  for (index_t j = threadIdx.x; j < D; j += blockDim.x) {
    const T gw = w ? gr[j] * w[j] : gr[j];
    s1 += gw;
    s2 += gw * (xr[j] - mu) * rs;
  }
  const T m1 = block_sum(s1, sh) / T(D);
  const T m2 = block_sum(s2, sh) / T(D);
  for (index_t j = threadIdx.x; j < D; j += blockDim.x) {
    const T gw = w ? gr[j] * w[j] : gr[j];
    dx[r * D + j] = rs * (gw - m1 - (xr[j] - mu) * rs * m2);
  }
}

template <typename T>
__global__ void ln_bwd_dwdb_kernel(T* __restrict__ dw, T* __restrict__ db, const T* __restrict__ g,
                                   const T* __restrict__ x, const T* __restrict__ mean,
                                   const T* __restrict__ rstd, index_t rows, index_t D) {
  const index_t j = blockIdx.x * index_t(blockDim.x) + threadIdx.x;
  if (j >= D) return;
  T sw = 0, sb = 0;
  for (index_t r = 0; r < rows; ++r) {
    const T gv = g[r * D + j];
    sw += gv * (x[r * D + j] - mean[r]) * rstd[r];
    sb += gv;
  }
  if (dw) dw[j] = sw;
  if (db) db[j] = sb;
}

template <typename T>
void ln_fwd(void* y, void* mean, void* rstd, const void* x, const void* w, const void* b,
            index_t rows, index_t D, double eps) {
  const Launch l = norm_launch(rows);
  ln_fwd_kernel<T><<<unsigned(l.grid_x), l.block>>>(
      static_cast<T*>(y), static_cast<T*>(mean), static_cast<T*>(rstd), static_cast<const T*>(x),
      static_cast<const T*>(w), static_cast<const T*>(b), D, T(eps));
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void ln_bwd(void* dx, void* dw, void* db, const void* g, const void* x, const void* mean,
            const void* rstd, const void* w, index_t rows, index_t D) {
  if (rows > 0) {
    const Launch l = norm_launch(rows);
    ln_bwd_dx_kernel<T><<<unsigned(l.grid_x), l.block>>>(
        static_cast<T*>(dx), static_cast<const T*>(g), static_cast<const T*>(x),
        static_cast<const T*>(mean), static_cast<const T*>(rstd), static_cast<const T*>(w), D);
    CUDA_CHECK(cudaGetLastError());
  }
  if (dw || db) {
    const Launch l = elementwise_launch(D);
    ln_bwd_dwdb_kernel<T><<<unsigned(ceil_div(D, l.block)), l.block>>>(
        static_cast<T*>(dw), static_cast<T*>(db), static_cast<const T*>(g),
        static_cast<const T*>(x), static_cast<const T*>(mean), static_cast<const T*>(rstd), rows, D);
    CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace

void layer_norm(DType dt, void* y, void* mean, void* rstd, const void* x, const void* w,
                const void* b, index_t rows, index_t D, double eps) {
  if (rows == 0) return;
  if (dt == DType::f32) ln_fwd<float>(y, mean, rstd, x, w, b, rows, D, eps);
  else ln_fwd<double>(y, mean, rstd, x, w, b, rows, D, eps);
}

void layer_norm_backward(DType dt, void* dx, void* dw, void* db, const void* grad,
                         const void* x, const void* mean, const void* rstd, const void* w,
                         index_t rows, index_t D) {
  if (D == 0) return;
  if (dt == DType::f32) ln_bwd<float>(dx, dw, db, grad, x, mean, rstd, w, rows, D);
  else ln_bwd<double>(dx, dw, db, grad, x, mean, rstd, w, rows, D);
}

}  // namespace nnk::cuda
