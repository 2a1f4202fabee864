// Stride-1 im2col packing, AVX-512 build (the kernel: shift_pack.inl): merge-masked loads
// (masked-off lanes neither read nor fault).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/conv/shift_pack.h"

namespace nnk::cpu::avx512 {

struct VF {
  static constexpr int L = 16;
  using reg = __m512;
  using msk = __mmask16;
  static msk mask(uint32_t b) { return msk(b); }
  static reg load(msk m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static reg load_merge(reg r, msk m, const float* p) { return _mm512_mask_loadu_ps(r, m, p); }
  static void store(float* p, reg r) { _mm512_storeu_ps(p, r); }
};
struct VD {
  static constexpr int L = 8;
  using reg = __m512d;
  using msk = __mmask8;
  static msk mask(uint32_t b) { return msk(b); }
  static reg load(msk m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static reg load_merge(reg r, msk m, const double* p) { return _mm512_mask_loadu_pd(r, m, p); }
  static void store(double* p, reg r) { _mm512_storeu_pd(p, r); }
};

#include "cpu/conv/shift_pack.inl"

}  // namespace nnk::cpu::avx512
