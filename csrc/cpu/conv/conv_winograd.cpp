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
#include <atomic>
#include <cmath>
#include <memory>
#include <vector>

#include "core/cpu_features.h"
#include "core/errors.h"
#include "core/mempool.h"
#include "core/parallel.h"
#include "core/scratch.h"
#include "cpu/conv/winograd.h"
#include "cpu/gemm/gemm.h"
#include "cpu/gemm/ukr.h"

namespace nnk {

namespace {

thread_local Scratch t_wino;  // V, M (or Y) and the transforms' rows of one block

// The transforms of one ISA.
struct WinoFns {
  decltype(&cpu::generic::wino_input) input = cpu::generic::wino_input;
  decltype(&cpu::generic::wino_output) output = cpu::generic::wino_output;
  decltype(&cpu::generic::wino_dy) dy = cpu::generic::wino_dy;
};
WinoFns wino_fns(Isa isa) {
  WinoFns f;
#if defined(NNK_X86)
  if (isa == Isa::avx512) f = {cpu::avx512::wino_input, cpu::avx512::wino_output, cpu::avx512::wino_dy};
  else if (isa == Isa::avx2) f = {cpu::avx2::wino_input, cpu::avx2::wino_output, cpu::avx2::wino_dy};
#endif
  (void)isa;
  return f;
}

template <typename T>
bool winograd_t(const WinoGeom& g, T* y, const T* x, const T* w, bool transposed, const T* bias) {
  const DType dt = dtype_of<T>::value;
  const index_t C = g.C, Cout = g.Cout;
  const index_t tiles = g.N * g.TH * g.TW;
  if (tiles == 0 || Cout == 0) return true;
  const Isa isa = current_isa();
  const WinoFns fn = wino_fns(isa);
  const GemmKernel<T>& kr = gemm_kernel_for<T>(isa, Cout);  // the row tile that pads Cout least
  const index_t kcb = ceil_div(std::max<index_t>(C, 1), ceil_div(std::max<index_t>(C, 1), kr.KC));

  // U_xi[o, c] = (G g G^T)[xi] (g: the 3x3 kernel of (o, c)), written straight into the
  // packed A layout of the micro-kernel: per xi, K blocks of kcb channels at pc * Mp, in
  // each the row panels of MR, kc x MR, zero rows past Cout. Computed in double, rounded once.
  const index_t MR = kr.MR, NR = kr.NR, Mp = round_up(Cout, MR);
  const index_t u_elems = Mp * C;
  const PoolBuffer<T> ubuf = pool_buffer<T>(16 * u_elems, "conv2d");
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

  std::atomic<bool> finite{true};
  parallel_run(nblocks, [&](index_t blk) {
    const index_t t0 = blk * NR, nt = std::min(NR, tiles - t0);
    T* V = static_cast<T*>(t_wino.get(sizeof(T) * (v_elems + m_elems + tmp_elems)));
    T* M = V + v_elems;
    T* tmp = M + m_elems;
    fn.input(dt, g, x, t0, nt, NR, V, tmp);
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
    if (!fn.output(dt, g, M, t0, nt, NR, y, bias, tmp)) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load();
}

constexpr index_t kWeightBlock = 128;          // tiles per product (its K) in the weight gradient
constexpr index_t kWeightPartsPerThread = 2;   // partial sums per thread (as the im2col path)
constexpr index_t kMaxWeightPartials = index_t(256) << 20;  // bound on the partial sums' bytes

// Weight gradient (winograd.h): the tiles are cut into P parts (P depends on the thread
// count only), each summed in block order into its own 16 x Cout x C partial by one thread;
// the partials are added in part order and transformed back (G^T . G) per output channel.
template <typename T>
bool winograd_weight_t(const WinoGeom& g, T* dw, const T* dy, const T* x) {
  const DType dt = dtype_of<T>::value;
  const index_t C = g.C, Cout = g.Cout;
  const index_t tiles = g.N * g.TH * g.TW;
  const index_t KK = Cout * C;  // one Mw_xi
  const Isa isa = current_isa();
  const WinoFns fn = wino_fns(isa);
  const index_t ld = kWeightBlock;
  const index_t nblocks = ceil_div(tiles, ld);
  const index_t threads = get_num_threads();
  // Per-thread parts while their partials stay under kMaxWeightPartials; past that (some
  // thousand channels on each side) one part, its products threaded inside.
  const index_t part_bytes = 16 * KK * index_t(sizeof(T));
  const index_t parts = threads <= 1 ? 1 : std::max<index_t>(1, std::min<index_t>(
      {kWeightPartsPerThread * threads, nblocks, kMaxWeightPartials / std::max<index_t>(part_bytes, 1)}));
  const PoolBuffer<T> mw = pool_buffer<T>(checked_mul(parts * 16, KK, "conv2d_backward"), "conv2d_backward");
  const index_t vs = wino_mat_stride(C, ld), ys = wino_mat_stride(Cout, ld);
  const size_t v_elems = size_t(16 * vs), y_elems = size_t(16 * ys), tmp_elems = size_t(wino_tmp_elems(g, ld));
  auto run_part = [&](index_t part) {
    T* acc = mw.get() + part * 16 * KK;
    const index_t b0 = nblocks * part / parts, b1 = nblocks * (part + 1) / parts;
    T* Vb = static_cast<T*>(t_wino.get(sizeof(T) * (v_elems + y_elems + tmp_elems)));
    T* Yb = Vb + v_elems;
    T* tmp = Yb + y_elems;
    for (index_t blk = b0; blk < b1; ++blk) {
      const index_t t0 = blk * ld, nt = std::min(ld, tiles - t0);
      auto transforms = [&](index_t) {
        fn.input(dt, g, x, t0, nt, ld, Vb, tmp);
        fn.dy(dt, g, dy, t0, nt, ld, Yb, tmp);
      };
      if (parts == 1) parallel_run(1, transforms);  // inline, under the denormal setting
      else transforms(0);
      for (int xi = 0; xi < 16; ++xi) {  // Mw_xi += Y_xi (Cout x nt) @ V_xi^T (nt x C)
        GemmArgs a;
        a.dtype = dt;
        a.M = Cout; a.N = C; a.K = nt;
        a.a = Yb + xi * ys; a.rs_a = ld; a.cs_a = 1;
        a.b = Vb + xi * vs; a.rs_b = 1; a.cs_b = ld;
        a.c = acc + xi * KK; a.rs_c = C; a.cs_c = 1;
        a.beta = blk == b0 ? 0.0 : 1.0;
        gemm(a);  // in a part: on this thread; with one part: on every thread
      }
    }
  };
  if (parts == 1) run_part(0);  // at the top level: the products use every thread
  else parallel_run(parts, run_part);
  // dw[o, c] = G^T (sum over parts of Mw[., o, c]) G, G^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 1].
  std::atomic<bool> finite{true};
  parallel_for(Cout, std::max<index_t>(1, 1024 / std::max<index_t>(C, 1)), [&](index_t o0, index_t o1) {
    std::vector<T> m(size_t(16) * size_t(C));
    T check = 0;
    for (index_t o = o0; o < o1; ++o) {
      for (int xi = 0; xi < 16; ++xi) {  // sum of the parts' rows, vectorised over c
        T* __restrict r = m.data() + xi * C;
        const T* src = mw.get() + xi * KK + o * C;
        for (index_t c = 0; c < C; ++c) r[c] = src[c];
        for (index_t p = 1; p < parts; ++p) {
          const T* __restrict q = src + p * 16 * KK;
          for (index_t c = 0; c < C; ++c) r[c] += q[c];
        }
      }
      for (index_t c = 0; c < C; ++c) {
        T u[3][4];  // G^T m (rows)
        for (int j = 0; j < 4; ++j) {
          const T m0 = m[j * C + c], m1 = m[(4 + j) * C + c], m2 = m[(8 + j) * C + c], m3 = m[(12 + j) * C + c];
          u[0][j] = m0 + T(0.5) * (m1 + m2);
          u[1][j] = T(0.5) * (m1 - m2);
          u[2][j] = T(0.5) * (m1 + m2) + m3;
        }
        T* out = dw + (o * C + c) * 9;
        for (int i = 0; i < 3; ++i) {  // (G^T m) G (columns)
          out[i * 3 + 0] = u[i][0] + T(0.5) * (u[i][1] + u[i][2]);
          out[i * 3 + 1] = T(0.5) * (u[i][1] - u[i][2]);
          out[i * 3 + 2] = T(0.5) * (u[i][1] + u[i][2]) + u[i][3];
          check += out[i * 3 + 0] + out[i * 3 + 1] + out[i * 3 + 2];
        }
      }
    }
    if (!std::isfinite(check)) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load();
}

}  // namespace

bool winograd_conv3x3(DType dt, const WinoGeom& g, void* y, const void* x, const void* w, bool transposed,
                      const void* bias) {
  if (dt == DType::f32)
    return winograd_t<float>(g, static_cast<float*>(y), static_cast<const float*>(x), static_cast<const float*>(w), transposed,
                      static_cast<const float*>(bias));
  return winograd_t<double>(g, static_cast<double*>(y), static_cast<const double*>(x), static_cast<const double*>(w),
                       transposed, static_cast<const double*>(bias));
}

bool winograd_conv3x3_weight(DType dt, const WinoGeom& g, void* dw, const void* dy, const void* x) {
  if (dt == DType::f32)
    return winograd_weight_t<float>(g, static_cast<float*>(dw), static_cast<const float*>(dy), static_cast<const float*>(x));
  return winograd_weight_t<double>(g, static_cast<double*>(dw), static_cast<const double*>(dy), static_cast<const double*>(x));
}

}  // namespace nnk
