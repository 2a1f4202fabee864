// Optimizer step drivers: split the parameter into per-thread ranges (elementwise, so the
// result does not depend on the split) and call the current ISA's loop.
#include "cpu/optim/optim.h"

#include "core/parallel.h"

namespace nnk {

constexpr index_t kOptimGrain = 1 << 15;  // elements per thread below which one thread runs

template <typename T>
void sgd_step(T* p, T* buf, const T* g, index_t n, const SgdParams& hp) {
  auto fn = cpu::generic::sgd_step<T>;
#if defined(NNK_X86)
  if (current_isa() == Isa::avx512) fn = cpu::avx512::sgd_step<T>;
  else if (current_isa() == Isa::avx2) fn = cpu::avx2::sgd_step<T>;
#endif
  parallel_for(n, kOptimGrain, [&](index_t b, index_t e) {
    fn(p + b, buf ? buf + b : nullptr, g + b, e - b, hp);
  });
}

template <typename T>
void adam_step(T* p, T* m, T* v, const T* g, index_t n, const AdamParams& hp) {
  auto fn = cpu::generic::adam_step<T>;
#if defined(NNK_X86)
  if (current_isa() == Isa::avx512) fn = cpu::avx512::adam_step<T>;
  else if (current_isa() == Isa::avx2) fn = cpu::avx2::adam_step<T>;
#endif
  parallel_for(n, kOptimGrain, [&](index_t b, index_t e) {
    fn(p + b, m + b, v + b, g + b, e - b, hp);
  });
}

template void sgd_step<float>(float*, float*, const float*, index_t, const SgdParams&);
template void sgd_step<double>(double*, double*, const double*, index_t, const SgdParams&);
template void adam_step<float>(float*, float*, float*, const float*, index_t, const AdamParams&);
template void adam_step<double>(double*, double*, double*, const double*, index_t, const AdamParams&);

}  // namespace nnk
