// Optimizer steps compiled for generic (the loops: optim_impl.inl); also the reference
// (nnk::ref), the same loops without the dispatch and threading.
#include <cmath>

#include "cpu/optim/optim.h"

namespace nnk::cpu::generic {
#include "cpu/optim/optim_impl.inl"
template void sgd_step<float>(float*, float*, const float*, index_t, const SgdParams&);
template void sgd_step<double>(double*, double*, const double*, index_t, const SgdParams&);
template void adam_step<float>(float*, float*, float*, const float*, index_t, const AdamParams&);
template void adam_step<double>(double*, double*, double*, const double*, index_t, const AdamParams&);
}  // namespace nnk::cpu::generic

namespace nnk::ref {
#include "cpu/optim/optim_impl.inl"
template void sgd_step<float>(float*, float*, const float*, index_t, const SgdParams&);
template void sgd_step<double>(double*, double*, const double*, index_t, const SgdParams&);
template void adam_step<float>(float*, float*, float*, const float*, index_t, const AdamParams&);
template void adam_step<double>(double*, double*, double*, const double*, index_t, const AdamParams&);
}  // namespace nnk::ref
