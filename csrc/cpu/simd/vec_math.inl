// Vectorised elementary functions, written once over the vector traits Vec<T> of one ISA.
// Included INSIDE an ISA namespace (nnk::cpu::<isa>) after that ISA's vec_<isa>.h, so every
// instance is compiled with the ISA's flags under the ISA's own names (ODR rule).
//
//   vexp(x):     x = n ln2 + r, |r| <= ln2/2 (Cody-Waite split of ln2); e^r by a polynomial
//                (float: minimax of degree 6 with c0 = c1 = 1, relative error 3e-9; double:
//                Taylor of degree 13, < 0.1 ulp); times 2^n by scale2n (one rounding, so
//                gradual underflow and overflow round once; AVX-512: vscalef).
//                x clamped to [lo, hi] just past the float/double range: e^-inf = 0,
//                e^+inf = inf; NaN propagates. vexpm(x): the same for x <= 0 (no upper clamp).
//                float: < 1.1 ulp over all float32 x (exhaustive; 0.9 with FMA).
//   vlog(x):     x = 2^e m, m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m-1)/(m+1),
//                by its series in s^2 (|s| < 0.172); denormals rescaled first.
//                log 0 = -inf, log(x < 0) = NaN, log inf = inf.
//   vsigmoid(x): e = e^-|x| in (0, 1], r = 1 / (1 + e) (rcp: the divisor is in [1, 2]);
//                x >= 0: r, x < 0: e r (no cancellation either side); sigmoid(-inf) = 0,
//                sigmoid(+inf) = 1. float: < 2.8 ulp (exhaustive).
//   vtanh(x):    |x| < 0.625: x + x z P(z), z = x^2 (P fitted at Chebyshev nodes of z,
//                degree 5 float / 11 double, < 1 ulp); else sign(x) (1 - 2 e / (1 + e)),
//                e = e^{-2|x|} in (0, 0.29]. float: < 1.4 ulp (exhaustive).
//   verf(x):     |x| < 0.875: x P(x^2); else sign(x) (1 - e^{-x^2} G(|x|)) with G = erfcx
//                fitted on [0.875, 4] (float) / [0.875, 2.75] and [2.75, 6] (double), |x|
//                clamped to the end of the fit, where erf rounds to 1. Absolute error
//                ~1 ulp of 1 (what 0.5 x (1 + erf) in gelu needs), relative near 0.
//   vgelu(x) = x Phi(x), vgauss_cdf(x, x^2) = Phi(x) = (1 + erf(x / sqrt 2)) / 2,
//                vgelu_grad(x) = Phi(x) + x phi(x) (phi by vexpm).
//                float: erf(a / sqrt 2) = 2 a P(a^2) / Q(a^2), a = |x|, one rational function
//                (degrees 6 and 5 in a^2, minimax for the absolute error on [0, 5.6]: 5.6e-9,
//                0.6 * 2^-24 with the coefficients rounded to float); gelu = x/2 + x^2 P/Q
//                capped at relu(x), and relu(x) from |x| = 5.55 on, where erf(a / sqrt 2)
//                rounds to 1 (so gelu(x) = 0 exactly for x <= -5.55). No exp, no branch.
//                Errors over all float32 x (exhaustive against double): erf part < 6.2 * 2^-24
//                absolute (the float rounding of the two Horner chains); gelu x >= 0 < 3 ulp,
//                x < 0 < 3 * 2^-24 |x| (absolute; x/2 (1 + erf) cancels there, as in torch).
//                double: verf.
// Polynomial coefficients (highest degree first) were fitted in 40-50 digit arithmetic
// (mpmath; interpolation at Chebyshev nodes, or linear-programming minimax) and checked
// on dense grids in the target dtype.

template <typename T> struct MathConst;

template <>
struct MathConst<float> {
  static constexpr float exp_lo = -104.0f, exp_hi = 89.0f;
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr float exp_c[7] = {1.381468726e-03f, 8.368725888e-03f, 4.166838899e-02f,
                                     1.666652113e-01f, 4.999999404e-01f, 1.0f, 1.0f};
  static constexpr float min_normal = 1.17549435e-38f, denorm_scale = 16777216.0f;  // 2^24
  static constexpr float denorm_bits = 24.0f, bias = 127.0f;
  static constexpr float log_c[6] = {1.0f / 11, 1.0f / 9, 1.0f / 7, 1.0f / 5, 1.0f / 3, 1.0f};
  static constexpr float tanh_p[6] = {2.292744815e-03f, -8.343945257e-03f, 2.176891826e-02f,
                                      -5.395925790e-02f, 1.333330423e-01f, -3.333333433e-01f};
  static constexpr float erf_a[6] = {-6.214585155e-04f, 5.034370814e-03f, -2.679294720e-02f,
                                     1.128249690e-01f, -3.761255443e-01f, 1.128379107e+00f};
  // G on [0.875, 4] in s = (x - 2.4375) / 1.5625.
  static constexpr float erf_b1_scale = 0.64f, erf_b1_shift = -1.56f;
  static constexpr float erf_b1[13] = {
      2.785988181e-05f, -7.316456322e-05f, 9.767006122e-05f, -2.360257931e-04f,
      6.674326141e-04f, -1.558614196e-03f, 3.469578689e-03f, -7.608887739e-03f,
      1.614824310e-02f, -3.299060091e-02f, 6.469225883e-02f, -1.211887673e-01f,
      2.155524790e-01f};
  static constexpr float erf_split = 4.0f, erf_max = 4.0f;
  // vgauss_ratio: erf(a / sqrt 2) / (2 a) ~ P(a^2) / Q(a^2) on [0, 5.6].
  static constexpr float gauss_p[7] = {
      -8.331198925e-11f, 5.603861908e-08f, 8.663776498e-06f,
      1.683228475e-04f, 4.806510638e-03f, 3.238680214e-02f,
      3.989422917e-01f};
  static constexpr float gauss_q[6] = {
      2.085778201639414e-06f, 8.222998137523379e-05f, 1.9283710051957155e-03f,
      2.835567246367234e-02f, 2.478486238988662e-01f, 1.0f};
  // erf(a / sqrt 2) > 1 - 2^-25 (rounds to 1) from gauss_cut on.
  static constexpr float gauss_cut = 5.55f;
};

template <>
struct MathConst<double> {
  static constexpr double exp_lo = -746.0, exp_hi = 710.0;
  static constexpr double log2e = 1.44269504088896340736;
  static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  static constexpr double exp_c[14] = {
      1.0 / 6227020800, 1.0 / 479001600, 1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880,
      1.0 / 40320, 1.0 / 5040, 1.0 / 720, 1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1.0, 1.0};
  static constexpr double min_normal = 2.2250738585072014e-308, denorm_scale = 18014398509481984.0;  // 2^54
  static constexpr double denorm_bits = 54.0, bias = 1023.0;
  static constexpr double log_c[12] = {1.0 / 23, 1.0 / 21, 1.0 / 19, 1.0 / 17, 1.0 / 15, 1.0 / 13,
                                       1.0 / 11, 1.0 / 9,  1.0 / 7,  1.0 / 5,  1.0 / 3,  1.0};
  static constexpr double tanh_p[12] = {
      6.485163482793113e-06, -3.12011014257974e-05, 9.257116129556769e-05,
      -0.0002375906496055562, 0.0005896606577757043, -0.0014557754120478055,
      0.0035921217511549622, -0.008863235103240878, 0.021869488519008305,
      -0.05396825396789699, 0.13333333333333042, -0.3333333333333333};
  static constexpr double erf_a[11] = {
      1.0471034556935036e-08, -1.5624735838207127e-07, 1.6388270378106895e-06,
      -1.492102315426167e-05, 0.00012055145523632907, -0.0008548322128192329,
      0.005223977545559434, -0.026866170637514133, 0.1128379167091783, -0.3761263890318304,
      1.1283791670955126};
  // G on [0.875, 2.75] in s = (x - 1.8125) / 0.9375.
  static constexpr double erf_b1_scale = 1.0 / 0.9375, erf_b1_shift = -1.8125 / 0.9375;
  static constexpr double erf_b1[19] = {
      7.664789030490888e-11, -3.3749104082973595e-10, 1.094253297902406e-09,
      -4.576064781513318e-09, 1.9451516542799877e-08, -7.807086128518653e-08,
      3.0519852800079935e-07, -1.1660885218698206e-06, 4.338325109001326e-06,
      -1.5685286506545197e-05, 5.5004991752908804e-05, -0.00018665141524317445,
      0.000611193262725209, -0.001924927763718052, 0.005807733343107856,
      -0.016703634543051772, 0.04550951332417537, -0.11649259538034157, 0.27699873067305275};
  // G on [2.75, 6] in s = (x - 4.375) / 1.625.
  static constexpr double erf_b2_scale = 1.0 / 1.625, erf_b2_shift = -4.375 / 1.625;
  static constexpr double erf_b2[17] = {
      1.325007914800236e-09, -4.781030615645241e-09, 1.1422344147229973e-08,
      -3.9791756263006144e-08, 1.4668062779477248e-07, -4.997242056100135e-07,
      1.6703604023175495e-06, -5.532593054413013e-06, 1.8062522029081354e-05,
      -5.806050878349137e-05, 0.0001836764970665923, -0.00057146904829242,
      0.0017472445949430575, -0.0052451559095092444, 0.015444930442392925,
      -0.04456200188262713, 0.12582358819498807};
  static constexpr double erf_split = 2.75, erf_max = 6.0;
};

// sum_i c[i] x^(N-1-i) by Horner's rule.
template <class V, int N>
static inline typename V::reg vpoly(const typename V::T (&c)[N], typename V::reg x) {
  typename V::reg p = V::set1(c[0]);
#pragma GCC unroll 24
  for (int i = 1; i < N; ++i) p = V::fmadd(p, x, V::set1(c[i]));
  return p;
}

// e^xc for xc already clamped to [exp_lo, exp_hi] (or NaN).
template <class V>
static inline typename V::reg vexp_core(typename V::reg xc) {
  using K = MathConst<typename V::T>;
  using R = typename V::reg;
  const R n = V::round(V::mul(xc, V::set1(K::log2e)));
  R r = V::fnmadd(n, V::set1(K::ln2_hi), xc);
  r = V::fnmadd(n, V::set1(K::ln2_lo), r);
  return V::scale2n(vpoly<V>(K::exp_c, r), n);
}

template <class V>
static inline typename V::reg vexp(typename V::reg x) {
  using K = MathConst<typename V::T>;
  // max/min return their second operand on NaN, so the clamp keeps NaN.
  return vexp_core<V>(V::min(V::set1(K::exp_hi), V::max(V::set1(K::exp_lo), x)));
}

// e^x for x <= 0 (or NaN).
template <class V>
static inline typename V::reg vexpm(typename V::reg x) {
  using K = MathConst<typename V::T>;
  return vexp_core<V>(V::max(V::set1(K::exp_lo), x));
}

template <class V>
static inline typename V::reg vlog(typename V::reg x) {
  using T = typename V::T;
  using K = MathConst<T>;
  using R = typename V::reg;
  const R one = V::set1(T(1));
  const auto den = V::lt(x, V::set1(K::min_normal));
  const R xs = V::select(den, V::mul(x, V::set1(K::denorm_scale)), x);
  R e = V::sub(V::exponent(xs), V::set1(K::bias));
  e = V::select(den, V::sub(e, V::set1(K::denorm_bits)), e);
  R m = V::mantissa(xs);
  const auto big = V::gt(m, V::set1(T(1.41421356237309504880)));
  m = V::select(big, V::mul(m, V::set1(T(0.5))), m);
  e = V::select(big, V::add(e, one), e);
  const R f = V::sub(m, one);
  const R s = V::div(f, V::add(m, one));
  const R s2 = V::mul(s, s);
  const R p = vpoly<V>(K::log_c, s2);
  const R lm = V::mul(V::add(s, s), p);
  R r = V::fmadd(e, V::set1(K::ln2_hi), V::fmadd(e, V::set1(K::ln2_lo), lm));
  const T inf = T(1) / T(0);
  r = V::select(V::mask_or(V::lt(x, V::zero()), V::isnan(x)), V::set1(inf - inf), r);
  r = V::select(V::eq(x, V::zero()), V::set1(-inf), r);
  return V::select(V::eq(x, V::set1(inf)), x, r);
}

template <class V>
static inline typename V::reg vsigmoid(typename V::reg x) {
  using T = typename V::T;
  using R = typename V::reg;
  const R e = vexpm<V>(V::neg(V::abs(x)));
  const R r = V::rcp(V::add(V::set1(T(1)), e));
  return V::select(V::lt(x, V::zero()), V::mul(e, r), r);
}

template <class V>
static inline typename V::reg vtanh(typename V::reg x) {
  using T = typename V::T;
  using K = MathConst<T>;
  using R = typename V::reg;
  const R a = V::abs(x);
  const R z = V::mul(x, x);
  const R small = V::fmadd(V::mul(x, z), vpoly<V>(K::tanh_p, z), x);
  const R e = vexpm<V>(V::mul(V::set1(T(-2)), a));
  const R r = V::rcp(V::add(V::set1(T(1)), e));
  const R big = V::copysign(V::fnmadd(V::add(e, e), r, V::set1(T(1))), x);
  return V::select(V::lt(a, V::set1(T(0.625))), small, big);
}

template <class V>
static inline typename V::reg verf(typename V::reg x) {
  using T = typename V::T;
  using K = MathConst<T>;
  using R = typename V::reg;
  const R a = V::abs(x);
  const R small = V::mul(x, vpoly<V>(K::erf_a, V::mul(x, x)));
  const R ac = V::min(V::set1(K::erf_max), a);
  const R e = vexp<V>(V::neg(V::mul(ac, ac)));
  R g = vpoly<V>(K::erf_b1, V::fmadd(ac, V::set1(K::erf_b1_scale), V::set1(K::erf_b1_shift)));
  if constexpr (sizeof(T) == 8) {
    const R g2 = vpoly<V>(K::erf_b2, V::fmadd(ac, V::set1(K::erf_b2_scale), V::set1(K::erf_b2_shift)));
    g = V::select(V::lt(ac, V::set1(K::erf_split)), g, g2);
  }
  const R big = V::copysign(V::fnmadd(e, g, V::set1(T(1))), x);
  return V::select(V::lt(a, V::set1(T(0.875))), small, big);
}

// float: erf(a / sqrt 2) / (2 a) ~ P(s) / Q(s) for s = a^2, a < gauss_cut.
template <class V>
static inline typename V::reg vgauss_ratio(typename V::reg s) {
  using K = MathConst<float>;
  return V::mul(vpoly<V>(K::gauss_p, s), V::rcp(vpoly<V>(K::gauss_q, s)));
}

// Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal CDF, given s = x^2 too.
template <class V>
static inline typename V::reg vgauss_cdf(typename V::reg x, typename V::reg s) {
  using T = typename V::T;
  using R = typename V::reg;
  const R half = V::set1(T(0.5));
  if constexpr (sizeof(T) == 4) {
    // Lanes with |x| >= gauss_cut (or NaN) take 1/2 from the select: whatever the rational
    // gives there (inf * 0 = NaN for |x| = inf) is discarded.
    const R a = V::abs(x);
    const R e = V::min(half, V::mul(a, vgauss_ratio<V>(s)));  // erf(a / sqrt 2) / 2
    return V::add(half, V::copysign(V::select(V::lt(a, V::set1(MathConst<T>::gauss_cut)), e, half), x));
  } else {
    (void)s;
    return V::fmadd(half, verf<V>(V::mul(x, V::set1(T(0.70710678118654752440)))), half);
  }
}

// gelu(x) = x Phi(x).
template <class V>
static inline typename V::reg vgelu(typename V::reg x) {
  using T = typename V::T;
  using R = typename V::reg;
  const R half = V::set1(T(0.5));
  if constexpr (sizeof(T) == 4) {
    // x/2 + |x|/2 erf(|x| / sqrt 2) = x/2 + x^2 P/Q, at most relu(x) (so exactly 0 or x once
    // erf rounds to 1, and never of the wrong sign); relu(x) itself from |x| = gauss_cut on.
    // relu(x) as x - min(0, x): NaN for x = -inf (-inf * 0, as torch) and for NaN.
    const R relu = V::sub(x, V::min(V::zero(), x));
    const R s = V::mul(x, x);
    const R y = V::min(V::fmadd(s, vgauss_ratio<V>(s), V::mul(half, x)), relu);
    return V::select(V::lt(V::abs(x), V::set1(MathConst<T>::gauss_cut)), y, relu);
  } else {
    const R h = V::mul(half, x);
    return V::fmadd(h, verf<V>(V::mul(x, V::set1(T(0.70710678118654752440)))), h);
  }
}

// gelu'(x) = Phi(x) + x phi(x), phi(x) = e^{-x^2/2} / sqrt(2 pi) = e^{-x^2/2 - log sqrt(2 pi)}.
template <class V>
static inline typename V::reg vgelu_grad(typename V::reg x) {
  using T = typename V::T;
  using R = typename V::reg;
  const R half = V::set1(T(0.5));
  const R s = V::mul(x, x);
  const R pdf = vexpm<V>(V::fnmadd(half, s, V::set1(T(-0.91893853320467274178))));
  return V::fmadd(x, pdf, vgauss_cdf<V>(x, s));
}
