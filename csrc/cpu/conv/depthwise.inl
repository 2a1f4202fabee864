// Depthwise forward, one output plane at a time (included inside one ISA namespace by
// depthwise{,_avx2,_avx512}.cpp; compiled with that ISA's flags, the inner loop is an axpy
// over the output row that the compiler vectorises to the ISA's width).
//   y[oh, ow] = b + sum_{i, j} w[i, j] * x[oh*sh - pt + i*dh, ow*sw - pl + j*dw]
// Each (i, j) tap adds w[i, j] times a shifted input row to the output row (in L1); the
// valid ow range of tap j is computed once, so the inner loop has no bounds tests.

template <typename T>
void dw_planes(const ConvGeom& g, T* y, const T* x, const T* w, const T* bias, index_t q0, index_t q1) {
  const index_t mult = g.Cout / g.C, HW = g.H * g.W, L = g.Ho * g.Wo, khw = g.kh * g.kw, Wo = g.Wo;
  index_t lo[64], hi[64], off[64];
  const bool small = g.kw <= 64;
  auto range = [&](index_t j, index_t& l, index_t& h, index_t& o) {
    o = j * g.dw - g.pl;
    l = o >= 0 ? 0 : (-o + g.sw - 1) / g.sw;
    h = (g.W - o) <= 0 ? 0 : (g.W - o + g.sw - 1) / g.sw;
    l = std::min(l, Wo);
    h = std::max(l, std::min(h, Wo));
  };
  if (small)
    for (index_t j = 0; j < g.kw; ++j) range(j, lo[j], hi[j], off[j]);
  for (index_t q = q0; q < q1; ++q) {  // q = n * Cout + o
    const index_t n = q / g.Cout, o = q - n * g.Cout;
    const T* xp = x + (n * g.C + o / mult) * HW;
    const T* wp = w + o * khw;
    const T b = bias ? bias[o] : T(0);
    T* yp = y + q * L;
    for (index_t oh = 0; oh < g.Ho; ++oh) {
      T* __restrict yr = yp + oh * Wo;
      for (index_t ow = 0; ow < Wo; ++ow) yr[ow] = b;
      for (index_t i = 0; i < g.kh; ++i) {
        const index_t ih = oh * g.sh - g.pt + i * g.dh;
        if (ih < 0 || ih >= g.H) continue;
        const T* xr = xp + ih * g.W;
        for (index_t j = 0; j < g.kw; ++j) {
          index_t l, h, of;
          if (small) { l = lo[j]; h = hi[j]; of = off[j]; }
          else range(j, l, h, of);
          const T wv = wp[i * g.kw + j];
          if (g.sw == 1) {
            const T* __restrict s = xr + of;
            for (index_t ow = l; ow < h; ++ow) yr[ow] += wv * s[ow];
          } else {
            for (index_t ow = l; ow < h; ++ow) yr[ow] += wv * xr[ow * g.sw + of];
          }
        }
      }
    }
  }
}

void depthwise_forward(DType dt, const ConvGeom& g, void* y, const void* x, const void* w, const void* bias,
                       index_t q0, index_t q1) {
  if (dt == DType::f32)
    dw_planes<float>(g, static_cast<float*>(y), static_cast<const float*>(x), static_cast<const float*>(w),
                     static_cast<const float*>(bias), q0, q1);
  else
    dw_planes<double>(g, static_cast<double*>(y), static_cast<const double*>(x), static_cast<const double*>(w),
                      static_cast<const double*>(bias), q0, q1);
}
