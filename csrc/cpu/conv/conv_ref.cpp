// Reference convolution: direct loops over the definition in conv.h (the test oracle).
//   y[n,o,oh,ow] = bias[o] + sum_{c,i,j} w[o,c,i,j] x[n, g*Cg+c, oh*sh-pt+i*dh, ow*sw-pl+j*dw]
// backward-data and backward-weight are the same sum with the roles of the operands swapped.
#include "cpu/conv/conv.h"

#include <cstring>

namespace nnk::ref {

namespace {

// Calls f(n, o, oh, ow, ci, i, j, ih, iw) for every in-range term of the sum.
template <class F>
void each_term(const ConvGeom& g, F&& f) {
  const index_t Cg = g.Cg(), Coutg = g.Coutg();
  for (index_t n = 0; n < g.N; ++n)
    for (index_t o = 0; o < g.Cout; ++o) {
      const index_t gr = o / Coutg;
      for (index_t oh = 0; oh < g.Ho; ++oh)
        for (index_t ow = 0; ow < g.Wo; ++ow)
          for (index_t c = 0; c < Cg; ++c)
            for (index_t i = 0; i < g.kh; ++i) {
              const index_t ih = oh * g.sh - g.pt + i * g.dh;
              if (ih < 0 || ih >= g.H) continue;
              for (index_t j = 0; j < g.kw; ++j) {
                const index_t iw = ow * g.sw - g.pl + j * g.dw;
                if (iw < 0 || iw >= g.W) continue;
                f(n, o, oh, ow, gr * Cg + c, c, i, j, ih, iw);
              }
            }
    }
}

template <typename T>
void fwd(const ConvGeom& g, T* y, const T* x, const T* w, const T* bias) {
  const index_t L = g.L();
  for (index_t n = 0; n < g.N; ++n)
    for (index_t o = 0; o < g.Cout; ++o)
      for (index_t l = 0; l < L; ++l) y[(n * g.Cout + o) * L + l] = bias ? bias[o] : T(0);
  each_term(g, [&](index_t n, index_t o, index_t oh, index_t ow, index_t ci, index_t c, index_t i, index_t j, index_t ih, index_t iw) {
    y[((n * g.Cout + o) * g.Ho + oh) * g.Wo + ow] +=
        w[((o * g.Cg() + c) * g.kh + i) * g.kw + j] * x[((n * g.C + ci) * g.H + ih) * g.W + iw];
  });
}

template <typename T>
void bwd_data(const ConvGeom& g, T* dx, const T* dy, const T* w) {
  std::memset(dx, 0, sizeof(T) * size_t(g.N * g.C * g.H * g.W));
  each_term(g, [&](index_t n, index_t o, index_t oh, index_t ow, index_t ci, index_t c, index_t i, index_t j, index_t ih, index_t iw) {
    dx[((n * g.C + ci) * g.H + ih) * g.W + iw] +=
        w[((o * g.Cg() + c) * g.kh + i) * g.kw + j] * dy[((n * g.Cout + o) * g.Ho + oh) * g.Wo + ow];
  });
}

template <typename T>
void bwd_weight(const ConvGeom& g, T* dw, const T* dy, const T* x) {
  std::memset(dw, 0, sizeof(T) * size_t(g.Cout * g.Kg()));
  each_term(g, [&](index_t n, index_t o, index_t oh, index_t ow, index_t ci, index_t c, index_t i, index_t j, index_t ih, index_t iw) {
    dw[((o * g.Cg() + c) * g.kh + i) * g.kw + j] +=
        x[((n * g.C + ci) * g.H + ih) * g.W + iw] * dy[((n * g.Cout + o) * g.Ho + oh) * g.Wo + ow];
  });
}

}  // namespace

void conv2d_forward(DType dt, const ConvGeom& g, void* y, const void* x, const void* w, const void* bias) {
  if (dt == DType::f32)
    fwd<float>(g, static_cast<float*>(y), static_cast<const float*>(x), static_cast<const float*>(w), static_cast<const float*>(bias));
  else
    fwd<double>(g, static_cast<double*>(y), static_cast<const double*>(x), static_cast<const double*>(w), static_cast<const double*>(bias));
}

void conv2d_backward_data(DType dt, const ConvGeom& g, void* dx, const void* dy, const void* w) {
  if (dt == DType::f32)
    bwd_data<float>(g, static_cast<float*>(dx), static_cast<const float*>(dy), static_cast<const float*>(w));
  else
    bwd_data<double>(g, static_cast<double*>(dx), static_cast<const double*>(dy), static_cast<const double*>(w));
}

void conv2d_backward_weight(DType dt, const ConvGeom& g, void* dw, const void* dy, const void* x) {
  if (dt == DType::f32)
    bwd_weight<float>(g, static_cast<float*>(dw), static_cast<const float*>(dy), static_cast<const float*>(x));
  else
    bwd_weight<double>(g, static_cast<double*>(dw), static_cast<const double*>(dy), static_cast<const double*>(x));
}

}  // namespace nnk::ref
