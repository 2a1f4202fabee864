// Losses: mse, binary cross-entropy with logits, cross-entropy with class indices; forward
// and backward (maths as the CPU path, cpu/loss/loss.h).
//
// Reductions ("mean" / "sum"): each block sums a grid-stride share of the per-element (or
// per-row) losses in double, each loss computed in T as on the CPU, then a tree in shared
// memory; one more block sums the block partials in order. The grid depends only on n, so
// the result is the same on every run (no atomics).
// Cross-entropy: one warp per row, as softmax: loss_n = max + log(sum exp(x - max)) - x[t_n];
// backward dx = (softmax(x_n) - onehot(t_n)) * g_n. Targets are checked first
// (first_bad_target): the smallest row whose index is outside [0, C), found with atomicMin
// and read back by the host before the loss is launched.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/api.h"
#include "cuda/cuda_check.h"
#include "cuda/device.cuh"
#include "cuda/launch.h"

namespace nnk::cuda {

namespace {

constexpr int kSumBlock = 256;
constexpr index_t kSumMaxBlocks = 512;

template <typename T>
__device__ __forceinline__ T elem_loss(LossKind k, T x, T t) {
  if (k == LossKind::mse) {
    const T d = x - t;
    return d * d;
  }
  // max(x, 0) - x t + log1p(exp(-|x|)); NaN propagates through x t.
  return (x > T(0) ? x : T(0)) - x * t + dev::log1p_(dev::exp_(-fabs(x)));
}

template <typename T>
__device__ __forceinline__ T elem_grad(LossKind k, T x, T t) {
  if (k == LossKind::mse) return T(2) * (x - t);
  return T(1) / (T(1) + dev::exp_(-x)) - t;
}

template <typename T>
struct ElemLoss {
  const T* x;
  const T* t;
  LossKind k;
  __device__ T operator()(index_t i) const { return elem_loss(k, x[i], t[i]); }
};
template <typename T>
struct Values {
  const T* v;
  __device__ T operator()(index_t i) const { return v[i]; }
};

// Tree sum of sh[0 .. kSumBlock) into sh[0].
__device__ __forceinline__ void block_tree(double* sh) {
  for (int w = kSumBlock / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) sh[threadIdx.x] += sh[threadIdx.x + w];
    __syncthreads();
  }
}

template <class F>
__global__ void partial_sums(index_t n, F f, double* __restrict__ part) {
  __shared__ double sh[kSumBlock];
  double s = 0;
  for (index_t i = index_t(blockIdx.x) * kSumBlock + threadIdx.x; i < n; i += index_t(gridDim.x) * kSumBlock)
    s += double(f(i));
  sh[threadIdx.x] = s;
  __syncthreads();
  block_tree(sh);
  if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}

__global__ void final_sum(const double* __restrict__ part, index_t nb, double* __restrict__ out) {
  __shared__ double sh[kSumBlock];
  double s = 0;
  for (index_t i = threadIdx.x; i < nb; i += kSumBlock) s += part[i];
  sh[threadIdx.x] = s;
  __syncthreads();
  block_tree(sh);
  if (threadIdx.x == 0) *out = sh[0];
}

// sum_{i < n} f(i) in double; waits for the result.
template <class F>
double device_sum(index_t n, F f) {
  if (n == 0) return 0.0;
  const index_t nb = std::min(kSumMaxBlocks, ceil_div(n, index_t(kSumBlock) * 4));
  DeviceScratch part(sizeof(double) * size_t(nb + 1));
  double* p = static_cast<double*>(part.p);
  partial_sums<<<unsigned(nb), kSumBlock>>>(n, f, p);
  CUDA_CHECK(cudaGetLastError());
  final_sum<<<1, kSumBlock>>>(p, nb, p + nb);
  CUDA_CHECK(cudaGetLastError());
  double r = 0;
  copy_d2h(&r, p + nb, sizeof(double));
  return r;
}

template <typename T>
__global__ void elem_loss_kernel(T* __restrict__ out, const T* __restrict__ x, const T* __restrict__ t,
                                 index_t n, LossKind k) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    out[i] = elem_loss(k, x[i], t[i]);
}

template <typename T>
__global__ void elem_grad_kernel(T* __restrict__ dx, const T* __restrict__ x, const T* __restrict__ t,
                                 const T* __restrict__ g, T scale, index_t n, LossKind k) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    dx[i] = elem_grad(k, x[i], t[i]) * (g ? g[i] : scale);
}

__device__ __forceinline__ long long target_at(const void* t, int bits, index_t ts, index_t n) {
  return bits == 32 ? (long long)(static_cast<const int*>(t)[n * ts]) : static_cast<const long long*>(t)[n * ts];
}

// flags[0]: the first bad position (atomicMin); flags[1]: the number of ignored targets.
__global__ void first_bad_target(const void* __restrict__ t, int bits, index_t ts, index_t N, index_t C,
                                 bool has_ignore, long long ignore, unsigned long long* __restrict__ flags) {
  unsigned long long ignored = 0;
  for (index_t n = blockIdx.x * index_t(blockDim.x) + threadIdx.x; n < N; n += index_t(gridDim.x) * blockDim.x) {
    const long long v = target_at(t, bits, ts, n);
    if (has_ignore && v == ignore) ++ignored;
    else if (v < 0 || v >= C) atomicMin(flags, (unsigned long long)n);
  }
  if (ignored) atomicAdd(flags + 1, ignored);
}

// Per row: loss_n (T) or, with dx, the gradient row.
template <typename T>
__global__ void ce_rows_kernel(T* __restrict__ loss, T* __restrict__ dx, const T* __restrict__ x, index_t N,
                               index_t C, const void* __restrict__ t, int bits, index_t ts, long long ignore,
                               const T* __restrict__ g, index_t gs, T scale) {
  const index_t r = index_t(blockIdx.x) * kRowWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= N) return;
  const T* xr = x + r * C;
  const long long tl = target_at(t, bits, ts, r);
  if (tl == ignore) {  // the whole warp takes this branch
    if (!dx) {
      if (lane == 0) loss[r] = T(0);
    } else {
      for (index_t c = lane; c < C; c += 32) dx[r * C + c] = T(0);
    }
    return;
  }
  const index_t tr = index_t(tl);
  T mx = -INFINITY;
  for (index_t c = lane; c < C; c += 32) mx = fmax(mx, xr[c]);
  mx = dev::warp_max(mx);
  T s = 0;
  for (index_t c = lane; c < C; c += 32) s += dev::exp_(xr[c] - mx);
  s = dev::warp_sum(s);
  if (!dx) {
    if (lane == 0) loss[r] = mx + dev::log_(s) - xr[tr];
    return;
  }
  const T gr = g ? g[r * gs] : scale;
  const T inv = T(1) / s;
  T* dr = dx + r * C;
  for (index_t c = lane; c < C; c += 32) dr[c] = (dev::exp_(xr[c] - mx) * inv - (c == tr ? T(1) : T(0))) * gr;
}

template <typename T>
void ce_rows(T* loss, T* dx, const T* x, index_t N, index_t C, const void* t, int bits, index_t ts, long long ignore,
             const T* g, index_t gs, double scale) {
  if (N == 0) return;
  const Launch l = rows_launch(N);
  ce_rows_kernel<T><<<unsigned(l.grid_x), l.block>>>(loss, dx, x, N, C, t, bits, ts, ignore, g, gs, T(scale));
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void loss_none(DType dt, LossKind k, void* out, const void* x, const void* t, index_t n) {
  if (n == 0) return;
  const Launch l = elementwise_launch(n);
  if (dt == DType::f32)
    elem_loss_kernel<float><<<unsigned(l.grid_x), l.block>>>(
        static_cast<float*>(out), static_cast<const float*>(x), static_cast<const float*>(t), n, k);
  else
    elem_loss_kernel<double><<<unsigned(l.grid_x), l.block>>>(
        static_cast<double*>(out), static_cast<const double*>(x), static_cast<const double*>(t), n, k);
  CUDA_CHECK(cudaGetLastError());
}

double loss_sum(DType dt, LossKind k, const void* x, const void* t, index_t n) {
  if (dt == DType::f32)
    return device_sum(n, ElemLoss<float>{static_cast<const float*>(x), static_cast<const float*>(t), k});
  return device_sum(n, ElemLoss<double>{static_cast<const double*>(x), static_cast<const double*>(t), k});
}

void loss_backward(DType dt, LossKind k, void* dx, const void* x, const void* t, const void* g,
                   double scale, index_t n) {
  if (n == 0) return;
  const Launch l = elementwise_launch(n);
  if (dt == DType::f32)
    elem_grad_kernel<float><<<unsigned(l.grid_x), l.block>>>(
        static_cast<float*>(dx), static_cast<const float*>(x), static_cast<const float*>(t),
        static_cast<const float*>(g), float(scale), n, k);
  else
    elem_grad_kernel<double><<<unsigned(l.grid_x), l.block>>>(
        static_cast<double*>(dx), static_cast<const double*>(x), static_cast<const double*>(t),
        static_cast<const double*>(g), scale, n, k);
  CUDA_CHECK(cudaGetLastError());
}

index_t first_bad_class(const void* t, int bits, index_t ts, index_t N, index_t C, const long long* ignore,
                        index_t* n_ignored) {
  if (n_ignored) *n_ignored = 0;
  if (N == 0) return -1;
  DeviceScratch flags(2 * sizeof(unsigned long long));
  unsigned long long init[2] = {~0ull, 0}, r[2] = {0, 0};
  copy_h2d(flags.p, init, sizeof(init));
  const Launch l = elementwise_launch(N);
  first_bad_target<<<unsigned(l.grid_x), l.block>>>(t, bits, ts, N, C, ignore != nullptr, ignore ? *ignore : 0,
                                                    static_cast<unsigned long long*>(flags.p));
  CUDA_CHECK(cudaGetLastError());
  copy_d2h(r, flags.p, sizeof(r));
  if (n_ignored) *n_ignored = index_t(r[1]);
  return r[0] == init[0] ? index_t(-1) : index_t(r[0]);
}

long long read_class(const void* t, int bits, index_t ts, index_t n) {
  if (bits == 32) {
    int v = 0;
    copy_d2h(&v, static_cast<const int*>(t) + n * ts, sizeof(v));
    return v;
  }
  long long v = 0;
  copy_d2h(&v, static_cast<const long long*>(t) + n * ts, sizeof(v));
  return v;
}

void cross_entropy_none(DType dt, void* loss, const void* x, index_t N, index_t C, const void* t, int bits,
                        index_t ts, long long ignore) {
  if (dt == DType::f32)
    ce_rows<float>(static_cast<float*>(loss), nullptr, static_cast<const float*>(x), N, C, t, bits, ts, ignore,
                   nullptr, 0, 0.0);
  else
    ce_rows<double>(static_cast<double*>(loss), nullptr, static_cast<const double*>(x), N, C, t, bits, ts, ignore,
                    nullptr, 0, 0.0);
}

double cross_entropy_sum(DType dt, const void* x, index_t N, index_t C, const void* t, int bits, index_t ts,
                         long long ignore) {
  DeviceScratch rows(size_t(std::max<index_t>(N, 1) * dtype_size(dt)));
  cross_entropy_none(dt, rows.p, x, N, C, t, bits, ts, ignore);
  if (dt == DType::f32) return device_sum(N, Values<float>{static_cast<const float*>(rows.p)});
  return device_sum(N, Values<double>{static_cast<const double*>(rows.p)});
}

void cross_entropy_backward(DType dt, void* dx, const void* x, index_t N, index_t C, const void* t, int bits,
                            index_t ts, long long ignore, const void* g, index_t gs, double scale) {
  if (dt == DType::f32)
    ce_rows<float>(nullptr, static_cast<float*>(dx), static_cast<const float*>(x), N, C, t, bits, ts, ignore,
                   static_cast<const float*>(g), gs, scale);
  else
    ce_rows<double>(nullptr, static_cast<double*>(dx), static_cast<const double*>(x), N, C, t, bits, ts, ignore,
                    static_cast<const double*>(g), gs, scale);
}

}  // namespace nnk::cuda
