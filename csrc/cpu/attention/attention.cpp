// Scaled dot-product attention drivers (maths in attention.h).
//
//   1. Forward (FlashAttention): one task per (output batch element b, block of BM queries).
//      The query block is packed once as the GEMM A operand; for each block of BN keys:
//      S = scale Q K^T on the micro-kernel (K^T packed as B straight from K's strides),
//      masks applied on the tile (per-ISA loops), online softmax (attn_kernels.inl: running
//      max m and sum l, P = exp(S - m), O rows rescaled by exp(m_old - m)), and O += P V on
//      the micro-kernel with P read in place (its strided-A form). At the end O / l and
//      lse = m + log l are stored. Causal: key blocks past the block's last query are never
//      touched, and a tile that crosses the diagonal is computed per MR-row panel only up to
//      that panel's last key. A boolean mask shared by every query (key padding) ends each
//      tile at its last kept key and skips tiles it masks out entirely (keys_kept; also in
//      the backward). Extra memory: O(BM (E + Ev + BN)) per thread, whatever L and S.
//   2. Backward (FlashAttention-2), one pass, P recomputed from lse, no L x S buffer: one
//      task per (kv batch element, part of its key blocks); for each key block it loops over
//      the output batch elements of its group and the query blocks: S, P, dP = dO V^T,
//      dV += P^T dO, dS = P o (dP - D), dK += scale dS^T Q, and dQ_part += scale dS K into
//      the part's own partial of dQ (O(L E) per part; parts: kBwdTasks in all when the groups
//      are few, so that the threads are busy even with batch x heads = 1). The partials are
//      summed in a fixed order at the end (P and dS are read in place by the micro-kernel,
//      transposed through their strides). D = rowsum(dO o O) is computed first. Each
//      gradient block has exactly one owner task and a fixed order of accumulation, and the
//      parts depend on the sizes only: deterministic and independent of the thread count.
//      (Five products per tile; an earlier two-pass form recomputed S and dP for dQ: seven.)
// Backward tasks are dealt round-robin to min(threads, tasks) chunks; forward tasks are
// claimed dynamically (longest first when causal). Packed
// blocks of K, V (forward) and of Q, dO (backward) are kept per chunk while
// consecutive tasks use the same batch element (PackCache), so each is packed about once
// per thread instead of once per task.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

#include "core/errors.h"
#include "core/mempool.h"
#include "core/parallel.h"
#include "cpu/attention/attention.h"
#include "cpu/attention/attn_isa.h"
#include "cpu/gemm/ukr.h"

namespace nnk {

namespace {

constexpr index_t kQueryBlock = 64;     // rows per query block (rounded up to a multiple of MR)
constexpr index_t kKeyBlockFwd = 256;   // keys per block in the forward (a multiple of every NR)
constexpr index_t kKeyBlockBwd = 128;   // keys per block in the backward (more tasks)
constexpr index_t kBwdTasks = 16;       // backward tasks when the kv groups are few (parts per group)
constexpr index_t kMaxPartialBytes = index_t(64) << 20;  // bound on the backward's partial dQ sums

template <typename T>
const AttnIsaKernels<T>& tiles(Isa isa) {
#if defined(NNK_X86)
  if (isa == Isa::avx512) return cpu::avx512::attn_kernels(T());
  if (isa == Isa::avx2) return cpu::avx2::attn_kernels(T());
#endif
  return cpu::generic::attn_kernels(T());
}

// One 64-byte aligned block carved into sub-buffers (per chunk of work).
template <typename T>
class Arena {
 public:
  explicit Arena(const std::vector<index_t>& sizes) {
    index_t total = 0;
    for (index_t s : sizes) total += round_up(std::max<index_t>(s, 1), 16);
    base_ = static_cast<T*>(std::aligned_alloc(64, size_t(round_up(total * index_t(sizeof(T)), 64))));
    if (!base_) throw std::bad_alloc();
    T* p = base_;
    for (index_t s : sizes) {
      parts_.push_back(p);
      p += round_up(std::max<index_t>(s, 1), 16);
    }
  }
  ~Arena() { std::free(base_); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  T* operator[](size_t i) const { return parts_[i]; }

 private:
  T* base_ = nullptr;
  std::vector<T*> parts_;
};

// Packed operand blocks of one source (one batch element's K, V, Q or dO), kept across the
// tasks of a chunk: a block is packed the first time it is asked for, until the owner (the
// source's offsets) changes. Holding every block of a source costs O(S E) per thread; past
// kMaxCacheBytes it holds one block and packs on every call.
constexpr index_t kMaxCacheBytes = index_t(16) << 20;

template <typename T>
class PackCache {
 public:
  PackCache(index_t nblocks, index_t block_elems)
      : elems_(std::max<index_t>(block_elems, 1)),
        all_(nblocks * elems_ * index_t(sizeof(T)) <= kMaxCacheBytes),
        buf_(size_t(all_ ? nblocks * elems_ : elems_)),
        valid_(size_t(all_ ? nblocks : 0), 0) {}
  template <class F>
  const T* get(index_t owner0, index_t owner1, index_t blk, F pack) {
    if (!all_) {
      pack(buf_.data());
      return buf_.data();
    }
    if (owner0 != o0_ || owner1 != o1_) {
      o0_ = owner0;
      o1_ = owner1;
      std::fill(valid_.begin(), valid_.end(), 0);
    }
    T* dst = buf_.data() + blk * elems_;
    if (!valid_[size_t(blk)]) {
      pack(dst);
      valid_[size_t(blk)] = 1;
    }
    return dst;
  }

 private:
  index_t elems_;
  bool all_;
  std::vector<T> buf_;
  std::vector<char> valid_;
  index_t o0_ = -1, o1_ = -1;
};

// Products on the micro-kernel (contract in ukr.h) of operands packed or read in place.
//   A (rows x k): row panel i at p + i step, element (r, kk) at + r rs + kk cs. Packed (pa):
//     rs = 1, cs = MR, step = the packing's k. In place: step = rs (the strided-A form).
//   B (k x cols): column panel j (a multiple of NR) at p + j step, row kk at + kk ld, unit
//     column stride. Packed (pb): ld = NR, step = the packing's rows. In place: step = 1.
// Causal tiles (d = i0 - j0, the offset of the tile's first query from its first key) limit
// each MR-row panel i to part of the product (Lim): the NR-column panels that start before
// lim(i, n, d), the last key its last query sees (S, dP: the rest is masked to -inf by
// apply_mask); k up to lim(i, k, d) (P V, dS K: P and dS are 0 past it); or, with rows =
// keys, k from clamp(i - d, 0, k) (P^T dO, dS^T Q: the queries before it see none of the
// panel's keys).
template <typename T>
struct Mm {
  const GemmKernel<T>& g;
  struct A { const T* p; index_t step, rs, cs; };
  struct B { const T* p; index_t step, ld; };
  enum class Lim { none, cols, k_to, k_from };
  A packed_a(const T* p, index_t k) const { return {p, k, 1, g.MR}; }
  static A rows_a(const T* p, index_t rs, index_t cs) { return {p, rs, rs, cs}; }
  B packed_b(const T* p, index_t rows) const { return {p, rows, g.NR}; }
  static B rows_b(const T* p, index_t ld) { return {p, 1, ld}; }
  index_t lim(index_t i, index_t n, index_t d) const {
    return std::min(n, std::max<index_t>(0, i + g.MR + d));
  }
  // C (m x n, row stride ldc) := alpha A B + beta C over k.
  void operator()(index_t m, index_t n, index_t k, A a, B b, T* c, index_t ldc, T alpha, T beta,
                  Lim lm = Lim::none, index_t d = 0) const {
    UkrEpilogue<T> ep;
    ep.alpha = alpha;
    ep.beta = beta;
    ep.act_tile = g.act_tile;
    for (index_t j = 0; j < n; j += g.NR) {  // one B micro-panel stays in L1
      const T* bj = b.p + j * b.step;
      const index_t nr = std::min(g.NR, n - j);
      for (index_t i = 0; i < m; i += g.MR) {
        index_t ks = 0, ke = k;
        if (lm == Lim::cols && lim(i, n, d) <= j) continue;
        if (lm == Lim::k_to) ke = lim(i, k, d);
        if (lm == Lim::k_from) ks = std::min(k, std::max<index_t>(0, i - d));
        if (ke <= ks) continue;
        g.ukr(ke - ks, a.p + i * a.step + ks * a.cs, a.rs, a.cs, bj + ks * b.ld, b.ld, c + i * ldc + j,
              ldc, std::min(g.MR, m - i), nr, ep);
      }
    }
  }
  // A operand: rows x cols of src (strides rs, cs) -> MR-row panels.
  void pa(T* dst, const T* src, index_t rs, index_t cs, index_t rows, index_t cols) const {
    g.pack_a(dst, src, rs, cs, rows, cols, g.MR);
  }
  // B operand: rows x cols of src (strides rs, cs) -> NR-column panels.
  void pb(T* dst, const T* src, index_t rs, index_t cs, index_t rows, index_t cols) const {
    g.pack_b(dst, src, rs, cs, rows, cols, g.NR);
  }
};

// Masks of the tile s (m x n) of queries i0.., keys j0.. for output batch element b.
template <typename T>
void apply_mask(const AttnIsaKernels<T>& tk, const AttnParams& p, index_t b, T* s, index_t lds,
                index_t i0, index_t m, index_t j0, index_t n) {
  const T ninf = -std::numeric_limits<T>::infinity();
  if (p.mask_kind != AttnMask::none) {
    const bool boolean = p.mask_kind == AttnMask::boolean;
    const index_t esz = boolean ? 1 : index_t(sizeof(T));
    const char* mk = static_cast<const char*>(p.mask) + (p.off_mask[b] + i0 * p.rs_mask + j0 * p.cs_mask) * esz;
    tk.mask_tile(s, lds, m, n, mk, p.rs_mask, p.cs_mask, boolean);
  }
  if (p.causal && j0 + n - 1 > i0) {  // query i sees keys j <= i
    for (index_t i = 0; i < m; ++i) {
      T* sr = s + i * lds;
      for (index_t j = std::max<index_t>(0, i0 + i + 1 - j0); j < n; ++j) sr[j] = ninf;
    }
  }
}

index_t query_block(index_t MR) { return round_up(kQueryBlock, MR); }

// A boolean mask that is the same for every query of batch element b (a key-padding mask:
// broadcast over L, or L = 1): the keys [j0, j0 + n) end at the last one it keeps. Returns
// how many to compute (0: every key of the tile is masked out, the tile is skipped; its
// probabilities would all be 0). Any other mask: n.
index_t keys_kept(const AttnParams& p, index_t b, index_t j0, index_t n) {
  if (p.mask_kind != AttnMask::boolean || !(p.rs_mask == 0 || p.L == 1)) return n;
  const uint8_t* mk = static_cast<const uint8_t*>(p.mask) + p.off_mask[b] + j0 * p.cs_mask;
  for (index_t j = n; j > 0; --j)
    if (mk[(j - 1) * p.cs_mask]) return j;
  return 0;
}

template <typename T>
void fwd_impl(Isa isa, const AttnParams& p, T* out, T* lse) {
  const GemmKernel<T>& g = gemm_kernel<T>(isa);
  const AttnIsaKernels<T>& tk = tiles<T>(isa);
  const Mm<T> mm{g};
  const index_t L = p.L, S = p.S, E = p.E, Ev = p.Ev, MR = g.MR, NR = g.NR;
  const index_t BM = query_block(MR), BN = kKeyBlockFwd;
  const index_t nqb = ceil_div(L, BM), nkb = ceil_div(S, BN);
  const index_t ntask = p.NB * nqb;
  if (ntask == 0) return;
  const index_t nchunks = std::min<index_t>(get_num_threads(), ntask);
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const T scale = T(p.scale);
  const T ninf = -std::numeric_limits<T>::infinity();

  // Tasks are claimed one at a time by whichever thread is free (each task owns its rows of
  // the output, so the bits do not depend on who runs it), batch element by batch element,
  // and with a causal mask the longest (last) query blocks first: no thread is left with the
  // long tail that a fixed deal of causal tasks gives. With many batch elements a claim takes
  // all query blocks of one batch element, so that its K and V are packed by one thread only.
  const index_t unit = p.NB >= 4 * nchunks ? nqb : 1;
  std::atomic<index_t> next{0};
  parallel_run(nchunks, [&](index_t) {
    // 0 S (then P, read in place as the A operand of P V), 1 O, 2 m, 3 l, 4 corr
    Arena<T> ws({BM * BN, BM * Ev, BM, BM, BM});
    T *Sb = ws[0], *O = ws[1];
    T *mrow = ws[2], *lrow = ws[3], *corr = ws[4];
    // Q (the A of S) and V with unit column stride (the B of P V) are read in place; K^T is
    // packed (and V when its columns are strided)
    const bool v_in_place = p.cs_v == 1;
    PackCache<T> kc(nkb, E * BN), vc(v_in_place ? 0 : nkb, BN * round_up(Ev, NR));
    auto task = [&](index_t t) {
      const index_t qb = p.causal ? nqb - 1 - t % nqb : t % nqb;
      const index_t b = t / nqb, i0 = qb * BM, m = std::min(BM, L - i0);
      const auto qa = Mm<T>::rows_a(q + p.off_q[b] + i0 * p.rs_q, p.rs_q, p.cs_q);
      std::fill(O, O + m * Ev, T(0));
      std::fill(mrow, mrow + m, ninf);
      std::fill(lrow, lrow + m, T(0));
      const index_t kend = p.causal ? std::min(S, i0 + m) : S;
      for (index_t j0 = 0; j0 < kend; j0 += BN) {
        const index_t nf = std::min(BN, S - j0), jb = j0 / BN;
        const index_t n = keys_kept(p, b, j0, std::min(BN, kend - j0));
        if (n == 0) continue;
        // S = scale Q K^T: B[e][j] = K[j0 + j][e] (whole blocks packed, nf columns)
        const T* Kp = kc.get(p.off_k[b], 0, jb, [&](T* dst) {
          mm.pb(dst, k + p.off_k[b] + j0 * p.rs_k, p.cs_k, p.rs_k, E, nf);
        });
        // a causal tile that crosses the diagonal is computed per row panel up to its last key
        const bool tri = p.causal && j0 + n > i0 + 1;
        const index_t d = i0 - j0;
        using Lim = typename Mm<T>::Lim;
        mm(m, n, E, qa, mm.packed_b(Kp, E), Sb, BN, scale, T(0), tri ? Lim::cols : Lim::none, d);
        apply_mask(tk, p, b, Sb, BN, i0, m, j0, n);
        if (tri) {
          for (index_t i = 0; i < m; i += MR)
            tk.softmax_tile(Sb + i * BN, BN, std::min(MR, m - i), mm.lim(i, n, d), mrow + i, lrow + i, corr + i);
        } else {
          tk.softmax_tile(Sb, BN, m, n, mrow, lrow, corr);
        }
        for (index_t i = 0; i < m; ++i) {
          if (corr[i] == T(1)) continue;
          T* o = O + i * Ev;
          for (index_t e = 0; e < Ev; ++e) o[e] *= corr[i];
        }
        // O += P V
        const T* vb = v + p.off_v[b] + j0 * p.rs_v;
        const auto bv = v_in_place ? Mm<T>::rows_b(vb, p.rs_v)
                                   : mm.packed_b(vc.get(p.off_v[b], 0, jb, [&](T* dst) {
                                       mm.pb(dst, vb, p.rs_v, p.cs_v, nf, Ev);
                                     }), nf);
        mm(m, Ev, n, Mm<T>::rows_a(Sb, BN, 1), bv, O, Ev, T(1), T(1), tri ? Lim::k_to : Lim::none, d);
      }
      for (index_t i = 0; i < m; ++i) {
        T* dst = out + (b * L + i0 + i) * Ev;
        const T l = lrow[i];
        if (l == T(0)) {
          std::fill(dst, dst + Ev, T(0));
          if (lse) lse[b * L + i0 + i] = ninf;
          continue;
        }
        const T inv = T(1) / l;
        for (index_t e = 0; e < Ev; ++e) dst[e] = O[i * Ev + e] * inv;
        if (lse) lse[b * L + i0 + i] = mrow[i] + std::log(l);
      }
    };
    for (;;) {
      const index_t t0 = next.fetch_add(1, std::memory_order_relaxed) * unit;
      if (t0 >= ntask) break;
      for (index_t t = t0; t < std::min(ntask, t0 + unit); ++t) task(t);
    }
  });
}

template <typename T>
void bwd_impl(Isa isa, const AttnParams& p, const T* dout, const T* out, const T* lse,
              const AttnGroups& qg, const AttnGroups& kvg, T* dq, T* dk, T* dv) {
  const GemmKernel<T>& g = gemm_kernel<T>(isa);
  const AttnIsaKernels<T>& tk = tiles<T>(isa);
  const Mm<T> mm{g};
  const index_t L = p.L, S = p.S, E = p.E, Ev = p.Ev, MR = g.MR, NR = g.NR;
  const index_t BM = query_block(MR), BN = kKeyBlockBwd;
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const T scale = T(p.scale);
  const index_t NT = get_num_threads();

  // D_i = sum_e dO[i, e] O[i, e]
  std::vector<T> Dv(size_t(p.NB * L));
  T* D = Dv.data();
  parallel_for(p.NB * L, std::max<index_t>(1, 4096 / std::max<index_t>(Ev, 1)), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      T acc = 0;
      for (index_t e = 0; e < Ev; ++e) acc += dout[r * Ev + e] * out[r * Ev + e];
      D[r] = acc;
    }
  });

  const index_t rE = round_up(E, NR), rEv = round_up(Ev, NR);

  const index_t nqb = ceil_div(L, BM), nkb = ceil_div(S, BN);

  // One pass: tasks (kv group gi, part pt); part pt of a group owns its key blocks
  // jb = pt, pt + P, ... (interleaved, which balances causal work) and, for them, loops over
  // the group's output batch elements and query blocks: S, P, dP = dO V^T, dV += P^T dO,
  // dS = P o (dP - D), dK += scale dS^T Q (dK, dV blocks: one owner), and
  // dQ_part += scale dS K into the part's own partial of dQ, summed over the parts (and the
  // b of a q group) in a fixed order at the end. P depends on the sizes only (kTasks tasks
  // in all when the groups are few), so the bits do not depend on the thread count.
  // Parts per group: kBwdTasks tasks in all, while the partials stay under kMaxPartialBytes
  // (at least 2 parts, so that two threads share a single group's work).
  const index_t dq_bytes = std::max<index_t>(1, p.NB * L * E * index_t(sizeof(T)));
  const index_t P = std::max<index_t>(1, std::min<index_t>(
      {nkb, ceil_div(kBwdTasks, std::max<index_t>(kvg.n, 1)), std::max<index_t>(2, kMaxPartialBytes / dq_bytes)}));
  const index_t ntask = kvg.n * P;
  // Partial dQ, [b][part] (L x E): each task zeroes and fills the parts of its group's b.
  const PoolBuffer<T> dqp_buf = pool_buffer<T>(checked_mul(p.NB * P, L * E, "attention backward"), "attention backward");
  T* dqp = dqp_buf.get();
  if (ntask > 0) {
    const index_t nchunks = std::min(NT, ntask);
    parallel_run(nchunks, [&](index_t c) {
      // 0 Kp, 1 Vp, 2 S (then P), 3 dP (then dS), 4 Kb
      Arena<T> ws({E * BN, Ev * BN, BM * BN, BM * BN, BN * rE});
      T *Kp = ws[0], *Vp = ws[1], *Sb = ws[2], *dP = ws[3], *Kb = ws[4];
      // per query block of the current b: Q and dO as A operands and as B operands
      PackCache<T> qa(nqb, BM * E), da(nqb, BM * Ev), db(nqb, BM * rEv), qbc(nqb, BM * rE);
      for (index_t t = c; t < ntask; t += nchunks) {
        const index_t gi = t / P, pt = t % P;
        const index_t s0 = kvg.start[gi], s1 = kvg.start[gi + 1];
        for (index_t si = s0; si < s1; ++si) {
          T* d = dqp + (kvg.items[si] * P + pt) * L * E;
          std::fill(d, d + L * E, T(0));
        }
        for (index_t jb = pt; jb < nkb; jb += P) {
          const index_t j0 = jb * BN, nb = std::min(BN, S - j0);
          T* dkb = dk + (gi * S + j0) * E;
          T* dvb = dv + (gi * S + j0) * Ev;
          std::fill(dkb, dkb + nb * E, T(0));
          std::fill(dvb, dvb + nb * Ev, T(0));
          if (s0 == s1) continue;
          const index_t b0 = kvg.items[s0];
          const T* kb = k + p.off_k[b0] + j0 * p.rs_k;
          mm.pb(Kp, kb, p.cs_k, p.rs_k, E, nb);                                 // K^T
          mm.pb(Vp, v + p.off_v[b0] + j0 * p.rs_v, p.cs_v, p.rs_v, Ev, nb);  // V^T
          mm.pb(Kb, kb, p.rs_k, p.cs_k, nb, E);                                 // K
          const index_t i_first = p.causal ? (j0 / BM) * BM : 0;
          for (index_t si = s0; si < s1; ++si) {
            const index_t b = kvg.items[si];
            T* dqb = dqp + (b * P + pt) * L * E;
            // keys past the last one a key-padding mask keeps take no part (P = 0 there)
            const index_t n = keys_kept(p, b, j0, nb);
            if (n == 0) continue;
            for (index_t i0 = i_first; i0 < L; i0 += BM) {
              const index_t m = std::min(BM, L - i0);
              const index_t ib = i0 / BM;
              const T* qb = q + p.off_q[b] + i0 * p.rs_q;
              const T* dob = dout + (b * L + i0) * Ev;
              // A causal tile that crosses the diagonal (tri): S, P, dP and dS per MR-row panel
              // of queries only up to the panel's last key w = lim(i); the next MR columns are
              // zeroed (P^T and dS^T are read there by the key panels' products, which start
              // at each panel's first query); dQ stops at w.
              const bool tri = p.causal && j0 + n > i0 + 1;
              const index_t dd = i0 - j0;
              const T* Qp = qa.get(b, 0, ib, [&](T* d) { mm.pa(d, qb, p.rs_q, p.cs_q, m, E); });
              using Lim = typename Mm<T>::Lim;
              const Lim cols = tri ? Lim::cols : Lim::none, to = tri ? Lim::k_to : Lim::none,
                        from = tri ? Lim::k_from : Lim::none;
              mm(m, n, E, mm.packed_a(Qp, E), mm.packed_b(Kp, E), Sb, BN, scale, T(0), cols, dd);  // S = scale Q K^T (+ masks)
              apply_mask(tk, p, b, Sb, BN, i0, m, j0, n);
              const T* dOp = da.get(b, 0, ib, [&](T* d) { mm.pa(d, dob, Ev, 1, m, Ev); });
              mm(m, n, Ev, mm.packed_a(dOp, Ev), mm.packed_b(Vp, Ev), dP, BN, T(1), T(0), cols, dd);  // dP = dO V^T
              auto rows = [&](auto&& f) {  // f(first row i, rows mr, width w) per row panel
                for (index_t i = 0; i < m; i += MR) {
                  const index_t mr = std::min(MR, m - i), w = tri ? mm.lim(i, n, dd) : n;
                  f(i, mr, w);
                }
              };
              auto zero_band = [&](T* t, index_t i, index_t mr, index_t w) {
                const index_t we = std::min(n, w + MR);
                for (index_t r = i; r < i + mr && w < we; ++r) std::fill(t + r * BN + w, t + r * BN + we, T(0));
              };
              rows([&](index_t i, index_t mr, index_t w) {  // P = exp(S - lse)
                tk.p_tile(Sb + i * BN, BN, mr, w, lse + b * L + i0 + i);
                if (tri) zero_band(Sb, i, mr, w);
              });
              // P, dS read in place (P^T, dS^T through transposed strides)
              const T* dOb = db.get(b, 0, ib, [&](T* d) { mm.pb(d, dob, Ev, 1, m, Ev); });
              mm(n, Ev, m, Mm<T>::rows_a(Sb, 1, BN), mm.packed_b(dOb, m), dvb, Ev, T(1), T(1), from, dd);  // dV += P^T dO
              rows([&](index_t i, index_t mr, index_t w) {  // dS = P o (dP - D)
                tk.ds_tile(dP + i * BN, BN, Sb + i * BN, BN, mr, w, D + b * L + i0 + i);
                if (tri) zero_band(dP, i, mr, w);
              });
              const T* Qb = qbc.get(b, 0, ib, [&](T* d) { mm.pb(d, qb, p.rs_q, p.cs_q, m, E); });
              mm(n, E, m, Mm<T>::rows_a(dP, 1, BN), mm.packed_b(Qb, m), dkb, E, scale, T(1), from, dd);  // dK += scale dS^T Q
              mm(m, E, n, Mm<T>::rows_a(dP, BN, 1), mm.packed_b(Kb, nb), dqb + i0 * E, E, scale, T(1), to,  // dQ_part += scale dS K
                 dd);
            }
          }
        }
      }
    });
  }

  // dQ of each q batch element: its output batch elements in group order, each's parts in order.
  parallel_for(qg.n * L, std::max<index_t>(1, 4096 / std::max<index_t>(E, 1)), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const index_t gq = r / L, i = r % L;
      T* __restrict dst = dq + r * E;
      std::fill(dst, dst + E, T(0));
      for (index_t si = qg.start[gq]; si < qg.start[gq + 1]; ++si)
        for (index_t pt = 0; pt < P; ++pt) {
          const T* __restrict src = dqp + ((qg.items[si] * P + pt) * L + i) * E;
          for (index_t e = 0; e < E; ++e) dst[e] += src[e];
        }
    }
  });
}

}  // namespace

void attention_fwd(Isa isa, const AttnParams& p, void* out, void* lse) {
  if (p.dtype == DType::f32)
    fwd_impl<float>(isa, p, static_cast<float*>(out), static_cast<float*>(lse));
  else
    fwd_impl<double>(isa, p, static_cast<double*>(out), static_cast<double*>(lse));
}

void attention_bwd(Isa isa, const AttnParams& p, const void* dout, const void* out,
                   const void* lse, const AttnGroups& q_groups, const AttnGroups& kv_groups,
                   void* dq, void* dk, void* dv) {
  if (p.dtype == DType::f32)
    bwd_impl<float>(isa, p, static_cast<const float*>(dout), static_cast<const float*>(out),
                    static_cast<const float*>(lse), q_groups, kv_groups, static_cast<float*>(dq),
                    static_cast<float*>(dk), static_cast<float*>(dv));
  else
    bwd_impl<double>(isa, p, static_cast<const double*>(dout), static_cast<const double*>(out),
                     static_cast<const double*>(lse), q_groups, kv_groups,
                     static_cast<double*>(dq), static_cast<double*>(dk), static_cast<double*>(dv));
}

}  // namespace nnk
