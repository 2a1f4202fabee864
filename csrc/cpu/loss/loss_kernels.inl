// Loss chunk kernels, written once and compiled per ISA: included INSIDE the namespace
// nnk::cpu::<isa> by loss_<isa>.cpp, which defines kVecBytes (the vector width in bytes)
// first; the file name picks the compile flags. Math and contracts: loss.h.
//
// Vectorisation without intrinsics: every loop runs over a fixed block of lanes with one
// independent accumulator per lane (kSumLanes doubles, kMaxLanes values of T), so the
// compiler turns each block into vector instructions without reassociating anything
// (no -ffast-math). The lanes are combined by a fixed pairwise tree, so a chunk's sum
// depends only on its data. bce and ce run on Vec<T> with the ISA's vector exp / log
// (vec_math.inl) and sum per lane in T over short blocks, then in double.
//
// Variants in this file (one per loss, each with _none, _sum and _bwd):
//   1. mse:  one pass; d = x - y in T, d*d widened to double per lane.
//   2. bce:  on vectors: max(x,0) - x t + log1p(exp(-|x|)); sums as ce's.
//   3. ce:   per row: lane max (pass 1), exp(x - max) on vectors, summed per lane in T
//            over blocks of kExpBlock vectors and across blocks in double (pass 2);
//            backward stores exp(x - max) into grad (pass 2) and scales it (pass 3).
// Every helper lives in this ISA's namespace (ODR rule): only libm and builtins are called.

// Exponentials / losses summed per lane in T over blocks of this many vectors, the block
// sums per lane in double (bce_sum, row_sumexp).
constexpr int kExpBlock = 8;

// sum_i f(i, k)[lane] over n elements: f(i, k) gives the vector of elements i.. (k = L, or
// k < L for the tail, whose lanes >= k are not summed). Per lane in T over blocks of
// kExpBlock vectors, the block sums per lane in double, the lanes by a fixed pairwise tree:
// the result depends only on the data.
template <typename T, class F>
inline double block_sum(index_t n, F&& f) {
  using V = Vec<T>;
  using R = typename V::reg;
  constexpr int L = V::L;
  double acc[L] = {};
  T tmp[L];
  index_t i = 0;
  while (i + L <= n) {
    R s = V::zero();
    for (int b = 0; b < kExpBlock && i + L <= n; ++b, i += L) s = V::add(s, f(i, index_t(L)));
    V::store(tmp, s);
    for (int j = 0; j < L; ++j) acc[j] += double(tmp[j]);
  }
  if (i < n) {
    V::store(tmp, f(i, n - i));
    for (index_t j = 0; j < n - i; ++j) acc[j] += double(tmp[j]);
  }
  for (int w = L / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

// Accumulators: four vectors of doubles; row maxima: four vectors of T.
constexpr int kSumLanes = 4 * kVecBytes / 8;
template <typename T>
constexpr int kMaxLanes = 4 * kVecBytes / int(sizeof(T));

// log1p(u) for u >= 0 (here u = e^-|x| in [0, 1]): w = 1 + u, log1p(u) = log(w) u / (w - 1)
// (the rounding of 1 + u cancels out; Goldberg's trick), and u itself where w rounds to 1.
template <typename T>
inline typename Vec<T>::reg vlog1p_nonneg(typename Vec<T>::reg u) {
  using V = Vec<T>;
  const auto one = V::set1(T(1));
  const auto w = V::add(one, u);
  const auto d = V::sub(w, one);
  const auto r = V::div(V::mul(vlog<V>(w), u), d);
  return V::select(V::eq(d, V::zero()), u, r);
}

// Fixed pairwise tree over the lanes (kSumLanes is a power of two).
inline double lane_sum(double* acc) {
  for (int w = kSumLanes / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

// ---- 1. mse --------------------------------------------------------------------------

template <typename T>
void mse_none(T* out, const T* x, const T* y, index_t n) {
  for (index_t i = 0; i < n; ++i) {
    const T d = x[i] - y[i];
    out[i] = d * d;
  }
}

template <typename T>
double mse_sum(const T* x, const T* y, index_t n) {
  double acc[kSumLanes] = {};
  index_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes)
    for (int j = 0; j < kSumLanes; ++j) {
      const T d = x[i + j] - y[i + j];
      acc[j] += double(d * d);
    }
  for (int j = 0; i + j < n; ++j) {
    const T d = x[i + j] - y[i + j];
    acc[j] += double(d * d);
  }
  return lane_sum(acc);
}

// d/dx (x - y)^2 = 2 (x - y); scale carries the 2 (and 1/n, and a scalar grad_out).
template <typename T>
void mse_bwd(T* gx, const T* x, const T* y, const T* g, T scale, index_t n) {
  if (g) {
    for (index_t i = 0; i < n; ++i) gx[i] = scale * (x[i] - y[i]) * g[i];
  } else {
    for (index_t i = 0; i < n; ++i) gx[i] = scale * (x[i] - y[i]);
  }
}

// ---- 2. binary cross-entropy with logits ---------------------------------------------

// l = max(x, 0) - x t + log1p(exp(-|x|)), one vector (NaN in x or t propagates).
template <typename T>
inline typename Vec<T>::reg bce_vec(typename Vec<T>::reg x, typename Vec<T>::reg t) {
  using V = Vec<T>;
  const auto e = vexpm<V>(V::neg(V::abs(x)));
  return V::add(V::fnmadd(x, t, V::max(V::zero(), x)), vlog1p_nonneg<T>(e));
}

template <typename T>
void bce_none(T* out, const T* x, const T* t, index_t n) {
  using V = Vec<T>;
  index_t i = 0;
  for (; i + V::L <= n; i += V::L) V::store(out + i, bce_vec<T>(V::load(x + i), V::load(t + i)));
  if (i < n) V::storen(out + i, bce_vec<T>(V::loadn(x + i, n - i), V::loadn(t + i, n - i)), n - i);
}

template <typename T>
double bce_sum(const T* x, const T* t, index_t n) {
  using V = Vec<T>;
  return block_sum<T>(n, [&](index_t i, index_t k) {
    return k == V::L ? bce_vec<T>(V::load(x + i), V::load(t + i))
                     : bce_vec<T>(V::loadn(x + i, k), V::loadn(t + i, k));
  });
}

// d/dx = sigmoid(x) - t, with sigmoid from e = exp(-|x|): 1/(1+e) for x >= 0, e/(1+e) else.
template <typename T>
void bce_bwd(T* gx, const T* x, const T* t, const T* g, T scale, index_t n) {
  using V = Vec<T>;
  using R = typename V::reg;
  const R one = V::set1(T(1)), vs = V::set1(scale);
  auto f = [&](R xv, R tv, R gv) {
    const R e = vexpm<V>(V::neg(V::abs(xv)));
    const R r = V::div(one, V::add(one, e));
    const R sg = V::select(V::lt(xv, V::zero()), V::mul(e, r), r);
    return V::mul(V::sub(sg, tv), gv);
  };
  index_t i = 0;
  for (; i + V::L <= n; i += V::L)
    V::store(gx + i, f(V::load(x + i), V::load(t + i), g ? V::mul(vs, V::load(g + i)) : vs));
  if (i < n) {
    const index_t k = n - i;
    V::storen(gx + i, f(V::loadn(x + i, k), V::loadn(t + i, k), g ? V::mul(vs, V::loadn(g + i, k)) : vs), k);
  }
}

// ---- 3. cross-entropy over class indices -----------------------------------------------

// Row maximum (a NaN may be skipped here; it still reaches the sum of exponentials).
template <typename T>
inline T row_max(const T* x, index_t C) {
  constexpr int L = kMaxLanes<T>;
  T mx[L];
  for (int j = 0; j < L; ++j) mx[j] = -__builtin_inf();
  index_t c = 0;
  for (; c + L <= C; c += L)
    for (int j = 0; j < L; ++j) mx[j] = x[c + j] > mx[j] ? x[c + j] : mx[j];
  for (int j = 0; c + j < C; ++j) mx[j] = x[c + j] > mx[j] ? x[c + j] : mx[j];
  for (int w = L / 2; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) mx[j] = mx[j + w] > mx[j] ? mx[j + w] : mx[j];
  return mx[0];
}

// sum_c exp(x[c] - m) (block_sum); when e is not null, exp(x[c] - m) is also stored there.
template <typename T>
inline double row_sumexp(T* e, const T* x, index_t C, T m) {
  using V = Vec<T>;
  const auto vm = V::set1(m);
  return block_sum<T>(C, [&](index_t c, index_t k) {
    const bool full = k == V::L;
    const auto v = vexp<V>(V::sub(full ? V::load(x + c) : V::loadn(x + c, k), vm));
    if (e) {
      if (full) V::store(e + c, v); else V::storen(e + c, v, k);
    }
    return v;
  });
}

// l_n = (m - x[n, t_n]) + log(sum_c exp(x[n, c] - m)), m the row max.
template <typename T, typename I>
double ce_fwd(T* out, const T* x, const I* t, index_t rows, index_t C, int64_t ignore) {
  double total = 0.0;
  for (index_t n = 0; n < rows; ++n) {
    if (int64_t(t[n]) == ignore) {
      if (out) out[n] = T(0);
      continue;
    }
    const T* xn = x + n * C;
    const T m = row_max(xn, C);
    const double s = row_sumexp<T>(nullptr, xn, C, m);
    const double l = (double(m) - double(xn[t[n]])) + ::log(s);
    if (out) out[n] = T(l);
    total += l;
  }
  return total;
}

// grad[n, c] = (exp(x[n, c] - m) / s - [c == t_n]) g_n
template <typename T, typename I>
void ce_bwd(T* gx, const T* x, const I* t, const T* g, T scale, index_t rows, index_t C, int64_t ignore) {
  for (index_t n = 0; n < rows; ++n) {
    const T* xn = x + n * C;
    T* gn = gx + n * C;
    if (int64_t(t[n]) == ignore) {
      for (index_t c = 0; c < C; ++c) gn[c] = T(0);
      continue;
    }
    const T m = row_max(xn, C);
    const double s = row_sumexp(gn, xn, C, m);
    const double gv = g ? double(scale) * double(g[n]) : double(scale);
    const T k = T(gv / s);
    for (index_t c = 0; c < C; ++c) gn[c] *= k;
    gn[t[n]] -= T(gv);
  }
}

const LossKernels<float> loss_f32 = {
    mse_none<float>, mse_sum<float>, mse_bwd<float>,
    bce_none<float>, bce_sum<float>, bce_bwd<float>,
    ce_fwd<float, int32_t>, ce_fwd<float, int64_t>,
    ce_bwd<float, int32_t>, ce_bwd<float, int64_t>,
};
const LossKernels<double> loss_f64 = {
    mse_none<double>, mse_sum<double>, mse_bwd<double>,
    bce_none<double>, bce_sum<double>, bce_bwd<double>,
    ce_fwd<double, int32_t>, ce_fwd<double, int64_t>,
    ce_bwd<double, int32_t>, ce_bwd<double, int64_t>,
};
