// Portable micro-kernels (baseline flags; the compiler vectorises the j loops):
// float32 6x8 and float64 4x4 (MR x NR). Contract: ukr.h. Used on CPUs without
// AVX2 and on aarch64 until NEON kernels exist.
#include "cpu/gemm/ukr.h"

namespace nnk::cpu::generic {

template <typename T, int MR, int NR>
static void ukr(index_t kc, const T* __restrict a, index_t rs_a, index_t cs_a,
                const T* __restrict b, index_t ldb, T* __restrict c, index_t ldc, index_t m,
                index_t n, const UkrEpilogue<T>& ep) {
  T acc[MR][NR] = {};
  const bool packed = rs_a == 1 && cs_a == MR;
  const bool full_n = n == NR;
  for (index_t p = 0; p < kc; ++p) {
    T bv[NR];
    if (full_n) {
      for (int j = 0; j < NR; ++j) bv[j] = b[j];
    } else {
      for (int j = 0; j < NR; ++j) bv[j] = j < n ? b[j] : T(0);
    }
    for (int i = 0; i < MR; ++i) {
      const index_t ii = i < m ? i : m - 1;
      T ai = packed ? a[p * MR + i] : a[ii * rs_a + p * cs_a];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * bv[j];
    }
    b += ldb;
  }
  const bool read_c = ep.beta != T(0);
  for (index_t i = 0; i < m; ++i) {
    T* ci = c + i * ldc;
    T bm = ep.bias_m ? ep.bias_m[i] : T(0);
    for (index_t j = 0; j < n; ++j) {
      T x = acc[i][j] * ep.alpha;
      if (read_c) x += ep.beta * ci[j];
      x += bm + (ep.bias_n ? ep.bias_n[j] : T(0));
      if (ep.act == Act::relu) x = (x > T(0) || x != x) ? x : T(0);
      ci[j] = x;
    }
  }
  if (ep.act != Act::none && ep.act != Act::relu) ep.act_tile(c, ldc, m, n, ep.act, ep.act_param);
}

void sgemm_ukr_6x8(index_t kc, const float* a, index_t rs_a, index_t cs_a, const float* b,
                   index_t ldb, float* c, index_t ldc, index_t m, index_t n,
                   const UkrEpilogue<float>& ep) {
  ukr<float, 6, 8>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
}

void dgemm_ukr_4x4(index_t kc, const double* a, index_t rs_a, index_t cs_a, const double* b,
                   index_t ldb, double* c, index_t ldc, index_t m, index_t n,
                   const UkrEpilogue<double>& ep) {
  ukr<double, 4, 4>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
}

}  // namespace nnk::cpu::generic
