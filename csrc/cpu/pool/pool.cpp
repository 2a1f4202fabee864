// Pooling kernels (maths and torch's conventions: pool.h). Planes run in parallel (static
// split, so results are reproducible). Within a plane, each output row first finds its
// in-range window rows; the columns of the window are precomputed once per call (the
// clipped range [c0, c1) of every ow), so the inner loops carry no bounds tests. The
// common non-overlapping 2x2 / stride-2 max pool has its own loop over pairs of rows
// (vectorised for AVX-512 in pool_avx512.cpp, branch-free scalar otherwise).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/pool/pool.h"

namespace nnk {

namespace {

// First in-range tap and the end (exclusive) of the window of output o along one axis.
struct Span { index_t b, e; };
std::vector<Span> max_spans(index_t n_out, index_t n_in, index_t k, index_t s, index_t p, index_t d) {
  std::vector<Span> v(static_cast<size_t>(n_out));
  for (index_t o = 0; o < n_out; ++o) {
    index_t b = o * s - p;
    const index_t e = std::min(b + (k - 1) * d + 1, n_in);
    while (b < 0) b += d;
    v[size_t(o)] = {b, e};
  }
  return v;
}

index_t plane_grain(index_t per_plane) { return std::max<index_t>(1, 32768 / std::max<index_t>(per_plane, 1)); }

template <typename T>
void max_fwd(const PoolGeom& g, T* y, int64_t* idx, const T* x) {
  const index_t HW = g.H * g.W, L = g.Ho * g.Wo;
  const bool k2 = g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0 &&
                  g.dh == 1 && g.dw == 1 && 2 * g.Ho <= g.H && 2 * g.Wo <= g.W;
  const auto rows = max_spans(g.Ho, g.H, g.kh, g.sh, g.ph, g.dh);
  const auto cols = max_spans(g.Wo, g.W, g.kw, g.sw, g.pw, g.dw);
  [[maybe_unused]] const bool use_avx512 = current_isa() == Isa::avx512;
  parallel_for(g.planes, plane_grain(HW), [&](index_t q0, index_t q1) {
    for (index_t q = q0; q < q1; ++q) {
      const T* xp = x + q * HW;
      T* yp = y + q * L;
      int64_t* ip = idx ? idx + q * L : nullptr;
#if defined(NNK_X86)
      if (k2 && use_avx512) {
        for (index_t oh = 0; oh < g.Ho; ++oh)
          cpu::avx512::max_pool2x2_row(xp + 2 * oh * g.W, xp + (2 * oh + 1) * g.W, yp + oh * g.Wo,
                                       ip ? ip + oh * g.Wo : nullptr, g.Wo, 2 * oh * g.W, g.W);
        continue;
      }
#endif
      if (k2) {
        for (index_t oh = 0; oh < g.Ho; ++oh) {
          const T* r0 = xp + 2 * oh * g.W;
          const T* r1 = r0 + g.W;
          T* yr = yp + oh * g.Wo;
          for (index_t ow = 0; ow < g.Wo; ++ow) {
            // Branch-free (random data makes the compare branches unpredictable); the
            // same rule as torch: a later tap wins when greater or NaN.
            const T a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
            T m = a; index_t k = 0;
            const bool tb = (b > m) | (b != b); m = tb ? b : m; k = tb ? 1 : k;
            const bool tc = (c > m) | (c != c); m = tc ? c : m; k = tc ? 2 : k;
            const bool td = (d > m) | (d != d); m = td ? d : m; k = td ? 3 : k;
            yr[ow] = m;
            if (ip) ip[oh * g.Wo + ow] = (2 * oh + (k >> 1)) * g.W + 2 * ow + (k & 1);
          }
        }
        continue;
      }
      for (index_t oh = 0; oh < g.Ho; ++oh) {
        const Span r = rows[size_t(oh)];
        for (index_t ow = 0; ow < g.Wo; ++ow) {
          const Span c = cols[size_t(ow)];
          index_t mi = r.b * g.W + c.b;
          T m = -std::numeric_limits<T>::infinity();
          for (index_t ih = r.b; ih < r.e; ih += g.dh) {
            const T* xr = xp + ih * g.W;
            for (index_t iw = c.b; iw < c.e; iw += g.dw) {
              const T v = xr[iw];
              if (v > m || std::isnan(v)) { m = v; mi = ih * g.W + iw; }
            }
          }
          yp[oh * g.Wo + ow] = m;
          if (ip) ip[oh * g.Wo + ow] = mi;
        }
      }
    }
  });
}

template <typename T>
bool max_bwd(const PoolGeom& g, T* dx, const T* dy, const int64_t* idx) {
  const index_t HW = g.H * g.W, L = g.Ho * g.Wo;
  std::atomic<bool> ok{true};
  parallel_for(g.planes, plane_grain(HW + L), [&](index_t q0, index_t q1) {
    bool good = true;
    for (index_t q = q0; q < q1; ++q) {
      T* dp = dx + q * HW;
      std::memset(dp, 0, sizeof(T) * size_t(HW));
      const T* gp = dy + q * L;
      const int64_t* ip = idx + q * L;
      for (index_t l = 0; l < L; ++l) {
        const int64_t k = ip[l];
        if (k < 0 || k >= HW) { good = false; continue; }
        dp[k] += gp[l];
      }
    }
    if (!good) ok.store(false);
  });
  return ok.load();
}

// Clipped average-pool window along one axis and its two divisors.
struct AvgSpan { index_t b, e, full; };
std::vector<AvgSpan> avg_spans(index_t n_out, index_t n_in, index_t k, index_t s, index_t p) {
  std::vector<AvgSpan> v(static_cast<size_t>(n_out));
  for (index_t o = 0; o < n_out; ++o) {
    const index_t b = o * s - p, e = std::min(b + k, n_in + p);
    v[size_t(o)] = {std::max<index_t>(b, 0), std::min(e, n_in), e - b};
  }
  return v;
}

template <typename T>
void avg_fwd(const PoolGeom& g, T* y, const T* x, bool cip) {
  const index_t HW = g.H * g.W, L = g.Ho * g.Wo;
  const auto rows = avg_spans(g.Ho, g.H, g.kh, g.sh, g.ph);
  const auto cols = avg_spans(g.Wo, g.W, g.kw, g.sw, g.pw);
  parallel_for(g.planes, plane_grain(HW), [&](index_t q0, index_t q1) {
    for (index_t q = q0; q < q1; ++q) {
      const T* xp = x + q * HW;
      T* yp = y + q * L;
      for (index_t oh = 0; oh < g.Ho; ++oh) {
        const AvgSpan r = rows[size_t(oh)];
        for (index_t ow = 0; ow < g.Wo; ++ow) {
          const AvgSpan c = cols[size_t(ow)];
          if (r.b >= r.e || c.b >= c.e) { yp[oh * g.Wo + ow] = T(0); continue; }
          T s = 0;
          for (index_t ih = r.b; ih < r.e; ++ih) {
            const T* xr = xp + ih * g.W;
            for (index_t iw = c.b; iw < c.e; ++iw) s += xr[iw];
          }
          const index_t div = cip ? r.full * c.full : (r.e - r.b) * (c.e - c.b);
          yp[oh * g.Wo + ow] = s / T(div);
        }
      }
    }
  });
}

template <typename T>
void avg_bwd(const PoolGeom& g, T* dx, const T* dy, bool cip) {
  const index_t HW = g.H * g.W, L = g.Ho * g.Wo;
  const auto rows = avg_spans(g.Ho, g.H, g.kh, g.sh, g.ph);
  const auto cols = avg_spans(g.Wo, g.W, g.kw, g.sw, g.pw);
  parallel_for(g.planes, plane_grain(HW), [&](index_t q0, index_t q1) {
    for (index_t q = q0; q < q1; ++q) {
      T* dp = dx + q * HW;
      std::memset(dp, 0, sizeof(T) * size_t(HW));
      const T* gp = dy + q * L;
      for (index_t oh = 0; oh < g.Ho; ++oh) {
        const AvgSpan r = rows[size_t(oh)];
        for (index_t ow = 0; ow < g.Wo; ++ow) {
          const AvgSpan c = cols[size_t(ow)];
          if (r.b >= r.e || c.b >= c.e) continue;
          const index_t div = cip ? r.full * c.full : (r.e - r.b) * (c.e - c.b);
          const T v = gp[oh * g.Wo + ow] / T(div);
          for (index_t ih = r.b; ih < r.e; ++ih) {
            T* dr = dp + ih * g.W;
            for (index_t iw = c.b; iw < c.e; ++iw) dr[iw] += v;
          }
        }
      }
    }
  });
}

}  // namespace

void max_pool2d_forward(DType dt, const PoolGeom& g, void* y, int64_t* idx, const void* x) {
  if (dt == DType::f32) max_fwd<float>(g, static_cast<float*>(y), idx, static_cast<const float*>(x));
  else max_fwd<double>(g, static_cast<double*>(y), idx, static_cast<const double*>(x));
}

bool max_pool2d_backward(DType dt, const PoolGeom& g, void* dx, const void* dy, const int64_t* idx) {
  if (dt == DType::f32) return max_bwd<float>(g, static_cast<float*>(dx), static_cast<const float*>(dy), idx);
  return max_bwd<double>(g, static_cast<double*>(dx), static_cast<const double*>(dy), idx);
}

void avg_pool2d_forward(DType dt, const PoolGeom& g, void* y, const void* x, bool cip) {
  if (dt == DType::f32) avg_fwd<float>(g, static_cast<float*>(y), static_cast<const float*>(x), cip);
  else avg_fwd<double>(g, static_cast<double*>(y), static_cast<const double*>(x), cip);
}

void avg_pool2d_backward(DType dt, const PoolGeom& g, void* dx, const void* dy, bool cip) {
  if (dt == DType::f32) avg_bwd<float>(g, static_cast<float*>(dx), static_cast<const float*>(dy), cip);
  else avg_bwd<double>(g, static_cast<double*>(dx), static_cast<const double*>(dy), cip);
}

}  // namespace nnk
