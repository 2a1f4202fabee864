// Reference attention forward (the oracle): for every output batch element b and query i,
// the full row of scores s_j = scale q_i . k_j + mask, then lse = max + log sum exp(s - max)
// and o_i = sum_j exp(s_j - lse) v_j. Same contract as nnk::attention_fwd (attention.h).
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/attention/attention.h"

namespace nnk::ref {

namespace {

template <typename T>
void fwd(const AttnParams& p, T* out, T* lse) {
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const T ninf = -std::numeric_limits<T>::infinity();
  std::vector<T> s(size_t(p.S));
  for (index_t b = 0; b < p.NB; ++b) {
    for (index_t i = 0; i < p.L; ++i) {
      T mx = ninf;
      for (index_t j = 0; j < p.S; ++j) {
        T acc = 0;
        for (index_t e = 0; e < p.E; ++e)
          acc += q[p.off_q[b] + i * p.rs_q + e * p.cs_q] * k[p.off_k[b] + j * p.rs_k + e * p.cs_k];
        acc *= T(p.scale);
        const index_t mo = p.off_mask ? p.off_mask[b] + i * p.rs_mask + j * p.cs_mask : 0;
        if (p.mask_kind == AttnMask::boolean && !static_cast<const uint8_t*>(p.mask)[mo]) acc = ninf;
        if (p.mask_kind == AttnMask::additive) acc += static_cast<const T*>(p.mask)[mo];
        if (p.causal && j > i) acc = ninf;
        s[size_t(j)] = acc;
        if (acc > mx) mx = acc;
      }
      T* o = out + (b * p.L + i) * p.Ev;
      for (index_t e = 0; e < p.Ev; ++e) o[e] = 0;
      if (mx == ninf) {
        if (lse) lse[b * p.L + i] = ninf;
        continue;
      }
      T sum = 0;
      for (index_t j = 0; j < p.S; ++j) sum += std::exp(s[size_t(j)] - mx);
      const T l = mx + std::log(sum);
      if (lse) lse[b * p.L + i] = l;
      for (index_t j = 0; j < p.S; ++j) {
        const T w = std::exp(s[size_t(j)] - l);
        for (index_t e = 0; e < p.Ev; ++e) o[e] += w * v[p.off_v[b] + j * p.rs_v + e * p.cs_v];
      }
    }
  }
}

}  // namespace

void attention_fwd(const AttnParams& p, void* out, void* lse) {
  if (p.dtype == DType::f32)
    fwd<float>(p, static_cast<float*>(out), static_cast<float*>(lse));
  else
    fwd<double>(p, static_cast<double*>(out), static_cast<double*>(lse));
}

}  // namespace nnk::ref
