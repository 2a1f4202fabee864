// Scalar reference of the activation / softmax family (the oracle): plain loops over std::
// maths in the input dtype; the formulas are those of act.h and act_kernels.inl.
//   relu(x) = max(0, x) (NaN propagates); leaky_relu(x) = x > 0 ? x : slope * x
//   gelu(x) = x/2 (1 + erf(x / sqrt 2)); gelu_tanh(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
//   tanh(x); sigmoid(x) = 1 / (1 + exp(-x))
//   softmax along D of (outer, D, inner): three passes (max, sum of exp, write).
#include <cmath>
#include <limits>

#include "cpu/act/act.h"

namespace nnk::ref {

namespace {

constexpr double kSqrt1_2 = 0.70710678118654752440;
constexpr double kSqrt2_pi = 0.79788456080286535588;  // sqrt(2/pi)
constexpr double kInvSqrt2pi = 0.39894228040143267794;  // 1/sqrt(2 pi)
constexpr double kKappa = 0.044715;

template <typename T>
T act1(T x, Act act, T param) {
  switch (act) {
    case Act::relu: return (x > T(0) || std::isnan(x)) ? x : T(0);
    case Act::leaky_relu: return x > T(0) ? x : x * param;
    case Act::gelu: return T(0.5) * x * (T(1) + std::erf(x * T(kSqrt1_2)));
    case Act::gelu_tanh: return T(0.5) * x * (T(1) + std::tanh(T(kSqrt2_pi) * (x + T(kKappa) * x * x * x)));
    case Act::tanh: return std::tanh(x);
    case Act::sigmoid: return T(1) / (T(1) + std::exp(-x));
    default: return x;
  }
}

template <typename T>
T act1_bwd(T g, T v, Act act, T param) {
  switch (act) {
    case Act::relu: return v > T(0) ? g : T(0);
    case Act::leaky_relu: return v > T(0) ? g : g * param;
    case Act::sigmoid: return g * (T(1) - v) * v;
    case Act::tanh: return g * (T(1) - v * v);
    case Act::gelu: {
      const T cdf = T(0.5) * (T(1) + std::erf(v * T(kSqrt1_2)));
      const T pdf = std::exp(T(-0.5) * v * v) * T(kInvSqrt2pi);
      return g * (cdf + v * pdf);
    }
    case Act::gelu_tanh: {
      const T t = std::tanh(T(kSqrt2_pi) * (v + T(kKappa) * v * v * v));
      const T left_d = T(0.5) * (T(1) + t);
      const T right_d = T(0.5) * v * (T(1) - t * t) * T(kSqrt2_pi) * (T(1) + T(3 * kKappa) * v * v);
      return g * (left_d + right_d);
    }
    default: return g;
  }
}

}  // namespace

template <typename T>
void act_forward(T* y, const T* x, index_t n, Act act, T param) {
  for (index_t i = 0; i < n; ++i) y[i] = act1(x[i], act, param);
}

template <typename T>
void act_backward(T* dx, const T* g, const T* v, index_t n, Act act, T param) {
  for (index_t i = 0; i < n; ++i) dx[i] = act1_bwd(g[i], v[i], act, param);
}

template <typename T>
void softmax_forward(T* y, const T* x, index_t outer, index_t D, index_t inner, bool log) {
  for (index_t o = 0; o < outer; ++o)
    for (index_t c = 0; c < inner; ++c) {
      const T* xr = x + o * D * inner + c;
      T* yr = y + o * D * inner + c;
      T m = -std::numeric_limits<T>::infinity();
      bool nan = false;
      for (index_t d = 0; d < D; ++d) {
        nan |= std::isnan(xr[d * inner]);
        m = std::max(m, xr[d * inner]);
      }
      if (nan) m = std::numeric_limits<T>::quiet_NaN();
      T s = 0;
      for (index_t d = 0; d < D; ++d) s += std::exp(xr[d * inner] - m);
      const T ls = std::log(s);
      for (index_t d = 0; d < D; ++d)
        yr[d * inner] = log ? (xr[d * inner] - m) - ls : std::exp(xr[d * inner] - m) / s;
    }
}

template <typename T>
void softmax_backward(T* dx, const T* g, const T* y, index_t outer, index_t D, index_t inner, bool log) {
  for (index_t o = 0; o < outer; ++o)
    for (index_t c = 0; c < inner; ++c) {
      const index_t base = o * D * inner + c;
      T acc = 0;
      for (index_t d = 0; d < D; ++d) acc += log ? g[base + d * inner] : g[base + d * inner] * y[base + d * inner];
      for (index_t d = 0; d < D; ++d) {
        const index_t i = base + d * inner;
        dx[i] = log ? g[i] - std::exp(y[i]) * acc : y[i] * (g[i] - acc);
      }
    }
}

template void act_forward<float>(float*, const float*, index_t, Act, float);
template void act_forward<double>(double*, const double*, index_t, Act, double);
template void act_backward<float>(float*, const float*, const float*, index_t, Act, float);
template void act_backward<double>(double*, const double*, const double*, index_t, Act, double);
template void softmax_forward<float>(float*, const float*, index_t, index_t, index_t, bool);
template void softmax_forward<double>(double*, const double*, index_t, index_t, index_t, bool);
template void softmax_backward<float>(float*, const float*, const float*, index_t, index_t, index_t, bool);
template void softmax_backward<double>(double*, const double*, const double*, index_t, index_t, index_t, bool);

}  // namespace nnk::ref
