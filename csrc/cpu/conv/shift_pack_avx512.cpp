// Stride-1 im2col packing, AVX-512 build (the kernel: shift_pack.inl): merge-masked loads
// (masked-off lanes neither read nor fault).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/conv/shift_pack.h"
#include "cpu/simd/transpose_avx512.h"

namespace nnk::cpu::avx512 {

struct VF {
  static constexpr int L = 16;
  using reg = __m512;
  using msk = __mmask16;
  static msk mask(uint32_t b) { return msk(b); }
  static reg load(msk m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static reg load_merge(reg r, msk m, const float* p) { return _mm512_mask_loadu_ps(r, m, p); }
  static void store(float* p, reg r) { _mm512_storeu_ps(p, r); }
  static void transpose(const float* s, index_t lds, float* d, index_t ldd) {
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(s + i * lds);
    transpose16(r);
    for (int i = 0; i < 16; ++i) _mm512_storeu_ps(d + i * ldd, r[i]);
  }
};
struct VD {
  static constexpr int L = 8;
  using reg = __m512d;
  using msk = __mmask8;
  static msk mask(uint32_t b) { return msk(b); }
  static reg load(msk m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static reg load_merge(reg r, msk m, const double* p) { return _mm512_mask_loadu_pd(r, m, p); }
  static void store(double* p, reg r) { _mm512_storeu_pd(p, r); }
  static void transpose(const double* s, index_t lds, double* d, index_t ldd) {
    __m512d r[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm512_loadu_pd(s + i * lds);
    transpose8(r);
    for (int i = 0; i < 8; ++i) _mm512_storeu_pd(d + i * ldd, r[i]);
  }
};

#include "cpu/conv/shift_pack.inl"

}  // namespace nnk::cpu::avx512
