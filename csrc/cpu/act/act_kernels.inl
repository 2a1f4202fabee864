// Activation and softmax kernels of one ISA, written once over Vec<T> and the vector maths
// of vec_math.inl. Included INSIDE nnk::cpu::<isa> by act_<isa>.cpp (ODR rule).
//
// Elementwise (x, y, g, dx: n contiguous values; tails of n % L by masked loads/stores, so
// every element goes through the same lane arithmetic and results do not depend on where
// a thread's range starts):
//   relu        y = max(0, x) (NaN propagates)      dx = x > 0 ? g : 0
//   leaky_relu  y = x > 0 ? x : a x                  dx = x > 0 ? g : a g
//   sigmoid     y = 1 / (1 + e^-x)                   dx = g (1 - y) y
//   tanh        y = tanh x                           dx = g (1 - y^2)
//   gelu        y = x Phi(x) = x/2 (1 + erf(x / sqrt 2))  (vgelu: float by one rational function)
//               dx = g (Phi(x) + x phi(x)), phi(x) = e^{-x^2/2} / sqrt(2 pi)
//   gelu_tanh   y = x/2 (1 + tanh u) = x s, s = sigmoid(2u), u = b (x + k x^3), b = sqrt(2/pi),
//               k = 0.044715 (the sigmoid form does not cancel for x << 0)
//               dx = g (s + x s (1 - s) 2 b (1 + 3 k x^2))
// Softmax along D of x viewed as (outer, D, inner):
//   y = e^{x - m} / S, log_softmax y = (x - m) - log S, m = max x, S = sum e^{x - m}.
//   1a. softmax rows (inner == 1) of up to kRowCacheBytes: pass 1 the max M, pass 2
//      y = e^{x - M} (stored) and S = sum y, pass 3 y *= 1/S while the row is in cache: one
//      exp per element.
//   1b. longer rows and log_softmax: pass 1 reads the row once in blocks of kBlock vectors,
//      keeping a running max and sum per lane (the sum is rescaled by e^{m_old - m_new} once
//      per block); the lanes are merged at the end. Pass 2 writes y. Two passes over memory
//      (softmax: two exps per element; log_softmax: one).
//   2. cols (inner > 1): the same online max/sum along D, vectorised across inner (each
//      lane is one column), blocks of kBlock steps of D.
//   The running max starts at the lowest finite value, so -inf entries add e^-inf = 0; a
//   row of only -inf gives S = 0 and y = NaN, a +inf or NaN anywhere gives NaN (as torch).
// Softmax backward (y = forward output):
//   softmax      dx = y (g - sum g y)        log_softmax  dx = g - e^y sum g

template <typename T>
struct ActImpl {
  using V = Vec<T>;
  using R = typename V::reg;
  static constexpr int L = V::L;
  static constexpr index_t kBlock = 8;  // vectors (rows) or steps of D (cols) per rescale
  // Softmax rows up to this size take variant 1a: the row written in pass 2 is still in L2
  // (1-2 MiB per core on the target machines) when pass 3 rescales it.
  static constexpr index_t kRowCacheBytes = 256 * 1024;

  static inline void prefetch(const T* p) {
#if defined(__GNUC__)
    __builtin_prefetch(p);
#else
    (void)p;
#endif
  }

  // y = f(x); pf0 (softmax rows: the next row's input) is prefetched a line at a time
  // alongside.
  static constexpr index_t kLine = 64 / index_t(sizeof(T));
  // With `stream`, y's whole vectors from its first vector-aligned element on go out by
  // non-temporal stores (the caller fences): an output past the last-level cache then costs
  // no read for ownership (elementwise ops on 4M floats: three 16 MiB streams instead of four).
  static inline index_t stream_head(const T* y, index_t n) { return cpu::stream_head(y, n, uintptr_t(L) * sizeof(T)); }

  template <class F>
  static inline void map1(T* y, const T* x, index_t n, F f, const T* pf0 = nullptr, bool stream = false) {
    index_t i = 0;
    const index_t h = stream ? stream_head(y, n) : -1;
    if (h >= 0) {
      if (h > 0) V::storen(y, f(V::loadn(x, h)), h);
      for (i = h; i + L <= n; i += L) V::stream(y + i, f(V::load(x + i)));
    }
    for (; i + L <= n; i += L) {
      if (pf0 && i % kLine == 0) prefetch(pf0 + i);
      V::store(y + i, f(V::load(x + i)));
    }
    if (i < n) V::storen(y + i, f(V::loadn(x + i, n - i)), n - i);
  }
  template <class F>
  static inline void map2(T* y, const T* a, const T* b, index_t n, F f, bool stream = false) {
    index_t i = 0;
    const index_t h = stream ? stream_head(y, n) : -1;
    if (h >= 0) {
      if (h > 0) V::storen(y, f(V::loadn(a, h), V::loadn(b, h)), h);
      for (i = h; i + L <= n; i += L) V::stream(y + i, f(V::load(a + i), V::load(b + i)));
    }
    for (; i + L <= n; i += L) V::store(y + i, f(V::load(a + i), V::load(b + i)));
    if (i < n) V::storen(y + i, f(V::loadn(a + i, n - i), V::loadn(b + i, n - i)), n - i);
  }

  // 1/2 (1 + tanh u) = sigmoid(2u): no cancellation for x << 0, where 1 + tanh u ~ 0.
  static inline R gelu_tanh_sig(R x) {
    const R x3 = V::mul(V::mul(x, x), x);
    const R u2 = V::mul(V::set1(T(2 * 0.79788456080286535588)), V::fmadd(V::set1(T(0.044715)), x3, x));
    return vsigmoid<V>(u2);
  }
  static inline R gelu_tanh(R x) { return V::mul(x, gelu_tanh_sig(x)); }

  static void fwd(T* y, const T* x, index_t n, Act act, T param, bool stream) {
    switch (act) {
      case Act::none:
        map1(y, x, n, [](R v) { return v; }, nullptr, stream);
        break;
      case Act::relu:
        map1(y, x, n, [](R v) { return V::max(V::zero(), v); }, nullptr, stream);
        break;
      case Act::leaky_relu: {
        const R a = V::set1(param);
        map1(y, x, n, [a](R v) { return V::select(V::gt(v, V::zero()), v, V::mul(v, a)); }, nullptr, stream);
        break;
      }
      case Act::sigmoid: map1(y, x, n, [](R v) { return vsigmoid<V>(v); }, nullptr, stream); break;
      case Act::tanh: map1(y, x, n, [](R v) { return vtanh<V>(v); }, nullptr, stream); break;
      case Act::gelu: map1(y, x, n, [](R v) { return vgelu<V>(v); }, nullptr, stream); break;
      case Act::gelu_tanh: map1(y, x, n, [](R v) { return gelu_tanh(v); }, nullptr, stream); break;
    }
    if (stream) V::fence();
  }

  static void bwd(T* dx, const T* g, const T* v, index_t n, Act act, T param, bool stream) {
    const R one = V::set1(T(1));
    switch (act) {
      case Act::none:
        map1(dx, g, n, [](R a) { return a; }, nullptr, stream);
        break;
      case Act::relu:
        map2(dx, g, v, n, [](R gg, R x) { return V::select(V::gt(x, V::zero()), gg, V::zero()); }, stream);
        break;
      case Act::leaky_relu: {
        const R a = V::set1(param);
        map2(dx, g, v, n, [a](R gg, R x) { return V::select(V::gt(x, V::zero()), gg, V::mul(gg, a)); }, stream);
        break;
      }
      case Act::sigmoid:
        map2(dx, g, v, n, [one](R gg, R y) { return V::mul(V::mul(gg, V::sub(one, y)), y); }, stream);
        break;
      case Act::tanh:
        map2(dx, g, v, n, [one](R gg, R y) { return V::mul(gg, V::fnmadd(y, y, one)); }, stream);
        break;
      case Act::gelu:
        map2(dx, g, v, n, [](R gg, R x) { return V::mul(gg, vgelu_grad<V>(x)); }, stream);
        break;
      case Act::gelu_tanh:
        map2(dx, g, v, n, [one](R gg, R x) {
          // torch's 1/2 (1 + t) + x/2 (1 - t^2) u' with 1 + t = 2s, 1 - t = 2(1 - s), s = sigmoid(2u)
          const R s = gelu_tanh_sig(x);
          const R du2 = V::mul(V::set1(T(2 * 0.79788456080286535588)),
                               V::fmadd(V::set1(T(3 * 0.044715)), V::mul(x, x), one));  // 2u'
          return V::mul(gg, V::fmadd(V::mul(V::mul(x, s), V::sub(one, s)), du2, s));
        }, stream);
        break;
    }
    if (stream) V::fence();
  }

  static inline T first(R v) {
    T tmp[L];
    V::store(tmp, v);
    return tmp[0];
  }

  // Softmax of a row that stays in cache (variant 1a): max; y = e^{x - M} and its sum; y *= 1/S.
  static void softmax_row_cached(T* y, const T* x, index_t D, const T* next) {
    const T ninf = -std::numeric_limits<T>::infinity();
    R m = V::set1(-std::numeric_limits<T>::max()), m1 = m;  // two chains: max's latency
    index_t j = 0;
    for (; j + 2 * L <= D; j += 2 * L) {
      m = V::max(m, V::load(x + j));
      m1 = V::max(m1, V::load(x + j + L));
    }
    for (; j + L <= D; j += L) m = V::max(m, V::load(x + j));
    if (j < D) m = V::max(m, V::loadn(x + j, D - j, ninf));
    const R Mv = V::set1(V::hmax(V::max(m, m1)));
    R s = V::zero();
    const index_t BE = kBlock * L;
    for (index_t j0 = 0; j0 < D; j0 += BE) {
      const index_t j1 = j0 + BE < D ? j0 + BE : D;
      R bs = V::zero();  // the block's own sum, added once: shorter rounding chains in s
      for (j = j0; j + L <= j1; j += L) {
        const R e = vexp<V>(V::sub(V::load(x + j), Mv));
        V::store(y + j, e);
        bs = V::add(bs, e);
      }
      if (j < j1) {
        const R e = vexp<V>(V::sub(V::loadn(x + j, j1 - j, ninf), Mv));
        V::storen(y + j, e, j1 - j);
        bs = V::add(bs, e);
      }
      s = V::add(s, bs);
    }
    const R inv = V::set1(T(1) / V::hsum(s));
    // the rescale pass runs from L1; meanwhile the next row (if any) is brought in, so that
    // its max pass, a chain of dependent loads, does not wait on memory
    map1(y, y, D, [inv](R v) { return V::mul(v, inv); }, next);
  }

  // next: the following row, prefetched by the cached variant (measured on 4096 x 1024
  // float32: 0.53 -> 0.40 ms; no gain for log_softmax's two-pass form or the backward).
  static void softmax_row(T* y, const T* x, index_t D, bool log, const T* next) {
    if (!log && D * index_t(sizeof(T)) <= kRowCacheBytes) return softmax_row_cached(y, x, D, next);
    const T lowest = -std::numeric_limits<T>::max();
    const T ninf = -std::numeric_limits<T>::infinity();
    R m = V::set1(lowest), s = V::zero();
    const index_t BE = kBlock * L;  // elements per block
    for (index_t j0 = 0; j0 < D; j0 += BE) {
      const index_t j1 = j0 + BE < D ? j0 + BE : D;
      R bm = m;
      index_t j = j0;
      for (; j + L <= j1; j += L) bm = V::max(bm, V::load(x + j));
      if (j < j1) bm = V::max(bm, V::loadn(x + j, j1 - j, ninf));
      const R scale = vexp<V>(V::sub(m, bm));
      m = bm;
      R bs = V::zero();  // the block's own sum, added once: shorter rounding chains in s
      for (j = j0; j + L <= j1; j += L) bs = V::add(bs, vexp<V>(V::sub(V::load(x + j), m)));
      if (j < j1) bs = V::add(bs, vexp<V>(V::sub(V::loadn(x + j, j1 - j, ninf), m)));
      s = V::fmadd(s, scale, bs);
    }
    const T M = V::hmax(m);
    const R Mv = V::set1(M);
    const T S = V::hsum(V::mul(s, vexp<V>(V::sub(m, Mv))));
    if (log) {
      const R ls = V::set1(first(vlog<V>(V::set1(S))));
      map1(y, x, D, [Mv, ls](R v) { return V::sub(V::sub(v, Mv), ls); });
    } else {
      const R inv = V::set1(T(1) / S);
      map1(y, x, D, [Mv, inv](R v) { return V::mul(vexp<V>(V::sub(v, Mv)), inv); });
    }
  }

  static void softmax_rows(T* y, const T* x, index_t rows, index_t D, bool log) {
    for (index_t r = 0; r < rows; ++r)
      softmax_row(y + r * D, x + r * D, D, log, r + 1 < rows ? x + (r + 1) * D : nullptr);
  }

  static void softmax_bwd_rows(T* dx, const T* g, const T* y, index_t rows, index_t D, bool log) {
    for (index_t r = 0; r < rows; ++r) {
      const T* gr = g + r * D;
      const T* yr = y + r * D;
      T* dr = dx + r * D;
      // Four accumulators: one add chain would wait on the FP latency at every vector.
      R a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
      index_t j = 0;
      if (log) {
        for (; j + 4 * L <= D; j += 4 * L) {
          a0 = V::add(a0, V::load(gr + j));
          a1 = V::add(a1, V::load(gr + j + L));
          a2 = V::add(a2, V::load(gr + j + 2 * L));
          a3 = V::add(a3, V::load(gr + j + 3 * L));
        }
        for (; j + L <= D; j += L) a0 = V::add(a0, V::load(gr + j));
        if (j < D) a0 = V::add(a0, V::loadn(gr + j, D - j));
        const R sum = V::set1(V::hsum(V::add(V::add(a0, a1), V::add(a2, a3))));
        map2(dr, gr, yr, D, [sum](R gg, R yy) { return V::fnmadd(vexp<V>(yy), sum, gg); });
      } else {
        for (; j + 4 * L <= D; j += 4 * L) {
          a0 = V::fmadd(V::load(gr + j), V::load(yr + j), a0);
          a1 = V::fmadd(V::load(gr + j + L), V::load(yr + j + L), a1);
          a2 = V::fmadd(V::load(gr + j + 2 * L), V::load(yr + j + 2 * L), a2);
          a3 = V::fmadd(V::load(gr + j + 3 * L), V::load(yr + j + 3 * L), a3);
        }
        for (; j + L <= D; j += L) a0 = V::fmadd(V::load(gr + j), V::load(yr + j), a0);
        if (j < D) a0 = V::fmadd(V::loadn(gr + j, D - j), V::loadn(yr + j, D - j), a0);
        const R dot = V::set1(V::hsum(V::add(V::add(a0, a1), V::add(a2, a3))));
        map2(dr, gr, yr, D, [dot](R gg, R yy) { return V::mul(yy, V::sub(gg, dot)); });
      }
    }
  }

  // One vector of columns [c, c + w) (w <= L) of a (D, inner) slice.
  static inline R ld(const T* p, index_t w) { return w == L ? V::load(p) : V::loadn(p, w); }
  static inline void st(T* p, R v, index_t w) {
    if (w == L) V::store(p, v);
    else V::storen(p, v, w);
  }

  static void softmax_cols(T* y, const T* x, index_t D, index_t inner, index_t c0, index_t c1, bool log) {
    const T lowest = -std::numeric_limits<T>::max();
    for (index_t c = c0; c < c1; c += L) {
      const index_t w = c1 - c < L ? c1 - c : L;
      const T* xc = x + c;
      T* yc = y + c;
      R m = V::set1(lowest), s = V::zero();
      for (index_t d0 = 0; d0 < D; d0 += kBlock) {
        const index_t d1 = d0 + kBlock < D ? d0 + kBlock : D;
        R bm = m;
        for (index_t d = d0; d < d1; ++d) bm = V::max(bm, ld(xc + d * inner, w));
        const R scale = vexp<V>(V::sub(m, bm));
        m = bm;
        R bs = V::zero();
        for (index_t d = d0; d < d1; ++d) bs = V::add(bs, vexp<V>(V::sub(ld(xc + d * inner, w), m)));
        s = V::fmadd(s, scale, bs);
      }
      if (log) {
        const R ls = vlog<V>(s);
        for (index_t d = 0; d < D; ++d)
          st(yc + d * inner, V::sub(V::sub(ld(xc + d * inner, w), m), ls), w);
      } else {
        const R inv = V::div(V::set1(T(1)), s);
        for (index_t d = 0; d < D; ++d)
          st(yc + d * inner, V::mul(vexp<V>(V::sub(ld(xc + d * inner, w), m)), inv), w);
      }
    }
  }

  static void softmax_bwd_cols(T* dx, const T* g, const T* y, index_t D, index_t inner, index_t c0,
                               index_t c1, bool log) {
    for (index_t c = c0; c < c1; c += L) {
      const index_t w = c1 - c < L ? c1 - c : L;
      R acc = V::zero();
      if (log) {
        for (index_t d = 0; d < D; ++d) acc = V::add(acc, ld(g + d * inner + c, w));
        for (index_t d = 0; d < D; ++d) {
          const index_t o = d * inner + c;
          st(dx + o, V::fnmadd(vexp<V>(ld(y + o, w)), acc, ld(g + o, w)), w);
        }
      } else {
        for (index_t d = 0; d < D; ++d) acc = V::fmadd(ld(g + d * inner + c, w), ld(y + d * inner + c, w), acc);
        for (index_t d = 0; d < D; ++d) {
          const index_t o = d * inner + c;
          st(dx + o, V::mul(ld(y + o, w), V::sub(ld(g + o, w), acc)), w);
        }
      }
    }
  }

  static const ActIsaKernels<T>& table() {
    static const ActIsaKernels<T> k = {fwd, bwd, softmax_rows, softmax_bwd_rows, softmax_cols,
                                       softmax_bwd_cols};
    return k;
  }
};

const ActIsaKernels<float>& act_kernels(float) { return ActImpl<float>::table(); }
const ActIsaKernels<double>& act_kernels(double) { return ActImpl<double>::table(); }
