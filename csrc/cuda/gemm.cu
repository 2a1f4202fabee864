// Tiled GEMM with shared-memory double buffering and a fused epilogue.
//
//   C[b][m, n] = act(alpha * sum_k A[b][m, k] * B[b][k, n] + beta * Cin[m, n] + bias)
//
// Each block computes a BM x BN tile of C (GemmTile<T>, or GemmTileHalf for float32 GEMMs with
// few rows: launch.h), walking K in steps of BK. The A tile is stored transposed (As[k][m],
// rows padded by VW so the transposing stores spread over the banks) and the B tile as
// Bs[k][n], so the inner loop reads a TM-vector of A and a TN-vector of B from shared memory,
// as 16-byte reads of VW consecutive values (gemm_tile_pos), and does TM * TN FMAs into
// registers. Two shared buffers: while the block computes on one, the next K-step is
// read from global memory into registers and stored into the other, so one __syncthreads
// per K-step suffices. Loads read any strides (transposes cost nothing extra); the mapping
// of threads to elements follows the unit-stride dimension so global reads coalesce.
// The epilogue applies alpha, beta * Cin (broadcast strides), bias and the activation once,
// as the tile is written. Accumulation in T (as cuBLAS without TF32).
//
// TF32 (float32, opt-in with nnkernels.cuda.set_allow_tf32(True); off by default, as torch's
// allow_tf32 for matmuls): the same 128 x 128 x 8 tiles, loads and epilogue, but the products
// on tensor cores (WMMA m16n16k8, inputs rounded to TF32's 10-bit mantissa, float
// accumulators): 8 warps as 2 x 4, each a 64 x 32 piece of C as 4 x 2 fragments; A stored
// row-major (As[m][k]) for the fragments. The epilogue goes through a 16 x 16 shared scratch
// per warp. Every float32 GEMM of the CUDA part (gemm, matmul, linear, conv, rnn) takes it
// while the flag is set.
#include <cuda_runtime.h>
#include <mma.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include <algorithm>

#include "cuda/api.h"
#include "cuda/cuda_check.h"
#include "cuda/device.cuh"
#include "cuda/launch.h"

namespace nnk::cuda {

namespace {

template <typename T>
struct GemmArgsT {
  index_t M, N, K;
  const T* a; index_t rs_a, cs_a, batch_a;
  const T* b; index_t rs_b, cs_b, batch_b;
  T* c; index_t rs_c, batch_c;
  const T* c_in; index_t rs_cin, cs_cin;
  const T* bias; bool bias_per_row;
  T alpha, beta;
  Act act;
  index_t c_cols, c_rs2, c_cs;  // GemmParams' column map (CONV = 1 instances only)
};

// VW = 16 / sizeof(T) consecutive values of shared memory (16-byte aligned) into registers.
__device__ __forceinline__ void load16(const float* p, float* out) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
}
__device__ __forceinline__ void load16(const double* p, double* out) {
  const double2 v = *reinterpret_cast<const double2*>(p);
  out[0] = v.x; out[1] = v.y;
}
// ... and back: VW values from registers into 16-byte aligned shared memory.
__device__ __forceinline__ void store16(float* p, const float* in) {
  float4 v;
  v.x = in[0]; v.y = in[1]; v.z = in[2]; v.w = in[3];
  *reinterpret_cast<float4*>(p) = v;
}
__device__ __forceinline__ void store16(double* p, const double* in) {
  double2 v;
  v.x = in[0]; v.y = in[1];
  *reinterpret_cast<double2*>(p) = v;
}

// Implicit-GEMM convolution (CONV): B = im2col(x) of one image and group is never formed;
// B[k, n] is read from x through a per-k table of taps (conv.cu; padded to a whole number of
// K-steps with taps of row offset 32767, past every image): k = (c, i, j) gives
// off = c H W + i dh W + j dw, dh_i = i dh, dw_j = j dw, and the column n = (oh, ow) gives
// the window's corner bh = oh sh - ph, bw = ow sw - pw, so that
//   B[k, n] = x[off + bh W + bw]   when 0 <= bh + dh_i < H and 0 <= bw + dw_j < W, else 0.
// ConvTap (api.h): 8 bytes per tap, 2 registers when loaded (16-byte taps made the float32
// kernels spill in their main loop at 128 registers).
// CONV = 2, the weight gradient's product dY cols^T: the roles swap, k = (oh, ow) a position
// and n = (c, i, j) a tap. The per-k table then holds positions {bh W + bw, bh, bw} and each
// thread reads its column's tap from `cols`; the sum and the bounds test are the same.
// The window corner of a column past the output: no tap brings it inside the image.
constexpr int kConvOff = -(1 << 29);
template <typename T>
struct ConvGatherT {
  const T* x = nullptr;           // image 0 at this group's first channel
  index_t batch_x = 0;            // elements between images (C H W)
  const ConvTap* taps = nullptr;  // per k (padded to whole K-steps)
  const ConvTap* cols = nullptr;  // CONV = 2: per column n, the tap
  int H = 0, W = 0, OW = 0, ph = 0, pw = 0, sh = 0, sw = 0;
};

// The global -> register half of a K-step, shared by both kernels: NT threads load a BM x BK
// tile of A and a BK x BN tile of B (zeros past the edges). Thread -> element maps follow the
// unit-stride dimension (along k when A is row-major, cs_a == 1; along n for B unless it is
// column-major) so the reads coalesce; a_pos / b_pos give each loaded element's tile position.
//
// Vector loads (AVEC / BVEC, chosen on the host by vec_ok): when an operand's fast dimension
// has unit stride and its other strides (row / column, batch) and base are multiples of 16
// bytes, each thread loads its A_PER (B_PER) elements as VW-wide groups of consecutive
// elements along the fast dimension (one 16-byte load per group; a group crossing the matrix
// edge is loaded element by element). The element order then is tid * PER + i instead of
// tid + i * NT; a warp still covers whole 32-byte sectors, with a quarter of the load
// instructions. Template parameters rather than run-time flags: both paths in one kernel
// took 183 registers instead of 128 (ptxas, sm_90), halving the blocks per SM.
//
// Addresses and edge tests: a thread's load units (16-byte groups, or elements) differ only by
// fixed offsets, and inside K only by a test along m (n) fixed for the thread, worked out once
// (the `room` of each unit, 4 bits each); a unit's address at step k0 is its pointer at k = 0
// plus k0 cs_a (k0 rs_b), an offset the same for every thread. Only the last K-step, when
// K % BK != 0, tests k (load_edge, after gemm_kernel's main loop). The first version
// recomputed every address and edge test from the strides at every step: 207 of the 719
// instructions of the float32 main loop were not FMAs, 32 of them shared loads (cuobjdump,
// sm_90); gemm_kernel gives the count now.
//
// CONV: B gathered from x (ConvGatherT above) in the scalar order, where each thread's
// elements share one column n = n0 + tid % BN (NT is a multiple of BN): its window corner is
// worked out once; the tap table runs past K with entries that read 0 (conv.cu).
template <typename T, int BM, int BN, int BK, int NT, bool AVEC, bool BVEC, int CONV>
struct TileLoads {
  static constexpr int A_PER = BM * BK / NT, B_PER = BN * BK / NT;  // elements each thread loads
  static constexpr int VW = 16 / int(sizeof(T));                     // elements per 16 bytes
  static constexpr int LDA = BM + VW;                                // As row pitch (gemm_kernel)
  static_assert(BM * BK % NT == 0 && BN * BK % NT == 0 && BK % VW == 0, "tile / thread mismatch");
  static_assert(NT % BK == 0 && NT % BM == 0 && NT % BN == 0, "scalar order: units evenly spaced");
  static_assert(!CONV || (!BVEC && NT % BN == 0), "the gather: scalar order, one column per thread");
  // 16-byte loads need whole groups per thread (not A of the 64-row tile: 2 values each).
  static constexpr bool AV = AVEC && A_PER % VW == 0, BV = BVEC && B_PER % VW == 0;
  static constexpr int AW = AV ? VW : 1, BW = BV ? VW : 1;  // elements per load unit
  static constexpr int AU = A_PER / AW, BU = B_PER / BW;    // load units per thread
  static_assert(AU <= 8 && BU <= 8, "4 bits of room per unit");
  static_assert(AU == 1 || (BK % A_PER == 0 && BM % A_PER == 0), "groups of a thread evenly spaced");
  static_assert(BU == 1 || (BK % B_PER == 0 && BN % B_PER == 0), "groups of a thread evenly spaced");
  T ra[A_PER], rb[B_PER];
  bool a_kfast, b_nfast;
  const T* pa;  // unit 0's first element at k0 = 0 (may lie outside A: then unread)
  const T* pb;  // B's, or (CONV) the image
  index_t a_du = 0, b_du = 0;     // elements between units (AU, BU > 1)
  unsigned a_room = 0, b_room = 0;  // per unit: elements inside along m (n), 4 bits each
  int a_sh, b_sh, a_sdu = 0, b_sdu = 0;  // gemm_kernel's shared offsets: unit 0, between units
  // CONV: the tap table at this thread's entry of step 0, and bh W + bw, bh, bw of its
  // column (1: its window corner; 2: its tap's offsets); bh = kConvOff (every element reads 0)
  // for a column past the output.
  const ConvTap* tk = nullptr;
  int corner = 0, bh = kConvOff, bw = 0;

  __device__ TileLoads(const GemmArgsT<T>& p, const ConvGatherT<T>& cv, const T* A, const T* B, index_t m0,
                       index_t n0, int tid)
      : a_kfast(p.cs_a == 1), b_nfast(CONV || p.cs_b == 1 || p.rs_b != 1) {
    units<AU, AW>([&](int i, int& mm, int& kk) { a_pos(tid, i, mm, kk); }, A, m0, p.rs_a, p.cs_a, LDA, p.M,
                  AV && !a_kfast, pa, a_du, a_room, a_sh, a_sdu);
    if constexpr (CONV != 0) {
      pb = B;
      tk = cv.taps + tid / BN;
      const index_t n = n0 + tid % BN;
      b_sh = (tid / BN) * BN + tid % BN;
      b_sdu = NT;
      if (n < p.N) {
        if constexpr (CONV == 1) {
          bh = int(n / cv.OW) * cv.sh - cv.ph;
          bw = int(n % cv.OW) * cv.sw - cv.pw;
          corner = bh * cv.W + bw;
        } else {
          const ConvTap t = cv.cols[n];
          corner = t.off, bh = t.dh, bw = t.dw;
        }
      }
    } else {
      units<BU, BW>([&](int i, int& nn, int& kk) { b_pos(tid, i, nn, kk); }, B, n0, p.cs_b, p.rs_b, BN, p.N,
                    BV && b_nfast, pb, b_du, b_room, b_sh, b_sdu);
    }
  }
  // One operand's load units (A: outer index m, B: n), from pos(i, outer, kk), the tile position
  // of the thread's i-th element: unit 0's pointer at k = 0 in X (outer stride so, k stride
  // sk) and offset in its shared tile (rows of pitch, k major); the pointer and shared spacing
  // between units; each unit's elements inside `bound` along the outer index, 4 bits each (all
  // W or none, unless the unit's group runs along the outer index: partial).
  template <int U, int W, class Pos>
  static __device__ __forceinline__ void units(Pos pos, const T* X, index_t o0, index_t so, index_t sk, int pitch,
                                               index_t bound, bool partial, const T*& ptr, index_t& du,
                                               unsigned& room, int& sh, int& sdu) {
    int oo, kk;
    pos(0, oo, kk);
    ptr = X + (o0 + oo) * so + kk * sk;
    sh = kk * pitch + oo;
    if constexpr (U > 1) {
      int oo1, kk1;
      pos(W, oo1, kk1);
      du = index_t(oo1 - oo) * so + index_t(kk1 - kk) * sk;
      sdu = (kk1 - kk) * pitch + (oo1 - oo);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      pos(u * W, oo, kk);
      const index_t o = o0 + oo, n = partial ? bound - o : (o < bound ? W : 0);
      room |= unsigned(n < 0 ? 0 : n > W ? W : n) << (4 * u);
    }
  }
  // The tile position of a's i-th element of thread tid.
  __device__ __forceinline__ void a_pos(int tid, int i, int& mm, int& kk) const {
    const int e = AV ? tid * A_PER + i : tid + i * NT;
    mm = a_kfast ? e / BK : e % BM;
    kk = a_kfast ? e % BK : e / BM;
  }
  __device__ __forceinline__ void b_pos(int tid, int i, int& nn, int& kk) const {
    const int e = BV ? tid * B_PER + i : tid + i * NT;
    nn = b_nfast ? e % BN : e / BK;
    kk = b_nfast ? e / BN : e % BK;
  }
  // CONV: B's elements of the step at k0, gathered (the padding taps read 0).
  __device__ __forceinline__ void gather(const ConvGatherT<T>& cv, index_t k0) {
#pragma unroll
    for (int i = 0; i < B_PER; ++i) {
      const ConvTap t = tk[k0 + i * (NT / BN)];  // the same entry across a warp's columns: a broadcast
      // Branch-free: outside the image, read the image's first element and drop it (the
      // branches the conditional read compiled to cost more than the read).
      const bool in = unsigned(bh + t.dh) < unsigned(cv.H) && unsigned(bw + t.dw) < unsigned(cv.W);
      const T x = pb[in ? t.off + corner : 0];
      rb[i] = in ? x : T(0);
    }
  }
  // The K-step at k0 when it ends past K (the last one, K % BK != 0): elements at k >= K read 0.
  // (One helper per operand, load_units / load_units_edge, inlined: the same machine code for
  // the main loop as A's and B's loads written out side by side; a helper taking both operands,
  // tried in the eighth session, moved ptxas's register allocation.)
  __device__ __forceinline__ void load_edge(const GemmArgsT<T>& p, const ConvGatherT<T>& cv, index_t k0, int tid) {
    const index_t kleft = p.K - k0;  // in (0, BK]
    load_units_edge<AU, AW>([&](int i, int& mm, int& kk) { a_pos(tid, i, mm, kk); }, ra, pa + k0 * p.cs_a, a_du,
                            a_room, a_kfast, kleft);
    if constexpr (CONV != 0) {
      gather(cv, k0);  // the table's padding reads 0
    } else {
      load_units_edge<BU, BW>([&](int i, int& nn, int& kk) { b_pos(tid, i, nn, kk); }, rb, pb + k0 * p.rs_b, b_du,
                              b_room, !b_nfast, kleft);
    }
  }
  // load_units (below) for the step past K: a unit's elements at kk (+ v when the group runs
  // along k) >= kleft read 0.
  template <int U, int W, class Pos>
  static __device__ __forceinline__ void load_units_edge(Pos pos, T* r, const T* q0, index_t du, unsigned room,
                                                         bool along_k, index_t kleft) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      int oo, kk;
      pos(u * W, oo, kk);
      const int n = int(room >> (4 * u)) & 15;
      const T* q = q0 + u * du;
#pragma unroll
      for (int v = 0; v < W; ++v) {
        const bool in = along_k ? n > 0 && kk + v < kleft : v < n && kk < kleft;
        r[u * W + v] = in ? q[v] : T(0);
      }
    }
  }
  // A K-step inside K: only the fixed tests along m and n. (The step's offset k0 cs_a is the
  // same for every thread: kept in uniform registers, not per-thread pointers, which left the
  // float32 main loop short of registers.)
  __device__ __forceinline__ void load_full(const GemmArgsT<T>& p, const ConvGatherT<T>& cv, index_t k0) {
    load_units<AU, AW>(ra, pa + k0 * p.cs_a, a_du, a_room);
    if constexpr (CONV != 0) gather(cv, k0);
    else load_units<BU, BW>(rb, pb + k0 * p.rs_b, b_du, b_room);
  }
  // An operand's U units of W elements (W = VW: a 16-byte group) at q0 + u du into r; room:
  // each unit's elements inside the matrix, 4 bits per unit.
  template <int U, int W>
  static __device__ __forceinline__ void load_units(T* r, const T* q0, index_t du, unsigned room) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int n = int(room >> (4 * u)) & 15;
      const T* q = q0 + u * du;
      if constexpr (W > 1) {
        if (n == W) {
          load16(q, r + u * W);
        } else {
#pragma unroll
          for (int v = 0; v < W; ++v) r[u * W + v] = v < n ? q[v] : T(0);
        }
      } else {
        r[u] = n ? *q : T(0);
      }
    }
  }
  // The K-step at k0 (= s BK) into the registers.
  __device__ __forceinline__ void load(const GemmArgsT<T>& p, const ConvGatherT<T>& cv, index_t k0, int tid) {
    if (k0 + BK <= p.K) load_full(p, cv, k0);
    else load_edge(p, cv, k0, tid);
  }
  // The loaded elements into gemm_kernel's shared tiles: as = As[buf] (As[k][m], rows of LDA),
  // bs = Bs[buf] (Bs[k][n]), at the offsets worked out once.
  __device__ __forceinline__ void store(T* as, T* bs) const {
    store_units<AU, AW>(as, ra, a_sh, a_sdu, a_kfast, LDA);
    store_units<BU, BW>(bs, rb, b_sh, b_sdu, !b_nfast, BN);
  }
  // An operand's U units of W elements from r into its shared tile at sh + u sdu: a 16-byte
  // group along the tile's rows as one store, along k (rows of pitch) element by element.
  template <int U, int W>
  static __device__ __forceinline__ void store_units(T* dst, const T* r, int sh, int sdu, bool along_k, int pitch) {
    if (W > 1 && !along_k) {
#pragma unroll
      for (int u = 0; u < U; ++u) store16(dst + sh + u * sdu, r + u * W);
    } else {
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int v = 0; v < W; ++v) dst[sh + u * sdu + v * pitch] = r[u * W + v];
    }
  }
  // The loaded elements into other shared layouts: put_a(mm, kk, value), put_b(nn, kk, value).
  template <class PA, class PB>
  __device__ __forceinline__ void scatter(int tid, PA&& put_a, PB&& put_b) const {
#pragma unroll
    for (int i = 0; i < A_PER; ++i) {
      int mm, kk;
      a_pos(tid, i, mm, kk);
      put_a(mm, kk, ra[i]);
    }
#pragma unroll
    for (int i = 0; i < B_PER; ++i) {
      int nn, kk;
      b_pos(tid, i, nn, kk);
      put_b(nn, kk, rb[i]);
    }
  }
};

// Whether TileLoads may use 16-byte loads for this GEMM's A and B (see there): the operand's
// fast dimension unit-stride, its other strides and base multiples of 16 bytes.
// NNKERNELS_CUDA_GEMM_VEC=0 turns them off (read at every call, as the other kernel switches).
bool vec_loads_enabled() {
  return !env_is("NNKERNELS_CUDA_GEMM_VEC", "0");
}

// NNKERNELS_CUDA_SPLIT_K=0 turns split K off (read at every call).
bool split_k_enabled() {
  return !env_is("NNKERNELS_CUDA_SPLIT_K", "0");
}

inline bool aligned16(const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; }

template <typename T>
bool vec_ok_a(const GemmArgsT<T>& p, index_t batch) {
  constexpr index_t VW = 16 / index_t(sizeof(T));
  const bool strides = p.cs_a == 1 ? p.rs_a % VW == 0 : (p.rs_a == 1 && p.cs_a % VW == 0);
  return vec_loads_enabled() && strides && aligned16(p.a) && (batch <= 1 || p.batch_a % VW == 0);
}

template <typename T>
bool vec_ok_b(const GemmArgsT<T>& p, index_t batch) {
  constexpr index_t VW = 16 / index_t(sizeof(T));
  const bool nfast = p.cs_b == 1 || p.rs_b != 1;
  const bool strides = nfast ? (p.cs_b == 1 && p.rs_b % VW == 0) : p.cs_b % VW == 0;
  return vec_loads_enabled() && strides && aligned16(p.b) && (batch <= 1 || p.batch_b % VW == 0);
}

// C[m, n] from its accumulated product: alpha, beta * Cin, bias, activation; stored at column
// offset cn (n, or the column map's: col_offset).
template <typename T>
__device__ __forceinline__ void write_c(const GemmArgsT<T>& p, T* C, index_t m, index_t n, T acc, index_t cn) {
  T v = p.alpha * acc;
  if (p.beta != T(0)) v += p.beta * p.c_in[m * p.rs_cin + n * p.cs_cin];
  if (p.bias) v += p.bias[p.bias_per_row ? m : n];
  C[m * p.rs_c + cn] = dev::act_apply(p.act, v, T(0));
}
template <typename T>
__device__ __forceinline__ void write_c(const GemmArgsT<T>& p, T* C, index_t m, index_t n, T acc) {
  write_c(p, C, m, n, acc, n);
}
// (32-bit division: a phase has fewer than 2^31 columns, conv_input_grad_ok.)
template <typename T>
__device__ __forceinline__ index_t col_offset(const GemmArgsT<T>& p, index_t n) {
  if (!p.c_cols) return n;
  const unsigned q = unsigned(n) / unsigned(p.c_cols), r = unsigned(n) - q * unsigned(p.c_cols);
  return index_t(q) * p.c_rs2 + index_t(r) * p.c_cs;
}

// VEC: 16-byte loads of A, and of B unless CONV (B gathered from x: ConvGatherT, cv unused
// otherwise). Every instance is bounded to 2 blocks per SM (128 registers for the 256-thread
// tiles). The main loop (tenth session: TileLoads' per-thread addresses and rooms, the K tail
// after it): by cuobjdump (sm_90, tools/sass_loops.py) the float32 128 x 128 VEC instance
// runs 611 instructions per K-step through it, 512 of them FMAs (84%; was 693, 74%), with
// 128 registers and one 4-byte reload in the loop (16-byte stack; none on sm_80); the 16-byte
// gathers (CONV, branch-free since then) no stack (48-56 bytes before). The scalar 128 x 128
// instances spill (stacks of 16-88 bytes, sm_80 / sm_90: the GEMM's 48 / 88, 7 reloads per
// K-step on sm_90; unbounded it took 144 registers, one block per SM); every other instance
// fits. Which is faster is unmeasured:
// NNKERNELS_CUDA_GEMM_VEC=0 turns the vector loads off and NNKERNELS_CUDA_CONV=im2col the
// implicit GEMM (bench/gpu_bench.py times all three).
// Tile: GemmTile<T> or GemmTileHalf (launch.h).
template <typename T, class Tile, bool VEC, int CONV>
__global__ void __launch_bounds__((Tile::BM / Tile::TM) * (Tile::BN / Tile::TN), 2)
gemm_kernel(GemmArgsT<T> p, ConvGatherT<T> cv) {
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK;
  constexpr int TM = Tile::TM, TN = Tile::TN, VW = Tile::VW;
  constexpr int TY = BM / TM, TX = BN / TN;
  constexpr int NT = TY * TX;
  static_assert(VW * sizeof(T) == 16 && TM % VW == 0 && TN % VW == 0, "16-byte groups");

  __shared__ __align__(16) T As[2][BK][BM + VW];
  __shared__ __align__(16) T Bs[2][BK][BN];

  const int tid = threadIdx.x;
  const int tx = tid % TX, ty = tid / TX;
  const index_t m0 = index_t(blockIdx.y) * BM, n0 = index_t(blockIdx.x) * BN;
  const T* A = p.a + index_t(blockIdx.z) * p.batch_a;
  const T* B = CONV ? cv.x + index_t(blockIdx.z) * cv.batch_x : p.b + index_t(blockIdx.z) * p.batch_b;
  T* C = p.c + index_t(blockIdx.z) * p.batch_c;

  const index_t ksteps = (p.K + BK - 1) / BK;
  TileLoads<T, BM, BN, BK, NT, VEC, VEC && CONV == 0, CONV> ld(p, cv, A, B, m0, n0, tid);
  auto store = [&](int buf) { ld.store(&As[buf][0][0], &Bs[buf][0][0]); };  // A transposed (As[k][m]), B as is

  T acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

  // One K-step's products from shared buffer cur.
  auto compute = [&](int cur) {
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      T av[TM], bv[TN];
      // Rows gemm_tile_pos(ty, i), columns gemm_tile_pos(tx, j): one 16-byte read per VW
      // values; neighbouring threads read neighbouring 16-byte words (the threads of a warp
      // sharing ty read the same A words: a broadcast).
#pragma unroll
      for (int g = 0; g < TM / VW; ++g) load16(&As[cur][kk][gemm_tile_pos(ty, g * VW, TY, VW)], av + g * VW);
#pragma unroll
      for (int g = 0; g < TN / VW; ++g) load16(&Bs[cur][kk][gemm_tile_pos(tx, g * VW, TX, VW)], bv + g * VW);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
  };

  // The steps s with (s + 1) BK <= K lie inside K; a last one, when K % BK != 0, ends past it.
  if (ksteps > 0) {
    ld.load(p, cv, 0, tid);
    store(0);
  }
  __syncthreads();
  index_t s = 0;
  // The main loop: the next step's loads (global -> registers) overlap this step's FMAs; only
  // whole steps are loaded here (step s + 1 ends inside K), so no k test is compiled into it.
  for (; (s + 2) * BK <= p.K; ++s) {
    ld.load_full(p, cv, (s + 1) * BK);
    compute(int(s & 1));
    store(int(s & 1) ^ 1);  // the other buffer: nobody reads it this step
    __syncthreads();
  }
  // The last one or two steps: the loads of the step past K, if any, test k.
  for (; s < ksteps; ++s) {
    if (s + 1 < ksteps) ld.load_edge(p, cv, (s + 1) * BK, tid);
    compute(int(s & 1));
    if (s + 1 < ksteps) store(int(s & 1) ^ 1);
    __syncthreads();
  }

  if constexpr (CONV == 1) {  // the column map: one division per column
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const index_t n = n0 + gemm_tile_pos(tx, j, TX, VW);
      if (n >= p.N) continue;
      const index_t cn = col_offset(p, n);
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        const index_t m = m0 + gemm_tile_pos(ty, i, TY, VW);
        if (m < p.M) write_c(p, C, m, n, acc[i][j], cn);
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const index_t m = m0 + gemm_tile_pos(ty, i, TY, VW);
      if (m >= p.M) continue;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const index_t n = n0 + gemm_tile_pos(tx, j, TX, VW);
        if (n >= p.N) continue;
        write_c(p, C, m, n, acc[i][j]);
      }
    }
  }
}

// ---- TF32 tensor-core kernel (float32, opt-in) ----
constexpr int kTfBM = GemmTile<float>::BM, kTfBN = GemmTile<float>::BN, kTfBK = GemmTile<float>::BK;
constexpr int kTfWarpsM = 2, kTfWarpsN = 4, kTfThreads = 32 * kTfWarpsM * kTfWarpsN;
constexpr int kTfWM = kTfBM / kTfWarpsM, kTfWN = kTfBN / kTfWarpsN;  // each warp's piece of C
constexpr int kTfFM = kTfWM / 16, kTfFN = kTfWN / 16;                // its 16 x 16 fragments
constexpr int kTfLdA = kTfBK + 4, kTfLdB = kTfBN + 4;  // padded rows (multiples of 4 floats, 16 B)
static_assert(kTfBK == 8 && kTfThreads == (kTfBM / GemmTile<float>::TM) * (kTfBN / GemmTile<float>::TN),
              "the TF32 kernel uses the float32 tiles and launch shape");

template <bool VEC, int CONV>
__global__ void __launch_bounds__(kTfThreads, VEC ? 2 : 0) gemm_tf32_kernel(GemmArgsT<float> p,
                                                                          ConvGatherT<float> cv) {
  using namespace nvcuda;
  // Fragment loads need 32-byte aligned starts: rows of 16 (A) and columns of 16 (B) apart.
  __shared__ __align__(32) float As[2][kTfBM][kTfLdA];
  __shared__ __align__(32) float Bs[2][kTfBK][kTfLdB];
  __shared__ __align__(32) float Cs[kTfWarpsM * kTfWarpsN][16 * 16];

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = warp / kTfWarpsN, wn = warp % kTfWarpsN;
  const index_t m0 = index_t(blockIdx.y) * kTfBM, n0 = index_t(blockIdx.x) * kTfBN;
  const float* A = p.a + index_t(blockIdx.z) * p.batch_a;
  const float* B = CONV ? cv.x + index_t(blockIdx.z) * cv.batch_x : p.b + index_t(blockIdx.z) * p.batch_b;
  float* C = p.c + index_t(blockIdx.z) * p.batch_c;

  const index_t ksteps = (p.K + kTfBK - 1) / kTfBK;
  TileLoads<float, kTfBM, kTfBN, kTfBK, kTfThreads, VEC, VEC && CONV == 0, CONV> ld(p, cv, A, B, m0, n0, tid);
  auto store = [&](int buf) {  // both row-major: As[m][k], Bs[k][n]
    ld.scatter(tid, [&](int mm, int kk, float v) { As[buf][mm][kk] = v; },
               [&](int nn, int kk, float v) { Bs[buf][kk][nn] = v; });
  };

  wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[kTfFM][kTfFN];
#pragma unroll
  for (int i = 0; i < kTfFM; ++i)
#pragma unroll
    for (int j = 0; j < kTfFN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  if (ksteps > 0) {
    ld.load(p, cv, 0, tid);
    store(0);
  }
  __syncthreads();
  for (index_t s = 0; s < ksteps; ++s) {
    const int cur = int(s & 1);
    if (s + 1 < ksteps) ld.load(p, cv, (s + 1) * kTfBK, tid);  // overlaps the MMAs
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> af[kTfFM];
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> bf[kTfFN];
#pragma unroll
    for (int i = 0; i < kTfFM; ++i) {
      wmma::load_matrix_sync(af[i], &As[cur][wm * kTfWM + i * 16][0], kTfLdA);
#pragma unroll
      for (int t = 0; t < af[i].num_elements; ++t) af[i].x[t] = wmma::__float_to_tf32(af[i].x[t]);
    }
#pragma unroll
    for (int j = 0; j < kTfFN; ++j) {
      wmma::load_matrix_sync(bf[j], &Bs[cur][0][wn * kTfWN + j * 16], kTfLdB);
#pragma unroll
      for (int t = 0; t < bf[j].num_elements; ++t) bf[j].x[t] = wmma::__float_to_tf32(bf[j].x[t]);
    }
#pragma unroll
    for (int i = 0; i < kTfFM; ++i)
#pragma unroll
      for (int j = 0; j < kTfFN; ++j) wmma::mma_sync(acc[i][j], af[i], bf[j], acc[i][j]);
    if (s + 1 < ksteps) store(cur ^ 1);  // the other buffer: nobody reads it this step
    __syncthreads();
  }

  // Epilogue: each fragment through this warp's scratch, 8 elements per lane.
  float* cs = Cs[warp];
#pragma unroll
  for (int i = 0; i < kTfFM; ++i)
#pragma unroll
    for (int j = 0; j < kTfFN; ++j) {
      wmma::store_matrix_sync(cs, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 16 * 16; e += 32) {
        const index_t m = m0 + wm * kTfWM + i * 16 + e / 16, n = n0 + wn * kTfWN + j * 16 + e % 16;
        if (m < p.M && n < p.N) write_c(p, C, m, n, cs[e], CONV == 1 ? col_offset(p, n) : n);
      }
      __syncwarp();
    }
}

std::atomic<bool> g_allow_tf32{false};

template <typename T, class Tile, int CONV>
void launch_tile(const dim3& grid, int block, bool vec, const GemmArgsT<T>& q, const ConvGatherT<T>& cv) {
  if (vec) gemm_kernel<T, Tile, true, CONV><<<grid, block>>>(q, cv);
  else gemm_kernel<T, Tile, false, CONV><<<grid, block>>>(q, cv);
}

// tf32: the TF32 kernel; tile: the float32 tile (gemm_tile_kind), as gemm_launch chose the grid.
template <typename T, int CONV>
void launch_kernel(const dim3& grid, int block, bool vec, bool tf32, GemmTileKind tile, const GemmArgsT<T>& q,
                   const ConvGatherT<T>& cv) {
  if constexpr (std::is_same_v<T, float>) {
    if (tf32) {
      if (vec) gemm_tf32_kernel<true, CONV><<<grid, kTfThreads>>>(q, cv);
      else gemm_tf32_kernel<false, CONV><<<grid, kTfThreads>>>(q, cv);
    } else if (tile == GemmTileKind::half) {
      launch_tile<T, GemmTileHalf, CONV>(grid, block, vec, q, cv);
    } else if (tile == GemmTileKind::narrow) {
      launch_tile<T, GemmTileNarrow, CONV>(grid, block, vec, q, cv);
    } else if (tile == GemmTileKind::small) {
      launch_tile<T, GemmTileSmall, CONV>(grid, block, vec, q, cv);
    } else {
      launch_tile<T, GemmTile<T>, CONV>(grid, block, vec, q, cv);
    }
  } else {
    launch_tile<T, GemmTile<T>, CONV>(grid, block, vec, q, cv);
  }
  CUDA_CHECK(cudaGetLastError());
}

// The kernels' typed arguments from the untyped ones.
template <typename T>
GemmArgsT<T> args_of(const GemmParams& g) {
  GemmArgsT<T> p;
  p.M = g.M; p.N = g.N; p.K = g.K;
  p.a = static_cast<const T*>(g.a); p.rs_a = g.rs_a; p.cs_a = g.cs_a; p.batch_a = g.batch_a;
  p.b = static_cast<const T*>(g.b); p.rs_b = g.rs_b; p.cs_b = g.cs_b; p.batch_b = g.batch_b;
  p.c = static_cast<T*>(g.c); p.rs_c = g.rs_c; p.batch_c = g.batch_c;
  p.c_in = static_cast<const T*>(g.c_in); p.rs_cin = g.rs_cin; p.cs_cin = g.cs_cin;
  p.bias = static_cast<const T*>(g.bias); p.bias_per_row = g.bias_per_row;
  p.alpha = T(g.alpha); p.beta = g.c_in ? T(g.beta) : T(0);
  p.act = g.act;
  p.c_cols = g.c_cols; p.c_rs2 = g.c_rs2; p.c_cs = g.c_cs;
  return p;
}

// C[m, n] = epilogue(sum over s < S of parts[s][m, n]), parts S contiguous M x N arrays, summed
// in order s = 0, 1, ...: the split-K reduction (deterministic). One thread per element.
template <typename T>
__global__ void sum_parts_kernel(GemmArgsT<T> p, const T* __restrict__ parts, index_t S) {
  const index_t MN = p.M * p.N;
  for (index_t e = blockIdx.x * index_t(blockDim.x) + threadIdx.x; e < MN; e += index_t(gridDim.x) * blockDim.x) {
    T acc = T(0);
    for (index_t s = 0; s < S; ++s) acc += parts[s * MN + e];
    write_c(p, p.c, e / p.N, e % p.N, acc);
  }
}

template <typename T>
void launch(const GemmParams& g, const ConvGather* gather);

// C = g's epilogue applied to the ordered sum of the n M x N arrays in parts.
template <typename T>
void sum_parts(const GemmParams& g, const void* parts, index_t n) {
  const GemmArgsT<T> p = args_of<T>(g);
  const Launch l = elementwise_launch(g.M * g.N);
  sum_parts_kernel<T><<<unsigned(l.grid_x), l.block>>>(p, static_cast<const T*>(parts), n);
  CUDA_CHECK(cudaGetLastError());
}

// g's products as plain M x N arrays (alpha 1, no epilogue) into c, rs_c = N.
GemmParams plain_products(const GemmParams& g, void* c) {
  GemmParams q = g;
  q.c = c; q.rs_c = g.N; q.batch_c = g.M * g.N;
  q.c_in = nullptr; q.beta = 0.0; q.bias = nullptr; q.alpha = 1.0; q.act = Act::none;
  q.c_cols = 0;
  return q;
}

// Split K (gemm_splits in launch.h) for a GEMM of one batch entry: chunks 0..S-2 of depth kc
// as one batched GEMM into parts, the last (shorter) chunk as a second, then the ordered sum
// with g's epilogue.
template <typename T>
void launch_split(const GemmParams& g, index_t S) {
  const index_t kc = gemm_split_depth(g.K, S), n = ceil_div(g.K, kc), MN = g.M * g.N;
  DeviceScratch parts(size_t(n * MN) * sizeof(T));
  GemmParams c = plain_products(g, parts.p);
  c.K = kc; c.batch = n - 1; c.batch_a = kc * g.cs_a; c.batch_b = kc * g.rs_b;
  launch<T>(c, nullptr);
  c.K = g.K - (n - 1) * kc; c.batch = 1;
  c.a = static_cast<const T*>(g.a) + (n - 1) * kc * g.cs_a;
  c.b = static_cast<const T*>(g.b) + (n - 1) * kc * g.rs_b;
  c.c = static_cast<T*>(parts.p) + (n - 1) * MN;
  launch<T>(c, nullptr);
  sum_parts<T>(g, parts.p, n);
}

// gemm_batch_sum: every batch entry's product into parts (one batched launch), summed in order.
template <typename T>
void launch_batch_sum(const GemmParams& g, const ConvGather* gather) {
  DeviceScratch parts(size_t(g.batch * g.M * g.N) * sizeof(T));
  launch<T>(plain_products(g, parts.p), gather);
  sum_parts<T>(g, parts.p, g.batch);
}

// gather: null for a GEMM; else B is gathered from the convolution input (gemm_conv).
template <typename T>
void launch(const GemmParams& g, const ConvGather* gather) {
  const GemmArgsT<T> p = args_of<T>(g);
  ConvGatherT<T> cv;
  if (gather) {
    cv.x = static_cast<const T*>(gather->x); cv.batch_x = gather->batch_x;
    cv.taps = gather->taps; cv.cols = gather->cols;
    cv.H = int(gather->H); cv.W = int(gather->W); cv.OW = int(gather->OW);
    cv.ph = int(gather->ph); cv.pw = int(gather->pw); cv.sh = int(gather->sh); cv.sw = int(gather->sw);
  }
  // The batch goes in the grid's z (at most 65535): longer batches in chunks.
  const bool tf32 = std::is_same_v<T, float> && g_allow_tf32.load(std::memory_order_relaxed);
  const GemmTileKind tile = gemm_tile_kind(g.dtype, g.M, g.N, tf32);
  // 16-byte loads need 4 (float32) / 2 (float64) values of an operand per thread: A of the
  // 64-row tiles and B of the 64-column tiles have 2 and load element by element.
  const bool a_wide = tile != GemmTileKind::half && tile != GemmTileKind::small;
  const bool b_wide = tile != GemmTileKind::narrow && tile != GemmTileKind::small;
  for (index_t b0 = 0; b0 < g.batch; b0 += kMaxGridYZ) {
    const Launch l = gemm_launch(g.dtype, g.M, g.N, std::min<index_t>(kMaxGridYZ, g.batch - b0), tf32);
    GemmArgsT<T> q = p;
    ConvGatherT<T> qv = cv;
    q.a += b0 * g.batch_a; q.b += b0 * g.batch_b; q.c += b0 * g.batch_c;
    const dim3 grid(unsigned(l.grid_x), unsigned(l.grid_y), unsigned(l.grid_z));
    if (gather) {  // B is gathered
      qv.x += b0 * cv.batch_x;
      const bool vec = a_wide && vec_ok_a(q, l.grid_z);
      if (gather->cols) launch_kernel<T, 2>(grid, l.block, vec, tf32, tile, q, qv);
      else launch_kernel<T, 1>(grid, l.block, vec, tf32, tile, q, qv);
    } else {
      const bool vec = (!a_wide || vec_ok_a(q, l.grid_z)) && (!b_wide || vec_ok_b(q, l.grid_z)) && (a_wide || b_wide);
      launch_kernel<T, 0>(grid, l.block, vec, tf32, tile, q, qv);
    }
  }
}

}  // namespace

void set_allow_tf32(bool on) { g_allow_tf32.store(on, std::memory_order_relaxed); }
bool allow_tf32() { return g_allow_tf32.load(std::memory_order_relaxed); }

void gemm(const GemmParams& g) {
  if (g.M == 0 || g.N == 0 || g.batch == 0) return;
  const bool tf32 = g.dtype == DType::f32 && allow_tf32();
  // (the device queries only for a GEMM that could split: one batch entry)
  const index_t S = g.batch == 1 && split_k_enabled() ? gemm_splits(g.dtype, g.M, g.N, g.K, 1, device_limits().sms, tf32) : 1;
  if (S > 1) {
    if (g.dtype == DType::f32) launch_split<float>(g, S);
    else launch_split<double>(g, S);
    return;
  }
  if (g.dtype == DType::f32) launch<float>(g, nullptr);
  else launch<double>(g, nullptr);
}

void gemm_batch_sum(const GemmParams& g, const ConvGather* gather) {
  if (g.M == 0 || g.N == 0) return;
  if (g.batch == 0 || g.K == 0) {  // an empty sum: the epilogue of zeros
    if (g.dtype == DType::f32) sum_parts<float>(g, nullptr, 0);
    else sum_parts<double>(g, nullptr, 0);
    return;
  }
  if (g.batch == 1 && !gather) return gemm(g);
  if (g.dtype == DType::f32) launch_batch_sum<float>(g, gather);
  else launch_batch_sum<double>(g, gather);
}

void gemm_conv(const GemmParams& g, const ConvGather& gather) {
  static_assert(sizeof(ConvTap) == 8, "ConvGather::taps: an int and two shorts per k");
  static_assert(GemmTile<float>::BK == 8 && GemmTile<double>::BK == 8 && GemmTileHalf::BK == 8 &&
                    GemmTileNarrow::BK == 8 && GemmTileSmall::BK == 8,
                "conv.cu pads the tap table to multiples of 8");
  if (g.M == 0 || g.N == 0 || g.batch == 0) return;
  if (g.dtype == DType::f32) launch<float>(g, &gather);
  else launch<double>(g, &gather);
}

}  // namespace nnk::cuda
