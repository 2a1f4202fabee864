// CUDA runtime queries. cudart is linked statically, so this loads on machines without
// a CUDA driver: cudaGetDeviceCount then reports an error and we report no devices.
#include <cuda_runtime.h>

#include "core/cuda_info.h"

namespace nnk {

bool cuda_built() { return true; }

std::vector<std::string> cuda_device_names() {
  std::vector<std::string> names;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error
    return names;
  }
  for (int d = 0; d < n; ++d) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, d) == cudaSuccess) names.emplace_back(prop.name);
  }
  return names;
}

}  // namespace nnk
