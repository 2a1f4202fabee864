// im2col for conv2d forward on the GPU (conv2d = im2col + the batched GEMM of gemm.cu):
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

}  // namespace

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
