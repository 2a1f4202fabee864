// What the CUDA part reports at run time (a stub when built without CUDA).
#pragma once
#include <string>
#include <vector>

namespace nnk {
bool cuda_built();
// Names of the usable CUDA devices; empty without a driver or GPU (never throws).
std::vector<std::string> cuda_device_names();
}  // namespace nnk
