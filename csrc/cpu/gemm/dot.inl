// Dot-product kernel of the GEMM engine for products with a tiny side (gemv-like: M or N
// <= 4) whose A rows and B columns are both contiguous along K (x @ W^T with W in torch's
// (out, in) layout: a linear layer or RNN cell at batch 1..4). Packing such a B costs more
// than the product; here every output is one dot product read straight from the operands.
// Included INSIDE nnk::cpu::<isa> after vec_<isa>.h (V = Vec<T>).
//
//   out[i * ldo + j] = sum_k a[i * lda + k] * b[j * ldb + k],  i < m <= 4, j < n <= 4
//
// Lanes accumulate K in vector steps (the tail masked), then one horizontal sum per output
// in a fixed order: the result depends only on K and the ISA, never on the thread split.

template <class V, int MB, int NB>
static inline void dot_tile(index_t K, const typename V::T* __restrict a, index_t lda,
                            const typename V::T* __restrict b, index_t ldb,
                            typename V::T* __restrict out, index_t ldo) {
  using R = typename V::reg;
  constexpr int L = V::L;
  R acc[MB][NB];
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) acc[i][j] = V::zero();
  index_t k = 0;
  for (; k + L <= K; k += L) {
    R bv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) bv[j] = V::load(b + j * ldb + k);
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) {
      const R av = V::load(a + i * lda + k);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[i][j] = V::fmadd(av, bv[j], acc[i][j]);
    }
  }
  if (k < K) {
    const index_t r = K - k;
    R bv[NB];
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) bv[j] = V::loadn(b + j * ldb + k, r);
#pragma GCC unroll 4
    for (int i = 0; i < MB; ++i) {
      const R av = V::loadn(a + i * lda + k, r);
#pragma GCC unroll 4
      for (int j = 0; j < NB; ++j) acc[i][j] = V::fmadd(av, bv[j], acc[i][j]);
    }
  }
#pragma GCC unroll 4
  for (int i = 0; i < MB; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) out[i * ldo + j] = V::hsum(acc[i][j]);
}

template <class V, int MB>
static inline void dot_rows(index_t K, const typename V::T* a, index_t lda, const typename V::T* b,
                            index_t ldb, index_t n, typename V::T* out, index_t ldo) {
  switch (n) {
    case 4: dot_tile<V, MB, 4>(K, a, lda, b, ldb, out, ldo); break;
    case 3: dot_tile<V, MB, 3>(K, a, lda, b, ldb, out, ldo); break;
    case 2: dot_tile<V, MB, 2>(K, a, lda, b, ldb, out, ldo); break;
    default: dot_tile<V, MB, 1>(K, a, lda, b, ldb, out, ldo); break;
  }
}

template <class V>
static void dot_kernel(index_t K, const typename V::T* a, index_t lda, index_t m,
                       const typename V::T* b, index_t ldb, index_t n, typename V::T* out,
                       index_t ldo) {
  switch (m) {
    case 4: dot_rows<V, 4>(K, a, lda, b, ldb, n, out, ldo); break;
    case 3: dot_rows<V, 3>(K, a, lda, b, ldb, n, out, ldo); break;
    case 2: dot_rows<V, 2>(K, a, lda, b, ldb, n, out, ldo); break;
    default: dot_rows<V, 1>(K, a, lda, b, ldb, n, out, ldo); break;
  }
}

void sdot_kernel(index_t K, const float* a, index_t lda, index_t m, const float* b, index_t ldb,
                 index_t n, float* out, index_t ldo) {
  dot_kernel<Vec<float>>(K, a, lda, m, b, ldb, n, out, ldo);
}
void ddot_kernel(index_t K, const double* a, index_t lda, index_t m, const double* b, index_t ldb,
                 index_t n, double* out, index_t ldo) {
  dot_kernel<Vec<double>>(K, a, lda, m, b, ldb, n, out, ldo);
}
