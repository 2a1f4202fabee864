// In-register square transposes for AVX-512 builds (include only from *_avx512.cpp files).
#pragma once
#include <immintrin.h>

namespace nnk::cpu::avx512 {

// r[0..15] rows in, out[j][i] = r[i][j] (derivation: unpack ps -> unpack pd -> two
// rounds of 128-bit lane shuffles).
inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int g = 0; g < 4; ++g) {
    const __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 x = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
    const __m512 y = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
    const __m512 x2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
    const __m512 y2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
    r[c] = _mm512_shuffle_f32x4(x, x2, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(x, x2, 0xDD);
    r[8 + c] = _mm512_shuffle_f32x4(y, y2, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(y, y2, 0xDD);
  }
}

inline void transpose8(__m512d r[8]) {
  __m512d t[8];
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = _mm512_unpacklo_pd(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_pd(r[2 * k], r[2 * k + 1]);
  }
  for (int c = 0; c < 2; ++c) {
    const __m512d x = _mm512_shuffle_f64x2(t[c], t[2 + c], 0x44);
    const __m512d y = _mm512_shuffle_f64x2(t[c], t[2 + c], 0xEE);
    const __m512d x2 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0x44);
    const __m512d y2 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0xEE);
    r[c] = _mm512_shuffle_f64x2(x, x2, 0x88);
    r[2 + c] = _mm512_shuffle_f64x2(x, x2, 0xDD);
    r[4 + c] = _mm512_shuffle_f64x2(y, y2, 0x88);
    r[6 + c] = _mm512_shuffle_f64x2(y, y2, 0xDD);
  }
}

}  // namespace nnk::cpu::avx512
