// 2-D max and average pooling on the GPU, forward and backward, with the CPU path's (torch's)
// semantics (cpu/pool/pool.h):
//   window of output (oh, ow): rows oh * sh - ph + i * dh (i < kh), columns ow * sw - pw + j * dw.
//   max:  y = the maximum over the in-range taps, idx = ih * W + iw of the winner (flat within
//         the H * W plane). Taps are visited row-major; a tap wins when it is greater than the
//         running maximum or NaN, so a window holding a NaN gives NaN (and the last NaN's
//         index); a window of -inf (or with no in-range tap) keeps its first in-range position.
//   avg:  rows clipped to [oh * sh - ph, min(oh * sh - ph + kh, H + ph)), then to [0, H) (columns
//         alike); divisor = the first range's area with count_include_pad, else the in-range
//         area; a window without an in-range element gives 0.
// Shapes (planes = N * C): x and dy of the avg backward (planes, ., .) read in place through a
// PlaneView (any strides); y, idx (planes, Ho, Wo) and dx (planes, H, W) contiguous, written
// with `=`; the max backward's dy and idx contiguous.
// Kernels (deterministic: no float atomics; each output element has one owner thread that
// sums in a fixed order, the CPU's):
//   1. max_fwd_kernel: a thread per output, grid-stride.
//   2. max_bwd_kernel: a warp per plane. The warp zeroes its plane of dx, then walks the plane's
//      outputs 32 at a time (one coalesced load of index and grad per lane) and broadcasts each
//      (index, grad) pair with shuffles; element k belongs to lane k % 32, which adds the grads
//      in output order: each sum is the CPU's scatter-add, bit for bit. The indices are checked
//      by the caller first (first_bad_class); the kernel also skips any index outside [0, H W).
//      Time per plane grows with H * W + Ho * Wo on one warp.
//   3. avg_fwd_kernel: a thread per output; sums the window row by row (the CPU's order).
//   4. avg_bwd_kernel: a thread per input element gathering dy / divisor over the windows that
//      hold it, oh then ow ascending (the order of the CPU's scatter).
#include <cuda_runtime.h>

#include "cuda/api.h"
#include "cuda/cuda_check.h"
#include "cuda/launch.h"

namespace nnk::cuda {

namespace {

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return -__int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double neg_inf<double>() {
  return -__longlong_as_double(0x7ff0000000000000LL);
}

__device__ __forceinline__ index_t imin(index_t a, index_t b) { return a < b ? a : b; }
__device__ __forceinline__ index_t imax(index_t a, index_t b) { return a > b ? a : b; }
// floor(a / b) for b > 0.
__device__ __forceinline__ index_t floor_div(index_t a, index_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Start of plane q in a PlaneView.
template <typename T>
__device__ __forceinline__ const T* plane(const PlaneView& v, index_t q) {
  return static_cast<const T*>(v.p) + (q / v.C) * v.sn + (q % v.C) * v.sc;
}

template <typename T>
__global__ void max_fwd_kernel(T* __restrict__ y, int64_t* __restrict__ idx, PlaneView x, PoolDims g,
                               index_t total) {
  for (index_t e = blockIdx.x * index_t(blockDim.x) + threadIdx.x; e < total;
       e += index_t(gridDim.x) * blockDim.x) {
    const index_t ow = e % g.Wo;
    const index_t r = e / g.Wo;
    const index_t oh = r % g.Ho, q = r / g.Ho;
    const index_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    // first in-range tap (the CPU's `while (b < 0) b += d`) and the end of the window
    const index_t hb = h0 < 0 ? h0 + (-h0 + g.dh - 1) / g.dh * g.dh : h0;
    const index_t wb = w0 < 0 ? w0 + (-w0 + g.dw - 1) / g.dw * g.dw : w0;
    const index_t he = imin(h0 + (g.kh - 1) * g.dh + 1, g.H), we = imin(w0 + (g.kw - 1) * g.dw + 1, g.W);
    const T* xp = plane<T>(x, q);
    T m = neg_inf<T>();
    index_t mi = hb * g.W + wb;
    for (index_t ih = hb; ih < he; ih += g.dh)
      for (index_t iw = wb; iw < we; iw += g.dw) {
        const T v = xp[ih * x.sr + iw * x.ss];
        if (v > m || v != v) { m = v; mi = ih * g.W + iw; }
      }
    y[e] = m;
    if (idx) idx[e] = mi;
  }
}

constexpr int kPoolBwdWarps = 8;  // warps (planes in flight) per block of max_bwd_kernel

template <typename T, typename I>
__global__ void max_bwd_kernel(T* __restrict__ dx, const T* __restrict__ dy, const I* __restrict__ idx,
                               index_t planes, index_t HW, index_t L) {
  const int lane = threadIdx.x % 32;
  const index_t warps = index_t(gridDim.x) * kPoolBwdWarps;
  // q, l0 and cnt are the same on every lane of a warp: the shuffles see the full warp.
  for (index_t q = index_t(blockIdx.x) * kPoolBwdWarps + threadIdx.x / 32; q < planes; q += warps) {
    T* dp = dx + q * HW;
    for (index_t k = lane; k < HW; k += 32) dp[k] = T(0);
    const T* gp = dy + q * L;
    const I* ip = idx + q * L;
    for (index_t l0 = 0; l0 < L; l0 += 32) {
      const index_t l = l0 + lane;
      const long long mine_k = l < L ? static_cast<long long>(ip[l]) : -1;
      const T mine_g = l < L ? gp[l] : T(0);
      const int cnt = L - l0 < 32 ? int(L - l0) : 32;
      for (int j = 0; j < cnt; ++j) {
        const long long k = __shfl_sync(0xffffffffu, mine_k, j);
        const T gv = __shfl_sync(0xffffffffu, mine_g, j);
        if (k >= 0 && k < HW && int(k & 31) == lane) dp[k] += gv;  // the owner lane, in output order
      }
    }
  }
}

// The clipped average-pool window along one axis (the CPU's avg_spans).
struct AvgSpan { index_t b, e, full; };
__device__ __forceinline__ AvgSpan avg_span(index_t o, index_t n, index_t k, index_t s, index_t p) {
  const index_t b = o * s - p, e = imin(b + k, n + p);
  return {imax(b, 0), imin(e, n), e - b};
}

template <typename T>
__global__ void avg_fwd_kernel(T* __restrict__ y, PlaneView x, PoolDims g, bool cip, index_t total) {
  for (index_t e = blockIdx.x * index_t(blockDim.x) + threadIdx.x; e < total;
       e += index_t(gridDim.x) * blockDim.x) {
    const index_t ow = e % g.Wo;
    const index_t r = e / g.Wo;
    const index_t oh = r % g.Ho, q = r / g.Ho;
    const AvgSpan rs = avg_span(oh, g.H, g.kh, g.sh, g.ph), cs = avg_span(ow, g.W, g.kw, g.sw, g.pw);
    if (rs.b >= rs.e || cs.b >= cs.e) { y[e] = T(0); continue; }
    const T* xp = plane<T>(x, q);
    T s = T(0);
    for (index_t ih = rs.b; ih < rs.e; ++ih)
      for (index_t iw = cs.b; iw < cs.e; ++iw) s += xp[ih * x.sr + iw * x.ss];
    const index_t div = cip ? rs.full * cs.full : (rs.e - rs.b) * (cs.e - cs.b);
    y[e] = s / T(div);
  }
}

template <typename T>
__global__ void avg_bwd_kernel(T* __restrict__ dx, PlaneView dy, PoolDims g, bool cip, index_t total) {
  for (index_t e = blockIdx.x * index_t(blockDim.x) + threadIdx.x; e < total;
       e += index_t(gridDim.x) * blockDim.x) {
    const index_t w = e % g.W;
    const index_t r = e / g.W;
    const index_t h = r % g.H, q = r / g.H;
    // Windows holding row h start at oh * sh - ph in (h - kh, h]: oh in [oh0, oh1] (each is
    // checked against its clipped span below, as the CPU's scatter visits it).
    const index_t oh0 = imax(floor_div(h + g.ph - g.kh, g.sh) + 1, 0), oh1 = imin((h + g.ph) / g.sh, g.Ho - 1);
    const index_t ow0 = imax(floor_div(w + g.pw - g.kw, g.sw) + 1, 0), ow1 = imin((w + g.pw) / g.sw, g.Wo - 1);
    const T* gp = plane<T>(dy, q);
    T acc = T(0);
    for (index_t oh = oh0; oh <= oh1; ++oh) {
      const AvgSpan rs = avg_span(oh, g.H, g.kh, g.sh, g.ph);
      if (h < rs.b || h >= rs.e) continue;
      for (index_t ow = ow0; ow <= ow1; ++ow) {
        const AvgSpan cs = avg_span(ow, g.W, g.kw, g.sw, g.pw);
        if (w < cs.b || w >= cs.e) continue;
        const index_t div = cip ? rs.full * cs.full : (rs.e - rs.b) * (cs.e - cs.b);
        acc += gp[oh * dy.sr + ow * dy.ss] / T(div);
      }
    }
    dx[e] = acc;
  }
}

}  // namespace

void max_pool2d(DType dt, const PoolDims& g, void* y, int64_t* idx, const PlaneView& x) {
  const index_t total = g.planes * g.Ho * g.Wo;
  if (total == 0) return;
  const Launch l = elementwise_launch(total);
  if (dt == DType::f32)
    max_fwd_kernel<float><<<unsigned(l.grid_x), l.block>>>(static_cast<float*>(y), idx, x, g, total);
  else
    max_fwd_kernel<double><<<unsigned(l.grid_x), l.block>>>(static_cast<double*>(y), idx, x, g, total);
  CUDA_CHECK(cudaGetLastError());
}

void max_pool2d_backward(DType dt, const PoolDims& g, void* dx, const void* dy, const void* idx,
                         int idx_bits) {
  if (g.planes == 0 || g.H * g.W == 0) return;
  const index_t HW = g.H * g.W, L = g.Ho * g.Wo;
  index_t blocks = ceil_div(g.planes, kPoolBwdWarps);
  if (blocks > (index_t(1) << 20)) blocks = index_t(1) << 20;  // the plane loop covers the rest
  const unsigned grid = unsigned(blocks);
  const int block = 32 * kPoolBwdWarps;
  if (dt == DType::f32) {
    if (idx_bits == 32)
      max_bwd_kernel<float, int32_t><<<grid, block>>>(static_cast<float*>(dx), static_cast<const float*>(dy),
                                                      static_cast<const int32_t*>(idx), g.planes, HW, L);
    else
      max_bwd_kernel<float, int64_t><<<grid, block>>>(static_cast<float*>(dx), static_cast<const float*>(dy),
                                                      static_cast<const int64_t*>(idx), g.planes, HW, L);
  } else {
    if (idx_bits == 32)
      max_bwd_kernel<double, int32_t><<<grid, block>>>(static_cast<double*>(dx), static_cast<const double*>(dy),
                                                       static_cast<const int32_t*>(idx), g.planes, HW, L);
    else
      max_bwd_kernel<double, int64_t><<<grid, block>>>(static_cast<double*>(dx), static_cast<const double*>(dy),
                                                       static_cast<const int64_t*>(idx), g.planes, HW, L);
  }
  CUDA_CHECK(cudaGetLastError());
}

void avg_pool2d(DType dt, const PoolDims& g, void* y, const PlaneView& x, bool count_include_pad) {
  const index_t total = g.planes * g.Ho * g.Wo;
  if (total == 0) return;
  const Launch l = elementwise_launch(total);
  if (dt == DType::f32)
    avg_fwd_kernel<float><<<unsigned(l.grid_x), l.block>>>(static_cast<float*>(y), x, g, count_include_pad, total);
  else
    avg_fwd_kernel<double><<<unsigned(l.grid_x), l.block>>>(static_cast<double*>(y), x, g, count_include_pad, total);
  CUDA_CHECK(cudaGetLastError());
}

void avg_pool2d_backward(DType dt, const PoolDims& g, void* dx, const PlaneView& dy, bool count_include_pad) {
  const index_t total = g.planes * g.H * g.W;
  if (total == 0) return;
  const Launch l = elementwise_launch(total);
  if (dt == DType::f32)
    avg_bwd_kernel<float><<<unsigned(l.grid_x), l.block>>>(static_cast<float*>(dx), dy, g, count_include_pad, total);
  else
    avg_bwd_kernel<double><<<unsigned(l.grid_x), l.block>>>(static_cast<double*>(dx), dy, g, count_include_pad,
                                                            total);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace nnk::cuda
