// GEMM driver: the five BLIS loops around the micro-kernel of the current ISA.
//
//   C = act(alpha * A B + beta * C + bias_m + bias_n)   (contract: gemm.h, ukr.h)
//
// Threads: C is cut into a tm x tn grid of MR/NR-aligned blocks (one per thread, the grid
// chosen to balance work and minimise packing); each thread runs the five loops on its
// block with its own packing buffers, so no barrier is needed and every element of C is
// summed in the same order whatever the thread count (bitwise reproducible).
// Variants:
//   1. packed A and B (the general path);
//   2. direct B: a thread's block has few rows (<= kDirectBRows * MR), B has unit column
//      stride and its rows are close (or are read once): the micro-kernel reads B in place
//      (packing would cost more than it saves);
//   3. direct A (small-matrix path): few column panels (<= kDirectAPanels): A read in place
//      with its own strides, no packing;
//   4. pre-packed A or B (PackedMatrix): weights packed once and reused across calls;
//   5. virtual B (VirtualB): B exists only as a packing routine (im2col in convolution);
//      with per_panel, when a thread's block of A fits in L2 (kVbABytes), each micro-panel is
//      packed just before the micro-kernels use it, in K blocks that keep it in L1.
//   6. shared packing (share_packing): when the grid splits only M (only N), every thread
//      would pack all of B (of A); it is packed once instead, the threads taking disjoint
//      panels, in a region before the product, which then reads it as in variant 4.
//      Measured (2 threads, GFLOP/s, four interleaved rounds, without / with): f64 n = 256
//      210-223 / 222-228, n = 1024 218-223 / 224-231; f32 n = 512 480-491 / 489-498,
//      n = 1024 471-491 / 471-496; an LSTM's input projection (6400 x 512 @ 512 x 2048)
//      28.0-29.9 / 27.7-28.0 ms; M = 4096, N = 32, K = 4096 2.64-2.79 / 2.70-2.76 ms (the
//      same); f32 n = 2048 (16 MiB of B, past a quarter of the last-level cache) 485-492 /
//      471-473 GFLOP/s, so not there.
#include "cpu/gemm/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/cpu_features.h"
#include "core/errors.h"
#include "core/mempool.h"
#include "core/parallel.h"
#include "core/scratch.h"
#include "cpu/gemm/ukr.h"

namespace nnk {

namespace {

constexpr index_t kDirectBRows = 4;     // direct B when a thread's rows <= 4 * MR (and see run_block)
constexpr index_t kDirectAPanels = 4;   // direct A when a thread's columns <= 4 * NR
constexpr double kMinFlopsPerThread = 5e5;  // below this a second thread costs more than it gives
                                            // (measured with the worker awake, parallel.cpp:
                                            // n = 96 5.8 vs 9.2 us, n = 128 12 vs 21 us; 2.5e5
                                            // slowed n = 64)
constexpr double kBatchedSplitFlops = 5.12e8;  // batched: below this per product, one product per thread
constexpr index_t kVbPanelBytes = 40 * 1024;  // a virtual B micro-panel packed just before use stays in L1 (48 KiB)
constexpr index_t kVbABytes = 512 * 1024;     // ... while the A block it meets stays in L2 (1 MiB)
constexpr double kPackCostPerElem = 8.0;    // packing one element ~ this many FMA lanes (grid choice)

thread_local Scratch t_buf_a, t_buf_b;

template <typename T>
struct Problem {
  index_t M, N, K;
  const T* a; index_t rs_a, cs_a;
  const T* b; index_t rs_b, cs_b;
  T* c; index_t rs_c;
  T alpha, beta;
  const T* bias_m; const T* bias_n;
  Act act; T act_param;
  const PackedMatrix* pa; const PackedMatrix* pb;
  const VirtualB* vb;
  const GemmKernel<T>* kr;
};

// The five loops over one thread's block of C: rows [m0, m1), columns [n0, n1).
template <typename T>
void run_block(const Problem<T>& P, index_t m0, index_t m1, index_t n0, index_t n1) {
  const GemmKernel<T>& kr = *P.kr;
  const index_t MR = kr.MR, NR = kr.NR, NC = kr.NC;
  const index_t KC = P.pa ? P.pa->kc : (P.pb ? P.pb->kc : kr.KC);
  const index_t K = P.K;
  // Direct B re-reads each B micro-panel once per MR rows, one row of B (rs_b apart) per k:
  // far-apart rows cost a cache line and a page each time, so with more than one A panel
  // the rows must be close. Measured (f32, 2 threads, M x N = K): M = 8 direct is faster at
  // every N up to 4096; M = 16 up to N = 2048 (8 KiB rows); M = 32 only at N = 512 (2 KiB):
  // at N = 4096 packing B gave 4.2-4.8 ms against 5.1-5.2 ms direct.
  const index_t a_panels = ceil_div(m1 - m0, MR);
  const index_t ldb_bytes = P.rs_b * index_t(sizeof(T));
  const bool direct_b = !P.pb && !P.vb && P.cs_b == 1 && a_panels <= kDirectBRows &&
                        (a_panels == 1 || ldb_bytes <= 2048 || (a_panels == 2 && ldb_bytes <= 8192));
  // (A per-panel virtual B keeps A packed: its K is long and the strided A loads of the
  // direct path cost more than packing A once per K block.)
  // (Not for an A with rs_a = 1 and cs_a = MR: the micro-kernel takes that for a packed
  // panel, whose rows past m it may read.)
  const bool direct_a = !P.pa && !(P.vb && P.vb->per_panel) && (n1 - n0) <= kDirectAPanels * NR &&
                        !(P.rs_a == 1 && P.cs_a == MR);
  // Virtual B (per_panel): when the thread's rows of A fit in L2 as one block (with a K block
  // short enough for a B micro-panel to fit in L1), each B micro-panel is packed right
  // before the micro-kernels that use it: it stays in L1, the B block never goes to memory.
  // A pre-packed A fixes the K block (gemm_virtual_b_kc gives the one to pack with).
  const index_t KCv = P.pa ? KC : std::min(KC, std::max<index_t>(MR, kVbPanelBytes / index_t(sizeof(T) * NR)));
  const bool vb_panels = P.vb && P.vb->per_panel &&
                         round_up(m1 - m0, MR) * KCv * index_t(sizeof(T)) <= kVbABytes;
  const index_t MC = vb_panels ? round_up(m1 - m0, MR) : kr.MC;
  const index_t KCb = vb_panels ? KCv : KC;
  // K blocks of equal length (K = 576 as 288 + 288, not 512 + 64); fixed by a pre-packed layout.
  const index_t kcb = (P.pa || P.pb) ? KCb : ceil_div(std::max<index_t>(K, 1), ceil_div(std::max<index_t>(K, 1), KCb));
  T* buf_a = (P.pa || direct_a) ? nullptr
      : static_cast<T*>(t_buf_a.get(sizeof(T) * size_t(round_up(std::min(MC, m1 - m0), MR) * std::min(kcb, std::max<index_t>(K, 1)))));
  T* buf_b = (P.pb || direct_b) ? nullptr
      : static_cast<T*>(t_buf_b.get(sizeof(T) * size_t((vb_panels ? NR : round_up(std::min(NC, n1 - n0), NR)) * std::min(kcb, std::max<index_t>(K, 1)))));
  const T* pa_data = P.pa ? static_cast<const T*>(P.pa->data.get()) : nullptr;
  const T* pb_data = P.pb ? static_cast<const T*>(P.pb->data.get()) : nullptr;

  for (index_t jc = n0; jc < n1; jc += NC) {  // loop 5: columns of C by NC (B block in L3)
    const index_t nc = std::min(NC, n1 - jc);
    index_t pc = 0;
    do {  // loop 4: K by KC (runs once with kc = 0 when K == 0: epilogue only)
      const index_t kc = std::min(kcb, K - pc);
      const bool first = pc == 0, last = pc + kc >= K;
      const T* bp;
      index_t ldb, b_panel;
      if (P.pb) {
        bp = pb_data + pc * P.pb->padded + (jc / NR) * kc * NR;
        ldb = NR;
        b_panel = kc * NR;
      } else if (direct_b) {
        bp = P.b + pc * P.rs_b + jc;
        ldb = P.rs_b;
        b_panel = NR;
      } else if (P.vb) {
        if (!vb_panels) P.vb->pack(P.vb->ctx, buf_b, pc, kc, jc, nc, NR);
        bp = buf_b;
        ldb = NR;
        b_panel = vb_panels ? 0 : kc * NR;
      } else {
        kr.pack_b(buf_b, P.b + pc * P.rs_b + jc * P.cs_b, P.rs_b, P.cs_b, kc, nc, NR);
        bp = buf_b;
        ldb = NR;
        b_panel = kc * NR;
      }
      UkrEpilogue<T> ep;
      ep.alpha = P.alpha;
      ep.beta = first ? P.beta : T(1);
      ep.act = last ? P.act : Act::none;
      ep.act_param = P.act_param;
      ep.act_tile = kr.act_tile;
      for (index_t ic = m0; ic < m1; ic += MC) {  // loop 3: rows of C by MC (A block in L2)
        const index_t mc = std::min(MC, m1 - ic);
        const T* ap;
        index_t rsa, csa, a_panel;
        if (P.pa) {
          ap = pa_data + pc * P.pa->padded + (ic / MR) * kc * MR;
          rsa = 1; csa = MR; a_panel = kc * MR;
        } else if (direct_a) {
          ap = P.a + ic * P.rs_a + pc * P.cs_a;
          rsa = P.rs_a; csa = P.cs_a; a_panel = MR * P.rs_a;
        } else {
          kr.pack_a(buf_a, P.a + ic * P.rs_a + pc * P.cs_a, P.rs_a, P.cs_a, mc, kc, MR);
          ap = buf_a;
          rsa = 1; csa = MR; a_panel = kc * MR;
        }
        for (index_t jr = 0; jr < nc; jr += NR) {  // loop 2: B micro-panels (in L1) by NR
          const index_t nr = std::min(NR, nc - jr);
          if (vb_panels) P.vb->pack(P.vb->ctx, buf_b, pc, kc, jc + jr, nr, NR);
          ep.bias_n = (first && P.bias_n) ? P.bias_n + jc + jr : nullptr;
          for (index_t ir = 0; ir < mc; ir += MR) {  // loop 1: A micro-panels by MR
            const index_t mr = std::min(MR, mc - ir);
            ep.bias_m = (first && P.bias_m) ? P.bias_m + ic + ir : nullptr;
            kr.ukr(kc, ap + (ir / MR) * a_panel, rsa, csa, bp + (jr / NR) * b_panel, ldb,
                   P.c + (ic + ir) * P.rs_c + jc + jr, P.rs_c, mr, nr, ep);
          }
        }
      }
      pc += kc;
    } while (pc < K);
  }
}

// Products with a side of at most kDotMaxSide whose A rows and B columns are contiguous
// along K (x @ W^T with W in torch's (out, in) layout, at batch 1..4; or W @ x^T): one dot
// product per output straight from the operands (dot.inl). Packing such a B would cost as
// much as the product, and a 14 x 32 tile would compute mostly padding. B with unit column
// stride (x @ W) keeps the direct-B path, which streams B rows just as well.
constexpr index_t kDotMaxSide = 4;

template <typename T>
bool dot_path(const Problem<T>& P) {
  if (P.pa || P.pb || P.vb || P.cs_a != 1 || P.rs_b != 1 || P.K < 1) return false;
  if (P.cs_b == 1 && P.N > 1) return false;
  const bool tall = P.M > kDotMaxSide;  // then N is the tiny side
  if (tall && P.N > kDotMaxSide) return false;
  const GemmKernel<T>& kr = *P.kr;
  const index_t L = tall ? P.M : P.N;  // the long side, split between threads in fours
  const double flops = 2.0 * double(P.M) * double(P.N) * double(P.K);
  const index_t blocks = ceil_div(L, kDotMaxSide);
  const index_t parts = std::max<index_t>(1, std::min<index_t>(
      std::min<index_t>(get_num_threads(), blocks), index_t(flops / kMinFlopsPerThread)));
  auto body = [&](index_t part) {
    const index_t l0 = blocks * part / parts * kDotMaxSide;
    const index_t l1 = std::min(L, blocks * (part + 1) / parts * kDotMaxSide);
    const index_t i0 = tall ? l0 : 0, i1 = tall ? l1 : P.M;
    const index_t j0 = tall ? 0 : l0, j1 = tall ? P.N : l1;
    T tile[kDotMaxSide * kDotMaxSide];
    for (index_t i = i0; i < i1; i += kDotMaxSide) {
      const index_t mb = std::min(kDotMaxSide, i1 - i);
      for (index_t j = j0; j < j1; j += kDotMaxSide) {
        const index_t nb = std::min(kDotMaxSide, j1 - j);
        kr.dot(P.K, P.a + i * P.rs_a, P.rs_a, mb, P.b + j * P.cs_b, P.cs_b, nb, tile, kDotMaxSide);
        for (index_t ii = 0; ii < mb; ++ii) {
          T* c = P.c + (i + ii) * P.rs_c + j;
          for (index_t jj = 0; jj < nb; ++jj) {
            T v = P.alpha * tile[ii * kDotMaxSide + jj];
            if (P.beta != T(0)) v += P.beta * c[jj];
            if (P.bias_m) v += P.bias_m[i + ii];
            if (P.bias_n) v += P.bias_n[j + jj];
            c[jj] = v;
          }
        }
      }
    }
    if (P.act != Act::none && i0 < i1 && j0 < j1)
      kr.act_tile(P.c + i0 * P.rs_c + j0, P.rs_c, i1 - i0, j1 - j0, P.act, P.act_param);
  };
  parallel_run(parts, body);  // one part: inline, under the denormal setting
  return true;
}

// Thread grid tm x tn (tm * tn <= T) for an M x N x K problem.
void choose_grid(index_t M, index_t N, index_t K, index_t MR, index_t NR, int T, int& tm, int& tn) {
  tm = tn = 1;
  const double flops = 2.0 * double(M) * double(N) * double(std::max<index_t>(K, 1));
  int use = int(std::min<double>(T, std::max(1.0, flops / kMinFlopsPerThread)));
  const index_t tiles_m = ceil_div(M, MR), tiles_n = ceil_div(N, NR);
  double best = -1;
  for (int t = use; t >= 1 && best < 0; --t) {
    for (int a = 1; a <= t; ++a) {
      if (t % a) continue;
      int b = t / a;
      if (a > tiles_m || b > tiles_n) continue;
      double rows = double(ceil_div(tiles_m, a) * MR), cols = double(ceil_div(tiles_n, b) * NR);
      double cost = rows * cols * double(K) + kPackCostPerElem * (rows + cols) * double(K);
      if (best < 0 || cost < best) { best = cost; tm = a; tn = b; }
    }
  }
}

// The PackedMatrix layout of an A (rows = M, cols = K) or B (rows = K, cols = N) operand:
// panels of r along M (N), K blocks of kc; data left to the caller.
template <typename T>
PackedMatrix packed_layout(Isa isa, bool is_a, index_t rows, index_t cols, index_t r, index_t kc) {
  PackedMatrix pm;
  pm.dtype = dtype_of<T>::value;
  pm.isa = isa;
  pm.is_a = is_a;
  pm.rows = rows;
  pm.cols = cols;
  pm.r = r;
  pm.kc = kc;
  pm.padded = round_up(is_a ? rows : cols, r);
  return pm;
}

// Panels [p0, p1) of every K block of pm into dst, from src (element strides rs, cs).
template <typename T>
void pack_panels(const GemmKernel<T>& kr, const PackedMatrix& pm, T* dst, const T* src, index_t rs,
                 index_t cs, index_t p0, index_t p1) {
  const index_t K = pm.is_a ? pm.cols : pm.rows, wide = pm.is_a ? pm.rows : pm.cols;
  const index_t w0 = p0 * pm.r, w1 = std::min(wide, p1 * pm.r);
  if (w0 >= w1) return;
  for (index_t pc = 0; pc < K; pc += pm.kc) {
    const index_t k = std::min(pm.kc, K - pc);
    T* d = dst + pc * pm.padded + p0 * k * pm.r;
    if (pm.is_a) kr.pack_a(d, src + w0 * rs + pc * cs, rs, cs, w1 - w0, k, pm.r);
    else kr.pack_b(d, src + pc * rs + w0 * cs, rs, cs, k, w1 - w0, pm.r);
  }
}

// An operand that every thread of the grid would pack whole (B when the grid splits only M,
// A when it splits only N) is packed once instead, in a region of its own before the
// product, the threads taking disjoint panels of every K block; the product then reads it
// as a pre-packed operand (the PackedMatrix layout, K blocks of equal length as run_block
// would cut them). Not for operands a thread reads in place (the direct paths) or small
// ones (kMinSharedPack elements: the extra region costs more than the duplicate packing).
// Measured: variant 6 in the header comment.
constexpr index_t kMinSharedPack = 1 << 16;

template <typename T>
bool share_packing(const Problem<T>& P, int tm, int tn, index_t tiles_m, index_t tiles_n, PackedMatrix& pm) {
  if (P.pa || P.pb || P.vb || tm * tn < 2 || (tm > 1 && tn > 1) || P.K < 1) return false;
  const GemmKernel<T>& kr = *P.kr;
  const bool is_b = tn == 1;  // every thread needs all of B
  if (is_b ? (ceil_div(tiles_m, tm) <= kDirectBRows || P.N * P.K < kMinSharedPack)
           : (ceil_div(tiles_n, tn) <= kDirectAPanels || P.M * P.K < kMinSharedPack))
    return false;
  const index_t K = P.K;
  PackedMatrix layout = packed_layout<T>(current_isa(), !is_b, is_b ? K : P.M, is_b ? P.N : K,
                                         is_b ? kr.NR : kr.MR, ceil_div(K, ceil_div(K, kr.KC)));
  // The packed operand must stay in the last-level cache until the product reads it (a
  // quarter of it: the other operand and C share it). Past that, each thread packing its
  // block right before use is faster (f32 n = 2048, 16 MiB: 471-473 against 485-492 GFLOP/s).
  if (double(layout.padded) * double(K) * double(sizeof(T)) > double(last_level_cache_bytes()) / 4)
    return false;
  pm = layout;
  T* dst = static_cast<T*>(pool_alloc(sizeof(T) * size_t(pm.padded) * size_t(K)));
  pm.data = std::shared_ptr<void>(dst, [](void* q) { pool_free(q); });
  const index_t panels = pm.padded / pm.r;
  const index_t parts = std::min<index_t>(index_t(tm) * tn, panels);
  parallel_run(parts, [&](index_t part) {
    pack_panels(kr, pm, dst, is_b ? P.b : P.a, is_b ? P.rs_b : P.rs_a, is_b ? P.cs_b : P.cs_a,
                panels * part / parts, panels * (part + 1) / parts);
  });
  return true;
}

// C := beta * c_in (broadcast), so that the GEMM proper can accumulate with beta = 1.
template <typename T>
void scale_copy_c(const GemmArgs& g) {
  T* c = static_cast<T*>(g.c);
  const T* ci = static_cast<const T*>(g.c_in);
  const T beta = T(g.beta);
  parallel_for(g.M, std::max<index_t>(1, 65536 / std::max<index_t>(g.N, 1)), [&](index_t i0, index_t i1) {
    for (index_t i = i0; i < i1; ++i)
      for (index_t j = 0; j < g.N; ++j)
        c[i * g.rs_c + j * g.cs_c] = beta * ci[i * g.rs_cin + j * g.cs_cin];
  });
}

template <typename T>
void gemm_t(const GemmArgs& g0) {
  GemmArgs g = g0;
  if (g.M == 0 || g.N == 0) return;
  if (g.c_in && g.c_in != g.c && g.beta != 0.0) {
    scale_copy_c<T>(g);
    g.beta = 1.0;
  }
  g.c_in = nullptr;
  GemmArgs s = g;
  if (s.cs_c != 1) {
    if (s.rs_c != 1 || s.packed_a || s.packed_b || s.virtual_b)
      throw ValueError("gemm: C needs a unit stride in one dimension");
    // C^T = B^T A^T: swap the operands so that C is row-major.
    s.M = g.N; s.N = g.M;
    s.a = g.b; s.rs_a = g.cs_b; s.cs_a = g.rs_b;
    s.b = g.a; s.rs_b = g.cs_a; s.cs_b = g.rs_a;
    std::swap(s.bias_m, s.bias_n);
    s.rs_c = g.cs_c;
    s.cs_c = 1;
  }
  Isa isa = current_isa();
  if (s.packed_a) isa = s.packed_a->isa;
  else if (s.packed_b) isa = s.packed_b->isa;
  if (s.packed_a && s.packed_b && s.packed_a->kc != s.packed_b->kc)
    throw ValueError("gemm: packed operands use different K blocks");
  Problem<T> P{s.M, s.N, s.K,
               static_cast<const T*>(s.a), s.rs_a, s.cs_a,
               static_cast<const T*>(s.b), s.rs_b, s.cs_b,
               static_cast<T*>(s.c), s.rs_c,
               T(s.alpha), T(s.beta),
               static_cast<const T*>(s.bias_m), static_cast<const T*>(s.bias_n),
               s.act, T(s.act_param), s.packed_a, s.packed_b, s.virtual_b,
               &gemm_kernel_for<T>(isa, s.M, s.packed_a ? s.packed_a->r : 0)};
  if (dot_path(P)) return;
  const index_t MR = P.kr->MR, NR = P.kr->NR;
  int tm, tn;
  // Nested in a parallel region (a convolution's images or tile blocks over the threads),
  // the chunks would run one after another on this thread: one block, no split. (The bits do
  // not depend on the grid: every element of C is summed in the same K order.)
  choose_grid(P.M, P.N, P.K, MR, NR, in_parallel_region() ? 1 : get_num_threads(), tm, tn);
  const index_t tiles_m = ceil_div(P.M, MR), tiles_n = ceil_div(P.N, NR);
  PackedMatrix shared;
  if (share_packing(P, tm, tn, tiles_m, tiles_n, shared)) {
    if (shared.is_a) P.pa = &shared;
    else P.pb = &shared;
  }
  parallel_run(index_t(tm) * tn, [&](index_t chunk) {
    const index_t ti = chunk / tn, tj = chunk % tn;
    const index_t m0 = std::min(P.M, tiles_m * ti / tm * MR), m1 = std::min(P.M, tiles_m * (ti + 1) / tm * MR);
    const index_t n0 = std::min(P.N, tiles_n * tj / tn * NR), n1 = std::min(P.N, tiles_n * (tj + 1) / tn * NR);
    if (m0 < m1 && n0 < n1) run_block(P, m0, m1, n0, n1);
  });
}

template <typename T>
PackedMatrix pack_t(bool is_a, index_t rows, index_t cols, const T* src, index_t rs, index_t cs, index_t kc) {
  Isa isa = current_isa();
  // An A operand gets the row tile that pads its M least (the one gemm() would pick).
  const GemmKernel<T>& kr = is_a ? gemm_kernel_for<T>(isa, rows) : gemm_kernel<T>(isa);
  PackedMatrix pm = packed_layout<T>(isa, is_a, rows, cols, is_a ? kr.MR : kr.NR, kc > 0 ? kc : kr.KC);
  const index_t K = is_a ? cols : rows;
  const index_t elems = checked_mul(pm.padded, std::max<index_t>(K, 1), "packed matrix");
  void* p = std::aligned_alloc(64, size_t(round_up(checked_mul(elems, sizeof(T), "packed matrix"), 64)));
  if (!p) throw std::bad_alloc();
  pm.data = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  pack_panels(kr, pm, static_cast<T*>(p), src, rs, cs, 0, pm.padded / pm.r);
  return pm;
}

}  // namespace

void gemm(const GemmArgs& g) {
  if (g.dtype == DType::f32) gemm_t<float>(g);
  else gemm_t<double>(g);
}

void gemm_batched(const GemmArgs& g, const BatchSpec& bs) {
  index_t nb = 1;
  for (int d = 0; d < bs.ndim; ++d) nb *= bs.shape[d];
  if (nb == 0 || g.M == 0 || g.N == 0) return;
  const index_t es = dtype_size(g.dtype);
  auto one = [&](index_t bidx) {
    index_t oa = 0, ob = 0, oc = 0, rem = bidx;
    for (int d = bs.ndim - 1; d >= 0; --d) {
      const index_t k = rem % bs.shape[d];
      rem /= bs.shape[d];
      oa += k * bs.stride_a[d];
      ob += k * bs.stride_b[d];
      oc += k * bs.stride_c[d];
    }
    GemmArgs s = g;
    s.a = static_cast<const char*>(g.a) + oa * es;
    s.b = static_cast<const char*>(g.b) + ob * es;
    s.c = static_cast<char*>(g.c) + oc * es;
    gemm(s);
  };
  const double flops = 2.0 * double(g.M) * double(g.N) * double(std::max<index_t>(g.K, 1));
  if (nb > 1 && flops < kBatchedSplitFlops) {
    // Many small products: one matrix per thread (nested regions run inline).
    parallel_for(nb, 1, [&](index_t b0, index_t b1) {
      for (index_t b = b0; b < b1; ++b) one(b);
    });
  } else {
    for (index_t b = 0; b < nb; ++b) one(b);
  }
}

PackedMatrix pack_a(DType dt, index_t M, index_t K, const void* a, index_t rs, index_t cs, index_t kc) {
  if (dt == DType::f32) return pack_t<float>(true, M, K, static_cast<const float*>(a), rs, cs, kc);
  return pack_t<double>(true, M, K, static_cast<const double*>(a), rs, cs, kc);
}

PackedMatrix pack_b(DType dt, index_t K, index_t N, const void* b, index_t rs, index_t cs) {
  if (dt == DType::f32) return pack_t<float>(false, K, N, static_cast<const float*>(b), rs, cs, 0);
  return pack_t<double>(false, K, N, static_cast<const double*>(b), rs, cs, 0);
}

template <typename T>
index_t vb_kc(index_t K) {
  const GemmKernel<T>& kr = gemm_kernel<T>(current_isa());
  const index_t KCv = std::min(kr.KC, std::max<index_t>(kr.MR, kVbPanelBytes / index_t(sizeof(T) * kr.NR)));
  return ceil_div(std::max<index_t>(K, 1), ceil_div(std::max<index_t>(K, 1), KCv));
}

index_t gemm_virtual_b_kc(DType dt, index_t K) { return dt == DType::f32 ? vb_kc<float>(K) : vb_kc<double>(K); }

}  // namespace nnk
