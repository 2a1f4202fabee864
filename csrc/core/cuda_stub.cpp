// Without CUDA: nothing built, no devices. With CUDA the definitions are in cuda/cuda_info.cu.
#include "core/cuda_info.h"

#if !defined(NNK_WITH_CUDA)
namespace nnk {
bool cuda_built() { return false; }
std::vector<std::string> cuda_device_names() { return {}; }
}  // namespace nnk
#endif
