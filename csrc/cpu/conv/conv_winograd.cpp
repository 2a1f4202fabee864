// Winograd F(2x2, 3x3) driver (the maths and the data layout: winograd.h).
//
// Per call: the 16 transformed weights U_xi = G g G^T (computed in double, rounded once)
// are packed as the A operands of the current ISA's micro-kernel. The tiles are cut into
// blocks of NR (one B panel) and the blocks spread over the threads; per block, on one
// thread: input transform -> V (16 x C x NR, packed B), 16 products M_xi = U_xi V_xi on the
// micro-kernels (B panel in L1, U_xi in L2), output transform -> y. A block's result does
// not depend on which thread runs it, so the bits do not depend on the thread count.
// Accuracy: the transforms add a few roundings per output (entries of B, G, A are 0, +-1,
// +-1/2); measured relative errors against float64 torch are 1.5-5.5e-7 in float32 (the
// im2col path: 1-3e-7), within the tests' 2e-6.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "core/cpu_features.h"
#include "core/errors.h"
#include "core/mempool.h"
#include "core/parallel.h"
#include "cpu/conv/winograd.h"
#include "cpu/gemm/gemm.h"
#include "cpu/gemm/ukr.h"

namespace nnk {

namespace {

// A 64-byte aligned per-thread workspace, kept for the thread's life.
struct WinoScratch {
  void* p = nullptr;
  size_t cap = 0;
  ~WinoScratch() { std::free(p); }
  void* get(size_t bytes) {
    if (bytes > cap) {
      std::free(p);
      p = nullptr;
      cap = 0;
      const size_t sz = (bytes + 4095) & ~size_t(4095);
      p = std::aligned_alloc(64, sz);
      if (!p) throw std::bad_alloc();
      cap = sz;
    }
    return p;
  }
};
thread_local WinoScratch t_wino;

struct PoolFree { void operator()(void* p) const { pool_free(p); } };

using InputFn = decltype(&cpu::generic::wino_input);
using OutputFn = decltype(&cpu::generic::wino_output);

template <typename T>
void winograd_t(const WinoGeom& g, T* y, const T* x, const T* w, bool transposed, const T* bias) {
  const DType dt = dtype_of<T>::value;
  const index_t C = g.C, Cout = g.Cout;
  const index_t tiles = g.N * g.TH * g.TW;
  if (tiles == 0 || Cout == 0) return;
  const Isa isa = current_isa();
  InputFn fin = cpu::generic::wino_input;
  OutputFn fout = cpu::generic::wino_output;
#if defined(NNK_X86)
  if (isa == Isa::avx512) { fin = cpu::avx512::wino_input; fout = cpu::avx512::wino_output; }
  else if (isa == Isa::avx2) { fin = cpu::avx2::wino_input; fout = cpu::avx2::wino_output; }
#endif
  const GemmKernel<T>& kr = gemm_kernel_for<T>(isa, Cout);  // the row tile that pads Cout least
  const index_t kcb = ceil_div(std::max<index_t>(C, 1), ceil_div(std::max<index_t>(C, 1), kr.KC));

  // U_xi[o, c] = (G g G^T)[xi] (g: the 3x3 kernel of (o, c)), written straight into the
  // packed A layout of the micro-kernel: per xi, K blocks of kcb channels at pc * Mp, in
  // each the row panels of MR, kc x MR, zero rows past Cout. Computed in double, rounded once.
  const index_t MR = kr.MR, NR = kr.NR, Mp = round_up(Cout, MR);
  const index_t u_elems = Mp * C;
  std::unique_ptr<T, PoolFree> ubuf(static_cast<T*>(pool_alloc(sizeof(T) * size_t(16 * u_elems))));
  T* const U = ubuf.get();
  parallel_for(Mp / MR, std::max<index_t>(1, 2048 / std::max<index_t>(C * MR, 1)), [&](index_t p0, index_t p1) {
    for (index_t o = p0 * MR; o < p1 * MR; ++o)
      for (index_t c = 0; c < C; ++c) {
        const index_t pc = (c / kcb) * kcb, kc = std::min(kcb, C - pc);
        T* dst = U + pc * Mp + (o / MR) * kc * MR + (c - pc) * MR + o % MR;
        if (o >= Cout) {
          for (int xi = 0; xi < 16; ++xi) dst[xi * u_elems] = T(0);
          continue;
        }
        double k[3][3];
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j)
            k[i][j] = transposed ? double(w[((c * Cout + o) * 3 + (2 - i)) * 3 + (2 - j)])
                                 : double(w[((o * C + c) * 3 + i) * 3 + j]);
        double gk[4][3];  // G g
        for (int j = 0; j < 3; ++j) {
          gk[0][j] = k[0][j];
          gk[1][j] = 0.5 * (k[0][j] + k[1][j] + k[2][j]);
          gk[2][j] = 0.5 * (k[0][j] - k[1][j] + k[2][j]);
          gk[3][j] = k[2][j];
        }
        for (int i = 0; i < 4; ++i) {  // (G g) G^T
          dst[(i * 4 + 0) * u_elems] = T(gk[i][0]);
          dst[(i * 4 + 1) * u_elems] = T(0.5 * (gk[i][0] + gk[i][1] + gk[i][2]));
          dst[(i * 4 + 2) * u_elems] = T(0.5 * (gk[i][0] - gk[i][1] + gk[i][2]));
          dst[(i * 4 + 3) * u_elems] = T(gk[i][2]);
        }
      }
  });

  // Blocks of NR tiles: one B panel per product. V (16 x C x NR), M (16 x Cout x NR) and U_xi
  // then stay in L2; larger blocks (several panels per U_xi) measured slower
  // (16 x 64 x 56^2 -> 64: 1 panel 6.0 ms, 2 6.3, 4 7.0; 16 x 256 x 14^2: 4.8, 5.2, 6.2).
  const index_t nblocks = ceil_div(tiles, NR);
  const index_t vs = wino_mat_stride(C, NR), ms = wino_mat_stride(Cout, NR);
  const size_t v_elems = size_t(16 * vs), m_elems = size_t(16 * ms);
  const size_t tmp_elems = size_t(wino_tmp_elems(g, NR));

  parallel_run(nblocks, [&](index_t blk) {
    const index_t t0 = blk * NR, nt = std::min(NR, tiles - t0);
    T* V = static_cast<T*>(t_wino.get(sizeof(T) * (v_elems + m_elems + tmp_elems)));
    T* M = V + v_elems;
    T* tmp = M + m_elems;
    fin(dt, g, x, t0, nt, NR, V, tmp);
    UkrEpilogue<T> ep;
    ep.act_tile = kr.act_tile;
    for (int xi = 0; xi < 16; ++xi) {
      const T* ua = U + size_t(xi) * u_elems;
      const T* vb = V + xi * vs;
      T* mc = M + xi * ms;
      for (index_t pc = 0; pc < C; pc += kcb) {
        const index_t kc = std::min(kcb, C - pc);
        ep.beta = pc == 0 ? T(0) : T(1);
        for (index_t ir = 0; ir < Cout; ir += MR)  // the B panel (in L1) against all of U_xi
          kr.ukr(kc, ua + pc * Mp + (ir / MR) * kc * MR, 1, MR, vb + pc * NR, NR, mc + ir * NR, NR,
                 std::min(MR, Cout - ir), NR, ep);
      }
    }
    fout(dt, g, M, t0, nt, NR, y, bias, tmp);
  });
}

}  // namespace

void winograd_conv3x3(DType dt, const WinoGeom& g, void* y, const void* x, const void* w, bool transposed,
                      const void* bias) {
  if (dt == DType::f32)
    winograd_t<float>(g, static_cast<float*>(y), static_cast<const float*>(x), static_cast<const float*>(w), transposed,
                      static_cast<const float*>(bias));
  else
    winograd_t<double>(g, static_cast<double*>(y), static_cast<const double*>(x), static_cast<const double*>(w),
                       transposed, static_cast<const double*>(bias));
}

}  // namespace nnk
