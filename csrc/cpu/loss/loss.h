// Loss functions (forward and backward): entry points and the per-ISA kernel table.
//
//   mse_loss:   l_i = (x_i - y_i)^2                                   x, y: any shape, n elements
//   cross_entropy (class-index targets):
//               l_n = logsumexp_c(x[n, :]) - x[n, t_n]               x (N, C), t (N,) int32/int64
//               l_n = 0 (and a zero gradient row) where t_n == ignore_index, as torch
//   binary_cross_entropy_with_logits:
//               l_i = max(x_i, 0) - x_i * t_i + log1p(exp(-|x_i|))   x, t: any shape, n elements
//
//   reduction: none -> out[i] = l_i (the unreduced shape); sum -> sum_i l_i; mean -> sum / count
//   (count = n for mse/bce; for cross_entropy the number of targets not equal to ignore_index;
//   count 0 gives NaN, as torch).
//   Backward: grad_in = d(loss)/d(x) * g, where g is the scalar grad_out for mean/sum and the
//   array grad_out (the unreduced shape; null means ones) for none:
//     mse:  2 (x - y) g (/ n for mean)
//     ce:   (softmax(x[n, :]) - onehot(t_n)) g_n (/ count for mean; 0 where t_n is ignored)
//     bce:  (sigmoid(x) - t) g (/ n for mean)
//
// All pointers are C-contiguous (the bindings make them so). Outputs are written with `=`.
// Determinism: sums run over fixed-size chunks of elements (or rows) whose boundaries depend
// only on the sizes, never on the thread count; each chunk's partial sum is accumulated in
// double in a fixed lane order, and the partials are added in chunk order. So the result is
// bitwise the same for any thread count (it may differ between ISAs, whose lane counts differ).
#pragma once
#include <cstdint>
#include <string>

#include "core/cpu_features.h"
#include "core/errors.h"
#include "core/types.h"

namespace nnk {

enum class Reduction : int { none = 0, mean = 1, sum = 2 };

// The error for a class-index target outside [0, C) (every cross_entropy path raises it).
inline IndexError target_out_of_range(index_t n, int64_t t, index_t C) {
  return IndexError("cross_entropy: target[" + std::to_string(n) + "] = " + std::to_string(t) +
                    " is out of range for " + std::to_string(C) + " classes");
}

// --- drivers (loss.cpp): thread over chunks, pick the ISA's kernels ---------------------
// Forward: reduction none writes out[] and returns 0; mean/sum return the loss, rounded to T.
template <typename T>
double mse_loss_fwd(T* out, const T* x, const T* y, index_t n, Reduction r);
template <typename T>
void mse_loss_bwd(T* gx, const T* x, const T* y, const T* g, double g_scalar, index_t n,
                  Reduction r);

template <typename T>
double bce_logits_fwd(T* out, const T* x, const T* t, index_t n, Reduction r);
template <typename T>
void bce_logits_bwd(T* gx, const T* x, const T* t, const T* g, double g_scalar, index_t n,
                    Reduction r);

// target: N int32 (t64 false) or int64 (t64 true) class indices; every one not equal to
// `ignore` (torch's ignore_index, any value) is checked to lie in [0, C) before any logit is
// read (IndexError naming the first bad position otherwise).
template <typename T>
double cross_entropy_fwd(T* out, const T* x, const void* target, bool t64, index_t N, index_t C,
                         Reduction r, int64_t ignore);
template <typename T>
void cross_entropy_bwd(T* gx, const T* x, const void* target, bool t64, const T* g,
                       double g_scalar, index_t N, index_t C, Reduction r, int64_t ignore);

// --- per-ISA chunk kernels (loss_kernels.inl, single-threaded) --------------------------
// *_none write l_i; *_sum return sum l_i in double; *_bwd write grad with
// g_i = scale * (g ? g[i] : 1). ce_* work on `rows` rows of C logits.
template <typename T>
struct LossKernels {
  void (*mse_none)(T* out, const T* x, const T* y, index_t n);
  double (*mse_sum)(const T* x, const T* y, index_t n);
  void (*mse_bwd)(T* gx, const T* x, const T* y, const T* g, T scale, index_t n);
  void (*bce_none)(T* out, const T* x, const T* t, index_t n);
  double (*bce_sum)(const T* x, const T* t, index_t n);
  void (*bce_bwd)(T* gx, const T* x, const T* t, const T* g, T scale, index_t n);
  // ce_fwd: writes l_n to out when out is not null; returns sum_n l_n. Rows whose target
  // equals `ignore` give l_n = 0 and a zero gradient row (their logits are not read).
  double (*ce_fwd_i32)(T* out, const T* x, const int32_t* t, index_t rows, index_t C, int64_t ignore);
  double (*ce_fwd_i64)(T* out, const T* x, const int64_t* t, index_t rows, index_t C, int64_t ignore);
  void (*ce_bwd_i32)(T* gx, const T* x, const int32_t* t, const T* g, T scale, index_t rows,
                     index_t C, int64_t ignore);
  void (*ce_bwd_i64)(T* gx, const T* x, const int64_t* t, const T* g, T scale, index_t rows,
                     index_t C, int64_t ignore);
};

namespace cpu {
namespace generic {
extern const LossKernels<float> loss_f32;
extern const LossKernels<double> loss_f64;
}  // namespace generic
namespace avx2 {
extern const LossKernels<float> loss_f32;
extern const LossKernels<double> loss_f64;
}  // namespace avx2
namespace avx512 {
extern const LossKernels<float> loss_f32;
extern const LossKernels<double> loss_f64;
}  // namespace avx512
}  // namespace cpu

namespace ref {
// Plain scalar loops, one element at a time, sequential double sums (the oracle).
template <typename T>
double mse_loss_fwd(T* out, const T* x, const T* y, index_t n, Reduction r);
template <typename T>
void mse_loss_bwd(T* gx, const T* x, const T* y, const T* g, double g_scalar, index_t n,
                  Reduction r);
template <typename T>
double bce_logits_fwd(T* out, const T* x, const T* t, index_t n, Reduction r);
template <typename T>
void bce_logits_bwd(T* gx, const T* x, const T* t, const T* g, double g_scalar, index_t n,
                    Reduction r);
template <typename T>
double cross_entropy_fwd(T* out, const T* x, const void* target, bool t64, index_t N, index_t C,
                         Reduction r, int64_t ignore);
template <typename T>
void cross_entropy_bwd(T* gx, const T* x, const void* target, bool t64, const T* g,
                       double g_scalar, index_t N, index_t C, Reduction r, int64_t ignore);
}  // namespace ref

}  // namespace nnk
