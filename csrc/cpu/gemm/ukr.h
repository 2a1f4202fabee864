// The micro-kernel contract (written once; every ISA's kernel follows it).
//
//   C(m x n) := act( alpha * A~ B~ + beta * C + bias_m[i] + bias_n[j] )
//
//   A~: kc x MR micro-panel. Packed: a[p * MR + i] (rs_a = 1, cs_a = MR; rows up to MR may
//       be read, so an unpacked A must not come with these strides unless m = MR). Unpacked
//       (the small-matrix path, or operands read in place): a[i * rs_a + p * cs_a], any
//       strides; rows i >= m are never read.
//   B~: kc x NR, b[p * ldb + j], unit column stride. Packed: ldb = NR, zero-padded to NR
//       columns. Unpacked: ldb = the source's row stride; columns j >= n are never read.
//   C:  row-major tile, c[i * ldc + j]; only i < m <= MR, j < n <= NR are touched.
//   beta == 0: C is not read. bias_m (m values) / bias_n (n values) may be null.
//   act: relu is applied in registers; other activations by act_tile on the stored tile
//   while it is still in L1. The driver passes act/bias only on the K blocks where they
//   belong (bias with the first block, act with the last).
#pragma once
#include "core/types.h"
#include "cpu/act/act.h"
#include "cpu/gemm/pack.h"

namespace nnk {

template <typename T>
using ActTileFn = void (*)(T* c, index_t ldc, index_t m, index_t n, Act act, T param);

template <typename T>
struct UkrEpilogue {
  T alpha = 1, beta = 0;
  const T* bias_m = nullptr;
  const T* bias_n = nullptr;
  Act act = Act::none;
  T act_param = 0;
  ActTileFn<T> act_tile = nullptr;  // used for act other than none/relu
};

template <typename T>
using UkrFn = void (*)(index_t kc, const T* a, index_t rs_a, index_t cs_a, const T* b,
                       index_t ldb, T* c, index_t ldc, index_t m, index_t n,
                       const UkrEpilogue<T>& ep);

// out[i * ldo + j] = sum_k a[i * lda + k] * b[j * ldb + k] for i < m <= 4, j < n <= 4
// (dot.inl: products with a tiny side whose operands are contiguous along K).
template <typename T>
using DotFn = void (*)(index_t K, const T* a, index_t lda, index_t m, const T* b, index_t ldb,
                       index_t n, T* out, index_t ldo);

// One ISA's kernel for one dtype and the block sizes that go with it.
template <typename T>
struct GemmKernel {
  UkrFn<T> ukr;
  index_t MR, NR;   // register tile (rows of A, columns of B)
  index_t MC, KC, NC;  // cache blocks: A block MC x KC in L2, B panel KC x NR in L1, B block KC x NC in L3
  ActTileFn<T> act_tile;
  PackFn<T> pack_a, pack_b;
  DotFn<T> dot;
};

template <typename T>
const GemmKernel<T>& gemm_kernel(Isa isa);

// The kernel of `isa` for a problem of M rows: the default one, or a variant with fewer
// rows (same NR, KC, NC and packing) when that pads M much less (M = 32 on AVX-512: 32
// rows of 8-row tiles against 42 of 14-row ones). Pre-packed A fixes MR: pass its r.
template <typename T>
const GemmKernel<T>& gemm_kernel_for(Isa isa, index_t M, index_t packed_mr = 0);

namespace cpu {
namespace generic {
void sdot_kernel(index_t, const float*, index_t, index_t, const float*, index_t, index_t, float*, index_t);
void ddot_kernel(index_t, const double*, index_t, index_t, const double*, index_t, index_t, double*, index_t);
void sgemm_ukr_6x8(index_t, const float*, index_t, index_t, const float*, index_t, float*, index_t, index_t, index_t, const UkrEpilogue<float>&);
void dgemm_ukr_4x4(index_t, const double*, index_t, index_t, const double*, index_t, double*, index_t, index_t, index_t, const UkrEpilogue<double>&);
}  // namespace generic
namespace avx2 {
void sdot_kernel(index_t, const float*, index_t, index_t, const float*, index_t, index_t, float*, index_t);
void ddot_kernel(index_t, const double*, index_t, index_t, const double*, index_t, index_t, double*, index_t);
void sgemm_ukr_6x16(index_t, const float*, index_t, index_t, const float*, index_t, float*, index_t, index_t, index_t, const UkrEpilogue<float>&);
void dgemm_ukr_6x8(index_t, const double*, index_t, index_t, const double*, index_t, double*, index_t, index_t, index_t, const UkrEpilogue<double>&);
}  // namespace avx2
namespace avx512 {
void sdot_kernel(index_t, const float*, index_t, index_t, const float*, index_t, index_t, float*, index_t);
void ddot_kernel(index_t, const double*, index_t, index_t, const double*, index_t, index_t, double*, index_t);
void sgemm_ukr_14x32(index_t, const float*, index_t, index_t, const float*, index_t, float*, index_t, index_t, index_t, const UkrEpilogue<float>&);
void dgemm_ukr_14x16(index_t, const double*, index_t, index_t, const double*, index_t, double*, index_t, index_t, index_t, const UkrEpilogue<double>&);
void sgemm_ukr_8x32(index_t, const float*, index_t, index_t, const float*, index_t, float*, index_t, index_t, index_t, const UkrEpilogue<float>&);
void dgemm_ukr_8x16(index_t, const double*, index_t, index_t, const double*, index_t, double*, index_t, index_t, index_t, const UkrEpilogue<double>&);
}  // namespace avx512
}  // namespace cpu

}  // namespace nnk
