// Depthwise forward and backward, one plane at a time (included inside one ISA namespace by
// depthwise{,_avx2,_avx512}.cpp; compiled with that ISA's flags, the inner loop is an axpy
// over the output row that the compiler vectorises to the ISA's width).
//   y[oh, ow] = b + sum_{i, j} w[i, j] * x[oh*sh - pt + i*dh, ow*sw - pl + j*dw]
// Each (i, j) tap adds w[i, j] times a shifted input row to the output row (in L1); the
// valid ow range of tap j is computed once, so the inner loop has no bounds tests.

// Output columns [l, h) that tap column j reaches inside the input, and the input offset
// of (ow = 0, j): iw = ow * sw + of.
inline void dw_range(const ConvGeom& g, index_t j, index_t& l, index_t& h, index_t& o) {
  o = j * g.dw - g.pl;
  l = o >= 0 ? 0 : (-o + g.sw - 1) / g.sw;
  h = (g.W - o) <= 0 ? 0 : (g.W - o + g.sw - 1) / g.sw;
  l = std::min(l, g.Wo);
  h = std::max(l, std::min(h, g.Wo));
}

template <typename T>
void dw_planes(const ConvGeom& g, T* y, const T* x, const T* w, const T* bias, index_t q0, index_t q1) {
  const index_t mult = g.Cout / g.C, HW = g.H * g.W, L = g.Ho * g.Wo, khw = g.kh * g.kw, Wo = g.Wo;
  index_t lo[64], hi[64], off[64];
  const bool small = g.kw <= 64;
  auto range = [&](index_t j, index_t& l, index_t& h, index_t& o) { dw_range(g, j, l, h, o); };
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

// Backward-data, input planes p in [p0, p1) (p = n * C + c), each owned by one call:
//   dx[ih, iw] = sum over the channel's outputs o and taps (i, j) reaching it of
//                w[o, i, j] * dy[o, oh, ow]   (ih = oh*sh - pt + i*dh, iw = ow*sw - pl + j*dw)
// the forward's loops run backwards: each tap adds w[i, j] times an output row to a
// shifted input row (an axpy the compiler vectorises when sw == 1).
template <typename T>
void dw_data_planes(const ConvGeom& g, T* dx, const T* dy, const T* w, index_t p0, index_t p1) {
  const index_t mult = g.Cout / g.C, HW = g.H * g.W, L = g.Ho * g.Wo, khw = g.kh * g.kw, Wo = g.Wo;
  for (index_t pl = p0; pl < p1; ++pl) {  // pl = n * C + c
    const index_t n = pl / g.C, c = pl - n * g.C;
    T* xp = dx + pl * HW;
    for (index_t e = 0; e < HW; ++e) xp[e] = T(0);
    for (index_t k = 0; k < mult; ++k) {
      const index_t o = c * mult + k;
      const T* yp = dy + (n * g.Cout + o) * L;
      const T* wp = w + o * khw;
      for (index_t oh = 0; oh < g.Ho; ++oh) {
        const T* __restrict yr = yp + oh * Wo;
        for (index_t i = 0; i < g.kh; ++i) {
          const index_t ih = oh * g.sh - g.pt + i * g.dh;
          if (ih < 0 || ih >= g.H) continue;
          T* xr = xp + ih * g.W;
          for (index_t j = 0; j < g.kw; ++j) {
            index_t l, h, of;
            dw_range(g, j, l, h, of);
            const T wv = wp[i * g.kw + j];
            if (g.sw == 1) {
              T* __restrict d = xr + of;
              for (index_t ow = l; ow < h; ++ow) d[ow] += wv * yr[ow];
            } else {
              for (index_t ow = l; ow < h; ++ow) xr[ow * g.sw + of] += wv * yr[ow];
            }
          }
        }
      }
    }
  }
}

// Backward-weight, output channels o in [o0, o1): dw[o, i, j] = sum over n, oh, ow of
// dy[n, o, oh, ow] x[n, c, ih, iw], one vector accumulator per tap over all images and
// rows (a fixed order: the same bits whatever the thread split), summed across lanes at
// the end.
template <typename T>
void dw_weight_channels(const ConvGeom& g, T* dw, const T* dy, const T* x, index_t o0, index_t o1) {
  using V = Vec<T>;
  using R = typename V::reg;
  const index_t mult = g.Cout / g.C, HW = g.H * g.W, L = g.Ho * g.Wo, khw = g.kh * g.kw, Wo = g.Wo;
  std::vector<T> acc(size_t(std::max<index_t>(khw, 1) * V::L));  // per tap, one vector of partial sums
  for (index_t o = o0; o < o1; ++o) {
    const index_t c = o / mult;
    std::fill(acc.begin(), acc.end(), T(0));
    for (index_t n = 0; n < g.N; ++n) {
      const T* yp = dy + (n * g.Cout + o) * L;
      const T* xp = x + (n * g.C + c) * HW;
      for (index_t oh = 0; oh < g.Ho; ++oh) {
        const T* yr = yp + oh * Wo;
        for (index_t i = 0; i < g.kh; ++i) {
          const index_t ih = oh * g.sh - g.pt + i * g.dh;
          if (ih < 0 || ih >= g.H) continue;
          const T* xr = xp + ih * g.W;
          for (index_t j = 0; j < g.kw; ++j) {
            index_t l, h, of;
            dw_range(g, j, l, h, of);
            T* ap = acc.data() + (i * g.kw + j) * V::L;
            R a = V::load(ap);
            index_t ow = l;
            if (g.sw == 1) {
              for (; ow + V::L <= h; ow += V::L) a = V::fmadd(V::load(yr + ow), V::load(xr + of + ow), a);
              if (ow < h) a = V::fmadd(V::loadn(yr + ow, h - ow), V::loadn(xr + of + ow, h - ow), a);
            } else {
              T tmp[V::L];
              for (; ow < h; ow += V::L) {
                const index_t m = std::min<index_t>(V::L, h - ow);
                for (index_t t = 0; t < m; ++t) tmp[t] = xr[(ow + t) * g.sw + of];
                a = V::fmadd(V::loadn(yr + ow, m), V::loadn(tmp, m), a);
              }
            }
            V::store(ap, a);
          }
        }
      }
    }
    for (index_t t = 0; t < khw; ++t) dw[o * khw + t] = V::hsum(V::load(acc.data() + t * V::L));
  }
}

void depthwise_backward_data(DType dt, const ConvGeom& g, void* dx, const void* dy, const void* w,
                             index_t p0, index_t p1) {
  if (dt == DType::f32)
    dw_data_planes<float>(g, static_cast<float*>(dx), static_cast<const float*>(dy), static_cast<const float*>(w), p0, p1);
  else
    dw_data_planes<double>(g, static_cast<double*>(dx), static_cast<const double*>(dy), static_cast<const double*>(w), p0, p1);
}

void depthwise_backward_weight(DType dt, const ConvGeom& g, void* dw, const void* dy, const void* x,
                               index_t o0, index_t o1) {
  if (dt == DType::f32)
    dw_weight_channels<float>(g, static_cast<float*>(dw), static_cast<const float*>(dy), static_cast<const float*>(x), o0, o1);
  else
    dw_weight_channels<double>(g, static_cast<double*>(dw), static_cast<const double*>(dy), static_cast<const double*>(x), o0, o1);
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
