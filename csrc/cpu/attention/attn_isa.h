// The per-ISA tile operations of attention (attn_kernels.inl, instantiated in
// attn_<isa>.cpp) as a table of function pointers. Tiles are row-major (row stride ld),
// m rows by n columns; all single-threaded.
#pragma once
#include "core/types.h"

namespace nnk {

template <typename T>
struct AttnIsaKernels {
  // Online softmax step on a score tile s (m x n): per row i, m_new = max(mrow[i], max_j s),
  // s := exp(s - m_new), lrow[i] := lrow[i] corr[i] + sum_j s, corr[i] = exp(mrow[i] - m_new),
  // mrow[i] := m_new. A row still entirely -inf gets s = 0 and corr = 1.
  void (*softmax_tile)(T* s, index_t lds, index_t m, index_t n, T* mrow, T* lrow, T* corr);
  // Backward's recomputation: s := exp(s - lse[i]) (0 where lse[i] = -inf).
  void (*p_tile)(T* s, index_t lds, index_t m, index_t n, const T* lse);
  // dp := p o (dp - D[i]).
  void (*ds_tile)(T* dp, index_t ldp, const T* p, index_t lds, index_t m, index_t n, const T* D);
  // The mask on a score tile: row i of the mask at mask + i rs, element j at + j cs.
  // boolean (uint8 mask): s := -inf where the mask is 0; else (T mask): s += mask.
  void (*mask_tile)(T* s, index_t lds, index_t m, index_t n, const void* mask, index_t rs,
                    index_t cs, bool boolean);
};

namespace cpu {
namespace generic {
const AttnIsaKernels<float>& attn_kernels(float);
const AttnIsaKernels<double>& attn_kernels(double);
}  // namespace generic
namespace avx2 {
const AttnIsaKernels<float>& attn_kernels(float);
const AttnIsaKernels<double>& attn_kernels(double);
}  // namespace avx2
namespace avx512 {
const AttnIsaKernels<float>& attn_kernels(float);
const AttnIsaKernels<double>& attn_kernels(double);
}  // namespace avx512
}  // namespace cpu

}  // namespace nnk
