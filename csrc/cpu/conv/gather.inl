// gather_pack / scatter_add (contract: gather.h), included inside one ISA namespace by
// gather{,_avx2,_avx512}.cpp (the AVX-512 build defines NNK_GATHER_OWN_ENTRY and routes
// full panels to its own gather-instruction loops).

template <typename T>
void gather_pack_t(T* __restrict dst, const T* __restrict base, const int32_t* __restrict rows, index_t kc,
                   const int32_t* __restrict cols, index_t nc, index_t NR) {
  for (index_t j0 = 0; j0 < nc; j0 += NR) {
    const index_t nr = std::min(NR, nc - j0);
    const int32_t* __restrict co = cols + j0;
    T* __restrict d = dst + (j0 / NR) * kc * NR;
    for (index_t p = 0; p < kc; ++p, d += NR) {
      const T* __restrict s = base + rows[p];
      for (index_t jj = 0; jj < nr; ++jj) d[jj] = s[co[jj]];
      for (index_t jj = nr; jj < NR; ++jj) d[jj] = T(0);
    }
  }
}

template <typename T>
void scatter_add_t(T* base, const int32_t* __restrict rows, index_t kc, const int32_t* __restrict cols,
                   index_t nc, const T* __restrict src, index_t ld) {
  for (index_t p = 0; p < kc; ++p) {
    T* d = base + rows[p];
    const T* __restrict s = src + p * ld;
    for (index_t q = 0; q < nc; ++q) d[cols[q]] += s[q];
  }
}

#ifndef NNK_GATHER_OWN_ENTRY
void gather_pack(DType dt, void* dst, const void* base, const int32_t* rows, index_t kc, const int32_t* cols,
                 index_t nc, index_t NR) {
  if (dt == DType::f32)
    gather_pack_t(static_cast<float*>(dst), static_cast<const float*>(base), rows, kc, cols, nc, NR);
  else
    gather_pack_t(static_cast<double*>(dst), static_cast<const double*>(base), rows, kc, cols, nc, NR);
}

void scatter_add(DType dt, void* base, const int32_t* rows, index_t kc, const int32_t* cols, index_t nc,
                 const void* src, index_t ld) {
  if (dt == DType::f32)
    scatter_add_t(static_cast<float*>(base), rows, kc, cols, nc, static_cast<const float*>(src), ld);
  else
    scatter_add_t(static_cast<double*>(base), rows, kc, cols, nc, static_cast<const double*>(src), ld);
}
#endif  // NNK_GATHER_OWN_ENTRY
