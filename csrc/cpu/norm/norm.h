// Layer norm, embedding and dropout (the Transformer's other kernels).
//
// Dimension letters: R rows (everything before the normalised dims), D normalised size,
// N indices, V vocabulary (num_embeddings).
//
// layer_norm (x, y: (R, D) C-contiguous; w, b: (D) or null; mean, rstd: (R)):
//   mean_r = sum_d x / D,  var_r = sum_d (x - mean_r)^2 / D (two passes over the row, which
//   sits in L1: stable for inputs with a large mean), rstd_r = 1 / sqrt(var_r + eps),
//   y = (x - mean) rstd w + b.
// layer_norm backward (g = dL/dy), xhat = (x - mean) rstd, gw = g w:
//   dx = rstd (gw - mean_d(gw) - xhat mean_d(gw xhat)),  dw = sum_r g xhat,  db = sum_r g.
//   dw, db: partial sums over fixed blocks of kLnRowBlock rows, then summed over the blocks
//   in order: the same bits whatever the thread count. All outputs written with `=`.
// embedding: out[i, :] = weight[idx[i], :]; backward dW[v, :] = sum_{i: idx[i] = v} g[i, :]
//   in increasing i (indices bucketed by v first; each row of dW has one owner).
// dropout: keep_i = philox4x32-10(key = seed, counter = i / 4) word i % 4 >= p 2^32,
//   y_i = keep_i ? x_i / (1 - p) : 0. The mask is a function of (seed, i) only.
#pragma once
#include <cstdint>

#include "core/cpu_features.h"
#include "core/types.h"

namespace nnk {

constexpr index_t kLnRowBlock = 32;

template <typename T>
void layer_norm_fwd(Isa isa, T* y, T* mean, T* rstd, const T* x, const T* w, const T* b,
                    index_t R, index_t D, T eps);
// dw, db may be null (not computed).
template <typename T>
void layer_norm_bwd(Isa isa, T* dx, T* dw, T* db, const T* g, const T* x, const T* mean,
                    const T* rstd, const T* w, index_t R, index_t D);

// idx: N int32 or int64 values (idx32 / idx64, one of them non-null). Returns -1 when every
// index is in [0, V), else the position of the first bad one (nothing written then).
index_t embedding_check(const int32_t* idx32, const int64_t* idx64, index_t N, index_t V);
template <typename T>
void embedding_fwd(T* out, const T* weight, const int32_t* idx32, const int64_t* idx64,
                   index_t N, index_t D);
template <typename T>
void embedding_bwd(T* dw, const T* g, const int32_t* idx32, const int64_t* idx64, index_t N,
                   index_t V, index_t D);

template <typename T>
void dropout_fwd(T* y, uint8_t* mask, const T* x, index_t n, double p, uint64_t seed);

namespace ref {
template <typename T>
void layer_norm_fwd(T* y, T* mean, T* rstd, const T* x, const T* w, const T* b, index_t R,
                    index_t D, T eps);
}  // namespace ref

}  // namespace nnk
