// Layer norm row kernels of one ISA over Vec<T> (maths in norm.h). Included INSIDE
// nnk::cpu::<isa> by norm_<isa>.cpp (ODR rule). Tails of D % L by masked loads/stores.

template <typename T>
struct NormImpl {
  using V = Vec<T>;
  using R = typename V::reg;
  static constexpr int L = V::L;

  static inline void prefetch(const T* p) {
#if defined(__GNUC__)
    __builtin_prefetch(p);
#else
    (void)p;
#endif
  }
  static inline R ld(const T* p, index_t n) { return n >= L ? V::load(p) : V::loadn(p, n); }
  static inline void st(T* p, R x, index_t n) {
    if (n >= L) V::store(p, x); else V::storen(p, x, n);
  }

  // An output row dst[0:D) = f(d, n) (vectors of n <= L elements), prefetching pf0 / pf1
  // (the next row's inputs, may be null) line by line. With `stream`, whole vectors from the
  // first vector-aligned element on go out by non-temporal stores (the caller fences).
  template <class F>
  static inline void out_row(T* dst, index_t D, bool stream, const T* pf0, const T* pf1, F&& f) {
    constexpr index_t kLine = 64 / index_t(sizeof(T));
    index_t d = 0, s0 = D;  // dst[s0:] streamed
    const index_t h = stream ? cpu::stream_head(dst, D, uintptr_t(L) * sizeof(T)) : -1;
    if (h >= 0) {
      s0 = h;
      if (s0 > 0) st(dst, f(index_t(0), s0), s0);
      d = s0;
    }
    for (const index_t d0 = d; d < D; d += L) {
      const index_t n = D - d;
      if ((d - d0) % kLine == 0) {
        if (pf0) prefetch(pf0 + d);
        if (pf1) prefetch(pf1 + d);
      }
      const R v = f(d, n);
      if (d >= s0 && n >= L) V::stream(dst + d, v); else st(dst + d, v, n);
    }
  }

  // Sum of the row (f = identity) or of (x - mu)^2, four accumulator chains.
  template <bool Sq>
  static inline T row_sum(const T* xr, index_t D, T mu) {
    const R vm = V::set1(mu);
    R s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
    auto f = [&](R x, R s) {
      if (!Sq) return V::add(s, x);
      const R c = V::sub(x, vm);
      return V::fmadd(c, c, s);
    };
    index_t d = 0;
    for (; d + 4 * L <= D; d += 4 * L) {
      s0 = f(V::load(xr + d), s0);
      s1 = f(V::load(xr + d + L), s1);
      s2 = f(V::load(xr + d + 2 * L), s2);
      s3 = f(V::load(xr + d + 3 * L), s3);
    }
    for (; d + L <= D; d += L) s0 = f(V::load(xr + d), s0);
    if (d < D) s1 = f(V::loadn(xr + d, D - d, Sq ? mu : T(0)), s1);
    return V::hsum(V::add(V::add(s0, s1), V::add(s2, s3)));
  }

  // Rows one after another: mean, centred variance (both over the row while it is in L1),
  // then the output; the next row is prefetched during the output pass (its loads would
  // otherwise stall the sum, whose chain waits on each). `stream`: as ln_bwd.
  static void ln_fwd(T* y, T* mean, T* rstd, const T* x, const T* w, const T* b, index_t rows,
                     index_t D, T eps, bool stream) {
    for (index_t r = 0; r < rows; ++r) {
      const T* xr = x + r * D;
      const T mu = row_sum<false>(xr, D, T(0)) / T(D);
      const T var = row_sum<true>(xr, D, mu) / T(D);
      const T rs = T(1) / std::sqrt(var + eps);
      if (mean) mean[r] = mu;
      if (rstd) rstd[r] = rs;
      const R vm = V::set1(mu), vr = V::set1(rs);
      out_row(y + r * D, D, stream, r + 1 < rows ? xr + D : nullptr, nullptr, [&](index_t d, index_t n) {
        R h = V::mul(V::sub(ld(xr + d, n), vm), vr);
        if (w) h = V::mul(h, ld(w + d, n));
        if (b) h = V::add(h, ld(b + d, n));
        return h;
      });
    }
    if (stream) V::fence();
  }

  // Per row: the sums of gw = g w and gw xhat (two chains each) with dw += g xhat and
  // db += g for the block, then dx = rstd (gw - mean(gw) - xhat mean(gw xhat)); the next
  // row of x and g is prefetched during the dx pass. With `stream`, dx goes out through
  // non-temporal stores (out_row), and a fence ends the call.
  static void ln_bwd(T* dx, T* dw_acc, T* db_acc, const T* g, const T* x, const T* mean,
                     const T* rstd, const T* w, index_t rows, index_t D, bool stream) {
    for (index_t r = 0; r < rows; ++r) {
      const T* xr = x + r * D;
      const T* gr = g + r * D;
      const R vm = V::set1(mean[r]), vr = V::set1(rstd[r]);
      R a1[2] = {V::zero(), V::zero()}, a2[2] = {V::zero(), V::zero()};
      int c = 0;
      for (index_t d = 0; d < D; d += L, c ^= 1) {
        const index_t n = D - d;
        const R xh = V::mul(V::sub(ld(xr + d, n), vm), vr);
        const R gv = ld(gr + d, n);
        const R gw = w ? V::mul(gv, ld(w + d, n)) : gv;
        a1[c] = V::add(a1[c], gw);
        a2[c] = V::fmadd(gw, xh, a2[c]);
        if (dw_acc) st(dw_acc + d, V::fmadd(gv, xh, ld(dw_acc + d, n)), n);
        if (db_acc) st(db_acc + d, V::add(ld(db_acc + d, n), gv), n);
      }
      const R m1 = V::set1(V::hsum(V::add(a1[0], a1[1])) / T(D));
      const R m2 = V::set1(V::hsum(V::add(a2[0], a2[1])) / T(D));
      const bool more = r + 1 < rows;
      out_row(dx + r * D, D, stream, more ? xr + D : nullptr, more ? gr + D : nullptr, [&](index_t d, index_t n) {
        const R xh = V::mul(V::sub(ld(xr + d, n), vm), vr);
        const R gv = ld(gr + d, n);
        const R gw = w ? V::mul(gv, ld(w + d, n)) : gv;
        return V::mul(vr, V::sub(V::sub(gw, m1), V::mul(xh, m2)));
      });
    }
    if (stream) V::fence();
  }

  static const NormIsaKernels<T>& table() {
    static const NormIsaKernels<T> k = {ln_fwd, ln_bwd};
    return k;
  }
};

const NormIsaKernels<float>& norm_kernels(float) { return NormImpl<float>::table(); }
const NormIsaKernels<double>& norm_kernels(double) { return NormImpl<double>::table(); }
