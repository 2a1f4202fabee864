// Winograd F(2x2, 3x3) input and output transforms (maths: winograd.h). Included inside an
// ISA namespace (nnk::cpu::generic / avx2 / avx512) and compiled with that ISA's flags: the
// loops run over the tiles of a tile row, unit stride, and the compiler vectorises them.

namespace {

template <typename T>
inline void prefetch(const T* p) {
#if defined(__GNUC__)
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}

// Columns of one input row, split by parity: ev[k] = row[col0 + 2k], od[k] = row[col0 + 2k + 1]
// for k < n, zero outside [0, W).
template <typename T>
inline void split_row(const T* __restrict row, index_t W, index_t col0, index_t n, T* __restrict ev,
                      T* __restrict od) {
  index_t lo = col0 >= 0 ? 0 : (1 - col0) / 2;  // first k with col0 + 2k >= 0
  index_t hi = (W - 2 - col0) >= 0 ? (W - 2 - col0) / 2 + 1 : 0;  // k < hi: col0 + 2k + 1 <= W - 1
  lo = std::min(lo, n);
  hi = std::max(lo, std::min(hi, n));
  auto edge = [&](index_t k) {  // a column pair that may leave the row
    const index_t c = col0 + 2 * k;
    ev[k] = (c >= 0 && c < W) ? row[c] : T(0);
    od[k] = (c + 1 >= 0 && c + 1 < W) ? row[c + 1] : T(0);
  };
  for (index_t k = 0; k < lo; ++k) edge(k);
  for (index_t k = lo; k < hi; ++k) {
    ev[k] = row[col0 + 2 * k];
    od[k] = row[col0 + 2 * k + 1];
  }
  for (index_t k = hi; k < n; ++k) edge(k);
}

template <typename T>
void input_t(const WinoGeom& g, const T* x, index_t t0, index_t nt, index_t NR, T* Vp, T* tmp) {
  using V = Vec<T>;
  using R = typename V::reg;
  T* rows = tmp;
  const index_t RW = g.TW + 2;
  const index_t per_img = g.TH * g.TW;
  const index_t xs = wino_mat_stride(g.C, NR);  // between the 16 matrices
  for (index_t c = 0; c < g.C; ++c) {
    for (index_t t = t0; t < t0 + nt;) {
      const index_t n = t / per_img, r = t % per_img, th = r / g.TW, tw0 = r % g.TW;
      const index_t len = std::min(g.TW - tw0, t0 + nt - t);
      const T* e[4];
      const T* o[4];
      if (c + 1 < g.C) {  // the next channel's rows (a jump of H*W the prefetchers do not follow)
        const index_t lo = std::max<index_t>(0, 2 * tw0 - g.pl), hi = std::min<index_t>(g.W, 2 * (tw0 + len) - g.pl + 2);
        for (int i = 0; i < 4; ++i) {
          const index_t ih = 2 * th - g.pt + i;
          if (ih < 0 || ih >= g.H || lo >= hi) continue;
          const T* row = x + ((n * g.C + c + 1) * g.H + ih) * g.W;
          for (index_t q = lo; q < hi; q += 64 / index_t(sizeof(T))) prefetch(row + q);
          prefetch(row + hi - 1);
        }
      }
      for (int i = 0; i < 4; ++i) {
        T* ev = rows + (2 * i) * RW;
        T* od = ev + RW;
        e[i] = ev;
        o[i] = od;
        const index_t ih = 2 * th - g.pt + i;
        if (ih < 0 || ih >= g.H) {
          for (index_t k = 0; k <= len; ++k) ev[k] = od[k] = T(0);
        } else {
          split_row(x + ((n * g.C + c) * g.H + ih) * g.W, g.W, 2 * tw0 - g.pl, len + 1, ev, od);
        }
      }
      T* out = Vp + c * NR + (t - t0);
      for (index_t k = 0; k < len; k += V::L) {
        const index_t nl = std::min<index_t>(V::L, len - k);
        // d[i][j]: row i of the patch, column j (ev[k], od[k], ev[k + 1], od[k + 1]);
        // r = B^T d over the rows, then out = r B over the columns.
        R r[4][4];
        {
          R d0[4], d1[4], d2[4], d3[4];
          R* d[4] = {d0, d1, d2, d3};
          for (int i = 0; i < 4; ++i) {
            d[i][0] = V::loadn(e[i] + k, nl);
            d[i][1] = V::loadn(o[i] + k, nl);
            d[i][2] = V::loadn(e[i] + k + 1, nl);
            d[i][3] = V::loadn(o[i] + k + 1, nl);
          }
          for (int j = 0; j < 4; ++j) {
            r[0][j] = V::sub(d0[j], d2[j]);
            r[1][j] = V::add(d1[j], d2[j]);
            r[2][j] = V::sub(d2[j], d1[j]);
            r[3][j] = V::sub(d1[j], d3[j]);
          }
        }
        for (int i = 0; i < 4; ++i) {
          V::storen(out + (i * 4 + 0) * xs + k, V::sub(r[i][0], r[i][2]), nl);
          V::storen(out + (i * 4 + 1) * xs + k, V::add(r[i][1], r[i][2]), nl);
          V::storen(out + (i * 4 + 2) * xs + k, V::sub(r[i][2], r[i][1]), nl);
          V::storen(out + (i * 4 + 3) * xs + k, V::sub(r[i][1], r[i][3]), nl);
        }
      }
      t += len;
    }
    for (int xi = 0; xi < 16; ++xi)  // a last, partial panel: zero columns
      for (index_t k = nt; k < NR; ++k) Vp[xi * xs + c * NR + k] = T(0);
  }
}

// dY's transform for the weight gradient: Y_xi (Cout x ld, row-major; matrices
// wino_mat_stride(Cout, ld) apart) = (A dy A^T)[xi] of the 2x2 tiles [t0, t0 + nt) of dY,
// columns nt..ld zero. A = [1 0; 1 1; 1 -1; 0 -1]: rows of A dy are (a, b), (a + c, b + d),
// (a - c, b - d), (-c, -d) for the tile (a b; c d), and each row (p, q) becomes
// (p, p + q, p - q, -q).
template <typename T>
void dy_t(const WinoGeom& g, const T* dy, index_t t0, index_t nt, index_t ld, T* Y, T* tmp) {
  using V = Vec<T>;
  using R = typename V::reg;
  T* rows = tmp;
  const index_t RW = g.TW + 2;
  const index_t per_img = g.TH * g.TW;
  const index_t ys = wino_mat_stride(g.Cout, ld);
  for (index_t o = 0; o < g.Cout; ++o) {
    for (index_t t = t0; t < t0 + nt;) {
      const index_t n = t / per_img, r = t % per_img, th = r / g.TW, tw0 = r % g.TW;
      const index_t len = std::min(g.TW - tw0, t0 + nt - t);
      T* ev[2];
      T* od[2];
      for (int i = 0; i < 2; ++i) {
        ev[i] = rows + (2 * i) * RW;
        od[i] = ev[i] + RW;
        const index_t oh = 2 * th + i;
        if (oh >= g.Ho) {
          for (index_t k = 0; k < len; ++k) ev[i][k] = od[i][k] = T(0);
        } else {
          split_row(dy + ((n * g.Cout + o) * g.Ho + oh) * g.Wo, g.Wo, 2 * tw0, len, ev[i], od[i]);
        }
      }
      T* out = Y + o * ld + (t - t0);
      for (index_t k = 0; k < len; k += V::L) {
        const index_t nl = std::min<index_t>(V::L, len - k);
        const R a = V::loadn(ev[0] + k, nl), b = V::loadn(od[0] + k, nl);
        const R c = V::loadn(ev[1] + k, nl), d = V::loadn(od[1] + k, nl);
        const R p[4] = {a, V::add(a, c), V::sub(a, c), V::neg(c)};
        const R q[4] = {b, V::add(b, d), V::sub(b, d), V::neg(d)};
        for (int i = 0; i < 4; ++i) {
          V::storen(out + (i * 4 + 0) * ys + k, p[i], nl);
          V::storen(out + (i * 4 + 1) * ys + k, V::add(p[i], q[i]), nl);
          V::storen(out + (i * 4 + 2) * ys + k, V::sub(p[i], q[i]), nl);
          V::storen(out + (i * 4 + 3) * ys + k, V::neg(q[i]), nl);
        }
      }
      t += len;
    }
    for (int xi = 0; xi < 16; ++xi)
      for (index_t k = nt; k < ld; ++k) Y[xi * ys + o * ld + k] = T(0);
  }
}

// Returns false when an output is not finite (the running sum of the outputs then is not).
template <typename T>
bool output_t(const WinoGeom& g, const T* M, index_t t0, index_t nt, index_t ntp, T* y, const T* bias, T* tmp) {
  using V = Vec<T>;
  using R = typename V::reg;
  R check = V::zero();
  const index_t per_img = g.TH * g.TW;
  const index_t ms = wino_mat_stride(g.Cout, ntp);  // between the 16 matrices
  for (index_t o = 0; o < g.Cout; ++o) {
    const T b = bias ? bias[o] : T(0);
    const T* m = M + o * ntp;
    T* y00 = tmp;
    T* y01 = tmp + ntp;
    T* y10 = tmp + 2 * ntp;
    T* y11 = tmp + 3 * ntp;
    const R vb = V::set1(b);
    for (index_t k = 0; k < nt; k += V::L) {
      const index_t nl = std::min<index_t>(V::L, nt - k);
      // s = A^T m over the rows (s0 = m0 + m1 + m2, s1 = m1 - m2 - m3), then s A over the columns.
      R s0[4], s1[4];
      for (int j = 0; j < 4; ++j) {
        const R m0 = V::loadn(m + (0 + j) * ms + k, nl), m1 = V::loadn(m + (4 + j) * ms + k, nl);
        const R m2 = V::loadn(m + (8 + j) * ms + k, nl), m3 = V::loadn(m + (12 + j) * ms + k, nl);
        s0[j] = V::add(V::add(m0, m1), m2);
        s1[j] = V::sub(V::sub(m1, m2), m3);
      }
      const R v00 = V::add(V::add(V::add(s0[0], s0[1]), s0[2]), vb);
      const R v01 = V::add(V::sub(V::sub(s0[1], s0[2]), s0[3]), vb);
      const R v10 = V::add(V::add(V::add(s1[0], s1[1]), s1[2]), vb);
      const R v11 = V::add(V::sub(V::sub(s1[1], s1[2]), s1[3]), vb);
      V::storen(y00 + k, v00, nl);
      V::storen(y01 + k, v01, nl);
      V::storen(y10 + k, v10, nl);
      V::storen(y11 + k, v11, nl);
      check = V::add(check, V::add(V::add(v00, v01), V::add(v10, v11)));  // masked lanes: 0
    }
    for (index_t t = t0; t < t0 + nt;) {
      const index_t n = t / per_img, r = t % per_img, th = r / g.TW, tw0 = r % g.TW;
      const index_t len = std::min(g.TW - tw0, t0 + nt - t);
      const index_t base = t - t0, ow0 = 2 * tw0;
      const index_t full = std::min(len, (g.Wo - ow0) / 2);  // tiles with both columns inside
      for (index_t rr = 0; rr < 2; ++rr) {
        const index_t oh = 2 * th + rr;
        if (oh >= g.Ho) break;
        T* __restrict yr = y + ((n * g.Cout + o) * g.Ho + oh) * g.Wo + ow0;
        const T* __restrict a = (rr ? y10 : y00) + base;
        const T* __restrict c = (rr ? y11 : y01) + base;
        for (index_t k = 0; k < full; ++k) {
          yr[2 * k] = a[k];
          yr[2 * k + 1] = c[k];
        }
        if (full < len) yr[2 * full] = a[full];  // Wo odd: the last tile's left column
      }
      t += len;
    }
  }
  return std::isfinite(V::hsum(check));
}

}  // namespace

void wino_input(DType dt, const WinoGeom& g, const void* x, index_t t0, index_t nt, index_t NR, void* V, void* tmp) {
  if (dt == DType::f32)
    input_t<float>(g, static_cast<const float*>(x), t0, nt, NR, static_cast<float*>(V), static_cast<float*>(tmp));
  else
    input_t<double>(g, static_cast<const double*>(x), t0, nt, NR, static_cast<double*>(V), static_cast<double*>(tmp));
}

bool wino_output(DType dt, const WinoGeom& g, const void* M, index_t t0, index_t nt, index_t ntp, void* y,
                 const void* bias, void* tmp) {
  if (dt == DType::f32)
    return output_t<float>(g, static_cast<const float*>(M), t0, nt, ntp, static_cast<float*>(y), static_cast<const float*>(bias),
                    static_cast<float*>(tmp));
  return output_t<double>(g, static_cast<const double*>(M), t0, nt, ntp, static_cast<double*>(y), static_cast<const double*>(bias),
                     static_cast<double*>(tmp));
}

void wino_dy(DType dt, const WinoGeom& g, const void* dy, index_t t0, index_t nt, index_t ld, void* Y, void* tmp) {
  if (dt == DType::f32)
    dy_t<float>(g, static_cast<const float*>(dy), t0, nt, ld, static_cast<float*>(Y), static_cast<float*>(tmp));
  else
    dy_t<double>(g, static_cast<const double*>(dy), t0, nt, ld, static_cast<double*>(Y), static_cast<double*>(tmp));
}
