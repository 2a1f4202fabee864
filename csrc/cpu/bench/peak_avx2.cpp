// FMA throughput loop, AVX2 + FMA: 12 ymm accumulators (8 float32 / 4 float64 lanes each;
// 12 + 2 constants fit the 16 ymm registers). Math and contract: peak.h.
#include <immintrin.h>

#include "cpu/bench/peak.h"

namespace nnk::cpu::avx2 {

namespace {
constexpr int NACC = 12;

double loop_f32(index_t iters) {
  const __m256 a = _mm256_set1_ps(1.0f - 0x1p-20f), b = _mm256_set1_ps(0x1p-20f);
  __m256 acc[NACC];
  for (int i = 0; i < NACC; ++i) acc[i] = _mm256_set1_ps(float(i) * 0.01f);
  for (index_t k = 0; k < iters; ++k) {
    for (int i = 0; i < NACC; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 s = acc[0];
  for (int i = 1; i < NACC; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float v[8];
  _mm256_store_ps(v, s);
  double r = 0;
  for (float x : v) r += x;
  return r;
}

double loop_f64(index_t iters) {
  const __m256d a = _mm256_set1_pd(1.0 - 0x1p-20), b = _mm256_set1_pd(0x1p-20);
  __m256d acc[NACC];
  for (int i = 0; i < NACC; ++i) acc[i] = _mm256_set1_pd(double(i) * 0.01);
  for (index_t k = 0; k < iters; ++k) {
    for (int i = 0; i < NACC; ++i) acc[i] = _mm256_fmadd_pd(acc[i], a, b);
  }
  __m256d s = acc[0];
  for (int i = 1; i < NACC; ++i) s = _mm256_add_pd(s, acc[i]);
  alignas(32) double v[4];
  _mm256_store_pd(v, s);
  return v[0] + v[1] + v[2] + v[3];
}
}  // namespace

PeakKernel peak_kernel() { return {loop_f32, loop_f64, 2.0 * NACC * 8, 2.0 * NACC * 4}; }

}  // namespace nnk::cpu::avx2
