// CUDA_CHECK(call): throw std::runtime_error naming the call, file, line and CUDA's message
// when a runtime call fails; the bindings turn it into a Python RuntimeError. Kernel launches
// are checked with CUDA_CHECK(cudaGetLastError()) right after the launch.
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>

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

namespace nnk::cuda {

// The kernel switches (NNKERNELS_CUDA_*, read at every call so that one benchmark run can
// time each path): whether environment variable `name` is set to `value`.
inline bool env_is(const char* name, const char* value) {
  const char* e = std::getenv(name);
  return e && std::strcmp(e, value) == 0;
}

// The current device's limits the launch plans need.
struct DeviceLimits {
  int sms = 0;         // multiprocessors
  int optin = 0;       // opt-in dynamic shared memory per block, bytes
  bool coop = false;   // cooperative launches (grid-wide barriers)
};
inline DeviceLimits device_limits() {
  int dev = 0, sms = 0, optin = 0, coop = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
  return DeviceLimits{sms, optin, coop != 0};
}

// cudaFuncSetAttribute(MaxDynamicSharedMemorySize) once per kernel, device and size: a host
// call of about a microsecond, made before every attention launch until the eighth session.
// A kernel launched with several sizes should be given the largest (a later, smaller setting
// would stay in force for the earlier size).
template <class F>
inline void ensure_dyn_smem(F* func, int bytes) {
  static std::mutex mu;
  static std::set<std::tuple<const void*, int, int>> done;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  const auto key = std::make_tuple(reinterpret_cast<const void*>(func), dev, bytes);
  std::lock_guard<std::mutex> lock(mu);
  if (done.count(key)) return;
  CUDA_CHECK(cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  done.insert(key);
}

}  // namespace nnk::cuda
