// Scalar reference losses (the oracle): one element at a time, libm calls, sequential sums
// in double. Same contracts as the drivers in loss.h; nothing threaded, nothing vectorised.
//   mse:  l = (x - y)^2;                       grad = 2 (x - y) g
//   bce:  l = max(x,0) - x t + log1p(exp(-|x|)); grad = (sigmoid(x) - t) g
//   ce:   l_n = logsumexp(x[n, :]) - x[n, t_n]; grad = (softmax(x[n, :]) - onehot(t_n)) g_n
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "core/errors.h"
#include "cpu/loss/loss.h"

namespace nnk::ref {

namespace {

template <typename T>
double finish(double total, index_t count, Reduction r) {
  if (r == Reduction::sum) return double(T(total));
  if (count == 0) return std::numeric_limits<double>::quiet_NaN();
  return double(T(total / double(count)));
}

// grad_out of element i: the array for "none", else the scalar (divided by count for "mean").
template <typename T>
T grad_at(const T* g, double g_scalar, index_t i, index_t count, Reduction r) {
  if (r == Reduction::none) return g ? g[i] : T(1);
  return r == Reduction::sum ? T(g_scalar) : T(g_scalar / double(count));
}

template <typename T>
T bce1(T x, T t) {
  return (x > T(0) ? x : T(0)) - x * t + std::log1p(std::exp(-std::fabs(x)));
}

int64_t target_at(const void* target, bool t64, index_t n) {
  return t64 ? static_cast<const int64_t*>(target)[n] : static_cast<const int32_t*>(target)[n];
}

// Every target not equal to ignore lies in [0, C) (IndexError otherwise); returns their count.
index_t kept_targets(const void* target, bool t64, index_t N, index_t C, int64_t ignore) {
  index_t kept = 0;
  for (index_t n = 0; n < N; ++n) {
    const int64_t t = target_at(target, t64, n);
    if (t == ignore) continue;
    if (t < 0 || t >= C) throw target_out_of_range(n, t, C);
    ++kept;
  }
  return kept;
}

// log(sum_c exp(x[c] - m)) + m with m the row max.
template <typename T>
double logsumexp(const T* x, index_t C) {
  T m = -std::numeric_limits<T>::infinity();
  for (index_t c = 0; c < C; ++c) m = x[c] > m ? x[c] : m;
  double s = 0.0;
  for (index_t c = 0; c < C; ++c) s += double(std::exp(x[c] - m));
  return double(m) + std::log(s);
}

}  // namespace

template <typename T>
double mse_loss_fwd(T* out, const T* x, const T* y, index_t n, Reduction r) {
  double total = 0.0;
  for (index_t i = 0; i < n; ++i) {
    const T d = x[i] - y[i];
    if (r == Reduction::none) out[i] = d * d;
    else total += double(d * d);
  }
  return r == Reduction::none ? 0.0 : finish<T>(total, n, r);
}

template <typename T>
void mse_loss_bwd(T* gx, const T* x, const T* y, const T* g, double g_scalar, index_t n,
                  Reduction r) {
  for (index_t i = 0; i < n; ++i) gx[i] = T(2) * (x[i] - y[i]) * grad_at(g, g_scalar, i, n, r);
}

template <typename T>
double bce_logits_fwd(T* out, const T* x, const T* t, index_t n, Reduction r) {
  double total = 0.0;
  for (index_t i = 0; i < n; ++i) {
    const T l = bce1(x[i], t[i]);
    if (r == Reduction::none) out[i] = l;
    else total += double(l);
  }
  return r == Reduction::none ? 0.0 : finish<T>(total, n, r);
}

template <typename T>
void bce_logits_bwd(T* gx, const T* x, const T* t, const T* g, double g_scalar, index_t n,
                    Reduction r) {
  for (index_t i = 0; i < n; ++i) {
    const T s = T(1) / (T(1) + std::exp(-x[i]));
    gx[i] = (s - t[i]) * grad_at(g, g_scalar, i, n, r);
  }
}

template <typename T>
double cross_entropy_fwd(T* out, const T* x, const void* target, bool t64, index_t N, index_t C,
                         Reduction r, int64_t ignore) {
  const index_t kept = kept_targets(target, t64, N, C, ignore);
  double total = 0.0;
  for (index_t n = 0; n < N; ++n) {
    const int64_t t = target_at(target, t64, n);
    const double l = t == ignore ? 0.0 : logsumexp(x + n * C, C) - double(x[n * C + t]);
    if (r == Reduction::none) out[n] = T(l);
    else total += l;
  }
  return r == Reduction::none ? 0.0 : finish<T>(total, kept, r);
}

template <typename T>
void cross_entropy_bwd(T* gx, const T* x, const void* target, bool t64, const T* g,
                       double g_scalar, index_t N, index_t C, Reduction r, int64_t ignore) {
  const index_t kept = kept_targets(target, t64, N, C, ignore);
  for (index_t n = 0; n < N; ++n) {
    const int64_t t = target_at(target, t64, n);
    if (t == ignore) {
      for (index_t c = 0; c < C; ++c) gx[n * C + c] = T(0);
      continue;
    }
    const double lse = logsumexp(x + n * C, C);
    const T gn = grad_at(g, g_scalar, n, kept, r);
    for (index_t c = 0; c < C; ++c)
      gx[n * C + c] = (T(std::exp(double(x[n * C + c]) - lse)) - T(c == t ? 1 : 0)) * gn;
  }
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
}  // namespace nnk::ref
