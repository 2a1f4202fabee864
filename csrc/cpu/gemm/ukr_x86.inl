// Register-blocked x86 micro-kernel template (the contract is in ukr.h).
// Included inside an ISA namespace (nnk::cpu::avx2 / nnk::cpu::avx512) after that ISA's
// vector traits (cpu/simd/vec_<isa>.h): V = Vec<float> or Vec<double>, using
//   T, reg, L (lanes), zero(), set1, load, loadn(p, lanes), store, storen(p, x, lanes),
//   fmadd, mul, add, max(a, b) (b when either is NaN: max(0, x) is a NaN-propagating relu).
// MR rows x NV vectors (NR = NV * L). acc[MR][NV] lives in registers: every loop over
// i / v is unrolled at compile time, so no accumulator index is ever a runtime value.
// The numbered variants in this template:
//   1. packed A (rs_a = 1, cs_a = MR): one broadcast load per row per k. Also any A with
//      rs_a = 1 whose tile has all MR rows (for example a transposed matrix read in place):
//      the same body with cs_a as the step from one k to the next.
//   2. strided A (small-matrix path): row pointers clamped to row m - 1 so no row past m is read.
//   Packed A tails of at most MR/2 (MR/4) rows run the body with fewer rows (cs_a: panel
//   stride), and tails of at most L columns with one vector.
//   Either with full-width B loads (n == NR) or masked B loads (n < NR, unpacked B safe).

template <class V, int MR, int NV, bool PackedA, bool FullN>
static inline void ukr_body(index_t kc, const typename V::T* __restrict a, index_t rs_a,
                            index_t cs_a, const typename V::T* __restrict b, index_t ldb,
                            typename V::T* __restrict c, index_t ldc, index_t m, index_t n,
                            const UkrEpilogue<typename V::T>& ep) {
  using T = typename V::T;
  using R = typename V::reg;
  constexpr int L = V::L;
  R acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();

  // Prefetch the C tile: its rows are far apart and the epilogue would otherwise stall
  // on them (BLIS does the same at the top of its kernels).
  if (ep.beta != T(0)) {
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      if (i >= m) break;
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + NV * L - 1), _MM_HINT_T0);
    }
  }

  int lanes[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    index_t l = n - index_t(v) * L;
    lanes[v] = l <= 0 ? 0 : (l >= L ? L : int(l));
  }

  if (PackedA) {
#pragma GCC unroll 2
    for (index_t p = 0; p < kc; ++p) {
      R bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v)
        bv[v] = FullN ? V::load(b + v * L) : V::loadn(b + v * L, lanes[v]);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) {
        R ai = V::set1(a[i]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(ai, bv[v], acc[i][v]);
      }
      a += cs_a;
      b += ldb;
    }
  } else {
    const T* ap[MR];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) ap[i] = a + (i < m ? i : m - 1) * rs_a;
    for (index_t p = 0; p < kc; ++p) {
      R bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v)
        bv[v] = FullN ? V::load(b + v * L) : V::loadn(b + v * L, lanes[v]);
      const index_t off = p * cs_a;
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i) {
        R ai = V::set1(ap[i][off]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[i][v] = V::fmadd(ai, bv[v], acc[i][v]);
      }
      b += ldb;
    }
  }

  // Epilogue: alpha, beta, biases, relu; stored once.
  const R valpha = V::set1(ep.alpha);
  const R vbeta = V::set1(ep.beta);
  const bool read_c = ep.beta != T(0);
  const bool relu = ep.act == Act::relu;
  R bn[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v)
    bn[v] = ep.bias_n ? (FullN ? V::load(ep.bias_n + v * L) : V::loadn(ep.bias_n + v * L, lanes[v]))
                      : V::zero();
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    T* ci = c + i * ldc;
    R bm = ep.bias_m ? V::set1(ep.bias_m[i]) : V::zero();
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      if (!FullN && lanes[v] == 0) break;
      R x = V::mul(acc[i][v], valpha);
      if (read_c) x = V::fmadd(vbeta, FullN ? V::load(ci + v * L) : V::loadn(ci + v * L, lanes[v]), x);
      x = V::add(x, V::add(bm, bn[v]));
      if (relu) x = V::max(V::zero(), x);
      if (FullN) V::store(ci + v * L, x); else V::storen(ci + v * L, x, lanes[v]);
    }
  }
  if (ep.act != Act::none && !relu) ep.act_tile(c, ldc, m, n, ep.act, ep.act_param);
}

// The body with MR, MR2 or MR4 rows (the fewest that cover m) and NVr vectors, A packed or
// strided (rows of a smaller body: the same panel layout, or the same strides).
template <class V, int MR, int MR2, int MR4, int NVr, bool PackedA>
static inline void ukr_rows(index_t kc, const typename V::T* a, index_t rs_a, index_t cs_a,
                            const typename V::T* b, index_t ldb, typename V::T* c, index_t ldc,
                            index_t m, index_t n, const UkrEpilogue<typename V::T>& ep) {
  constexpr index_t NRr = index_t(NVr) * V::L;
  const bool full = n == NRr;
  if (m <= MR4 && MR4 < MR2) {
    if (full) ukr_body<V, MR4, NVr, PackedA, true>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
    else ukr_body<V, MR4, NVr, PackedA, false>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
  } else if (m <= MR2 && MR2 < MR) {
    if (full) ukr_body<V, MR2, NVr, PackedA, true>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
    else ukr_body<V, MR2, NVr, PackedA, false>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
  } else {
    if (full) ukr_body<V, MR, NVr, PackedA, true>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
    else ukr_body<V, MR, NVr, PackedA, false>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
  }
}

template <class V, int MR, int NV>
static void ukr_entry(index_t kc, const typename V::T* a, index_t rs_a, index_t cs_a,
                      const typename V::T* b, index_t ldb, typename V::T* c, index_t ldc,
                      index_t m, index_t n, const UkrEpilogue<typename V::T>& ep) {
  // Tails run a kernel of fewer rows (m <= MR/2 or <= MR/4, on the same panel layout) or,
  // packed, of one vector (n <= L): M = 64 with MR = 14 is 4 full tiles and one of 8
  // rows, N = 196 with NR = 32 ends in a panel of 4 columns, and each would otherwise cost
  // as much as a full tile.
  constexpr int MR2 = (MR / 2 + 1) & ~1, MR4 = (MR / 4 + 1) & ~1;
  const bool packed = rs_a == 1 && (cs_a == MR || m == MR);
  if (!packed) {
    ukr_rows<V, MR, MR2, MR4, NV, false>(kc, a, rs_a, cs_a, b, ldb, c, ldc, m, n, ep);
    return;
  }
  if (NV > 1 && n <= V::L) {
    ukr_rows<V, MR, MR2, MR4, 1, true>(kc, a, 1, cs_a, b, ldb, c, ldc, m, n, ep);
    return;
  }
  ukr_rows<V, MR, MR2, MR4, NV, true>(kc, a, 1, cs_a, b, ldb, c, ldc, m, n, ep);
}
