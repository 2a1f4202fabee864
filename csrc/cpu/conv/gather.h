// Table-driven gather / scatter for the small-image convolution path (conv.cpp). A padded
// copy of the images makes every patch element an affine read base[row[p] + col[j]]
// (row: the tap (c, i, j) or the pixel (n, oh, ow); col: the other), so packing and
// col2im are branch-free table lookups that the compiler vectorises (gathers on AVX-512).
//   gather_pack: dst[panel][p][NR] = base[rows[p] + cols[panel*NR + jj]] for
//                p < kc, column panel*NR + jj < nc; zero for the pad columns up to NR.
//   scatter_add: base[rows[p] + cols[q]] += src[p * ld + q] for p < kc, q < nc, in order
//                (rows first); the caller keeps the targets of different threads apart.
// Offsets are int32: the caller bounds the padded buffer below 2^31 elements.
#pragma once
#include <cstdint>

#include "core/types.h"

namespace nnk::cpu {
#define NNK_CONV_GATHER_DECL                                                                              \
  void gather_pack(DType dt, void* dst, const void* base, const int32_t* rows, index_t kc,                \
                   const int32_t* cols, index_t nc, index_t NR);                                          \
  void scatter_add(DType dt, void* base, const int32_t* rows, index_t kc, const int32_t* cols, index_t nc, \
                   const void* src, index_t ld);
namespace generic { NNK_CONV_GATHER_DECL }
namespace avx2 { NNK_CONV_GATHER_DECL }
namespace avx512 { NNK_CONV_GATHER_DECL }
#undef NNK_CONV_GATHER_DECL
}  // namespace nnk::cpu
