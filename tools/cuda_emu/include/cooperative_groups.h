// nnkernels CUDA emulator: grid groups of cooperative launches.
#pragma once
#include <cuda_runtime.h>

namespace cooperative_groups {
struct grid_group {
  void sync() const { ::nnk_emu::grid_sync(); }
};
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups
