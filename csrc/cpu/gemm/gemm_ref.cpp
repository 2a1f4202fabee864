// Reference GEMM: the plain triple loop with the contract of gemm.h (the test oracle).
// Sums in natural order p = 0..K-1, in the output dtype.
#include <cmath>

#include "cpu/gemm/gemm.h"

namespace nnk::ref {

template <typename T>
void act_forward(T* y, const T* x, index_t n, Act act, T param);

template <typename T>
static void gemm_t(const GemmArgs& g) {
  const T* a = static_cast<const T*>(g.a);
  const T* b = static_cast<const T*>(g.b);
  T* c = static_cast<T*>(g.c);
  const T* bm = static_cast<const T*>(g.bias_m);
  const T* bn = static_cast<const T*>(g.bias_n);
  for (index_t i = 0; i < g.M; ++i) {
    for (index_t j = 0; j < g.N; ++j) {
      T acc = 0;
      for (index_t p = 0; p < g.K; ++p) acc += a[i * g.rs_a + p * g.cs_a] * b[p * g.rs_b + j * g.cs_b];
      T* cij = c + i * g.rs_c + j * g.cs_c;
      const T cv = g.c_in ? static_cast<const T*>(g.c_in)[i * g.rs_cin + j * g.cs_cin] : *cij;
      T x = T(g.alpha) * acc + (g.beta != 0 ? T(g.beta) * cv : T(0));
      if (bm) x += bm[i];
      if (bn) x += bn[j];
      act_forward<T>(&x, &x, 1, g.act, T(g.act_param));
      *cij = x;
    }
  }
}

void gemm(const GemmArgs& g) {
  if (g.dtype == DType::f32) gemm_t<float>(g);
  else gemm_t<double>(g);
}

}  // namespace nnk::ref
