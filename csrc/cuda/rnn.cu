// RNN / LSTM / GRU forward and backward through time on the GPU, composed from the tiled GEMM
// (gemm.cu) and one elementwise gate kernel per step (torch's maths and gate order; the CPU driver's
// layout of the cache, csrc/cpu/rnn/rnn.h):
//   1. P = X W_ih^T + b_ih for all T steps: one GEMM (M = T B, N = G H, K = I).
//   2. per step t, the recurrent product into the step's slice of P, fused in the GEMM's
//      epilogue: P_t += h_{t-1} W_hh^T + b_hh. RNN: the nonlinearity too, and P is the output
//      itself (h_t written once). GRU: the n gate's hidden side goes to a (B, H) scratch
//      instead (it is multiplied by r).
//   3. LSTM / GRU: a gate kernel over B x H: the activations (written back into P, which is
//      the `gates` cache when asked for), the cell update, h_t into the output; the cache's
//      `extra` gets c_t (LSTM) or the n gate's hidden side (GRU).
// Backward (as the CPU driver): per step t from the last, dh_t = D_h[t+1] W_hh (+ dout_t), the
// step's gate pass into D[t] (GRU: also D_h[t]); then dh0, and one GEMM each for dX, dW_ih,
// dW_hh over all T B rows; biases by column sums (a thread per column, rows in order). With
// T >= 2 the steps (not the final GEMMs) run in one cooperative launch of the tiled backward
// kernel instead, where a plan fits (below).
// Kernels are queued on stream 0 one after another, so step t's GEMM reads h_{t-1} after the
// previous gate kernel wrote it.
// Persistent forward (sequences, T >= 2, when W_hh fits on chip): after step 1, one cooperative
// kernel runs every step, and a grid-wide barrier (cooperative_groups) ends each step. So a
// step costs one barrier instead of 1-3 kernel launches, and W_hh is read from memory once
// per sequence instead of once per step. Two kernels:
// - tiled (default; rnn_tiled_kernel, the plan in launch.h): block (ug, rg) owns units
//   [ug U, ug U + U) of every gate for batch rows [rg Rb, rg Rb + Rb): W_hh's rows of those
//   units stay in shared memory, the block's rows of h_{t-1} are staged there each step, and
//   the 8 warps compute the (Rb x G U) step product in R x Q register tiles (lanes split k in
//   16-byte chunks, a warp reduce-scatter at the end), then a thread per (row, unit) runs the
//   gate maths. Each weight value read from shared memory serves R batch rows.
// - rows (NNKERNELS_CUDA_RNN_PERSISTENT=rows, the fifth session's; also where no tiled plan
//   fits): block j owns units [j U, j U + U) for every batch row; a warp per batch row reads
//   h_{t-1}[b] from L2 and reads each weight from shared memory once per row, a warp sum per
//   gate row.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include "cuda/api.h"
#include "cuda/cuda_check.h"
#include "cuda/device.cuh"
#include "cuda/launch.h"

namespace nnk::cuda {

namespace {

template <typename T>
__device__ __forceinline__ T sigmoid_(T x) {
  return T(1) / (T(1) + dev::exp_(-x));
}

// g: the step's (B, 4H) slice of P (pre-activations in, activations out); cp: c_{t-1}; cn:
// c_t (may alias cp); h: h_t.
template <typename T>
__global__ void lstm_gate_kernel(T* __restrict__ g, const T* cp, T* cn, T* __restrict__ h,
                                 index_t B, index_t H) {
  const index_t step = index_t(gridDim.x) * blockDim.x;  // grid-stride (elementwise_launch caps the grid)
  for (index_t e = index_t(blockIdx.x) * blockDim.x + threadIdx.x; e < B * H; e += step) {
    const index_t b = e / H, j = e % H;
    T* gb = g + b * 4 * H;
    const T i = sigmoid_(gb[j]), f = sigmoid_(gb[H + j]), gg = dev::tanh_(gb[2 * H + j]),
            o = sigmoid_(gb[3 * H + j]);
    const T c = f * cp[e] + i * gg;
    gb[j] = i;
    gb[H + j] = f;
    gb[2 * H + j] = gg;
    gb[3 * H + j] = o;
    cn[e] = c;
    h[e] = o * dev::tanh_(c);
  }
}

// g: the step's (B, 3H) slice of P: r and z pre-activations summed over both sides, n's input
// side; s: n's hidden side (b_hn included); hp: h_{t-1}. h_t = (1 - z) n + z h_{t-1}.
template <typename T>
__global__ void gru_gate_kernel(T* __restrict__ g, const T* __restrict__ s, const T* __restrict__ hp,
                                T* __restrict__ h, T* __restrict__ extra, index_t B, index_t H) {
  const index_t step = index_t(gridDim.x) * blockDim.x;
  for (index_t e = index_t(blockIdx.x) * blockDim.x + threadIdx.x; e < B * H; e += step) {
    const index_t b = e / H, j = e % H;
    T* gb = g + b * 3 * H;
    const T r = sigmoid_(gb[j]), z = sigmoid_(gb[H + j]);
    const T n = dev::tanh_(gb[2 * H + j] + r * s[e]);
    gb[j] = r;
    gb[H + j] = z;
    gb[2 * H + j] = n;
    if (extra) extra[e] = s[e];
    h[e] = n + z * (hp[e] - n);
  }
}

// ---- backward (elementwise passes of one step; maths as csrc/cpu/rnn/rnn_kernels.inl) ----
#define NNK_GRID_STRIDE(e, n) \
  for (index_t e = index_t(blockIdx.x) * blockDim.x + threadIdx.x; e < (n); e += index_t(gridDim.x) * blockDim.x)

template <typename T>
__global__ void add_kernel(T* __restrict__ y, const T* __restrict__ x, index_t n) {
  NNK_GRID_STRIDE(e, n) y[e] += x[e];
}

// The gate backward of one element e = (b, j) of step t, shared by the per-step kernels below
// and the persistent backward. dhe: dh_t[e] in full (the recurrent product, dout_t, and for
// GRU the carried direct part). D / Dh: the step's (B, G H) slices.
// RNN: D = dh act'(h) (relu: dh where h > 0 or h is NaN).
template <typename T>
__device__ __forceinline__ void rnn_bwd_elem(T* D, T dhe, T v, bool relu, index_t e) {
  D[e] = relu ? ((v > T(0) || v != v) ? dhe : T(0)) : dhe * (T(1) - v * v);
}
// LSTM: from the activated gates g, c_t, c_{t-1}; dc carried (dc_t in, dc_{t-1} out).
template <typename T>
__device__ __forceinline__ void lstm_bwd_elem(T* D, T* dc, T dhe, const T* g, const T* c, const T* cp,
                                              index_t H, index_t b, index_t j, index_t e) {
  const T* gb = g + b * 4 * H;
  T* db = D + b * 4 * H;
  const T i = gb[j], f = gb[H + j], gg = gb[2 * H + j], o = gb[3 * H + j];
  const T tc = dev::tanh_(c[e]);
  const T dcj = dc[e] + dhe * o * (T(1) - tc * tc);
  db[3 * H + j] = dhe * tc * o * (T(1) - o);
  db[j] = dcj * gg * i * (T(1) - i);
  db[H + j] = dcj * cp[e] * f * (T(1) - f);
  db[2 * H + j] = dcj * i * (T(1) - gg * gg);
  dc[e] = dcj * f;
}
// GRU: D (input side) and Dh (hidden side, differs in n: dn r); returns the direct part of
// dh_{t-1}, dh z, to which the next step's product adds.
template <typename T>
__device__ __forceinline__ T gru_bwd_elem(T* D, T* Dh, T dhe, const T* g, const T* hn, const T* hp, index_t H,
                                          index_t b, index_t j, index_t e) {
  const T* gb = g + b * 3 * H;
  const T r = gb[j], z = gb[H + j], n = gb[2 * H + j];
  const T dan = dhe * (T(1) - z) * (T(1) - n * n);
  const T dar = dan * hn[e] * r * (T(1) - r);
  const T daz = dhe * (hp[e] - n) * z * (T(1) - z);
  T* db = D + b * 3 * H;
  T* dhb = Dh + b * 3 * H;
  db[j] = dar;
  db[H + j] = daz;
  db[2 * H + j] = dan;
  dhb[j] = dar;
  dhb[H + j] = daz;
  dhb[2 * H + j] = dan * r;
  return dhe * z;
}

template <typename T>
__global__ void rnn_bwd_kernel(T* __restrict__ d, const T* __restrict__ dh, const T* __restrict__ h,
                               bool relu, index_t n) {
  NNK_GRID_STRIDE(e, n) rnn_bwd_elem(d, dh[e], h[e], relu, e);
}

template <typename T>
__global__ void lstm_bwd_kernel(T* __restrict__ D, T* __restrict__ dc, const T* __restrict__ dh,
                                const T* __restrict__ g, const T* __restrict__ c,
                                const T* __restrict__ cp, index_t B, index_t H) {
  NNK_GRID_STRIDE(e, B * H) lstm_bwd_elem(D, dc, dh[e], g, c, cp, H, e / H, e % H, e);
}

template <typename T>
__global__ void gru_bwd_kernel(T* __restrict__ D, T* __restrict__ Dh, T* __restrict__ dh,
                               const T* __restrict__ g, const T* __restrict__ hn,
                               const T* __restrict__ hp, index_t B, index_t H) {
  NNK_GRID_STRIDE(e, B * H) dh[e] = gru_bwd_elem(D, Dh, dh[e], g, hn, hp, H, e / H, e % H, e);
}

// db[j] = sum_r D[r, j], rows in order (deterministic): a thread per column.
template <typename T>
__global__ void col_sum_kernel(T* __restrict__ db, const T* __restrict__ D, index_t rows, index_t cols) {
  NNK_GRID_STRIDE(j, cols) {
    T acc = T(0);
    for (index_t r = 0; r < rows; ++r) acc += D[r * cols + j];
    db[j] = acc;
  }
}
#undef NNK_GRID_STRIDE

__host__ __device__ __forceinline__ int rnn_gates(RnnFamily kind) {
  return kind == RnnFamily::lstm ? 4 : (kind == RnnFamily::gru ? 3 : 1);
}

// The persistent kernels' gate maths for unit j of batch row b at step t: d[gi], the recurrent
// sums h_{t-1} W_hh^T of the unit's gates (b_hh not included); pb, the row's (G H) slice of P
// (the input side in; the activations out, as the gate kernels above); hp, h_{t-1}. Writes
// h_t, and c_t (LSTM) / the n gate's hidden side (GRU) as the per-step path does.
template <typename T>
__device__ __forceinline__ void persistent_gates(RnnFamily kind, index_t t, index_t B, index_t H, index_t b,
                                                 index_t j, const T (&d)[4], const T* bhh, T* pb, const T* c0,
                                                 T* c_n, T* extra, const T* hp, T* out) {
  const index_t e = b * H + j;
  T* ht = out + t * B * H;
  auto bias = [&](int gi) { return bhh ? bhh[gi * H + j] : T(0); };
  if (kind == RnnFamily::rnn_tanh || kind == RnnFamily::rnn_relu) {
    const T v = pb[j] + d[0] + bias(0);
    ht[e] = kind == RnnFamily::rnn_relu ? (v > T(0) ? v : (v != v ? v : T(0))) : dev::tanh_(v);
  } else if (kind == RnnFamily::lstm) {
    const T ig = sigmoid_(pb[j] + d[0] + bias(0)), fg = sigmoid_(pb[H + j] + d[1] + bias(1));
    const T gg = dev::tanh_(pb[2 * H + j] + d[2] + bias(2)), og = sigmoid_(pb[3 * H + j] + d[3] + bias(3));
    const T cp = t == 0 ? c0[e] : (extra ? extra[(t - 1) * B * H + e] : c_n[e]);
    const T c = fg * cp + ig * gg;
    pb[j] = ig;
    pb[H + j] = fg;
    pb[2 * H + j] = gg;
    pb[3 * H + j] = og;
    (extra ? extra[t * B * H + e] : c_n[e]) = c;
    ht[e] = og * dev::tanh_(c);
  } else {
    const T r = sigmoid_(pb[j] + d[0] + bias(0)), z = sigmoid_(pb[H + j] + d[1] + bias(1));
    const T sn = d[2] + bias(2);
    const T n = dev::tanh_(pb[2 * H + j] + r * sn);
    pb[j] = r;
    pb[H + j] = z;
    pb[2 * H + j] = n;
    if (extra) extra[t * B * H + e] = sn;
    ht[e] = n + z * (__ldcg(hp + e) - n);
  }
}

constexpr int kPersistThreads = 256;  // 8 warps
constexpr int kPersistMaxGU = 32;     // G * U weight rows per block (accumulators per lane)

template <typename T>
__global__ void __launch_bounds__(kPersistThreads)
rnn_persistent_kernel(RnnFamily kind, index_t Tn, index_t B, index_t H, int U, const T* __restrict__ whh,
                      index_t rs_whh, index_t cs_whh, const T* __restrict__ bhh, const T* h0, const T* c0,
                      T* out, T* P, T* c_n, T* extra) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* Ws = reinterpret_cast<T*>(smem_raw);  // row q = gi U + u: W_hh row gi H + u0 + u
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  const int G = rnn_gates(kind), GU = G * U;
  const index_t GH = G * H;
  const index_t u0 = index_t(blockIdx.x) * U;
  const int Ub = int(H - u0 < U ? H - u0 : U);
  for (index_t e = threadIdx.x; e < index_t(GU) * H; e += kPersistThreads) {
    const int q = int(e / H), gi = q / U, u = q % U;
    const index_t k = e % H;
    Ws[e] = u < Ub ? whh[(gi * H + u0 + u) * rs_whh + k * cs_whh] : T(0);
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = kPersistThreads / 32;
  const index_t j = u0 + lane;  // the unit of lanes < Ub
  for (index_t t = 0; t < Tn; ++t) {
    const T* hp = t == 0 ? h0 : out + (t - 1) * B * H;
    T* Pt = P + t * B * GH;
    for (index_t b = warp; b < B; b += nw) {
      T acc[kPersistMaxGU];
#pragma unroll
      for (int q = 0; q < kPersistMaxGU; ++q) acc[q] = T(0);
      const T* hr = hp + b * H;
      for (index_t k = lane; k < H; k += 32) {
        const T hv = __ldcg(hr + k);
#pragma unroll
        for (int q = 0; q < kPersistMaxGU; ++q)
          if (q < GU) acc[q] = fma(hv, Ws[q * H + k], acc[q]);
      }
#pragma unroll
      for (int q = 0; q < kPersistMaxGU; ++q)
        if (q < GU) acc[q] = dev::warp_sum(acc[q]);
      if (lane >= Ub) continue;
      // this lane's gate sums: acc[gi U + lane], picked without a dynamic register index
      T d[4] = {T(0), T(0), T(0), T(0)};
#pragma unroll
      for (int q = 0; q < kPersistMaxGU; ++q)
#pragma unroll
        for (int gi = 0; gi < 4; ++gi)
          if (gi < G && q == gi * U + lane) d[gi] = acc[q];
      persistent_gates(kind, t, B, H, b, j, d, bhh, Pt + b * GH, c0, c_n, extra, hp, out);
    }
    grid.sync();  // h_t complete (and visible) before any block starts step t + 1
  }
}

// ---- tiled persistent forward and backward (launch.h, RnnTiledPlan) ----
template <typename T>
struct RnnTiledArgs {
  RnnFamily kind;
  index_t Tn, B, H;
  int U, Rb;        // units and batch rows per block
  int Wrows, Hrows;  // shared-memory rows: the product's columns rounded up to Q, Rb up to R
  index_t K, Ks, Kc;  // contraction length; W's row stride (K up to a 16-byte vector); staging chunk
  const T* whh; index_t rs_whh, cs_whh;
  const T* bhh; const T* h0; const T* c0;
  T* out; T* P; T* c_n; T* extra;  // forward (the backward reads out and extra)
  // backward: D, Dh (T, B, G H) (Dh == D but for GRU), dh (B, H: dh_n in, dh0 out), dc
  // (LSTM: dc_n in, dc0 out), dout (T, B, H) or null; out, gates, extra as the forward wrote
  T* D; T* Dh; T* dh; T* dc; const T* dout; const T* gates;
};

// Sums each of a lane's N values over the warp, scattered: afterwards lane l holds in v[i],
// i < max(1, N / 32), the warp sum of value l (N / 32) + i (N >= 32), or of value
// l >> (5 - log2 N) (N < 32). One shuffle per value halving (N - 1 in all for N <= 32)
// instead of five per value.
template <int Off, int N, typename T, int Cap>
__device__ __forceinline__ void reduce_scatter(T (&v)[Cap], int lane) {
  if constexpr (Off >= 1) {
    if constexpr (N > 1) {
      constexpr int half = N / 2;
      const bool up = (lane & Off) != 0;
#pragma unroll
      for (int i = 0; i < half; ++i) {
        const T send = up ? v[i] : v[i + half];
        const T keep = up ? v[i + half] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, Off);
      }
      reduce_scatter<Off / 2, half>(v, lane);
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], Off);
      reduce_scatter<Off / 2, 1>(v, lane);
    }
  }
}

template <typename T> struct Vec16;
template <> struct Vec16<float> { using type = float4; };
template <> struct Vec16<double> { using type = double2; };
template <typename T>
__device__ __forceinline__ void vec_fma(T& acc, const float4& h, const float4& w) {
  acc = fma(h.x, w.x, acc); acc = fma(h.y, w.y, acc); acc = fma(h.z, w.z, acc); acc = fma(h.w, w.w, acc);
}
template <typename T>
__device__ __forceinline__ void vec_fma(T& acc, const double2& h, const double2& w) {
  acc = fma(h.x, w.x, acc); acc = fma(h.y, w.y, acc);
}

template <typename T, int Q>
struct TiledShape {
  static constexpr int VE = 16 / sizeof(T);
  static constexpr int NV = sizeof(T) == 4 ? 64 : 32;
  static constexpr int R = NV / Q < 16 ? NV / Q : 16;  // launch.h's rnn_tiled_rows
  static constexpr int N = R * Q;                      // accumulators per lane
};

// The block's step product Ys[r ncols + q] = sum_k src[r ld + k] Ws[q Ks + k] for rows r < Rv
// and columns q < ncols. Ws (Wrows x Ks) holds the block's weight rows for the whole sequence,
// zero past K and past ncols. The source rows (L2, __ldcg: other blocks wrote them before the
// grid barrier) are staged into hs (Hrows x Kc) Kc columns at a time, zero past K within the
// last chunk; as 16-byte loads when src and ld allow. Each warp takes R x Q tiles of Ys, its lanes
// 16-byte chunks of k (conflict-free), each chunk's Q weight vectors reused over R rows, and
// a reduce-scatter leaves one sum per lane (or several) to add to Ys. Deterministic (a fixed
// order). Starts after and ends with __syncthreads.
template <typename T, int Q>
__device__ __forceinline__ void tiled_product(const RnnTiledArgs<T>& a, const T* Ws, T* hs, T* Ys, int ncols, int Rv,
                                              const T* src, index_t ld) {
  using S = TiledShape<T, Q>;
  constexpr int R = S::R, N = S::N, VE = S::VE;
  using V = typename Vec16<T>::type;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row_tiles = (Rv + R - 1) / R, q_tiles = (ncols + Q - 1) / Q;
  const bool vec = reinterpret_cast<uintptr_t>(src) % 16 == 0 && ld % VE == 0 && a.K % VE == 0;
  for (index_t k0 = 0; k0 < a.K; k0 += a.Kc) {
    const index_t kn = a.K - k0 < a.Kc ? a.K - k0 : a.Kc, kv = (kn + VE - 1) / VE * VE;
    if (k0 > 0) __syncthreads();  // the previous chunk's reads of hs are done
    if (vec) {  // whole vectors: K and Kc are multiples of VE, so kn is too
      for (int r = 0; r < Rv; ++r)
        for (index_t k = index_t(threadIdx.x) * VE; k < kn; k += kRnnThreads * VE)
          *reinterpret_cast<V*>(hs + r * a.Kc + k) = __ldcg(reinterpret_cast<const V*>(src + r * ld + k0 + k));
    } else {
      for (int r = 0; r < Rv; ++r)
        for (index_t k = threadIdx.x; k < kv; k += kRnnThreads)
          hs[r * a.Kc + k] = k < kn ? __ldcg(src + r * ld + k0 + k) : T(0);
    }
    __syncthreads();
    for (int tile = warp; tile < row_tiles * q_tiles; tile += kRnnWarps) {
      const int rt = tile / q_tiles, qt = tile % q_tiles;
      const T* hb = hs + index_t(rt) * R * a.Kc;
      const T* wb = Ws + index_t(qt) * Q * a.Ks + k0;
      T acc[N];
#pragma unroll
      for (int i = 0; i < N; ++i) acc[i] = T(0);
      for (index_t k = index_t(lane) * VE; k < kv; k += 32 * VE) {
        V w[Q];
#pragma unroll
        for (int q = 0; q < Q; ++q) w[q] = *reinterpret_cast<const V*>(wb + q * a.Ks + k);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const V h = *reinterpret_cast<const V*>(hb + r * a.Kc + k);
#pragma unroll
          for (int q = 0; q < Q; ++q) vec_fma(acc[r * Q + q], h, w[q]);
        }
      }
      reduce_scatter<16, N>(acc, lane);
      auto store = [&](int idx, T v) {
        const int r = rt * R + idx / Q, q = qt * Q + idx % Q;
        if (r < Rv && q < ncols) Ys[r * ncols + q] = k0 == 0 ? v : Ys[r * ncols + q] + v;
      };
      if constexpr (N >= 32) {
#pragma unroll
        for (int i = 0; i < N / 32; ++i) store(lane * (N / 32) + i, acc[i]);
      } else {
        constexpr int sh = N == 16 ? 1 : (N == 8 ? 2 : (N == 4 ? 3 : (N == 2 ? 4 : 5)));
        if ((lane & ((1 << sh) - 1)) == 0) store(lane >> sh, acc[0]);
      }
    }
  }
  __syncthreads();  // Ys complete
}

// This block's place: units [u0, u0 + Ub) and batch rows [b0, b0 + Rv) (block (ug, rg), ug
// fastest; the last unit group and row group may be partial).
struct TiledBlock {
  index_t u0, b0;
  int Ub, Rv;
};
template <typename T>
__device__ __forceinline__ TiledBlock tiled_block(const RnnTiledArgs<T>& a) {
  const index_t nu = (a.H + a.U - 1) / a.U;
  const index_t u0 = (index_t(blockIdx.x) % nu) * a.U, b0 = (index_t(blockIdx.x) / nu) * a.Rb;
  return TiledBlock{u0, b0, int(a.H - u0 < a.U ? a.H - u0 : a.U), int(a.B - b0 < a.Rb ? a.B - b0 : a.Rb)};
}

// Shared memory of the tiled kernels: Ws (Wrows x Ks), hs (Hrows x Kc), Ys (Rb x ncols). The
// rows of hs past the block's stay zero (their sums are not stored, but then no NaN
// arithmetic runs).
template <typename T>
__device__ __forceinline__ void tiled_smem(const RnnTiledArgs<T>& a, T*& Ws, T*& hs, T*& Ys, int Rv) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Ws = reinterpret_cast<T*>(smem_raw);
  hs = Ws + index_t(a.Wrows) * a.Ks;
  Ys = hs + index_t(a.Hrows) * a.Kc;
  for (int r = Rv; r < a.Hrows; ++r)
    for (index_t k = threadIdx.x; k < a.Kc; k += kRnnThreads) hs[r * a.Kc + k] = T(0);
}

// Forward. Block (ug, rg), ug fastest: units [ug U, ug U + U) of every gate for batch rows
// [rg Rb, ...). Ws row q = gi U + u is W_hh row gi H + u0 + u (K = H); per step the product
// with h_{t-1}'s rows, then a thread per (row, unit) runs the gate maths.
template <typename T, int Q>
__global__ void __launch_bounds__(kRnnThreads, 1) rnn_tiled_kernel(const RnnTiledArgs<T> a) {
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  const index_t H = a.H, B = a.B;
  const int U = a.U, G = rnn_gates(a.kind), GU = G * U;
  const TiledBlock blk = tiled_block(a);
  const index_t u0 = blk.u0, b0 = blk.b0;
  const int Ub = blk.Ub, Rv = blk.Rv;
  T *Ws, *hs, *Ys;
  tiled_smem(a, Ws, hs, Ys, Rv);
  for (int q = 0; q < a.Wrows; ++q) {
    const int gi = q / U, u = q % U;
    const bool live = q < GU && u < Ub;
    for (index_t k = threadIdx.x; k < a.Ks; k += kRnnThreads)
      Ws[q * a.Ks + k] = live && k < H ? a.whh[(gi * H + u0 + u) * a.rs_whh + k * a.cs_whh] : T(0);
  }
  for (index_t t = 0; t < a.Tn; ++t) {
    const T* hp = t == 0 ? a.h0 : a.out + (t - 1) * B * H;
    tiled_product<T, Q>(a, Ws, hs, Ys, GU, Rv, hp + b0 * H, H);
    T* Pt = a.P + t * B * G * H;
    for (int e = threadIdx.x; e < Rv * Ub; e += kRnnThreads) {
      const int r = e / Ub, u = e % Ub;
      T d[4] = {T(0), T(0), T(0), T(0)};
#pragma unroll
      for (int gi = 0; gi < 4; ++gi)
        if (gi < G) d[gi] = Ys[r * GU + gi * U + u];
      const index_t b = b0 + r;
      persistent_gates(a.kind, t, B, H, b, u0 + u, d, a.bhh, Pt + b * G * H, a.c0, a.c_n, a.extra, hp, a.out);
    }
    grid.sync();  // h_t complete (and visible) before any block stages it for step t + 1
  }
}

// Backward through time. Block (ug, rg) as the forward's; Ws row u is W_hh's column u0 + u
// (K = G H): dh_t[b, j] = sum_q D_h[t + 1][b, q] W_hh[q, j]. Per step t (from the last) the
// product with D_h[t + 1]'s rows, then a thread per (row, unit) adds dout_t and the carried
// part (dh_n at the last step; GRU's direct part) and runs the gate backward, writing D[t]
// (and D_h[t]) for its unit's gates; a grid barrier, and after step 0 one more product gives
// dh0 = D_h[0] W_hh (+ GRU's direct part).
template <typename T, int Q>
__global__ void __launch_bounds__(kRnnThreads, 1) rnn_tiled_bwd_kernel(const RnnTiledArgs<T> a) {
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  const index_t H = a.H, B = a.B, Tn = a.Tn;
  const int U = a.U, G = rnn_gates(a.kind);
  const index_t GH = G * H;
  const TiledBlock blk = tiled_block(a);
  const index_t u0 = blk.u0, b0 = blk.b0;
  const int Ub = blk.Ub, Rv = blk.Rv;
  T *Ws, *hs, *Ys;
  tiled_smem(a, Ws, hs, Ys, Rv);
  for (int u = 0; u < a.Wrows; ++u)
    for (index_t k = threadIdx.x; k < a.Ks; k += kRnnThreads)
      Ws[u * a.Ks + k] = u < Ub && k < GH ? a.whh[k * a.rs_whh + (u0 + u) * a.cs_whh] : T(0);
  const bool lstm = a.kind == RnnFamily::lstm, gru = a.kind == RnnFamily::gru;
  const bool relu = a.kind == RnnFamily::rnn_relu;
  T* dh = a.dh;
  for (index_t t = Tn - 1; t >= -1; --t) {
    if (t < Tn - 1) tiled_product<T, Q>(a, Ws, hs, Ys, U, Rv, a.Dh + (t + 1) * B * GH + b0 * GH, GH);
    for (int e = threadIdx.x; e < Rv * Ub; e += kRnnThreads) {
      const int r = e / Ub, u = e % Ub;
      const index_t b = b0 + r, j = u0 + u, x = b * H + j;
      T dhe = t < Tn - 1 ? Ys[r * U + u] : T(0);
      if (t == Tn - 1 || gru) dhe += dh[x];  // dh_n, or GRU's direct part of the step after
      if (t < 0) {
        dh[x] = dhe;  // dh0
        continue;
      }
      if (a.dout) dhe += a.dout[t * B * H + x];
      T* Dt = a.D + t * B * GH;
      const T* gt = a.gates + t * B * GH;
      if (lstm) {
        lstm_bwd_elem(Dt, a.dc, dhe, gt, a.extra + t * B * H, t == 0 ? a.c0 : a.extra + (t - 1) * B * H, H, b, j, x);
      } else if (gru) {
        dh[x] = gru_bwd_elem(Dt, a.Dh + t * B * GH, dhe, gt, a.extra + t * B * H,
                             t == 0 ? a.h0 : a.out + (t - 1) * B * H, H, b, j, x);
      } else {
        rnn_bwd_elem(Dt, dhe, a.out[t * B * H + x], relu, x);
      }
    }
    if (t >= 0) grid.sync();  // D[t] (and D_h[t]) complete before any block stages them
  }
}

// Units per block U and block count of the persistent forward, or false when it does not
// apply (no cooperative launch; W_hh does not fit on chip in G U <= kPersistMaxGU rows per
// block with every block resident).
template <typename T>
bool persistent_plan(const DeviceLimits& dl, index_t G, index_t H, int& U, int& blocks, size_t& smem) {
  const int sms = dl.sms, optin = dl.optin;
  if (!dl.coop || H <= 0 || sms <= 0) return false;
  ensure_dyn_smem(rnn_persistent_kernel<T>, optin);  // the sizes below vary: allow the most
  // One block per SM where possible (fewer blocks re-read h_{t-1} from L2 each step); more
  // units per block only when W_hh does not fit otherwise.
  for (U = int(std::max<index_t>(1, ceil_div(H, index_t(sms)))); G * U <= kPersistMaxGU; ++U) {
    smem = sizeof(T) * size_t(G * U) * size_t(H);
    if (smem > size_t(optin)) return false;
    const index_t nb = ceil_div(H, index_t(U));
    int per_sm = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, rnn_persistent_kernel<T>,
                                                             kPersistThreads, smem));
    if (nb <= index_t(per_sm) * sms) {
      blocks = int(nb);
      return true;
    }
  }
  return false;
}

// Which recurrent forward runs (NNKERNELS_CUDA_RNN_PERSISTENT, read at every call so that one
// benchmark run times each): "0" the per-step path, "rows" the fifth session's persistent
// kernel (a warp per batch row, W_hh in shared memory), otherwise the tiled persistent kernel.
enum class Persist { none, rows, tiled };
Persist persist_mode() {
  if (env_is("NNKERNELS_CUDA_RNN_PERSISTENT", "0")) return Persist::none;
  return env_is("NNKERNELS_CUDA_RNN_PERSISTENT", "rows") ? Persist::rows : Persist::tiled;
}

// The tiled plan for this device, or false (no cooperative launch, or the weights do not fit
// on chip with one block per SM). nc, K: as rnn_tiled_plan (forward G, H; backward 1, G H).
// NNKERNELS_CUDA_RNN_PLAN="U,Rb,Q[,Kc]" forces a plan (the tests run each warp-tile shape and
// chunked staging with it); one that does not fit is a ValueError.
bool tiled_plan(const DeviceLimits& dl, DType dt, index_t nc, index_t K, index_t B, index_t H, RnnTiledPlan& plan) {
  const int sms = dl.sms, optin = dl.optin;
  if (!dl.coop) return false;
  if (const char* e = std::getenv("NNKERNELS_CUDA_RNN_PLAN")) {
    int U = 0, Rb = 0, Q = 0;
    long Kc = 0;
    const int n = std::sscanf(e, "%d,%d,%d,%ld", &U, &Rb, &Q, &Kc);
    if (n < 3 || U < 1 || Rb < 1 || (Q != 1 && Q != 2 && Q != 4 && Q != 8) || (n == 4 && (Kc < 4 || Kc % 4)))
      throw ValueError(std::string("NNKERNELS_CUDA_RNN_PLAN must be U,Rb,Q[,Kc] with Q in 1, 2, 4, 8 and Kc a "
                                   "positive multiple of 4; got ") + e);
    const index_t ve = rnn_tiled_vec(dt), Ks = ceil_div(K, ve) * ve;
    const index_t kc = n == 4 ? std::min<index_t>(Kc, Ks) : rnn_tiled_chunk(dt, nc, K, U, Rb, Q, size_t(optin));
    plan = RnnTiledPlan{U, Rb, Q, kc, ceil_div(H, index_t(U)) * ceil_div(B, index_t(Rb)),
                        rnn_tiled_smem(dt, nc, K, U, Rb, Q, std::max<index_t>(kc, ve))};
    if (kc == 0 || plan.blocks > sms || plan.smem > size_t(optin))
      throw ValueError(std::string("NNKERNELS_CUDA_RNN_PLAN=") + e + " needs " + std::to_string(plan.blocks) +
                       " blocks and " + std::to_string(plan.smem) + " bytes of shared memory per block; the device has " +
                       std::to_string(sms) + " SMs and " + std::to_string(optin) + " bytes");
    return true;
  }
  return rnn_tiled_plan(dt, nc, K, B, H, sms, size_t(optin), plan);
}

template <typename T, int Q, bool BWD>
bool launch_tiled_q(RnnTiledArgs<T>& a, const RnnTiledPlan& plan, int optin) {
  auto kernel = BWD ? rnn_tiled_bwd_kernel<T, Q> : rnn_tiled_kernel<T, Q>;
  int per_sm = 0;
  ensure_dyn_smem(kernel, optin);  // the plans' sizes vary: allow the most
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kRnnThreads, plan.smem));
  if (per_sm < 1) return false;
  void* args[] = {&a};
  CUDA_CHECK(cudaLaunchCooperativeKernel(kernel, dim3(unsigned(plan.blocks)), dim3(kRnnThreads), args, plan.smem,
                                         cudaStream_t(0)));
  CUDA_CHECK(cudaGetLastError());
  return true;
}

// The whole sequence (the forward, or the backward) in one cooperative launch of a tiled
// kernel; false when no plan fits. `a` carries the pointers; the plan's fields are set here.
template <typename T, bool BWD>
bool launch_tiled(const DeviceLimits& dl, RnnTiledArgs<T> a) {
  const DType dt = sizeof(T) == 4 ? DType::f32 : DType::f64;
  const index_t G = rnn_gates(a.kind), ve = rnn_tiled_vec(dt);
  const index_t nc = BWD ? 1 : G, K = BWD ? G * a.H : a.H;
  RnnTiledPlan plan;
  if (!tiled_plan(dl, dt, nc, K, a.B, a.H, plan)) return false;
  const int R = rnn_tiled_rows(dt, plan.Q);
  a.U = plan.U;
  a.Rb = plan.Rb;
  a.Wrows = int(ceil_div(nc * plan.U, index_t(plan.Q)) * plan.Q);
  a.Hrows = int(ceil_div(index_t(plan.Rb), index_t(R)) * R);
  a.K = K;
  a.Ks = ceil_div(K, ve) * ve;
  a.Kc = plan.Kc;
  switch (plan.Q) {
    case 1: return launch_tiled_q<T, 1, BWD>(a, plan, dl.optin);
    case 2: return launch_tiled_q<T, 2, BWD>(a, plan, dl.optin);
    case 4: return launch_tiled_q<T, 4, BWD>(a, plan, dl.optin);
    default: return launch_tiled_q<T, 8, BWD>(a, plan, dl.optin);
  }
}

template <typename T>
void forward_t(const RnnParams& p, T* out, T* h_n, T* c_n, T* gates, T* extra) {
  const index_t Tn = p.T, B = p.B, I = p.I, H = p.H;
  const bool lstm = p.kind == RnnFamily::lstm, gru = p.kind == RnnFamily::gru;
  const bool rnn = !lstm && !gru;
  const index_t G = lstm ? 4 : (gru ? 3 : 1), GH = G * H;
  const size_t es = sizeof(T);
  const T* h0 = static_cast<const T*>(p.h0);
  const T* c0 = static_cast<const T*>(p.c0);
  if (Tn == 0 || B == 0 || H == 0) {
    if (h_n && B * H) copy_d2d(h_n, h0, es * size_t(B * H));
    if (lstm && c_n && B * H) copy_d2d(c_n, c0, es * size_t(B * H));
    return;
  }
  // P: the output itself (RNN), the gates cache, or scratch.
  DeviceScratch pbuf(rnn || gates ? 0 : es * size_t(Tn * B * GH));
  T* P = rnn ? out : (gates ? gates : static_cast<T*>(pbuf.p));
  DeviceScratch sbuf(gru ? es * size_t(B * H) : 0);
  T* sn = static_cast<T*>(sbuf.p);

  GemmParams g;  // 1. P = X W_ih^T + b_ih
  g.dtype = p.dtype;
  g.M = Tn * B; g.N = GH; g.K = I;
  g.a = p.x; g.rs_a = I; g.cs_a = 1;
  g.b = p.w_ih; g.rs_b = p.cs_wih; g.cs_b = p.rs_wih;
  g.c = P; g.rs_c = GH;
  g.bias = p.b_ih;
  gemm(g);

  const T* whh = static_cast<const T*>(p.w_hh);
  const T* bhh = static_cast<const T*>(p.b_hh);
  int U = 0, blocks = 0;
  size_t smem = 0;
  const Persist mode = Tn >= 2 ? persist_mode() : Persist::none;
  const DeviceLimits dl = mode == Persist::none ? DeviceLimits{} : device_limits();
  bool done = false;
  if (mode == Persist::tiled) {
    RnnTiledArgs<T> a{};
    a.kind = p.kind; a.Tn = Tn; a.B = B; a.H = H;
    a.whh = whh; a.rs_whh = p.rs_whh; a.cs_whh = p.cs_whh;
    a.bhh = bhh; a.h0 = h0; a.c0 = c0;
    a.out = out; a.P = P; a.c_n = c_n; a.extra = extra;
    done = launch_tiled<T, false>(dl, a);
  }
  if (!done && mode != Persist::none && persistent_plan<T>(dl, G, H, U, blocks, smem)) {
    RnnFamily kind = p.kind;
    index_t rs = p.rs_whh, cs = p.cs_whh;
    void* args[] = {&kind, const_cast<index_t*>(&Tn), const_cast<index_t*>(&B), const_cast<index_t*>(&H), &U,
                    const_cast<T**>(&whh), &rs, &cs, const_cast<T**>(&bhh), const_cast<T**>(&h0),
                    const_cast<T**>(&c0), &out, &P, &c_n, &extra};
    CUDA_CHECK(cudaLaunchCooperativeKernel(rnn_persistent_kernel<T>, dim3(unsigned(blocks)),
                                           dim3(kPersistThreads), args, smem, cudaStream_t(0)));
    CUDA_CHECK(cudaGetLastError());
    done = true;
  }
  if (done) {
    if (h_n) copy_d2d(h_n, out + (Tn - 1) * B * H, es * size_t(B * H));
    if (lstm && extra) copy_d2d(c_n, extra + (Tn - 1) * B * H, es * size_t(B * H));
    return;
  }
  const Launch le = elementwise_launch(B * H);
  for (index_t t = 0; t < Tn; ++t) {
    const T* hp = t == 0 ? h0 : out + (t - 1) * B * H;
    T* Pt = P + t * B * GH;
    T* ht = out + t * B * H;
    GemmParams r;  // 2. P_t += h_{t-1} W_hh^T + b_hh (columns [0, N))
    r.dtype = p.dtype;
    r.M = B; r.K = H;
    r.a = hp; r.rs_a = H; r.cs_a = 1;
    r.b = whh; r.rs_b = p.cs_whh; r.cs_b = p.rs_whh;
    r.c = Pt; r.rs_c = GH;
    r.c_in = Pt; r.rs_cin = GH; r.cs_cin = 1; r.beta = 1.0;
    r.bias = bhh;
    if (rnn) {
      r.N = H;
      r.act = p.kind == RnnFamily::rnn_relu ? Act::relu : Act::tanh;
      gemm(r);  // h_t = P_t in place
      continue;
    }
    r.N = gru ? 2 * H : GH;
    gemm(r);
    if (lstm) {
      const T* cp = t == 0 ? c0 : (extra ? extra + (t - 1) * B * H : c_n);
      T* cn = extra ? extra + t * B * H : c_n;
      lstm_gate_kernel<T><<<dim3(unsigned(le.grid_x)), le.block>>>(Pt, cp, cn, ht, B, H);
      CUDA_CHECK(cudaGetLastError());
    } else {
      GemmParams n;  // the n gate's hidden side: s = h_{t-1} W_hn^T + b_hn
      n.dtype = p.dtype;
      n.M = B; n.N = H; n.K = H;
      n.a = hp; n.rs_a = H; n.cs_a = 1;
      n.b = whh + 2 * H * p.rs_whh; n.rs_b = p.cs_whh; n.cs_b = p.rs_whh;
      n.c = sn; n.rs_c = H;
      n.bias = bhh ? bhh + 2 * H : nullptr;
      gemm(n);
      gru_gate_kernel<T><<<dim3(unsigned(le.grid_x)), le.block>>>(Pt, sn, hp, ht,
                                                                   extra ? extra + t * B * H : nullptr, B, H);
      CUDA_CHECK(cudaGetLastError());
    }
  }
  if (h_n) copy_d2d(h_n, out + (Tn - 1) * B * H, es * size_t(B * H));
  if (lstm && extra) copy_d2d(c_n, extra + (Tn - 1) * B * H, es * size_t(B * H));
}

template <typename T>
void backward_t(const RnnParams& p, const RnnBackward& g) {
  const index_t Tn = p.T, B = p.B, I = p.I, H = p.H;
  const bool lstm = p.kind == RnnFamily::lstm, gru = p.kind == RnnFamily::gru;
  const bool relu = p.kind == RnnFamily::rnn_relu;
  const index_t G = lstm ? 4 : (gru ? 3 : 1), GH = G * H, TB = Tn * B;
  const size_t es = sizeof(T);
  T* dh = static_cast<T*>(g.dh0);  // carries dh_t through the loop; ends as dh0
  T* dc = static_cast<T*>(g.dc0);  // LSTM: carries dc_t; ends as dc0
  auto init = [&](T* dst, const void* src) {
    if (B * H == 0) return;
    if (src) copy_d2d(dst, src, es * size_t(B * H));
    else fill_zero(dst, es * size_t(B * H));
  };
  init(dh, g.dh_n);
  if (lstm) init(dc, g.dc_n);
  if (Tn == 0 || B == 0 || H == 0) {
    fill_zero(g.dx, es * size_t(TB * I));
    fill_zero(g.dw_ih, es * size_t(GH * I));
    fill_zero(g.dw_hh, es * size_t(GH * H));
    if (g.db_ih) fill_zero(g.db_ih, es * size_t(GH));
    if (g.db_hh) fill_zero(g.db_hh, es * size_t(GH));
    return;
  }
  const T* out = static_cast<const T*>(g.out);
  const T* dout = static_cast<const T*>(g.dout);
  const T* gates = static_cast<const T*>(g.gates);
  const T* extra = static_cast<const T*>(g.extra);
  const T* h0 = static_cast<const T*>(p.h0);
  const T* c0 = static_cast<const T*>(p.c0);
  DeviceScratch dbuf(es * size_t(TB * GH)), dhbuf(gru ? es * size_t(TB * GH) : 0);
  T* D = static_cast<T*>(dbuf.p);                      // input-side pre-activation gradients
  T* Dh = gru ? static_cast<T*>(dhbuf.p) : D;          // hidden side (differs for GRU only)
  const Launch le = elementwise_launch(B * H);
  const dim3 grid(unsigned(le.grid_x));

  // The steps: one cooperative launch of the tiled kernel, or per step a GEMM and gate kernels.
  bool done = false;
  if (Tn >= 2 && persist_mode() == Persist::tiled) {
    RnnTiledArgs<T> a{};
    a.kind = p.kind; a.Tn = Tn; a.B = B; a.H = H;
    a.whh = static_cast<const T*>(p.w_hh); a.rs_whh = p.rs_whh; a.cs_whh = p.cs_whh;
    a.h0 = h0; a.c0 = c0; a.out = const_cast<T*>(out); a.extra = const_cast<T*>(extra);
    a.D = D; a.Dh = Dh; a.dh = dh; a.dc = dc; a.dout = dout; a.gates = gates;
    done = launch_tiled<T, true>(device_limits(), a);
  }
  if (!done) {
    GemmParams r;  // dh (B, H) = Dh[t] (B, GH) W_hh (GH, H) (+ dh for GRU: its direct part)
    r.dtype = p.dtype;
    r.M = B; r.N = H; r.K = GH;
    r.rs_a = GH; r.cs_a = 1;
    r.b = p.w_hh; r.rs_b = p.rs_whh; r.cs_b = p.cs_whh;
    r.c = dh; r.rs_c = H;
    if (gru) { r.c_in = dh; r.rs_cin = H; r.cs_cin = 1; r.beta = 1.0; }

    for (index_t t = Tn - 1; t >= 0; --t) {
      if (t < Tn - 1) {
        r.a = Dh + (t + 1) * B * GH;
        gemm(r);
      }
      if (dout) {
        add_kernel<T><<<grid, le.block>>>(dh, dout + t * B * H, B * H);
        CUDA_CHECK(cudaGetLastError());
      }
      T* Dt = D + t * B * GH;
      if (lstm) {
        const T* cp = t == 0 ? c0 : extra + (t - 1) * B * H;
        lstm_bwd_kernel<T><<<grid, le.block>>>(Dt, dc, dh, gates + t * B * GH, extra + t * B * H, cp, B, H);
      } else if (gru) {
        const T* hp = t == 0 ? h0 : out + (t - 1) * B * H;
        gru_bwd_kernel<T><<<grid, le.block>>>(Dt, Dh + t * B * GH, dh, gates + t * B * GH, extra + t * B * H,
                                              hp, B, H);
      } else {
        rnn_bwd_kernel<T><<<grid, le.block>>>(Dt, dh, out + t * B * H, relu, B * H);
      }
      CUDA_CHECK(cudaGetLastError());
    }
    r.a = Dh;  // dh0 = D_h[0] W_hh (+ its direct part for GRU)
    gemm(r);
  }

  GemmParams x;  // dX (TB, I) = D W_ih
  x.dtype = p.dtype;
  x.M = TB; x.N = I; x.K = GH;
  x.a = D; x.rs_a = GH; x.cs_a = 1;
  x.b = p.w_ih; x.rs_b = p.rs_wih; x.cs_b = p.cs_wih;
  x.c = g.dx; x.rs_c = I;
  gemm(x);
  GemmParams wi;  // dW_ih (GH, I) = D^T X
  wi.dtype = p.dtype;
  wi.M = GH; wi.N = I; wi.K = TB;
  wi.a = D; wi.rs_a = 1; wi.cs_a = GH;
  wi.b = p.x; wi.rs_b = I; wi.cs_b = 1;
  wi.c = g.dw_ih; wi.rs_c = I;
  gemm(wi);
  GemmParams wh;  // dW_hh (GH, H) = D_h[0]^T h0 + D_h[1..]^T out[0..T-2]
  wh.dtype = p.dtype;
  wh.M = GH; wh.N = H; wh.K = B;
  wh.a = Dh; wh.rs_a = 1; wh.cs_a = GH;
  wh.b = h0; wh.rs_b = H; wh.cs_b = 1;
  wh.c = g.dw_hh; wh.rs_c = H;
  gemm(wh);
  if (Tn > 1) {
    wh.K = (Tn - 1) * B;
    wh.a = Dh + B * GH;
    wh.b = out;
    wh.c_in = g.dw_hh; wh.rs_cin = H; wh.cs_cin = 1; wh.beta = 1.0;
    gemm(wh);
  }
  const Launch lb = elementwise_launch(GH);
  if (g.db_ih) col_sum_kernel<T><<<dim3(unsigned(lb.grid_x)), lb.block>>>(static_cast<T*>(g.db_ih), D, TB, GH);
  if (g.db_hh) col_sum_kernel<T><<<dim3(unsigned(lb.grid_x)), lb.block>>>(static_cast<T*>(g.db_hh), Dh, TB, GH);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void rnn_backward(const RnnParams& p, const RnnBackward& g) {
  if (p.dtype == DType::f32) backward_t<float>(p, g);
  else backward_t<double>(p, g);
}

void rnn_forward(const RnnParams& p, void* out, void* h_n, void* c_n, void* gates, void* extra) {
  if (p.dtype == DType::f32)
    forward_t<float>(p, static_cast<float*>(out), static_cast<float*>(h_n), static_cast<float*>(c_n),
                     static_cast<float*>(gates), static_cast<float*>(extra));
  else
    forward_t<double>(p, static_cast<double*>(out), static_cast<double*>(h_n), static_cast<double*>(c_n),
                      static_cast<double*>(gates), static_cast<double*>(extra));
}

}  // namespace nnk::cuda
