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

  static const RnnIsaKernels<T>& table() {
    static const RnnIsaKernels<T> t = {&lstm, &gru};
    return t;
  }
};

const RnnIsaKernels<float>& rnn_kernels(float) { return RnnImpl<float>::table(); }
const RnnIsaKernels<double>& rnn_kernels(double) { return RnnImpl<double>::table(); }
