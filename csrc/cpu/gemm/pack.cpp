// Portable packing (baseline flags; the contiguous copies vectorise automatically).
#include "cpu/gemm/pack.h"

#include <algorithm>

namespace nnk::cpu::generic {

template <typename T>
void pack_a(T* __restrict dst, const T* a, index_t rs, index_t cs, index_t mc, index_t kc,
            index_t MR) {
  for (index_t i0 = 0; i0 < mc; i0 += MR) {
    const index_t mr = std::min(MR, mc - i0);
    T* d = dst + i0 * kc;
    const T* s = a + i0 * rs;
    if (rs == 1) {
      for (index_t p = 0; p < kc; ++p) {
        const T* sp = s + p * cs;
        T* dp = d + p * MR;
        for (index_t i = 0; i < mr; ++i) dp[i] = sp[i];
        for (index_t i = mr; i < MR; ++i) dp[i] = T(0);
      }
    } else {
      // Transposing copy, 8 k-steps at a time so each source row is read in runs.
      for (index_t p0 = 0; p0 < kc; p0 += 8) {
        const index_t pe = std::min(kc, p0 + 8);
        for (index_t i = 0; i < mr; ++i) {
          const T* si = s + i * rs;
          for (index_t p = p0; p < pe; ++p) d[p * MR + i] = si[p * cs];
        }
        for (index_t i = mr; i < MR; ++i)
          for (index_t p = p0; p < pe; ++p) d[p * MR + i] = T(0);
      }
    }
  }
}

template <typename T>
void pack_b(T* __restrict dst, const T* b, index_t rs, index_t cs, index_t kc, index_t nc,
            index_t NR) {
  if (cs == 1) {
    // Row by row: each source row is read once, front to back (see pack_avx512.cpp).
    for (index_t p = 0; p < kc; ++p) {
      const T* sp = b + p * rs;
      for (index_t j0 = 0; j0 < nc; j0 += NR) {
        const index_t nr = std::min(NR, nc - j0);
        T* dp = dst + j0 * kc + p * NR;
        for (index_t j = 0; j < nr; ++j) dp[j] = sp[j0 + j];
        for (index_t j = nr; j < NR; ++j) dp[j] = T(0);
      }
    }
    return;
  }
  for (index_t j0 = 0; j0 < nc; j0 += NR) {
    const index_t nr = std::min(NR, nc - j0);
    T* d = dst + j0 * kc;
    const T* s = b + j0 * cs;
    if (cs == 1) {
      for (index_t p = 0; p < kc; ++p) {
        const T* sp = s + p * rs;
        T* dp = d + p * NR;
        for (index_t j = 0; j < nr; ++j) dp[j] = sp[j];
        for (index_t j = nr; j < NR; ++j) dp[j] = T(0);
      }
    } else {
      for (index_t p0 = 0; p0 < kc; p0 += 8) {
        const index_t pe = std::min(kc, p0 + 8);
        for (index_t j = 0; j < nr; ++j) {
          const T* sj = s + j * cs;
          for (index_t p = p0; p < pe; ++p) d[p * NR + j] = sj[p * rs];
        }
        for (index_t j = nr; j < NR; ++j)
          for (index_t p = p0; p < pe; ++p) d[p * NR + j] = T(0);
      }
    }
  }
}

template void pack_a<float>(float*, const float*, index_t, index_t, index_t, index_t, index_t);
template void pack_a<double>(double*, const double*, index_t, index_t, index_t, index_t, index_t);
template void pack_b<float>(float*, const float*, index_t, index_t, index_t, index_t, index_t);
template void pack_b<double>(double*, const double*, index_t, index_t, index_t, index_t, index_t);

}  // namespace nnk::cpu::generic
