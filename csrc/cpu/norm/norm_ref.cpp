// Reference layer norm forward (the oracle): the formulas of norm.h, one scalar loop each,
// accumulated in long double.
#include <cmath>

#include "cpu/norm/norm.h"

namespace nnk::ref {

template <typename T>
void layer_norm_fwd(T* y, T* mean, T* rstd, const T* x, const T* w, const T* b, index_t R,
                    index_t D, T eps) {
  for (index_t r = 0; r < R; ++r) {
    const T* xr = x + r * D;
    long double s = 0;
    for (index_t d = 0; d < D; ++d) s += xr[d];
    const long double mu = s / D;
    long double v = 0;
    for (index_t d = 0; d < D; ++d) v += (xr[d] - mu) * (xr[d] - mu);
    const long double rs = 1.0L / std::sqrt(v / D + eps);
    if (mean) mean[r] = T(mu);
    if (rstd) rstd[r] = T(rs);
    for (index_t d = 0; d < D; ++d) {
      long double h = (xr[d] - mu) * rs;
      if (w) h *= w[d];
      if (b) h += b[d];
      y[r * D + d] = T(h);
    }
  }
}

template void layer_norm_fwd<float>(float*, float*, float*, const float*, const float*,
                                    const float*, index_t, index_t, float);
template void layer_norm_fwd<double>(double*, double*, double*, const double*, const double*,
                                     const double*, index_t, index_t, double);

}  // namespace nnk::ref
