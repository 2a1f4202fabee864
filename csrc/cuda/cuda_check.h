// CUDA_CHECK(call): throw std::runtime_error naming the call, file, line and CUDA's message
// when a runtime call fails; the bindings turn it into a Python RuntimeError. Kernel launches
// are checked with CUDA_CHECK(cudaGetLastError()) right after the launch.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace nnk::cuda {

[[noreturn]] inline void cuda_fail(cudaError_t e, const char* call, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so later calls can succeed
  throw std::runtime_error(std::string("CUDA error: ") + call + " failed at " + file + ":" +
                           std::to_string(line) + ": " + cudaGetErrorString(e) + " (" +
                           cudaGetErrorName(e) + ")");
}

}  // namespace nnk::cuda

#define CUDA_CHECK(call)                                                    \
  do {                                                                      \
    cudaError_t nnk_err_ = (call);                                          \
    if (nnk_err_ != cudaSuccess)                                            \
      ::nnk::cuda::cuda_fail(nnk_err_, #call, __FILE__, __LINE__);          \
  } while (0)
