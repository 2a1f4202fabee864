// Device memory, copies, stream ordering and the strided-copy kernel (making device inputs
// C-contiguous before the kernels that want them so).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cuda/api.h"
#include "cuda/cuda_check.h"
#include "cuda/launch.h"

namespace nnk::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

int current_device() {
  int d = 0;
  CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

namespace {
// The default pool of the current device keeps freed blocks (release threshold: no limit),
// so steady-state allocations cost no cudaMalloc. Set once per device.
void setup_pool() {
  static int done_for = -1;
  int dev = current_device();
  if (done_for == dev) return;
  cudaMemPool_t pool;
  CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
  uint64_t threshold = UINT64_MAX;
  CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  done_for = dev;
}
}  // namespace

void* device_malloc(size_t bytes) {
  if (bytes == 0) return nullptr;
  setup_pool();
  void* p = nullptr;
  CUDA_CHECK(cudaMallocAsync(&p, bytes, 0));
  return p;
}

void device_free(void* p) noexcept {
  if (!p) return;
  if (cudaFreeAsync(p, 0) != cudaSuccess) cudaGetLastError();
}

void copy_h2d(void* dst, const void* src, size_t bytes) {
  if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

void copy_d2h(void* dst, const void* src, size_t bytes) {
  if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

void synchronize() { CUDA_CHECK(cudaDeviceSynchronize()); }

void wait_stream(uintptr_t stream) {
  if (stream == 0 || stream == 1) return;  // already the legacy default stream
  cudaStream_t s = stream == 2 ? cudaStreamPerThread : reinterpret_cast<cudaStream_t>(stream);
  cudaEvent_t ev;
  CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  cudaError_t e1 = cudaEventRecord(ev, s);
  cudaError_t e2 = e1 == cudaSuccess ? cudaStreamWaitEvent(0, ev, 0) : e1;
  CUDA_CHECK(cudaEventDestroy(ev));
  CUDA_CHECK(e2);
}

void stream_wait_default(uintptr_t stream) {
  if (stream == 0 || stream == 1) return;
  cudaStream_t s = stream == 2 ? cudaStreamPerThread : reinterpret_cast<cudaStream_t>(stream);
  cudaEvent_t ev;
  CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  cudaError_t e1 = cudaEventRecord(ev, 0);
  cudaError_t e2 = e1 == cudaSuccess ? cudaStreamWaitEvent(s, ev, 0) : e1;
  CUDA_CHECK(cudaEventDestroy(ev));
  CUDA_CHECK(e2);
}

void copy_d2d(void* dst, const void* src, size_t bytes) {
  if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0));
}

void copy_d2d_rows(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows) {
  if (width && rows)
    CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, rows, cudaMemcpyDeviceToDevice, 0));
}

void fill_zero(void* dst, size_t bytes) {
  if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, 0));
}

namespace {
template <typename T>
__global__ void add_inplace_kernel(T* __restrict__ y, const T* __restrict__ x, index_t n) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    y[i] += x[i];
}
}  // namespace

void add_inplace(DType dt, void* y, const void* x, index_t n) {
  if (n == 0) return;
  const Launch l = elementwise_launch(n);
  if (dt == DType::f32)
    add_inplace_kernel<float><<<unsigned(l.grid_x), l.block>>>(static_cast<float*>(y), static_cast<const float*>(x), n);
  else
    add_inplace_kernel<double><<<unsigned(l.grid_x), l.block>>>(static_cast<double*>(y), static_cast<const double*>(x), n);
  CUDA_CHECK(cudaGetLastError());
}

namespace {

constexpr int kMaxDims = 8;
struct Dims {
  int ndim;
  index_t shape[kMaxDims];
  index_t strides[kMaxDims];
};

template <typename T>
__global__ void strided_copy_kernel(T* __restrict__ dst, const T* __restrict__ src, index_t n,
                                    Dims d) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n;
       i += index_t(gridDim.x) * blockDim.x) {
    index_t rem = i, off = 0;
    for (int k = d.ndim - 1; k >= 0; --k) {
      const index_t c = rem % d.shape[k];
      rem /= d.shape[k];
      off += c * d.strides[k];
    }
    dst[i] = src[off];
  }
}

}  // namespace

void strided_copy_items(index_t item_bytes, void* dst, const void* src, int ndim, const index_t* shape,
                        const index_t* strides) {
  if (ndim > kMaxDims) throw ValueError("CUDA arrays of more than 8 dimensions are not supported");
  if (item_bytes != 1 && item_bytes != 4 && item_bytes != 8)
    throw ValueError("strided copy of " + std::to_string(item_bytes) + "-byte elements");
  Dims d;
  d.ndim = ndim;
  index_t n = 1;
  for (int k = 0; k < ndim; ++k) {
    d.shape[k] = shape[k];
    d.strides[k] = strides[k];
    n *= shape[k];
  }
  if (n == 0) return;
  const Launch l = elementwise_launch(n);
  if (item_bytes == 1)
    strided_copy_kernel<uint8_t><<<unsigned(l.grid_x), l.block>>>(
        static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), n, d);
  else if (item_bytes == 4)
    strided_copy_kernel<uint32_t><<<unsigned(l.grid_x), l.block>>>(
        static_cast<uint32_t*>(dst), static_cast<const uint32_t*>(src), n, d);
  else
    strided_copy_kernel<uint64_t><<<unsigned(l.grid_x), l.block>>>(
        static_cast<uint64_t*>(dst), static_cast<const uint64_t*>(src), n, d);
  CUDA_CHECK(cudaGetLastError());
}

void strided_copy(DType dt, void* dst, const void* src, int ndim, const index_t* shape,
                  const index_t* strides) {
  strided_copy_items(dtype_size(dt), dst, src, ndim, shape, strides);
}

}  // namespace nnk::cuda
