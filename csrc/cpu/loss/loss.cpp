// Loss drivers: choose the ISA's chunk kernels, split the work over the thread pool and
// reduce deterministically (math and contracts: loss.h; kernels: loss_kernels.inl).
//
// Reductions: the input is cut into chunks of kChunkElems elements (cross_entropy: whole
// rows, about kChunkElems logits per chunk). The cut depends only on the sizes; threads
// take whole chunks, each chunk's partial sum lands in its own slot, and the slots are
// added in chunk order afterwards. Elementwise passes (reduction "none", backward) have no
// cross-element arithmetic; they are still split at chunk boundaries (see for_chunks).
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/errors.h"
#include "core/parallel.h"
#include "cpu/loss/loss.h"

namespace nnk {

namespace {

constexpr index_t kChunkElems = 16384;  // elements per partial sum (64 KiB of float32 input)
constexpr index_t kGrainElems = 32768;  // fewest elements worth handing to another thread

template <typename T>
const LossKernels<T>& loss_kernels();

template <>
const LossKernels<float>& loss_kernels<float>() {
#if defined(NNK_X86)
  switch (current_isa()) {
    case Isa::avx512: return cpu::avx512::loss_f32;
    case Isa::avx2: return cpu::avx2::loss_f32;
    default: break;
  }
#endif
  return cpu::generic::loss_f32;
}

template <>
const LossKernels<double>& loss_kernels<double>() {
#if defined(NNK_X86)
  switch (current_isa()) {
    case Isa::avx512: return cpu::avx512::loss_f64;
    case Isa::avx2: return cpu::avx2::loss_f64;
    default: break;
  }
#endif
  return cpu::generic::loss_f64;
}

// sum_c f(c) over nchunks chunks, threads taking runs of at least grain chunks; the
// partials are combined in chunk order, so the result does not depend on the threads.
template <class F>
double chunked_sum(index_t nchunks, index_t grain, F&& f) {
  if (nchunks <= 0) return 0.0;
  std::vector<double> part(size_t(nchunks), 0.0);
  parallel_for(nchunks, grain, [&](index_t b, index_t e) {
    for (index_t c = b; c < e; ++c) part[size_t(c)] = f(c);
  });
  double s = 0.0;
  for (double p : part) s += p;
  return s;
}

// The scalar result of a reduced loss, rounded to the input dtype.
template <typename T>
double finish(double total, index_t count, Reduction r) {
  if (r == Reduction::sum) return double(T(total));
  if (count == 0) return std::numeric_limits<double>::quiet_NaN();
  return double(T(total / double(count)));
}

// f(b, e) over [0, n) split at multiples of kChunkElems only: each element then sits at
// the same place within a kernel's lane blocks whatever the thread count, so even the
// compiler's choice between the vector body and the scalar tail (which may contract
// a * b + c into an FMA differently) cannot depend on the threads.
template <class F>
void for_chunks(index_t n, F&& f) {
  parallel_for(ceil_div(n, kChunkElems), kGrainElems / kChunkElems, [&](index_t cb, index_t ce) {
    f(cb * kChunkElems, std::min(n, ce * kChunkElems));
  });
}

// Elementwise sum over n elements with the chunk kernel sum(x + b, y + b, len).
template <typename T, class Sum>
double elementwise_sum(Sum sum, const T* x, const T* y, index_t n) {
  const index_t nch = ceil_div(n, kChunkElems);
  return chunked_sum(nch, kGrainElems / kChunkElems, [&](index_t c) {
    const index_t b = c * kChunkElems, e = std::min(n, b + kChunkElems);
    return sum(x + b, y + b, e - b);
  });
}

// Checks every target not equal to `ignore` against [0, C); returns how many are not ignored
// (the count "mean" divides by).
template <typename I>
index_t check_targets(const I* t, index_t N, index_t C, int64_t ignore) {
  index_t kept = 0;
  for (index_t n = 0; n < N; ++n) {
    if (int64_t(t[n]) == ignore) continue;
    if (t[n] < 0 || t[n] >= C)
      throw target_out_of_range(n, int64_t(t[n]), C);
    ++kept;
  }
  return kept;
}

index_t check_targets(const void* t, bool t64, index_t N, index_t C, int64_t ignore) {
  if (t64) return check_targets(static_cast<const int64_t*>(t), N, C, ignore);
  return check_targets(static_cast<const int32_t*>(t), N, C, ignore);
}

}  // namespace

// ---- mse ------------------------------------------------------------------------------

template <typename T>
double mse_loss_fwd(T* out, const T* x, const T* y, index_t n, Reduction r) {
  const LossKernels<T>& k = loss_kernels<T>();
  if (r == Reduction::none) {
    for_chunks(n, [&](index_t b, index_t e) { k.mse_none(out + b, x + b, y + b, e - b); });
    return 0.0;
  }
  return finish<T>(elementwise_sum(k.mse_sum, x, y, n), n, r);
}

template <typename T>
void mse_loss_bwd(T* gx, const T* x, const T* y, const T* g, double g_scalar, index_t n,
                  Reduction r) {
  const LossKernels<T>& k = loss_kernels<T>();
  const T scale = r == Reduction::none ? T(2)
                  : r == Reduction::sum ? T(2.0 * g_scalar)
                                        : T(2.0 * g_scalar / double(n));
  const T* gp = r == Reduction::none ? g : nullptr;
  for_chunks(n, [&](index_t b, index_t e) {
    k.mse_bwd(gx + b, x + b, y + b, gp ? gp + b : nullptr, scale, e - b);
  });
}

// ---- binary cross-entropy with logits ----------------------------------------------------

template <typename T>
double bce_logits_fwd(T* out, const T* x, const T* t, index_t n, Reduction r) {
  const LossKernels<T>& k = loss_kernels<T>();
  if (r == Reduction::none) {
    for_chunks(n, [&](index_t b, index_t e) { k.bce_none(out + b, x + b, t + b, e - b); });
    return 0.0;
  }
  return finish<T>(elementwise_sum(k.bce_sum, x, t, n), n, r);
}

template <typename T>
void bce_logits_bwd(T* gx, const T* x, const T* t, const T* g, double g_scalar, index_t n,
                    Reduction r) {
  const LossKernels<T>& k = loss_kernels<T>();
  const T scale = r == Reduction::none ? T(1)
                  : r == Reduction::sum ? T(g_scalar)
                                        : T(g_scalar / double(n));
  const T* gp = r == Reduction::none ? g : nullptr;
  for_chunks(n, [&](index_t b, index_t e) {
    k.bce_bwd(gx + b, x + b, t + b, gp ? gp + b : nullptr, scale, e - b);
  });
}

// ---- cross-entropy ----------------------------------------------------------------------

template <typename T>
double cross_entropy_fwd(T* out, const T* x, const void* target, bool t64, index_t N, index_t C,
                         Reduction r, int64_t ignore) {
  const index_t kept = check_targets(target, t64, N, C, ignore);
  const LossKernels<T>& k = loss_kernels<T>();
  const auto rows = [&](T* o, index_t b, index_t e) {
    return t64 ? k.ce_fwd_i64(o, x + b * C, static_cast<const int64_t*>(target) + b, e - b, C, ignore)
               : k.ce_fwd_i32(o, x + b * C, static_cast<const int32_t*>(target) + b, e - b, C, ignore);
  };
  const index_t row_elems = std::max<index_t>(C, 1);
  if (r == Reduction::none) {
    parallel_for(N, ceil_div(kGrainElems, row_elems), [&](index_t b, index_t e) { rows(out + b, b, e); });
    return 0.0;
  }
  const index_t rpc = std::max<index_t>(1, kChunkElems / row_elems);  // rows per chunk
  const index_t grain = std::max<index_t>(1, kGrainElems / (rpc * row_elems));
  const double total = chunked_sum(ceil_div(N, rpc), grain, [&](index_t c) {
    return rows(nullptr, c * rpc, std::min(N, (c + 1) * rpc));
  });
  return finish<T>(total, kept, r);
}

template <typename T>
void cross_entropy_bwd(T* gx, const T* x, const void* target, bool t64, const T* g,
                       double g_scalar, index_t N, index_t C, Reduction r, int64_t ignore) {
  const index_t kept = check_targets(target, t64, N, C, ignore);
  const LossKernels<T>& k = loss_kernels<T>();
  // kept == 0 under "mean": every row is ignored (zero), so the scale is never used.
  const T scale = r == Reduction::none ? T(1)
                  : r == Reduction::sum ? T(g_scalar)
                                        : T(kept ? g_scalar / double(kept) : 0.0);
  const T* gp = r == Reduction::none ? g : nullptr;
  parallel_for(N, ceil_div(kGrainElems, std::max<index_t>(C, 1)), [&](index_t b, index_t e) {
    const T* gb = gp ? gp + b : nullptr;
    if (t64)
      k.ce_bwd_i64(gx + b * C, x + b * C, static_cast<const int64_t*>(target) + b, gb, scale, e - b, C, ignore);
    else
      k.ce_bwd_i32(gx + b * C, x + b * C, static_cast<const int32_t*>(target) + b, gb, scale, e - b, C, ignore);
  });
}

template double mse_loss_fwd<float>(float*, const float*, const float*, index_t, Reduction);
template void mse_loss_bwd<float>(float*, const float*, const float*, const float*, double, index_t, Reduction);
template double bce_logits_fwd<float>(float*, const float*, const float*, index_t, Reduction);
template void bce_logits_bwd<float>(float*, const float*, const float*, const float*, double, index_t, Reduction);
template double cross_entropy_fwd<float>(float*, const float*, const void*, bool, index_t, index_t, Reduction,
                                         int64_t);
template void cross_entropy_bwd<float>(float*, const float*, const void*, bool, const float*, double, index_t, index_t,
                                      Reduction, int64_t);
template double mse_loss_fwd<double>(double*, const double*, const double*, index_t, Reduction);
template void mse_loss_bwd<double>(double*, const double*, const double*, const double*, double, index_t, Reduction);
template double bce_logits_fwd<double>(double*, const double*, const double*, index_t, Reduction);
template void bce_logits_bwd<double>(double*, const double*, const double*, const double*, double, index_t, Reduction);
template double cross_entropy_fwd<double>(double*, const double*, const void*, bool, index_t, index_t, Reduction,
                                          int64_t);
template void cross_entropy_bwd<double>(double*, const double*, const void*, bool, const double*, double, index_t, index_t,
                                      Reduction, int64_t);

}  // namespace nnk
