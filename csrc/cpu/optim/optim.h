// Fused optimizer steps, in place, one pass over memory (torch.optim semantics).
//
// SGD (torch.optim.SGD, step is 1-based):
//   d = g + wd * p
//   momentum != 0: buf = (step == 1) ? d : momentum * buf + (1 - dampening) * d
//                  d = nesterov ? d + momentum * buf : buf
//   p = p - lr * d
// Adam / AdamW (torch.optim.Adam / AdamW, amsgrad off):
//   Adam:  g = g + wd * p;   AdamW: p = p * (1 - lr * wd)
//   m = m + (1 - beta1) * (g - m)            (torch's lerp, weight < 0.5)
//   v = beta2 * v + (1 - beta2) * g * g
//   p = p - step_size * m / (sqrt(v) / sqrt(bc2) + eps),  step_size = lr / bc1,
//   bc1 = 1 - beta1^step, bc2 = 1 - beta2^step
// p, g, buf, m, v: n contiguous elements; g is never written.
#pragma once
#include "core/cpu_features.h"
#include "core/types.h"

namespace nnk {

struct SgdParams {
  double lr, momentum, dampening, weight_decay;
  bool nesterov;
  index_t step;
};
struct AdamParams {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled;
  index_t step;
};

template <typename T>
void sgd_step(T* p, T* buf, const T* g, index_t n, const SgdParams& hp);
template <typename T>
void adam_step(T* p, T* m, T* v, const T* g, index_t n, const AdamParams& hp);

// The per-ISA loops (optim_impl.inl compiled by optim_<isa>.cpp) and the reference.
namespace cpu::generic {
template <typename T> void sgd_step(T*, T*, const T*, index_t, const SgdParams&);
template <typename T> void adam_step(T*, T*, T*, const T*, index_t, const AdamParams&);
}  // namespace cpu::generic
namespace cpu::avx2 {
template <typename T> void sgd_step(T*, T*, const T*, index_t, const SgdParams&);
template <typename T> void adam_step(T*, T*, T*, const T*, index_t, const AdamParams&);
}  // namespace cpu::avx2
namespace cpu::avx512 {
template <typename T> void sgd_step(T*, T*, const T*, index_t, const SgdParams&);
template <typename T> void adam_step(T*, T*, T*, const T*, index_t, const AdamParams&);
}  // namespace cpu::avx512

namespace ref {
template <typename T>
void sgd_step(T* p, T* buf, const T* g, index_t n, const SgdParams& hp);
template <typename T>
void adam_step(T* p, T* m, T* v, const T* g, index_t n, const AdamParams& hp);
}  // namespace ref

}  // namespace nnk
