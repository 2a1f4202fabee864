// FMA throughput loop, AVX-512: 16 zmm accumulators (16 float32 / 8 float64 lanes each).
// Math and contract: peak.h.
#include <immintrin.h>

#include "cpu/bench/peak.h"

namespace nnk::cpu::avx512 {

namespace {
constexpr int NACC = 16;

double loop_f32(index_t iters) {
  const __m512 a = _mm512_set1_ps(1.0f - 0x1p-20f), b = _mm512_set1_ps(0x1p-20f);
  __m512 acc[NACC];
  for (int i = 0; i < NACC; ++i) acc[i] = _mm512_set1_ps(float(i) * 0.01f);
  for (index_t k = 0; k < iters; ++k) {
    for (int i = 0; i < NACC; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < NACC; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float v[16];
  _mm512_store_ps(v, s);
  double r = 0;
  for (float x : v) r += x;
  return r;
}

double loop_f64(index_t iters) {
  const __m512d a = _mm512_set1_pd(1.0 - 0x1p-20), b = _mm512_set1_pd(0x1p-20);
  __m512d acc[NACC];
  for (int i = 0; i < NACC; ++i) acc[i] = _mm512_set1_pd(double(i) * 0.01);
  for (index_t k = 0; k < iters; ++k) {
    for (int i = 0; i < NACC; ++i) acc[i] = _mm512_fmadd_pd(acc[i], a, b);
  }
  __m512d s = acc[0];
  for (int i = 1; i < NACC; ++i) s = _mm512_add_pd(s, acc[i]);
  alignas(64) double v[8];
  _mm512_store_pd(v, s);
  double r = 0;
  for (double x : v) r += x;
  return r;
}
}  // namespace

PeakKernel peak_kernel() { return {loop_f32, loop_f64, 2.0 * NACC * 16, 2.0 * NACC * 8}; }

}  // namespace nnk::cpu::avx512
