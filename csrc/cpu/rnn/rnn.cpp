// RNN / LSTM / GRU forward and backpropagation through time (maths and plan: rnn.h).
//
// Forward steps: one parallel region per step, threads split the hidden units (columns
// of every gate) and call the GEMM micro-kernel directly (col_block), then run the gate
// maths of their own columns (rnn_kernels.inl, vectorised per ISA): no barrier inside a
// step. Backward steps: the same split of the hidden units; a thread finishes dh_t of its
// units (its columns of D_h[t+1] W_hh, on the micro-kernel) and runs the step's
// elementwise pass on them (vectorised per ISA). One region, so one barrier, per step.
// Short steps (kRowSplitMaxFlops) with at least one row tile per thread, forward and
// backward: threads split the batch rows instead, which are independent through time, and
// run the whole sequence in one region (no barrier per step).
#include "cpu/rnn/rnn.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <vector>

#include "core/cpu_features.h"
#include "core/errors.h"
#include "core/mempool.h"
#include "core/parallel.h"
#include "cpu/gemm/gemm.h"
#include "cpu/gemm/ukr.h"
#include "cpu/rnn/rnn_isa.h"

namespace nnk {

namespace {

constexpr double kMinStepFlopsPerThread = 1e6;  // forward step: below this, one thread
constexpr index_t kSmallCellBatch = 4;          // cells up to this batch: GEMM dot path
// Sequences (forward and backward): batch rows per thread (no barrier per step) up to this
// many FLOPs per thread and step. Measured (f32, 2 threads, T = 100, rows split / hidden units split):
// (B, I, H) = (32, 256, 256), 8.4 MFLOP: LSTM 7.80-8.04 / 8.00-8.84 ms, GRU 5.79-5.81 /
// 5.94-6.00 ms; (64, 512, 512): RNN 16.8 MFLOP 15.2 / 14.7 ms, LSTM 67 MFLOP 59.7-63.2 /
// 59.0-61.9 ms (there each thread's half of W_hh stays in L2, all of it does not).
constexpr double kRowSplitMaxFlops = 1.2e7;

// Threads that split a sequence's batch rows (forward and backward): one row tile of mr at
// least each, and a step of kMinStepFlopsPerThread .. kRowSplitMaxFlops per thread; 0 when
// the hidden units are split instead.
inline index_t row_split_parts(index_t B, index_t mr, double step_flops) {
  const index_t parts = std::min<index_t>(get_num_threads(), B / mr);
  return parts >= 2 && step_flops >= kMinStepFlopsPerThread * double(parts) &&
                 step_flops <= kRowSplitMaxFlops * double(parts)
             ? parts
             : 0;
}

// Owning pool buffer of n elements of T.
template <typename T>
struct Buf {
  T* p = nullptr;
  explicit Buf(index_t n) {
    if (n > 0) p = static_cast<T*>(pool_alloc(size_t(n) * sizeof(T)));
  }
  ~Buf() { if (p) pool_free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

template <typename T>
struct Ctx {
  const RnnWeights& w;
  DType dt;
  index_t Tn, B, I, H, G, GH;
  Isa isa;
  explicit Ctx(const RnnWeights& w_)
      : w(w_), dt(w_.dtype), Tn(w_.T), B(w_.B), I(w_.I), H(w_.H), G(rnn_gates(w_.kind)),
        GH(rnn_gates(w_.kind) * w_.H), isa(current_isa()) {}
  const T* bih() const { return static_cast<const T*>(w.b_ih); }
  const T* bhh() const { return static_cast<const T*>(w.b_hh); }
};

template <typename T>
void copy_rows(T* dst, const T* src, index_t n) {
  if (dst && dst != src && n > 0) std::memcpy(dst, src, size_t(n) * sizeof(T));
}

template <typename T>
const RnnIsaKernels<T>& rnn_isa_kernels(Isa isa) {
  if (isa == Isa::avx512) return cpu::avx512::rnn_kernels(T());
  if (isa == Isa::avx2) return cpu::avx2::rnn_kernels(T());
  return cpu::generic::rnn_kernels(T());
}

// ---------------------------------------------------------------------------------------
// One thread's share of a step: C[0:M, j0:j1) of one gate block, straight on the
// micro-kernel.
//   C := act(beta C + A Bg + bias)  with A (M x K, rows lda apart, unit column stride)
//   and Bg the K x H block of one gate of W^T. Bg comes pre-packed (PackedMatrix of that
//   gate, panels of NR columns from column 0; j0 is a multiple of NR) or, when `pm` is
//   null, is packed here from W^T rows (element strides rs, cs) into `buf`.
// Every element is computed by the same micro-kernel calls with the same K blocks
// whatever j0 / j1 are, so thread splits are bitwise reproducible.
template <typename T>
struct ColBlock {
  const GemmKernel<T>* kr;
  index_t M, K;
  const T* a;                              // A packed (pack_a_all): per K block of KC,
                                           // panels of MR rows, round_up(M, MR) rows;
                                           // or, with lda > 0, A itself (rows lda apart)
  const PackedMatrix* pm;                  // pre-packed gate block, or null
  const T* w; index_t rs_w, cs_w;          // else: W^T of this gate, (K x H) strides
  T* buf;                                  // packing buffer: min(K, KC) * round_up(j1 - j0, NR)
  index_t lda = 0;                         // > 0: A unpacked, read in place by the micro-kernel
};

// A (M x K, rows lda apart, unit column stride) into micro-panels, K blocks of KC
// (the layout of PackedMatrix): dst holds round_up(M, MR) * K elements.
template <typename T>
void pack_a_all(const GemmKernel<T>& kr, index_t KC, T* dst, const T* a, index_t lda, index_t M, index_t K) {
  const index_t Mp = round_up(M, kr.MR);
  for (index_t pc = 0; pc < K; pc += KC) {
    const index_t kc = std::min(KC, K - pc);
    kr.pack_a(dst + pc * Mp, a + pc, lda, 1, M, kc, kr.MR);
  }
}

template <typename T>
void col_block(const ColBlock<T>& P, index_t j0, index_t j1, T* c, index_t ldc, T beta,
               const T* bias, Act act) {
  const GemmKernel<T>& kr = *P.kr;
  const index_t MR = kr.MR, NR = kr.NR;
  const index_t KC = P.pm ? P.pm->kc : kr.KC;
  const index_t nc = j1 - j0, K = P.K, Mp = round_up(P.M, MR);
  const T* pdata = P.pm ? static_cast<const T*>(P.pm->data.get()) : nullptr;
  index_t pc = 0;
  do {
    const index_t kc = std::min(KC, K - pc);
    const bool first = pc == 0, last = pc + kc >= K;
    const T* bp;
    if (P.pm) {
      bp = pdata + pc * P.pm->padded + (j0 / NR) * kc * NR;
    } else {
      if (kc > 0) kr.pack_b(P.buf, P.w + pc * P.rs_w + j0 * P.cs_w, P.rs_w, P.cs_w, kc, nc, NR);
      bp = P.buf;
    }
    const T* ap = P.lda ? P.a + pc : P.a + pc * Mp;
    UkrEpilogue<T> ep;
    ep.beta = first ? beta : T(1);
    ep.act = last ? act : Act::none;
    ep.act_tile = kr.act_tile;
    for (index_t jr = 0; jr < nc; jr += NR) {
      const index_t nr = std::min(NR, nc - jr);
      ep.bias_n = (first && bias) ? bias + j0 + jr : nullptr;
      for (index_t ir = 0; ir < P.M; ir += MR) {
        const index_t mr = std::min(MR, P.M - ir);
        const T* ai = P.lda ? ap + ir * P.lda : ap + (ir / MR) * kc * MR;
        kr.ukr(kc, ai, P.lda ? P.lda : 1, P.lda ? 1 : MR, bp + (jr / NR) * kc * NR, NR,
               c + ir * ldc + j0 + jr, ldc, mr, nr, ep);
      }
    }
    pc += kc;
  } while (pc < K);
}

// ---------------------------------------------------------------------------------------
// Forward

template <typename T>
void forward_t(const RnnWeights& w, T* out, T* h_n, T* c_n, const T* x, const T* h0,
               const T* c0, T* gates, T* extra) {
  Ctx<T> C(w);
  const index_t Tn = C.Tn, B = C.B, I = C.I, H = C.H, G = C.G, GH = C.GH;
  if (Tn == 0 || B == 0 || H == 0) {
    copy_rows(h_n, h0, B * H);
    if (w.kind == RnnKind::lstm) copy_rows(c_n, c0, B * H);
    return;
  }
  const bool is_rnn = w.kind == RnnKind::rnn_tanh || w.kind == RnnKind::rnn_relu;
  const bool is_lstm = w.kind == RnnKind::lstm, is_gru = w.kind == RnnKind::gru;
  const GemmKernel<T>& kr = gemm_kernel_for<T>(C.isa, C.B);  // the tile that pads the batch least
  const RnnIsaKernels<T>& rk = rnn_isa_kernels<T>(C.isa);
  const index_t NR = kr.NR, KC = kr.KC;
  Buf<T> gates_ws(is_rnn || gates ? 0 : checked_mul(Tn * B, GH, "rnn: gates"));
  T* P = is_rnn ? out : (gates ? gates : gates_ws.p);  // (T, B, GH) step inputs
  if (Tn == 1 && B <= kSmallCellBatch) {
    // A cell at batch 1..4: both products on the GEMM engine's dot path (weights read in
    // place; packing them would cost more than the product), then the gate maths.
    GemmArgs g;
    g.dtype = C.dt;
    g.M = B; g.K = I;
    g.a = x; g.rs_a = I; g.cs_a = 1;
    g.bias_n = w.b_ih;
    if (is_gru) {  // r, z: both sides summed into P; n: input side in P, hidden side apart
      g.N = GH;
      g.b = w.w_ih; g.rs_b = w.cs_wih; g.cs_b = w.rs_wih;
      g.c = P; g.rs_c = GH;
      gemm(g);
    }
    GemmArgs h = g;
    h.K = H;
    h.a = h0; h.rs_a = H;
    h.b = w.w_hh; h.rs_b = w.cs_whh; h.cs_b = w.rs_whh;
    h.bias_n = w.b_hh;
    if (is_gru) {
      Buf<T> s(B * H);
      h.N = 2 * H; h.beta = 1.0;
      gemm(h);
      h.N = H; h.beta = 0.0;
      h.b = static_cast<const T*>(w.w_hh) + 2 * H * w.rs_whh;
      h.bias_n = w.b_hh ? static_cast<const T*>(w.b_hh) + 2 * H : nullptr;
      h.c = s.p; h.rs_c = H;
      gemm(h);
      parallel_run(1, [&](index_t) {  // inline, under the denormal setting
        for (index_t b = 0; b < B; ++b) {
          T* gt = P + b * GH;
          rk.gru(gt, gt + H, gt + 2 * H, s.p + b * H, h0 + b * H, out + b * H, H);
          if (extra) copy_rows(extra + b * H, s.p + b * H, H);
        }
      });
    } else {
      g.N = GH;
      g.b = w.w_ih; g.rs_b = w.cs_wih; g.cs_b = w.rs_wih;
      g.c = P; g.rs_c = GH;
      gemm(g);
      h.N = GH; h.beta = 1.0;
      h.c = P; h.rs_c = GH;
      if (is_rnn) h.act = w.kind == RnnKind::rnn_relu ? Act::relu : Act::tanh;
      gemm(h);
      if (is_lstm)
        parallel_run(1, [&](index_t) {  // inline, under the denormal setting
          for (index_t b = 0; b < B; ++b) {
            T* gt = P + b * GH;
            T* c1 = extra ? extra + b * H : c_n + b * H;
            rk.lstm(gt, gt + H, gt + 2 * H, gt + 3 * H, c0 + b * H, c1, out + b * H, H);
          }
        });
    }
    copy_rows(h_n, out, B * H);
    if (is_lstm && extra) copy_rows(c_n, extra, B * H);
    return;
  }
  const bool fused_input = Tn == 1;  // a cell: the input projection runs in the step region

  // P = X W_ih^T + b_ih for every step: one GEMM.
  if (!fused_input) {
    GemmArgs g;
    g.dtype = C.dt;
    g.M = Tn * B; g.N = GH; g.K = I;
    g.a = x; g.rs_a = I; g.cs_a = 1;
    g.b = w.w_ih; g.rs_b = w.cs_wih; g.cs_b = w.rs_wih;
    g.c = P; g.rs_c = GH;
    g.bias_n = w.b_ih;
    gemm(g);
  }
  // W_hh^T per gate (H x H each) packed once when it is used more than once.
  std::vector<PackedMatrix> pw;
  if (!fused_input)
    for (index_t gi = 0; gi < G; ++gi)
      pw.push_back(pack_b(C.dt, H, H, static_cast<const T*>(w.w_hh) + gi * H * w.rs_whh, w.cs_whh, w.rs_whh));
  Buf<T> scratch(is_gru ? B * H : 0);  // GRU: hidden side of the n gate of one step
  const Act act = w.kind == RnnKind::rnn_relu ? Act::relu : (is_rnn ? Act::tanh : Act::none);

  // Threads split the hidden units (NR-wide panels, the same for every gate); each runs
  // its columns of every gate for all batch rows, then their gate maths.
  const index_t panels = ceil_div(H, NR);
  const double step_flops = 2.0 * double(B) * double(GH) * double(H + (fused_input ? I : 0));
  const index_t parts = std::max<index_t>(1, std::min<index_t>(
      std::min<index_t>(get_num_threads(), panels), index_t(step_flops / kMinStepFlopsPerThread)));
  const index_t max_cols = ceil_div(panels, parts) * NR;
  const index_t buf_elems = fused_input ? std::min(KC, std::max<index_t>(std::max(I, H), 1)) * max_cols : 0;
  const index_t Bp = round_up(B, kr.MR);
  // A cell (fused_input) packs h_{t-1} and x; a sequence's steps read h_{t-1} in place (the
  // micro-kernel's strided-A form: packing it on every thread cost 2-3% of an LSTM forward).
  const index_t a_elems = fused_input ? Bp * (H + I) : 0;
  const index_t part_elems = round_up(buf_elems + a_elems, 16);
  Buf<T> packbuf(part_elems * parts);
  const T* bih = C.bih();
  const T* bhh = C.bhh();

  // LSTM / GRU gate maths of batch rows [b0, b1), hidden units [j0, j0 + n), step t.
  auto gate_rows = [&](index_t t, index_t b0, index_t b1, index_t j0, index_t n) {
    const T* hp = t == 0 ? h0 : out + (t - 1) * B * H;
    T* Pt = P + t * B * GH;
    T* ht = out + t * B * H;
    if (is_lstm) {
      for (index_t b = b0; b < b1; ++b) {
        const T* cp = t == 0 ? c0 + b * H : (extra ? extra + ((t - 1) * B + b) * H : c_n + b * H);
        T* c1 = extra ? extra + (t * B + b) * H : c_n + b * H;
        T* g = Pt + b * GH + j0;
        rk.lstm(g, g + H, g + 2 * H, g + 3 * H, cp + j0, c1 + j0, ht + b * H + j0, n);
      }
    } else if (is_gru) {
      for (index_t b = b0; b < b1; ++b) {
        T* g = Pt + b * GH + j0;
        const T* sc = scratch.p + b * H + j0;
        rk.gru(g, g + H, g + 2 * H, sc, hp + b * H + j0, ht + b * H + j0, n);
        if (extra) copy_rows(extra + (t * B + b) * H + j0, sc, n);
      }
    }
  };

  // One gate's recurrent product into the step's rows: columns [j0, j1) of gate gi, C rows
  // starting at prow (P_t) or srow (the GRU n gate's hidden side).
  auto rec_gate = [&](const ColBlock<T>& rec, index_t gi, index_t j0, index_t j1, T* prow, T* srow) {
    const index_t off = gi * H;
    if (is_gru && gi == 2)
      col_block(rec, j0, j1, srow, H, T(0), bhh ? bhh + off : nullptr, Act::none);
    else if (is_rnn)
      col_block(rec, j0, j1, prow, GH, T(1), bhh, act);
    else
      col_block(rec, j0, j1, prow + off, GH, T(1), bhh ? bhh + off : nullptr, Act::none);
  };

  // Batch rows are independent through time: with a full row tile per thread, each thread
  // can run the whole sequence for its own rows (every gate's columns), with no barrier per
  // step. Each thread then reads all of W_hh every step (the column split below keeps half
  // of it per thread, often in L2), so this pays only while a step is short enough for its
  // barrier to matter (kRowSplitMaxFlops per thread). Every element is computed by the same
  // micro-kernel arithmetic and gate maths whatever the split.
  const index_t row_parts = fused_input ? 0 : row_split_parts(B, kr.MR, step_flops);
  if (row_parts) {
    parallel_run(row_parts, [&](index_t part) {
      const index_t b0 = B * part / row_parts, b1 = B * (part + 1) / row_parts;
      for (index_t t = 0; t < Tn; ++t) {
        const T* hp = t == 0 ? h0 : out + (t - 1) * B * H;
        for (index_t gi = 0; gi < G; ++gi) {
          ColBlock<T> rec{&kr, b1 - b0, H, hp + b0 * H, &pw[gi], nullptr, 0, 0, nullptr, H};
          rec_gate(rec, gi, 0, H, P + (t * B + b0) * GH, scratch.p + b0 * H);
        }
        gate_rows(t, b0, b1, 0, H);
      }
    });
    copy_rows(h_n, out + (Tn - 1) * B * H, B * H);
    if (is_lstm && extra) copy_rows(c_n, extra + (Tn - 1) * B * H, B * H);
    return;
  }

  for (index_t t = 0; t < Tn; ++t) {
    const T* hp = t == 0 ? h0 : out + (t - 1) * B * H;
    T* Pt = P + t * B * GH;
    auto body = [&](index_t part) {
      const index_t j0 = panels * part / parts * NR, j1 = std::min(H, panels * (part + 1) / parts * NR);
      if (j0 >= j1) return;
      T* buf = packbuf.p + part * part_elems;
      T* ah = buf + buf_elems;  // h_{t-1} packed, then x (cell)
      T* ax = ah + Bp * H;
      if (fused_input) {
        pack_a_all(kr, KC, ah, hp, H, B, H);
        pack_a_all(kr, KC, ax, x, I, B, I);
      }
      for (index_t gi = 0; gi < G; ++gi) {
        const index_t off = gi * H;
        if (fused_input) {  // Pt = x W_ih^T + b_ih (this gate's columns)
          ColBlock<T> in{&kr, B, I, ax, nullptr,
                         static_cast<const T*>(w.w_ih) + off * w.rs_wih, w.cs_wih, w.rs_wih, buf};
          col_block(in, j0, j1, Pt + off, GH, T(0), bih ? bih + off : nullptr, Act::none);
        }
        ColBlock<T> rec{&kr, B, H, fused_input ? ah : hp, fused_input ? nullptr : &pw[gi],
                        static_cast<const T*>(w.w_hh) + off * w.rs_whh, w.cs_whh, w.rs_whh, buf,
                        fused_input ? 0 : H};
        rec_gate(rec, gi, j0, j1, Pt, scratch.p);
      }
      gate_rows(t, 0, B, j0, j1 - j0);
    };
    parallel_run(parts, body);  // one part: inline, under the denormal setting
  }
  copy_rows(h_n, out + (Tn - 1) * B * H, B * H);
  if (is_lstm && extra) copy_rows(c_n, extra + (Tn - 1) * B * H, B * H);
}

// ---------------------------------------------------------------------------------------
// Backward

// db (GH) = column sums of D (rows x GH): ones (1 x rows) @ D on the GEMM engine.
template <typename T>
void col_sums(DType dt, T* db, const T* D, index_t rows, index_t GH) {
  static const T one = T(1);
  GemmArgs s;
  s.dtype = dt;
  s.M = 1; s.N = GH; s.K = rows;
  s.a = &one; s.rs_a = 0; s.cs_a = 0;
  s.b = D; s.rs_b = GH; s.cs_b = 1;
  s.c = db; s.rs_c = GH;
  gemm(s);
}

template <typename T>
void backward_t(const RnnWeights& w, const RnnGrads& gr, const RnnSaved& sv) {
  Ctx<T> C(w);
  const index_t Tn = C.Tn, B = C.B, I = C.I, H = C.H, GH = C.GH;
  T* dx = static_cast<T*>(gr.dx);
  T* dh = static_cast<T*>(gr.dh0);  // carries dh_t through the loop; ends as dh0
  T* dc = static_cast<T*>(gr.dc0);  // LSTM: carries dc_t; ends as dc0
  T* dw_ih = static_cast<T*>(gr.dw_ih);
  T* dw_hh = static_cast<T*>(gr.dw_hh);
  T* db_ih = static_cast<T*>(gr.db_ih);
  T* db_hh = static_cast<T*>(gr.db_hh);
  const T* dout = static_cast<const T*>(sv.dout);
  const T* x = static_cast<const T*>(sv.x);
  const T* h0 = static_cast<const T*>(sv.h0);
  const T* c0 = static_cast<const T*>(sv.c0);
  const T* out = static_cast<const T*>(sv.out);
  const T* gates = static_cast<const T*>(sv.gates);
  const T* extra = static_cast<const T*>(sv.extra);
  const bool is_lstm = w.kind == RnnKind::lstm, is_gru = w.kind == RnnKind::gru;
  const bool relu = w.kind == RnnKind::rnn_relu;

  auto zero = [](T* p, index_t n) { if (p && n > 0) std::memset(p, 0, size_t(n) * sizeof(T)); };
  if (sv.dh_n) copy_rows(dh, static_cast<const T*>(sv.dh_n), B * H); else zero(dh, B * H);
  if (is_lstm) {
    if (sv.dc_n) copy_rows(dc, static_cast<const T*>(sv.dc_n), B * H); else zero(dc, B * H);
  }
  if (Tn == 0 || B == 0 || H == 0) {
    zero(dx, Tn * B * I);
    zero(dw_ih, GH * I);
    zero(dw_hh, GH * H);
    zero(db_ih, GH);
    zero(db_hh, GH);
    return;
  }
  const index_t TB = Tn * B;
  Buf<T> Dbuf(checked_mul(TB, GH, "rnn_backward: workspace"));
  Buf<T> Dhbuf(is_gru ? TB * GH : 0);
  T* D = Dbuf.p;                    // gradients of the input-side pre-activations
  T* Dh = is_gru ? Dhbuf.p : D;     // and of the hidden-side ones (differ for GRU only)

  PackedMatrix pw;  // W_hh as the (GH x H) B operand of dh_{t-1} = D_h[t] W_hh
  const bool packed = Tn > 1;
  if (packed) pw = pack_b(C.dt, GH, H, w.w_hh, w.rs_whh, w.cs_whh);
  const GemmKernel<T>& kr = gemm_kernel_for<T>(C.isa, C.B);  // the tile that pads the batch least
  const RnnIsaKernels<T>& rk = rnn_isa_kernels<T>(C.isa);
  const index_t NR = kr.NR;

  // One region per step; threads split the hidden units (NR-wide panels, as the forward).
  // A thread first finishes dh_t for its units, dh_t = D_h[t+1] W_hh[:, units] (+ the
  // direct GRU term it left there) + dout_t, then runs the step's elementwise pass on
  // those units, which needs nothing from other units. The region's end is the step's
  // only barrier: the next step's product reads every unit of D_h[t].
  const index_t panels = ceil_div(H, NR);
  const double step_flops = 2.0 * double(B) * double(GH) * double(H);
  const index_t parts = std::max<index_t>(1, std::min<index_t>(
      std::min<index_t>(get_num_threads(), panels), index_t(step_flops / kMinStepFlopsPerThread)));

  // The step's elementwise pass for batch rows [b0, b1), hidden units [j0, j0 + n).
  auto step_rows = [&](index_t t, index_t b0, index_t b1, index_t j0, index_t n) {
    for (index_t b = b0; b < b1; ++b) {
      T* dhb = dh + b * H + j0;
      if (dout) {
        const T* go = dout + (t * B + b) * H + j0;
        for (index_t j = 0; j < n; ++j) dhb[j] += go[j];
      }
      const index_t row = t * B + b;
      T* d = D + row * GH + j0;
      const T* hb = out + row * H + j0;
      if (!is_lstm && !is_gru) {
        rk.rnn_bwd(d, dhb, hb, relu, n);
      } else if (is_lstm) {
        const T* g = gates + row * GH + j0;
        const T* cb = extra + row * H + j0;
        const T* cp = (t == 0 ? c0 + b * H : extra + (row - B) * H) + j0;
        rk.lstm_bwd(d, d + H, d + 2 * H, d + 3 * H, dc + b * H + j0, dhb, g, g + H, g + 2 * H,
                    g + 3 * H, cb, cp, n);
      } else {
        const T* g = gates + row * GH + j0;
        const T* hn = extra + row * H + j0;
        const T* hp = (t == 0 ? h0 + b * H : out + (row - B) * H) + j0;
        T* dhh = Dh + row * GH + j0;
        rk.gru_bwd(d, d + H, d + 2 * H, dhh, dhh + H, dhh + 2 * H, dhb, g, g + H, g + 2 * H, hn, hp, n);
      }
    }
  };

  // Short steps with a full row tile per thread: the batch rows are independent through time
  // here too, so each thread runs every step for its own rows, without a barrier (the
  // forward's rule, kRowSplitMaxFlops).
  // dh_t[b0:b1, j0:j1] = D_h[t+1][b0:b1] W_hh[:, j0:j1] (+ dh_t z for GRU); D_h[t+1] read in
  // place (packing it, on every thread, cost more).
  auto dh_product = [&](index_t t, index_t b0, index_t b1, index_t j0, index_t j1) {
    ColBlock<T> blk{&kr, b1 - b0, GH, Dh + ((t + 1) * B + b0) * GH, &pw, nullptr, 0, 0, nullptr, GH};
    col_block(blk, j0, j1, dh + b0 * H, H, is_gru ? T(1) : T(0), static_cast<const T*>(nullptr), Act::none);
  };
  const index_t row_parts = packed ? row_split_parts(B, kr.MR, step_flops) : 0;
  if (row_parts) {
    parallel_run(row_parts, [&](index_t part) {
      const index_t b0 = B * part / row_parts, b1 = B * (part + 1) / row_parts;
      for (index_t t = Tn - 1; t >= 0; --t) {
        if (t < Tn - 1) dh_product(t, b0, b1, 0, H);
        step_rows(t, b0, b1, 0, H);
      }
    });
  } else {
    for (index_t t = Tn - 1; t >= 0; --t) {
      auto body = [&](index_t part) {
        const index_t j0 = panels * part / parts * NR, j1 = std::min(H, panels * (part + 1) / parts * NR);
        if (j0 >= j1) return;
        if (t < Tn - 1) dh_product(t, 0, B, j0, j1);
        step_rows(t, 0, B, j0, j1 - j0);
      };
      parallel_run(parts, body);  // one part: inline, under the denormal setting
    }
  }
  {  // dh_0 := D_h[0] W_hh (+ dh_0 z for GRU): one GEMM on every thread.
    GemmArgs g;
    g.dtype = C.dt;
    g.M = B; g.N = H; g.K = GH;
    g.a = Dh; g.rs_a = GH; g.cs_a = 1;
    if (packed) g.packed_b = &pw;
    else { g.b = w.w_hh; g.rs_b = w.rs_whh; g.cs_b = w.cs_whh; }
    g.c = dh; g.rs_c = H;
    g.beta = is_gru ? 1.0 : 0.0;
    gemm(g);
  }

  // Weight, bias and input gradients: one GEMM each over all T*B rows.
  {
    GemmArgs g;  // dX (TB x I) = D (TB x GH) W_ih (GH x I)
    g.dtype = C.dt;
    g.M = TB; g.N = I; g.K = GH;
    g.a = D; g.rs_a = GH; g.cs_a = 1;
    g.b = w.w_ih; g.rs_b = w.rs_wih; g.cs_b = w.cs_wih;
    g.c = dx; g.rs_c = I;
    gemm(g);
  }
  {
    GemmArgs g;  // dW_ih (GH x I) = D^T (GH x TB) X (TB x I)
    g.dtype = C.dt;
    g.M = GH; g.N = I; g.K = TB;
    g.a = D; g.rs_a = 1; g.cs_a = GH;
    g.b = x; g.rs_b = I; g.cs_b = 1;
    g.c = dw_ih; g.rs_c = I;
    gemm(g);
  }
  {
    GemmArgs g;  // dW_hh (GH x H) = D_h[0]^T h0 + D_h[1..]^T out[0..T-2]
    g.dtype = C.dt;
    g.M = GH; g.N = H; g.K = B;
    g.a = Dh; g.rs_a = 1; g.cs_a = GH;
    g.b = h0; g.rs_b = H; g.cs_b = 1;
    g.c = dw_hh; g.rs_c = H;
    gemm(g);
    if (Tn > 1) {
      g.K = (Tn - 1) * B;
      g.a = Dh + B * GH;
      g.b = out;
      g.beta = 1.0;
      gemm(g);
    }
  }
  if (db_ih) col_sums(C.dt, db_ih, D, TB, GH);
  if (db_hh) {
    if (is_gru || !db_ih) col_sums(C.dt, db_hh, Dh, TB, GH);
    else copy_rows(db_hh, db_ih, GH);
  }
}

}  // namespace

void rnn_forward(const RnnWeights& w, void* out, void* h_n, void* c_n, const void* x,
                 const void* h0, const void* c0, void* gates, void* extra) {
  if (w.dtype == DType::f32)
    forward_t<float>(w, static_cast<float*>(out), static_cast<float*>(h_n), static_cast<float*>(c_n),
                     static_cast<const float*>(x), static_cast<const float*>(h0),
                     static_cast<const float*>(c0), static_cast<float*>(gates), static_cast<float*>(extra));
  else
    forward_t<double>(w, static_cast<double*>(out), static_cast<double*>(h_n), static_cast<double*>(c_n),
                      static_cast<const double*>(x), static_cast<const double*>(h0),
                      static_cast<const double*>(c0), static_cast<double*>(gates), static_cast<double*>(extra));
}

void rnn_backward(const RnnWeights& w, const RnnGrads& g, const RnnSaved& s) {
  if (w.dtype == DType::f32) backward_t<float>(w, g, s);
  else backward_t<double>(w, g, s);
}

}  // namespace nnk
