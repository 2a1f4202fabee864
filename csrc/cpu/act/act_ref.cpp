// Scalar reference activations (the oracle; also the generic ISA's kernels until a
// vectorised generic version exists).
//   relu(x) = max(0, x) (NaN propagates); leaky_relu(x) = x > 0 ? x : slope * x
//   gelu(x) = x/2 (1 + erf(x / sqrt 2)); gelu_tanh(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
//   tanh(x); sigmoid(x) = 1 / (1 + exp(-x))
#include <cmath>

#include "cpu/act/act.h"

namespace nnk {

namespace ref {
template <typename T>
static T act1(T x, Act act, T param) {
  switch (act) {
    case Act::relu: return (x > T(0) || std::isnan(x)) ? x : T(0);
    case Act::leaky_relu: return x > T(0) ? x : x * param;
    case Act::gelu: return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
    case Act::gelu_tanh: {
      const T k = T(0.79788456080286535588);  // sqrt(2/pi)
      return T(0.5) * x * (T(1) + std::tanh(k * (x + T(0.044715) * x * x * x)));
    }
    case Act::tanh: return std::tanh(x);
    case Act::sigmoid: return T(1) / (T(1) + std::exp(-x));
    default: return x;
  }
}

template <typename T>
void act_forward(T* y, const T* x, index_t n, Act act, T param) {
  for (index_t i = 0; i < n; ++i) y[i] = act1(x[i], act, param);
}
template void act_forward<float>(float*, const float*, index_t, Act, float);
template void act_forward<double>(double*, const double*, index_t, Act, double);
}  // namespace ref

template <typename T>
void act_forward_contig(Isa isa, T* y, const T* x, index_t n, Act act, T param) {
  ref::act_forward(y, x, n, act, param);
}
template void act_forward_contig<float>(Isa, float*, const float*, index_t, Act, float);
template void act_forward_contig<double>(Isa, double*, const double*, index_t, Act, double);

}  // namespace nnk
