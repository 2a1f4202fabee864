// Attention tile operations of one ISA over Vec<T> and vexp (vec_math.inl). Included INSIDE
// nnk::cpu::<isa> by attn_<isa>.cpp (ODR rule). Contracts in attn_isa.h. Tails of n % L
// use masked loads/stores (fill -inf for maxima, 0 for sums), so no element past n is read.

template <typename T>
struct AttnImpl {
  using V = Vec<T>;
  using R = typename V::reg;
  static constexpr int L = V::L;

  static void softmax_tile(T* s, index_t lds, index_t m, index_t n, T* mrow, T* lrow, T* corr) {
    const T ninf = -std::numeric_limits<T>::infinity();
    for (index_t i = 0; i < m; ++i) {
      T* r = s + i * lds;
      R mx = V::set1(ninf);
      index_t j = 0;
      for (; j + L <= n; j += L) mx = V::max(V::load(r + j), mx);
      if (j < n) mx = V::max(V::loadn(r + j, n - j, ninf), mx);
      T mnew = V::hmax(mx);
      if (mrow[i] > mnew) mnew = mrow[i];
      if (mnew == ninf) {  // nothing has taken part in this row yet
        for (j = 0; j + L <= n; j += L) V::store(r + j, V::zero());
        if (j < n) V::storen(r + j, V::zero(), n - j);
        corr[i] = T(1);
        continue;
      }
      const R vm = V::set1(mnew);
      R sum = V::zero();
      for (j = 0; j + L <= n; j += L) {
        const R e = vexp<V>(V::sub(V::load(r + j), vm));
        V::store(r + j, e);
        sum = V::add(sum, e);
      }
      if (j < n) {
        const R e = vexp<V>(V::sub(V::loadn(r + j, n - j, ninf), vm));
        V::storen(r + j, e, n - j);
        sum = V::add(sum, e);
      }
      T c = T(0);
      if (mrow[i] != ninf) {
        T lane[L];
        V::store(lane, vexp<V>(V::set1(mrow[i] - mnew)));
        c = lane[0];
      }
      corr[i] = c;
      lrow[i] = lrow[i] * c + V::hsum(sum);
      mrow[i] = mnew;
    }
  }

  static void p_tile(T* s, index_t lds, index_t m, index_t n, const T* lse) {
    const T ninf = -std::numeric_limits<T>::infinity();
    for (index_t i = 0; i < m; ++i) {
      T* r = s + i * lds;
      index_t j = 0;
      if (lse[i] == ninf) {
        for (; j + L <= n; j += L) V::store(r + j, V::zero());
        if (j < n) V::storen(r + j, V::zero(), n - j);
        continue;
      }
      const R vl = V::set1(lse[i]);
      for (; j + L <= n; j += L) V::store(r + j, vexp<V>(V::sub(V::load(r + j), vl)));
      if (j < n) V::storen(r + j, vexp<V>(V::sub(V::loadn(r + j, n - j, ninf), vl)), n - j);
    }
  }

  static void ds_tile(T* dp, index_t ldp, const T* p, index_t lds, index_t m, index_t n, const T* D) {
    for (index_t i = 0; i < m; ++i) {
      T* d = dp + i * ldp;
      const T* pr = p + i * lds;
      const R vd = V::set1(D[i]);
      index_t j = 0;
      for (; j + L <= n; j += L) V::store(d + j, V::mul(V::load(pr + j), V::sub(V::load(d + j), vd)));
      if (j < n)
        V::storen(d + j, V::mul(V::loadn(pr + j, n - j), V::sub(V::loadn(d + j, n - j), vd)), n - j);
    }
  }

  // Unit-stride rows are plain loops the compiler vectorises with this ISA's flags.
  static void mask_tile(T* s, index_t lds, index_t m, index_t n, const void* mask, index_t rs,
                        index_t cs, bool boolean) {
    const T ninf = -std::numeric_limits<T>::infinity();
    for (index_t i = 0; i < m; ++i) {
      T* __restrict sr = s + i * lds;
      if (boolean) {
        const uint8_t* __restrict row = static_cast<const uint8_t*>(mask) + i * rs;
        if (cs == 1) {
          for (index_t j = 0; j < n; ++j) sr[j] = row[j] ? sr[j] : ninf;
        } else {
          for (index_t j = 0; j < n; ++j) sr[j] = row[j * cs] ? sr[j] : ninf;
        }
      } else {
        const T* __restrict row = static_cast<const T*>(mask) + i * rs;
        if (cs == 1) {
          for (index_t j = 0; j < n; ++j) sr[j] += row[j];
        } else {
          for (index_t j = 0; j < n; ++j) sr[j] += row[j * cs];
        }
      }
    }
  }

  static const AttnIsaKernels<T>& table() {
    static const AttnIsaKernels<T> k = {softmax_tile, p_tile, ds_tile, mask_tile};
    return k;
  }
};

const AttnIsaKernels<float>& attn_kernels(float) { return AttnImpl<float>::table(); }
const AttnIsaKernels<double>& attn_kernels(double) { return AttnImpl<double>::table(); }
