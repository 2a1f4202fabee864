// Launch-shape arithmetic of the CUDA kernels: tile sizes, block sizes and grid sizes.
// Plain C++ (no CUDA headers), shared by the .cu files and the bindings, so it is unit-tested
// on machines without a GPU (through _C._cuda_launch). Grid dimensions y and z are limited
// to 65535 by CUDA; every function here checks that and throws ValueError past it.
#pragma once
#include <algorithm>
#include <cstddef>
#include <string>

#include "core/errors.h"
#include "core/types.h"

namespace nnk::cuda {

struct Launch {
  index_t grid_x = 1, grid_y = 1, grid_z = 1;
  int block = 1;       // threads per block (1-D blocks)
  size_t smem = 0;     // dynamic shared memory in bytes
};

// GEMM tile shapes: BM x BN outputs per block of (BM / TM) * (BN / TN) threads, K in steps
// of BK, each thread a TM x TN register tile. float: 128 x 128 x 8 (256 threads, 8 x 8 per
// thread); double: 64 x 64 x 8 (256 threads, 4 x 4 per thread: half the registers per value).
// VW: values per 16-byte shared-memory read; a thread's TM rows (TN columns) are TM / VW
// groups of VW consecutive positions (gemm_tile_pos).
template <typename T> struct GemmTile;
template <> struct GemmTile<float> {
  static constexpr int BM = 128, BN = 128, BK = 8, TM = 8, TN = 8, VW = 4;
};
template <> struct GemmTile<double> {
  static constexpr int BM = 64, BN = 64, BK = 8, TM = 4, TN = 4, VW = 2;
};
// float32 tiles for small outputs (256 threads each): 64 x 128 (4 x 8 per thread) for few
// rows (a conv's 64 output channels, a batch of 64), 128 x 64 (8 x 4) for few columns (a
// conv's 7 x 7 or 8 x 8 positions, 64 output features), 64 x 64 (4 x 4) for both. Where the
// 128 x 128 tile computes as many zeros as real outputs, they do not.
struct GemmTileHalf {   // few rows
  static constexpr int BM = 64, BN = 128, BK = 8, TM = 4, TN = 8, VW = 4;
};
struct GemmTileNarrow { // few columns
  static constexpr int BM = 128, BN = 64, BK = 8, TM = 8, TN = 4, VW = 4;
};
struct GemmTileSmall {  // few of both
  static constexpr int BM = 64, BN = 64, BK = 8, TM = 4, TN = 4, VW = 4;
};
enum class GemmTileKind : int { big = 0, half = 1, narrow = 2, small = 3 };
// The float32 tile (TF32 and float64: always their one tile, `big`): a smaller tile when it
// pads the output by at least a quarter less than the next larger one; the smaller tiles
// reuse each shared-memory read for fewer FMAs, so a few percent of padding is not worth it.
inline GemmTileKind gemm_tile_kind(DType dt, index_t M, index_t N, bool tf32 = false) {
  if (dt != DType::f32 || tf32) return GemmTileKind::big;
  auto pad = [](index_t n, index_t b) { return ceil_div(n, b) * b; };
  const index_t m128 = pad(M, 128), m64 = pad(M, 64), n128 = pad(N, 128), n64 = pad(N, 64);
  const auto fewer = [](index_t smaller, index_t larger) { return 4 * smaller <= 3 * larger; };
  const bool few_rows = fewer(m64, m128), few_cols = fewer(n64, n128);
  if (few_rows && few_cols) return GemmTileKind::small;
  if (few_rows) return GemmTileKind::half;
  if (few_cols) return GemmTileKind::narrow;
  return GemmTileKind::big;
}
// (BM, BN, threads) of a kind.
inline void gemm_tile_shape(DType dt, GemmTileKind k, int& bm, int& bn, int& threads) {
  auto set = [&](auto tile) {
    using Tl = decltype(tile);
    bm = Tl::BM; bn = Tl::BN; threads = (Tl::BM / Tl::TM) * (Tl::BN / Tl::TN);
  };
  if (dt == DType::f64) return set(GemmTile<double>{});
  switch (k) {
    case GemmTileKind::half: return set(GemmTileHalf{});
    case GemmTileKind::narrow: return set(GemmTileNarrow{});
    case GemmTileKind::small: return set(GemmTileSmall{});
    default: return set(GemmTile<float>{});
  }
}

#if defined(__CUDACC__)
#define NNK_HD __host__ __device__
#else
#define NNK_HD
#endif
// Tile position of thread t's i-th register row (or column), `threads` threads along that
// side: group i / VW of every thread side by side, VW consecutive positions per thread, so
// each group is one aligned 16-byte read and a warp's reads cover whole banks once.
NNK_HD constexpr int gemm_tile_pos(int t, int i, int threads, int vw) {
  return (i / vw) * threads * vw + t * vw + i % vw;
}

constexpr index_t kMaxGridYZ = 65535;
inline void check_grid_yz(index_t y, index_t z, const char* what) {
  if (y > kMaxGridYZ || z > kMaxGridYZ)
    throw ValueError(std::string(what) + ": too large for one CUDA launch (grid y/z > 65535)");
}

// One block per BM x BN output tile; grid z runs over the batch.
// tf32: the TF32 kernel (128 x 128 tiles only).
inline Launch gemm_launch(DType dt, index_t M, index_t N, index_t batch, bool tf32 = false) {
  Launch l;
  int bm = 0, bn = 0, threads = 0;
  gemm_tile_shape(dt, gemm_tile_kind(dt, M, N, tf32), bm, bn, threads);
  l.grid_x = ceil_div(N, bn);
  l.grid_y = ceil_div(M, bm);
  l.grid_z = batch;
  l.block = threads;
  check_grid_yz(l.grid_y, l.grid_z, "gemm");
  return l;
}

// Split K (gemm.cu): a GEMM of one batch entry whose output tiles give fewer blocks than half
// the GPU's SMs runs its K range as S chunks (multiples of the K-step, at least kSplitMinK
// deep), computed as S batch entries into scratch and summed in order (deterministic). At
// most kSplitMax chunks and kSplitMaxParts scratch elements. Returns S (1: no split).
constexpr index_t kSplitMinK = 256, kSplitMax = 16, kSplitMaxParts = index_t(1) << 22;
inline index_t gemm_splits(DType dt, index_t M, index_t N, index_t K, index_t batch, index_t sms, bool tf32 = false) {
  if (batch != 1 || sms <= 0 || M <= 0 || N <= 0) return 1;
  const Launch l = gemm_launch(dt, M, N, 1, tf32);
  const index_t blocks = l.grid_x * l.grid_y;
  if (2 * blocks > sms) return 1;
  index_t s = ceil_div(sms, blocks);
  s = s < K / kSplitMinK ? s : K / kSplitMinK;
  s = s < kSplitMax ? s : kSplitMax;
  s = s < kSplitMaxParts / (M * N) ? s : kSplitMaxParts / (M * N);
  return s < 2 ? 1 : s;
}
// The K depth of each chunk but the last (a multiple of the K-step 8 of every GEMM tile).
inline index_t gemm_split_depth(index_t K, index_t S) { return ceil_div(ceil_div(K, S), index_t(8)) * 8; }

// Elementwise kernels: 256 threads and a grid-stride loop; at most 2^20 blocks (the loop
// covers the rest), at least one.
constexpr int kEltBlock = 256;
inline Launch elementwise_launch(index_t n) {
  Launch l;
  l.block = kEltBlock;
  index_t g = ceil_div(n, kEltBlock);
  l.grid_x = g < 1 ? 1 : (g > (index_t(1) << 20) ? (index_t(1) << 20) : g);
  return l;
}

// Row kernels (softmax family): one warp per row, 8 warps per block.
constexpr int kRowWarps = 8;
inline Launch rows_launch(index_t rows) {
  Launch l;
  l.block = 32 * kRowWarps;
  l.grid_x = rows < 1 ? 1 : ceil_div(rows, kRowWarps);
  return l;
}

// Layer norm: one block of 256 threads per row (block reductions); grid x = rows.
constexpr int kNormBlock = 256;
inline Launch norm_launch(index_t rows) {
  Launch l;
  l.block = kNormBlock;
  l.grid_x = rows < 1 ? 1 : rows;
  return l;
}

// Flash attention forward: 4 threads (a "quad") per query row, kAttnRows query rows per
// block; K/V tiles of attn_bc(dt, head dim) keys in static shared memory (smaller tiles for
// head dims over 128, to stay within 48 KiB); head dims up to kAttnMaxDim. grid x: query
// tiles, grid y: batch * heads.
constexpr int kAttnRows = 32;
constexpr int kAttnMaxDim = 256;
NNK_HD constexpr int attn_bc(bool f32, int max_dim) { return (f32 ? 32 : 16) / (max_dim > 128 ? 2 : 1); }
inline int attn_bc(DType dt, index_t head_dim = 0) { return attn_bc(dt == DType::f32, head_dim > 128 ? 256 : 128); }
inline Launch attn_launch(DType dt, index_t BH, index_t L) {
  (void)dt;
  Launch l;
  l.block = 4 * kAttnRows;
  l.grid_x = ceil_div(L, kAttnRows);
  l.grid_y = BH;
  check_grid_yz(l.grid_y, 1, "scaled_dot_product_attention");
  return l;
}
// D_i = dO_i . O_i of the attention backward: one warp per row, four rows per block.
inline Launch attn_rowdot_launch(index_t rows) {
  Launch l;
  l.block = 128;
  l.grid_x = ceil_div(rows, 4);
  return l;
}
// Number of key tiles a query tile visits: all of them, or with causal masking only those
// holding a key j <= the tile's last query row (block skipping).
inline index_t attn_key_tiles(DType dt, index_t L, index_t S, index_t q_tile, bool causal, index_t head_dim = 0) {
  const index_t bc = attn_bc(dt, head_dim);
  index_t kv_end = S;
  if (causal) {
    index_t last_q = (q_tile + 1) * kAttnRows;
    if (last_q > L) last_q = L;
    if (last_q < kv_end) kv_end = last_q;
  }
  return ceil_div(kv_end, bc);
}

// Tiled persistent recurrent kernels (rnn.cu, rnn_tiled_kernel / rnn_tiled_bwd_kernel): block
// (ug, rg) owns hidden units [ug U, ug U + U) for batch rows [rg Rb, rg Rb + Rb). Per step it
// forms the (Rb x nc U) product of its rows of a (B x K) operand (h_{t-1}, K = H, in the
// forward; D_h[t + 1], K = G H, in the backward) with nc U weight rows of length K that stay in
// shared memory for the sequence (forward: nc = G, W_hh's rows of its units; backward: nc = 1,
// W_hh's columns). The operand's rows are staged into shared memory Kc columns at a time. The
// 8 warps take tiles of R rows x Q weight rows (lanes split k, a reduce-scatter over the warp).
// Q is 1, 2, 4 or 8; R = min(16, NV / Q) with NV = 64 accumulators per lane (float) or 32
// (double).
constexpr int kRnnThreads = 256, kRnnWarps = kRnnThreads / 32;
struct RnnTiledPlan {
  int U = 0, Rb = 0, Q = 0;  // units per block, batch rows per block, weight rows per warp tile
  index_t Kc = 0;            // staging chunk (columns of the operand per pass)
  index_t blocks = 0;        // ceil(H / U) ceil(B / Rb), unit groups fastest
  size_t smem = 0;           // dynamic shared memory in bytes
};
inline int rnn_tiled_rows(DType dt, int Q) {
  const int nv = dt == DType::f32 ? 64 : 32;
  return nv / Q < 16 ? nv / Q : 16;
}
inline index_t rnn_tiled_vec(DType dt) { return dt == DType::f32 ? 4 : 2; }  // values per 16 bytes
// Shared memory of a plan: nc U weight rows rounded up to Q, of stride K rounded up to a vector;
// Rb staged rows rounded up to R, of stride Kc; the (Rb, nc U) step product.
inline size_t rnn_tiled_smem(DType dt, index_t nc, index_t K, int U, int Rb, int Q, index_t Kc) {
  const index_t es = dt == DType::f32 ? 4 : 8, ve = rnn_tiled_vec(dt), R = rnn_tiled_rows(dt, Q);
  const index_t Ks = ceil_div(K, ve) * ve;
  return size_t(es * (Ks * ceil_div(nc * U, index_t(Q)) * Q + Kc * ceil_div(index_t(Rb), R) * R + index_t(Rb) * nc * U));
}
// The widest staging chunk that fits beside the weights (K whole, else a multiple of 32
// vectors, a warp's pass), or 0 when not even one pass fits.
inline index_t rnn_tiled_chunk(DType dt, index_t nc, index_t K, int U, int Rb, int Q, size_t limit) {
  const index_t ve = rnn_tiled_vec(dt), Ks = ceil_div(K, ve) * ve;
  if (rnn_tiled_smem(dt, nc, K, U, Rb, Q, Ks) <= limit) return Ks;
  const size_t fixed = rnn_tiled_smem(dt, nc, K, U, Rb, Q, 0);
  if (fixed >= limit) return 0;
  const index_t per_col = rnn_tiled_smem(dt, nc, K, U, Rb, Q, 1) - fixed;
  const index_t Kc = index_t(limit - fixed) / per_col / (32 * ve) * (32 * ve);
  return Kc >= 32 * ve ? Kc : 0;
}
// A rough per-step cost of a plan in issue cycles of one SM: the warp tiles' loads, FMAs and
// reduce-scatters (8 warps on 4 schedulers), staging the operand's rows from L2 (per SM and for
// the whole grid), a barrier per chunk, the per-element maths. Only used to rank plans.
inline double rnn_tiled_cost(DType dt, index_t nc, index_t K, int U, int Rb, int Q, index_t Kc, index_t blocks) {
  const index_t es = dt == DType::f32 ? 4 : 8, ve = rnn_tiled_vec(dt), R = rnn_tiled_rows(dt, Q);
  const index_t tiles = ceil_div(index_t(Rb), R) * ceil_div(nc * U, index_t(Q));
  const index_t kc = ceil_div(K, 32 * ve), chunks = ceil_div(K, Kc);
  const double per_tile = double(kc * (R + Q + R * Q * ve) + chunks * 3 * R * Q);
  const double compute = std::max(double(ceil_div(tiles, index_t(kRnnWarps))) * per_tile, double(tiles) * per_tile / 4);
  const double stage = double(Rb * K * es) / 32 + double(blocks * Rb * K * es) / 4096 + double(chunks) * 300;
  const double elems = double(ceil_div(index_t(Rb) * U, index_t(kRnnThreads))) * 60;
  return compute + stage + elems;
}
// The cheapest plan whose blocks all fit on the SMs at one block each (`sms`) in `smem_limit`
// bytes of shared memory; false when none does (the weights too large to stay on chip).
// nc: product columns per unit (G forward, 1 backward); K: the contraction (H, G H).
inline bool rnn_tiled_plan(DType dt, index_t nc, index_t K, index_t B, index_t H, index_t sms, size_t smem_limit,
                           RnnTiledPlan& best) {
  if (B <= 0 || H <= 0 || K <= 0 || sms <= 0) return false;
  double best_cost = 0;
  bool found = false;
  for (index_t nu = 1; nu <= std::min(H, sms); ++nu) {
    const index_t U = ceil_div(H, nu), nu_ = ceil_div(H, U);
    if (nu_ != nu || U > (index_t(1) << 20)) continue;  // each unit count once
    for (index_t nr = 1; nr <= std::min(B, sms / nu_); ++nr) {
      const index_t Rb = ceil_div(B, nr), nr_ = ceil_div(B, Rb);
      if (nr_ != nr || Rb > (index_t(1) << 20)) continue;
      for (int Q = 1; Q <= 8; Q *= 2) {
        const index_t Kc = rnn_tiled_chunk(dt, nc, K, int(U), int(Rb), Q, smem_limit);
        if (Kc == 0) continue;
        const double c = rnn_tiled_cost(dt, nc, K, int(U), int(Rb), Q, Kc, nu_ * nr_);
        if (!found || c < best_cost) {
          best = RnnTiledPlan{int(U), int(Rb), Q, Kc, nu_ * nr_, rnn_tiled_smem(dt, nc, K, int(U), int(Rb), Q, Kc)};
          best_cost = c;
          found = true;
        }
      }
    }
  }
  return found;
}

}  // namespace nnk::cuda
