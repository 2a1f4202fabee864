// im2col / col2im for conv2d on the GPU (conv2d = im2col + the batched GEMM of gemm.cu; the
// backward: dW from dY and the columns, dcols = W^T dY, dx = col2im(dcols), db by sums):
//   cols[n, (c * KH + i) * KW + j, oh * OW + ow] = x[n, c, oh * sh - ph + i * dh, ow * sw - pw + j * dw]
// (0 outside the image), the F.unfold layout. One thread per element of cols; consecutive
// threads take consecutive output positions, so writes coalesce and reads mostly do.
#include <cuda_runtime.h>

#include "cuda/api.h"
#include "cuda/cuda_check.h"
#include "cuda/launch.h"

namespace nnk::cuda {

namespace {

template <typename T>
__global__ void im2col_kernel(T* __restrict__ cols, const T* __restrict__ x, index_t total,
                              index_t C, index_t H, index_t W, index_t KH, index_t KW, index_t ph,
                              index_t pw, index_t sh, index_t sw, index_t dh, index_t dw,
                              index_t OH, index_t OW) {
  for (index_t e = blockIdx.x * index_t(blockDim.x) + threadIdx.x; e < total;
       e += index_t(gridDim.x) * blockDim.x) {
    const index_t ow = e % OW;
    index_t r = e / OW;
    const index_t oh = r % OH;
    r /= OH;
    const index_t j = r % KW;
    r /= KW;
    const index_t i = r % KH;
    r /= KH;
    const index_t c = r % C;
    const index_t n = r / C;
    const index_t h = oh * sh - ph + i * dh, w = ow * sw - pw + j * dw;
    cols[e] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : T(0);
  }
}

// col2im as a gather (deterministic, no atomics): one thread per element of dx,
//   dx[n, c, h, w] = sum over (i, j) with h = oh * sh - ph + i * dh, w = ow * sw - pw + j * dw
//                    of cols[n, (c * KH + i) * KW + j, oh * OW + ow].
template <typename T>
__global__ void col2im_kernel(T* __restrict__ dx, const T* __restrict__ cols, index_t total,
                              index_t C, index_t H, index_t W, index_t KH, index_t KW, index_t ph,
                              index_t pw, index_t sh, index_t sw, index_t dh, index_t dw,
                              index_t OH, index_t OW) {
  for (index_t e = blockIdx.x * index_t(blockDim.x) + threadIdx.x; e < total;
       e += index_t(gridDim.x) * blockDim.x) {
    const index_t w = e % W;
    index_t r = e / W;
    const index_t h = r % H;
    r /= H;
    const index_t c = r % C;
    const index_t n = r / C;
    const T* cn = cols + (n * C + c) * KH * KW * OH * OW;
    T acc = T(0);
    for (index_t i = 0; i < KH; ++i) {
      const index_t th = h + ph - i * dh;  // = oh * sh
      if (th < 0 || th % sh) continue;
      const index_t oh = th / sh;
      if (oh >= OH) continue;
      for (index_t j = 0; j < KW; ++j) {
        const index_t tw = w + pw - j * dw;
        if (tw < 0 || tw % sw) continue;
        const index_t ow = tw / sw;
        if (ow >= OW) continue;
        acc += cn[(i * KW + j) * OH * OW + oh * OW + ow];
      }
    }
    dx[e] = acc;
  }
}

// db[o] = sum over n and positions of dy[n, o, :], in order: a thread per channel.
template <typename T>
__global__ void channel_sum_kernel(T* __restrict__ db, const T* __restrict__ dy, index_t N,
                                   index_t O, index_t P) {
  for (index_t o = blockIdx.x * index_t(blockDim.x) + threadIdx.x; o < O;
       o += index_t(gridDim.x) * blockDim.x) {
    T acc = T(0);
    for (index_t n = 0; n < N; ++n)
      for (index_t q = 0; q < P; ++q) acc += dy[(n * O + o) * P + q];
    db[o] = acc;
  }
}

}  // namespace

void col2im(DType dt, void* dx, const void* cols, index_t N, index_t C, index_t H, index_t W,
            index_t KH, index_t KW, index_t ph, index_t pw, index_t sh, index_t sw, index_t dh,
            index_t dw, index_t OH, index_t OW) {
  const index_t total = N * C * H * W;
  if (total == 0) return;
  const Launch l = elementwise_launch(total);
  if (dt == DType::f32)
    col2im_kernel<float><<<unsigned(l.grid_x), l.block>>>(
        static_cast<float*>(dx), static_cast<const float*>(cols), total, C, H, W, KH, KW, ph, pw,
        sh, sw, dh, dw, OH, OW);
  else
    col2im_kernel<double><<<unsigned(l.grid_x), l.block>>>(
        static_cast<double*>(dx), static_cast<const double*>(cols), total, C, H, W, KH, KW, ph, pw,
        sh, sw, dh, dw, OH, OW);
  CUDA_CHECK(cudaGetLastError());
}

void channel_sum(DType dt, void* db, const void* dy, index_t N, index_t O, index_t P) {
  if (O == 0) return;
  const Launch l = elementwise_launch(O);
  if (dt == DType::f32)
    channel_sum_kernel<float><<<unsigned(l.grid_x), l.block>>>(static_cast<float*>(db), static_cast<const float*>(dy), N, O, P);
  else
    channel_sum_kernel<double><<<unsigned(l.grid_x), l.block>>>(static_cast<double*>(db), static_cast<const double*>(dy), N, O, P);
  CUDA_CHECK(cudaGetLastError());
}

void im2col(DType dt, void* cols, const void* x, index_t N, index_t C, index_t H, index_t W,
            index_t KH, index_t KW, index_t ph, index_t pw, index_t sh, index_t sw, index_t dh,
            index_t dw, index_t OH, index_t OW) {
  const index_t total = N * C * KH * KW * OH * OW;
  if (total == 0) return;
  const Launch l = elementwise_launch(total);
  if (dt == DType::f32)
    im2col_kernel<float><<<unsigned(l.grid_x), l.block>>>(
        static_cast<float*>(cols), static_cast<const float*>(x), total, C, H, W, KH, KW, ph, pw,
        sh, sw, dh, dw, OH, OW);
  else
    im2col_kernel<double><<<unsigned(l.grid_x), l.block>>>(
        static_cast<double*>(cols), static_cast<const double*>(x), total, C, H, W, KH, KW, ph, pw,
        sh, sw, dh, dw, OH, OW);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace nnk::cuda
