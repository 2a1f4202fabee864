// Small-image conv gather / scatter, avx512 build: the templates of gather.inl, with the
// packing of full and partial panels done by masked gather instructions (16 lanes per
// instruction; the compiler's cost model does not emit gathers by itself) and the
// scatter-add of 16 consecutive columns of one row by gather + add + scatter (the targets
// of one row are distinct: the pixel -> patch-element map of a tap is injective).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu/conv/gather.h"

namespace nnk::cpu::avx512 {
#define NNK_GATHER_OWN_ENTRY
#include "cpu/conv/gather.inl"

namespace {

inline __mmask16 lanes16(index_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }

void gather_pack_f32(float* dst, const float* base, const int32_t* rows, index_t kc, const int32_t* cols, index_t nc,
                     index_t NR) {
  if (NR != 32) {
    gather_pack_t(dst, base, rows, kc, cols, nc, NR);
    return;
  }
  for (index_t j0 = 0; j0 < nc; j0 += 32) {
    const index_t nr = std::min<index_t>(32, nc - j0);
    const __mmask16 m0 = lanes16(nr), m1 = lanes16(std::max<index_t>(nr - 16, 0));
    const __m512i i0 = _mm512_maskz_loadu_epi32(m0, cols + j0);
    const __m512i i1 = _mm512_maskz_loadu_epi32(m1, cols + j0 + 16);
    float* d = dst + (j0 / 32) * kc * 32;
    const __m512 z = _mm512_setzero_ps();
    if (m1 == 0) {  // one half of the panel is padding
      for (index_t p = 0; p < kc; ++p, d += 32) {
        _mm512_storeu_ps(d, _mm512_mask_i32gather_ps(z, m0, i0, base + rows[p], 4));
        _mm512_storeu_ps(d + 16, z);
      }
      continue;
    }
    for (index_t p = 0; p < kc; ++p, d += 32) {
      const float* s = base + rows[p];
      _mm512_storeu_ps(d, _mm512_mask_i32gather_ps(z, m0, i0, s, 4));
      _mm512_storeu_ps(d + 16, _mm512_mask_i32gather_ps(z, m1, i1, s, 4));
    }
  }
}

void gather_pack_f64(double* dst, const double* base, const int32_t* rows, index_t kc, const int32_t* cols, index_t nc,
                     index_t NR) {
  if (NR != 16) {
    gather_pack_t(dst, base, rows, kc, cols, nc, NR);
    return;
  }
  for (index_t j0 = 0; j0 < nc; j0 += 16) {
    const index_t nr = std::min<index_t>(16, nc - j0);
    const __mmask16 m = lanes16(nr);
    const __mmask8 m0 = __mmask8(m & 0xFF), m1 = __mmask8(m >> 8);
    const __m256i i0 = _mm256_maskz_loadu_epi32(m0, cols + j0);
    const __m256i i1 = _mm256_maskz_loadu_epi32(m1, cols + j0 + 8);
    double* d = dst + (j0 / 16) * kc * 16;
    const __m512d z = _mm512_setzero_pd();
    for (index_t p = 0; p < kc; ++p, d += 16) {
      const double* s = base + rows[p];
      _mm512_storeu_pd(d, _mm512_mask_i32gather_pd(z, m0, i0, s, 8));
      _mm512_storeu_pd(d + 8, _mm512_mask_i32gather_pd(z, m1, i1, s, 8));
    }
  }
}

}  // namespace

void gather_pack(DType dt, void* dst, const void* base, const int32_t* rows, index_t kc, const int32_t* cols,
                 index_t nc, index_t NR) {
  if (dt == DType::f32)
    gather_pack_f32(static_cast<float*>(dst), static_cast<const float*>(base), rows, kc, cols, nc, NR);
  else
    gather_pack_f64(static_cast<double*>(dst), static_cast<const double*>(base), rows, kc, cols, nc, NR);
}

void scatter_add(DType dt, void* base, const int32_t* rows, index_t kc, const int32_t* cols, index_t nc,
                 const void* src, index_t ld) {
  if (dt == DType::f32)
    scatter_add_t(static_cast<float*>(base), rows, kc, cols, nc, static_cast<const float*>(src), ld);
  else
    scatter_add_t(static_cast<double*>(base), rows, kc, cols, nc, static_cast<const double*>(src), ld);
}

}  // namespace nnk::cpu::avx512
