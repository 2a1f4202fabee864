// Gate maths of LSTM and GRU over Vec<T> of one ISA (maths in rnn.h; table in rnn_isa.h).
// Included INSIDE nnk::cpu::<isa> after vec_<isa>.h and vec_math.inl (ODR rule). Full
// vectors, then one masked tail; every lane is computed the same way, so results do not
// depend on where a run starts or ends (thread splits stay bitwise reproducible).

template <typename T>
struct RnnImpl {
  using V = Vec<T>;
  using R = typename V::reg;

  static inline void lstm_vec(T* i, T* f, T* g, T* o, const T* ci, T* co, T* h, index_t j, index_t m) {
    const bool full = m == V::L;
    auto ld = [&](const T* p) { return full ? V::load(p + j) : V::loadn(p + j, m); };
    auto st = [&](T* p, R x) { if (full) V::store(p + j, x); else V::storen(p + j, x, m); };
    const R vi = vsigmoid<V>(ld(i)), vf = vsigmoid<V>(ld(f)), vg = vtanh<V>(ld(g)), vo = vsigmoid<V>(ld(o));
    const R c = V::fmadd(vf, ld(ci), V::mul(vi, vg));
    st(i, vi); st(f, vf); st(g, vg); st(o, vo);
    st(co, c);
    st(h, V::mul(vo, vtanh<V>(c)));
  }
  static void lstm(T* i, T* f, T* g, T* o, const T* ci, T* co, T* h, index_t n) {
    index_t j = 0;
    for (; j + V::L <= n; j += V::L) lstm_vec(i, f, g, o, ci, co, h, j, V::L);
    if (j < n) lstm_vec(i, f, g, o, ci, co, h, j, n - j);
  }

  static inline void gru_vec(T* r, T* z, T* nx, const T* s, const T* hp, T* h, index_t j, index_t m) {
    const bool full = m == V::L;
    auto ld = [&](const T* p) { return full ? V::load(p + j) : V::loadn(p + j, m); };
    auto st = [&](T* p, R x) { if (full) V::store(p + j, x); else V::storen(p + j, x, m); };
    const R vr = vsigmoid<V>(ld(r)), vz = vsigmoid<V>(ld(z));
    const R vn = vtanh<V>(V::fmadd(vr, ld(s), ld(nx)));
    st(r, vr); st(z, vz); st(nx, vn);
    st(h, V::fmadd(vz, V::sub(ld(hp), vn), vn));
  }
  static void gru(T* r, T* z, T* nx, const T* s, const T* hp, T* h, index_t n) {
    index_t j = 0;
    for (; j + V::L <= n; j += V::L) gru_vec(r, z, nx, s, hp, h, j, V::L);
    if (j < n) gru_vec(r, z, nx, s, hp, h, j, n - j);
  }

  // Full vectors, then one masked tail, as above.
  template <class F>
  static inline void each(index_t n, F&& f) {
    index_t j = 0;
    for (; j + V::L <= n; j += V::L) f(j, V::L);
    if (j < n) f(j, n - j);
  }

  static void rnn_bwd(T* d, const T* dh, const T* h, bool relu, index_t n) {
    each(n, [&](index_t j, index_t m) {
      const bool full = m == V::L;
      const R vh = full ? V::load(h + j) : V::loadn(h + j, m);
      const R vd = full ? V::load(dh + j) : V::loadn(dh + j, m);
      R r;
      if (relu) r = V::select(V::mask_or(V::gt(vh, V::zero()), V::isnan(vh)), vd, V::zero());
      else r = V::mul(vd, V::sub(V::set1(T(1)), V::mul(vh, vh)));
      if (full) V::store(d + j, r); else V::storen(d + j, r, m);
    });
  }

  static void lstm_bwd(T* di, T* df, T* dg, T* dov, T* dc, const T* dh, const T* i, const T* f,
                       const T* g, const T* o, const T* c, const T* cp, index_t n) {
    const R one = V::set1(T(1));
    each(n, [&](index_t j, index_t m) {
      const bool full = m == V::L;
      auto ld = [&](const T* p) { return full ? V::load(p + j) : V::loadn(p + j, m); };
      auto st = [&](T* p, R x) { if (full) V::store(p + j, x); else V::storen(p + j, x, m); };
      const R vdh = ld(dh), vi = ld(i), vf = ld(f), vg = ld(g), vo = ld(o);
      const R tc = vtanh<V>(ld(c));
      const R dcj = V::add(ld(dc), V::mul(V::mul(vdh, vo), V::sub(one, V::mul(tc, tc))));
      st(dov, V::mul(V::mul(V::mul(vdh, tc), vo), V::sub(one, vo)));
      st(di, V::mul(V::mul(V::mul(dcj, vg), vi), V::sub(one, vi)));
      st(df, V::mul(V::mul(V::mul(dcj, ld(cp)), vf), V::sub(one, vf)));
      st(dg, V::mul(V::mul(dcj, vi), V::sub(one, V::mul(vg, vg))));
      st(dc, V::mul(dcj, vf));
    });
  }

  static void gru_bwd(T* dr, T* dz, T* dn, T* hr, T* hz, T* hno, T* dh, const T* r, const T* z,
                      const T* nn, const T* hn, const T* hp, index_t n) {
    const R one = V::set1(T(1));
    each(n, [&](index_t j, index_t m) {
      const bool full = m == V::L;
      auto ld = [&](const T* p) { return full ? V::load(p + j) : V::loadn(p + j, m); };
      auto st = [&](T* p, R x) { if (full) V::store(p + j, x); else V::storen(p + j, x, m); };
      const R vdh = ld(dh), vr = ld(r), vz = ld(z), vn = ld(nn);
      const R dan = V::mul(V::mul(vdh, V::sub(one, vz)), V::sub(one, V::mul(vn, vn)));
      const R dar = V::mul(V::mul(V::mul(dan, ld(hn)), vr), V::sub(one, vr));
      const R daz = V::mul(V::mul(V::mul(vdh, V::sub(ld(hp), vn)), vz), V::sub(one, vz));
      st(dr, dar); st(dz, daz); st(dn, dan);
      st(hr, dar); st(hz, daz); st(hno, V::mul(dan, vr));
      st(dh, V::mul(vdh, vz));
    });
  }

  static const RnnIsaKernels<T>& table() {
    static const RnnIsaKernels<T> t = {&lstm, &gru, &rnn_bwd, &lstm_bwd, &gru_bwd};
    return t;
  }
};

const RnnIsaKernels<float>& rnn_kernels(float) { return RnnImpl<float>::table(); }
const RnnIsaKernels<double>& rnn_kernels(double) { return RnnImpl<double>::table(); }
