// AVX-512 packing. The transposing cases (A row-major: rows contiguous along k; B with
// columns contiguous along k, e.g. a linear layer's weight used as W^T) go through
// in-register transposes: 16 x 16 floats or 8 x 8 doubles at a time, read in full
// vectors from each source row. Copies with a unit inner stride use (masked) vector
// moves. Everything else falls back to the portable packer.
#include "cpu/gemm/pack.h"
#include "cpu/simd/transpose_avx512.h"

#include <immintrin.h>

#include <algorithm>
#include <type_traits>

namespace nnk::cpu::avx512 {

// Vector traits for the two dtypes: L lanes, a square transpose of L x L. loadn / storen
// take plain moves when all L lanes are wanted: a copy of pack_lines on a 1024 x 1024 f64 B
// (K blocks of 512, panels of 16) took 0.74 ms with masked moves against 0.45 ms with plain
// ones from memory, 0.31 against 0.26 ms from L3 (one thread; in a whole GEMM the
// difference is inside the noise).
struct F32 {
  using T = float;
  using reg = __m512;
  static constexpr int L = 16;
  static inline reg zero() { return _mm512_setzero_ps(); }
  static inline reg loadn(const T* p, int n) {
    return n == L ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
  }
  static inline void storen(T* p, reg x, int n) {
    if (n == L) _mm512_storeu_ps(p, x); else _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), x);
  }
  static inline void transpose(reg* r) { transpose16(r); }
};
struct F64 {
  using T = double;
  using reg = __m512d;
  static constexpr int L = 8;
  static inline reg zero() { return _mm512_setzero_pd(); }
  static inline reg loadn(const T* p, int n) {
    return n == L ? _mm512_loadu_pd(p) : _mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1u), p);
  }
  static inline void storen(T* p, reg x, int n) {
    if (n == L) _mm512_storeu_pd(p, x); else _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1u), x);
  }
  static inline void transpose(reg* r) { transpose8(r); }
};

// Prefetch distance of the transposing pack, in vectors. Measured (2 threads, 4 interleaved
// rounds of builds with 0 / 4 / 8): LSTM forward T=100 (32,256,256), whose input projection
// packs x this way, 7.55-7.77 / 7.43-7.63 / 7.49-7.88 ms; gemm n=1024 f32 and f64 the same
// within noise (perf had put 3% of the LSTM forward on the loads of this loop).
constexpr index_t kPackAhead = 4;

// Transposing pack: `lines` source lines (line l starts at s + l * ls, unit stride along k),
// kc values each, into dst[p * W + l] for l < lines, zeros for lines <= l < W.
template <class V>
static void pack_transpose(typename V::T* __restrict dst, const typename V::T* s, index_t ls,
                           index_t lines, index_t kc, index_t W) {
  using R = typename V::reg;
  constexpr int L = V::L;
  for (index_t l0 = 0; l0 < W; l0 += L) {  // groups of L destination lanes
    const int nl = int(std::min<index_t>(L, W - l0));
    const int valid = int(std::clamp<index_t>(lines - l0, 0, nl));
    for (index_t p0 = 0; p0 < kc; p0 += L) {
      const int np = int(std::min<index_t>(L, kc - p0));
      // The source lines are `valid` separate streams (rows ls apart): the hardware
      // prefetcher does not keep up with so many; fetch kPackAhead vectors ahead.
      if (p0 + kPackAhead * L < kc)
        for (int l = 0; l < valid; ++l)
          _mm_prefetch(reinterpret_cast<const char*>(s + (l0 + l) * ls + p0 + kPackAhead * L), _MM_HINT_T0);
      R r[L];
      for (int l = 0; l < L; ++l)
        r[l] = l < valid ? V::loadn(s + (l0 + l) * ls + p0, np) : V::zero();
      V::transpose(r);
      for (int p = 0; p < np; ++p) V::storen(dst + (p0 + p) * W + l0, r[p], nl);
    }
  }
}

// Unit-stride pack: source line p (k index) holds n contiguous values at s + p * ps; they
// go to the panels of width W: dst[(j / W) * kc * W + p * W + j % W], zero-padded.
// Lines are taken kLineBlock at a time and, within a block, panel by panel: the reads are
// kLineBlock streams and each panel receives one contiguous run of kLineBlock * W values.
// (Walking one panel down all kc lines touches a new page per line: TLB-bound; one line
// across all panels scatters single rows into pages 64 KiB apart: also slow. Measured on a
// 2048 x 2048 float32 B: 14.6 GB/s line by line, 35+ GB/s blocked.)
constexpr index_t kLineBlock = 16;

template <class V>
static void pack_lines(typename V::T* __restrict dst, const typename V::T* s, index_t ps, index_t n,
                       index_t kc, index_t W) {
  constexpr int L = V::L;
  for (index_t p0 = 0; p0 < kc; p0 += kLineBlock) {
    const index_t pe = std::min(kc, p0 + kLineBlock);
    for (index_t j0 = 0; j0 < n; j0 += W) {
      typename V::T* d = dst + j0 * kc;
      for (index_t p = p0; p < pe; ++p) {
        const typename V::T* sp = s + p * ps + j0;
        for (index_t l0 = 0; l0 < W; l0 += L) {
          const int nl = int(std::min<index_t>(L, W - l0));
          const int valid = int(std::clamp<index_t>(n - j0 - l0, 0, nl));
          V::storen(d + p * W + l0, valid ? V::loadn(sp + l0, valid) : V::zero(), nl);
        }
      }
    }
  }
}

template <typename T>
using Traits = std::conditional_t<std::is_same_v<T, float>, F32, F64>;

template <typename T>
void pack_a(T* dst, const T* a, index_t rs, index_t cs, index_t mc, index_t kc, index_t MR) {
  if (cs != 1 && rs != 1) return generic::pack_a(dst, a, rs, cs, mc, kc, MR);
  if (rs == 1) {
    pack_lines<Traits<T>>(dst, a, cs, mc, kc, MR);
    return;
  }
  for (index_t i0 = 0; i0 < mc; i0 += MR) {
    const index_t mr = std::min(MR, mc - i0);
    pack_transpose<Traits<T>>(dst + i0 * kc, a + i0 * rs, rs, mr, kc, MR);
  }
}

template <typename T>
void pack_b(T* dst, const T* b, index_t rs, index_t cs, index_t kc, index_t nc, index_t NR) {
  if (cs != 1 && rs != 1) return generic::pack_b(dst, b, rs, cs, kc, nc, NR);
  if (cs == 1) {
    pack_lines<Traits<T>>(dst, b, rs, nc, kc, NR);
    return;
  }
  for (index_t j0 = 0; j0 < nc; j0 += NR) {
    const index_t nr = std::min(NR, nc - j0);
    pack_transpose<Traits<T>>(dst + j0 * kc, b + j0 * cs, cs, nr, kc, NR);
  }
}

template void pack_a<float>(float*, const float*, index_t, index_t, index_t, index_t, index_t);
template void pack_a<double>(double*, const double*, index_t, index_t, index_t, index_t, index_t);
template void pack_b<float>(float*, const float*, index_t, index_t, index_t, index_t, index_t);
template void pack_b<double>(double*, const double*, index_t, index_t, index_t, index_t, index_t);

}  // namespace nnk::cpu::avx512
