// Reference pooling: torch's CPU loops written out plainly (the test oracle; maths in pool.h).
#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/pool/pool.h"

namespace nnk::ref {

namespace {

template <typename T>
void maxf(const PoolGeom& g, T* y, int64_t* idx, const T* x) {
  for (index_t q = 0; q < g.planes; ++q)
    for (index_t oh = 0; oh < g.Ho; ++oh)
      for (index_t ow = 0; ow < g.Wo; ++ow) {
        index_t ih0 = oh * g.sh - g.ph, iw0 = ow * g.sw - g.pw;
        const index_t ih1 = std::min(ih0 + (g.kh - 1) * g.dh + 1, g.H);
        const index_t iw1 = std::min(iw0 + (g.kw - 1) * g.dw + 1, g.W);
        while (ih0 < 0) ih0 += g.dh;
        while (iw0 < 0) iw0 += g.dw;
        index_t mi = ih0 * g.W + iw0;
        T m = -std::numeric_limits<T>::infinity();
        for (index_t ih = ih0; ih < ih1; ih += g.dh)
          for (index_t iw = iw0; iw < iw1; iw += g.dw) {
            const T v = x[q * g.H * g.W + ih * g.W + iw];
            if (v > m || std::isnan(v)) { m = v; mi = ih * g.W + iw; }
          }
        y[(q * g.Ho + oh) * g.Wo + ow] = m;
        if (idx) idx[(q * g.Ho + oh) * g.Wo + ow] = mi;
      }
}

template <typename T>
void avgf(const PoolGeom& g, T* y, const T* x, bool cip) {
  for (index_t q = 0; q < g.planes; ++q)
    for (index_t oh = 0; oh < g.Ho; ++oh)
      for (index_t ow = 0; ow < g.Wo; ++ow) {
        index_t ih0 = oh * g.sh - g.ph, iw0 = ow * g.sw - g.pw;
        index_t ih1 = std::min(ih0 + g.kh, g.H + g.ph), iw1 = std::min(iw0 + g.kw, g.W + g.pw);
        const index_t pool = (ih1 - ih0) * (iw1 - iw0);
        ih0 = std::max<index_t>(ih0, 0); iw0 = std::max<index_t>(iw0, 0);
        ih1 = std::min(ih1, g.H); iw1 = std::min(iw1, g.W);
        T& out = y[(q * g.Ho + oh) * g.Wo + ow];
        if (ih0 >= ih1 || iw0 >= iw1) { out = T(0); continue; }
        T s = 0;
        for (index_t ih = ih0; ih < ih1; ++ih)
          for (index_t iw = iw0; iw < iw1; ++iw) s += x[q * g.H * g.W + ih * g.W + iw];
        out = s / T(cip ? pool : (ih1 - ih0) * (iw1 - iw0));
      }
}

}  // namespace

void max_pool2d_forward(DType dt, const PoolGeom& g, void* y, int64_t* idx, const void* x) {
  if (dt == DType::f32) maxf<float>(g, static_cast<float*>(y), idx, static_cast<const float*>(x));
  else maxf<double>(g, static_cast<double*>(y), idx, static_cast<const double*>(x));
}

void avg_pool2d_forward(DType dt, const PoolGeom& g, void* y, const void* x, bool cip) {
  if (dt == DType::f32) avgf<float>(g, static_cast<float*>(y), static_cast<const float*>(x), cip);
  else avgf<double>(g, static_cast<double*>(y), static_cast<const double*>(x), cip);
}

}  // namespace nnk::ref
