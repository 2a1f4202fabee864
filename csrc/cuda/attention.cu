// Flash attention forward (FlashAttention-2 style online softmax; the L x S score matrix is
// never stored).
//
// For each query row i (of one batch-head): m = max_j s_ij, l = sum_j exp(s_ij - m),
// out_i = sum_j exp(s_ij - m) v_j / l, lse_i = m + log(l), with s_ij = scale * q_i . k_j
// (-inf where masked). Keys are visited in tiles of BC; per tile the running max m, the
// running sum l and the accumulator are rescaled by exp(m_old - m_new) (online softmax).
//
// Work split: a block of 128 threads takes kAttnRows = 32 query rows; four neighbouring
// threads (a quad) share a row, each holding the head dims d = quad_lane + 4 t of q and of
// the accumulator in registers (head dim <= MAXD). A dot product q . k_j is the quad's
// partial sums combined with two shuffles. K and V tiles (BC keys) are loaded into shared
// memory once per block by all threads (coalesced) and read by every row; quad lanes read
// consecutive words and the 8 rows of a warp read the same ones (broadcast): no bank
// conflicts. Causal (top-left, key j <= query i): tiles past the block's last query are
// skipped (attn_key_tiles in launch.h), the diagonal tile is masked per element.
// Masks (AttnMaskView): a boolean mask makes a score -inf where it is false, an additive one
// is added to the scaled score; read per element (base offset of the batch-head once per
// thread). A row with no visible key (S == 0, or every key masked) gives out 0 and lse -inf.
// Operands (AttnOperand) are read in place with their strides: broadcast batch dims and
// GQA's shared key/value heads cost no copies (the block's base offsets are computed once).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda/api.h"
#include "cuda/cuda_check.h"
#include "cuda/device.cuh"
#include "cuda/launch.h"

namespace nnk::cuda {

namespace {

// Rows [r0, r0 + R) of a (rows x n) matrix (row stride rs, column stride cs) into shared
// memory, zero past `rows`; all NT threads of the block take part (consecutive threads read
// consecutive columns).
template <typename T, int R, int MAXD, int NT>
__device__ __forceinline__ void load_tile(T (&dst)[R][MAXD], const T* __restrict__ src, index_t rs, index_t cs,
                                          index_t r0, index_t rows, int n, int tid) {
  for (int e = tid; e < R * n; e += NT) {
    const int rr = e / n, d = e % n;
    dst[rr][d] = r0 + rr < rows ? src[(r0 + rr) * rs + d * cs] : T(0);
  }
}

// A quad's dims d = ql + 4 t (< n) of a row (column stride cs) into registers, times mul (0
// past n or for an invalid row); and back (contiguous), times mul.
template <typename T, int DQ>
__device__ __forceinline__ void quad_load(T (&r)[DQ], const T* __restrict__ p, index_t cs, bool valid, int ql,
                                          int n, T mul = T(1)) {
#pragma unroll
  for (int t = 0; t < DQ; ++t) {
    const int d = ql + 4 * t;
    r[t] = (valid && d < n) ? p[d * cs] * mul : T(0);
  }
}
template <typename T, int DQ>
__device__ __forceinline__ void quad_store(T* __restrict__ p, const T (&r)[DQ], int ql, int n, T mul = T(1)) {
#pragma unroll
  for (int t = 0; t < DQ; ++t) {
    const int d = ql + 4 * t;
    if (d < n) p[d] = r[t] * mul;
  }
}

// Offset in elements of batch-head bh: bh decomposed over the batch dims shape (row-major),
// times their strides (masks and operands alike).
__host__ __device__ __forceinline__ index_t batch_offset(int nb, const index_t* shape, const index_t* stride,
                                                        index_t bh) {
  index_t off = 0;
  for (int d = nb - 1; d >= 0; --d) {
    off += (bh % shape[d]) * stride[d];
    bh /= shape[d];
  }
  return off;
}
template <typename T>
__device__ __forceinline__ const T* operand_base(const AttnOperand& o, index_t bh) {
  return static_cast<const T*>(o.p) + batch_offset(o.nb, o.bshape, o.bstride, bh);
}
// Batch-heads summed into each of the operand's own (AttnOperand::reduced_count, on the device).
__device__ __forceinline__ index_t reduced_count(const AttnOperand& o) {
  index_t n = 1;
  for (int d = 0; d < o.nb; ++d) n *= o.reduced[d] ? o.bshape[d] : 1;
  return n;
}
// The batch-head (over the broadcast batch) of an operand's own batch-head `own` and its
// red-th combination of the dims it is broadcast / repeated over (both row-major).
__device__ __forceinline__ index_t expand_bh(const AttnOperand& o, index_t own, index_t red) {
  index_t bh = 0, mul = 1;
  for (int d = o.nb - 1; d >= 0; --d) {
    const index_t n = o.bshape[d];
    index_t& src = o.reduced[d] ? red : own;
    bh += (src % n) * mul;
    src /= n;
    mul *= n;
  }
  return bh;
}

// Keys a block of query rows visits: all, or with causal masking (key j <= query i) those up
// to its last query (attn_key_tiles in launch.h counts the same on the host).
__device__ __forceinline__ index_t key_end(index_t L, index_t S, bool causal) {
  if (!causal) return S;
  index_t last = (index_t(blockIdx.x) + 1) * kAttnRows;
  if (last > L) last = L;
  return last < S ? last : S;
}

// Offset of batch-head bh's mask in elements; the mask's term for (query i, key j): 0 or
// -inf (boolean), the value (additive).
__device__ __forceinline__ index_t mask_base(const AttnMaskView& m, index_t bh) {
  return batch_offset(m.nb, m.bshape, m.bstride, bh);
}
template <typename T>
__device__ __forceinline__ T mask_term(const AttnMaskView& m, index_t base, index_t i, index_t j) {
  const index_t o = base + i * m.sl + j * m.ss;
  if (m.kind == AttnMaskView::boolean) return static_cast<const unsigned char*>(m.p)[o] ? T(0) : T(-INFINITY);
  return static_cast<const T*>(m.p)[o];
}

// The quad's dot product of its dims of a (registers) with row b (shared), n dims.
template <typename T, int DQ, int MAXD>
__device__ __forceinline__ T quad_dot(const T (&a)[DQ], const T (&b)[MAXD], int ql, int n) {
  T part = T(0);
#pragma unroll
  for (int t = 0; t < DQ; ++t)
    if (ql + 4 * t < n) part = fma(a[t], b[ql + 4 * t], part);
  part += __shfl_xor_sync(0xffffffffu, part, 1);
  part += __shfl_xor_sync(0xffffffffu, part, 2);
  return part;
}

template <typename T, int MAXD, int BC>
__global__ void __launch_bounds__(4 * kAttnRows)
flash_fwd_kernel(T* __restrict__ out, T* __restrict__ lse, AttnOperand q, AttnOperand k, AttnOperand v,
                 index_t L, index_t S, int E, int Ev, T scale, bool causal, AttnMaskView mask) {
  constexpr int NT = 4 * kAttnRows, DQ = MAXD / 4;
  __shared__ T Ks[BC][MAXD];
  __shared__ T Vs[BC][MAXD];

  const int tid = threadIdx.x, ql = tid % 4, row = tid / 4;
  const index_t bh = blockIdx.y;
  const index_t qi = index_t(blockIdx.x) * kAttnRows + row;
  const bool valid = qi < L;
  const bool masked = mask.kind != AttnMaskView::none && valid;
  const index_t mbase = masked ? mask_base(mask, bh) : 0;
  const T* qp = operand_base<T>(q, bh) + (valid ? qi : 0) * q.rs;
  const T* kp = operand_base<T>(k, bh);
  const T* vp = operand_base<T>(v, bh);

  T qr[DQ], acc[DQ] = {};
  quad_load(qr, qp, q.cs, valid, ql, E, scale);
  T m = -INFINITY, l = T(0);

  const index_t kv_end = key_end(L, S, causal);
  for (index_t k0 = 0; k0 < kv_end; k0 += BC) {
    __syncthreads();  // the previous tile is no longer read
    load_tile<T, BC, MAXD, NT>(Ks, kp, k.rs, k.cs, k0, S, E, tid);
    load_tile<T, BC, MAXD, NT>(Vs, vp, v.rs, v.cs, k0, S, Ev, tid);
    __syncthreads();

    T s[BC];
    T mt = -INFINITY;
#pragma unroll
    for (int j = 0; j < BC; ++j) {
      const T part = quad_dot<T, DQ, MAXD>(qr, Ks[j], ql, E);
      const index_t key = k0 + j;
      s[j] = (key < S && !(causal && key > qi)) ? (masked ? part + mask_term<T>(mask, mbase, qi, key) : part)
                                                : T(-INFINITY);
      mt = fmax(mt, s[j]);
    }
    const T mn = fmax(m, mt);
    if (mn == T(-INFINITY)) continue;  // nothing visible yet (uniform per quad)
    const T corr = dev::exp_(m - mn);
    l *= corr;
#pragma unroll
    for (int t = 0; t < DQ; ++t) acc[t] *= corr;
#pragma unroll
    for (int j = 0; j < BC; ++j) {
      const T p = dev::exp_(s[j] - mn);
      l += p;
#pragma unroll
      for (int t = 0; t < DQ; ++t)
        if (ql + 4 * t < Ev) acc[t] = fma(p, Vs[j][ql + 4 * t], acc[t]);
    }
    m = mn;
  }

  if (!valid) return;
  quad_store(out + (bh * L + qi) * Ev, acc, ql, Ev, l > T(0) ? T(1) / l : T(0));
  if (ql == 0) lse[bh * L + qi] = l > T(0) ? m + dev::log_(l) : T(-INFINITY);
}

template <typename T, int MAXD>
void launch(void* out, void* lse, const AttnOperand& q, const AttnOperand& k, const AttnOperand& v, index_t BH,
            index_t L, index_t S, index_t E, index_t Ev, double scale, bool causal, const AttnMaskView& mask) {
  constexpr int BC = attn_bc(sizeof(T) == 4, MAXD);
  static_assert(MAXD <= kAttnMaxDim, "head dim");
  const Launch lc = attn_launch(dtype_of<T>::value, BH, L);
  flash_fwd_kernel<T, MAXD, BC><<<dim3(unsigned(lc.grid_x), unsigned(lc.grid_y)), lc.block>>>(
      static_cast<T*>(out), static_cast<T*>(lse), q, k, v, L, S, int(E), int(Ev), T(scale), causal, mask);
  CUDA_CHECK(cudaGetLastError());
}

// ---- tiled forward: float32, head dims <= 128 ----
// The default for those (the quad kernel above takes the rest; NNKERNELS_CUDA_ATTN=quad
// selects it for these too, for comparison). A block of 128 threads takes kTBr = 64 query
// rows and visits K/V in tiles of kTBc = 32 keys. Thread (tx = tid % 8, ty = tid / 8) holds
// the 4 x 4 scores of rows 4 ty + i and keys 4 tx + j, and the outputs of those rows in
// columns g * 32 + 4 tx + c (c < 4, g < D / 32; D = 64 or 128). Both products are
// register-blocked from shared memory read as float4: S = Q K^T from Q^T and K^T tiles (2
// loads per 16 FMAs), O += P V from P^T and V (1 + D / 32 loads per D / 2 FMAs). The 8
// threads sharing a row are consecutive lanes: the row max is three shuffles; the row sum
// stays per thread (each thread's partial is rescaled by the same factor) until the end.
constexpr int kTBr = 64, kTBc = 32, kTThreads = 128;

// 4 consecutive floats of shared memory (16-byte aligned) into registers.
__device__ __forceinline__ void ld4(const float* p, float* o) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  o[0] = v.x, o[1] = v.y, o[2] = v.z, o[3] = v.w;
}
// A 4 x 4 register tile t into shared memory transposed: column j of t as a float4 at
// p + j * stride.
__device__ __forceinline__ void store_tile_t(float* p, int stride, const float (&t)[4][4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j)
    *reinterpret_cast<float4*>(p + j * stride) = make_float4(t[0][j], t[1][j], t[2][j], t[3][j]);
}

// acc[i][j] += a[i] b[j]: the register-blocked outer product of both tiled products.
template <int M, int N>
__device__ __forceinline__ void outer_fma(float (&acc)[M][N], const float (&a)[M], const float (&b)[N]) {
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int j = 0; j < N; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
}
constexpr int kTQPad = kTBr + 4, kTKPad = kTBc + 4;  // row strides: float4-aligned

// Rows [r0, r0 + R) of an operand into shared memory, transposed (dst_t[d][r], row stride
// pad) and / or as is (dst[r][d], row stride D), times mul; zero past `rows` and n.
// With vec (the host's NNKERNELS_CUDA_ATTN_VEC, on unless "0") and rows of 16-byte aligned,
// unit-stride groups of 4 (cs 1, rs and n multiples of 4, src aligned; tested here, uniform
// per block), each thread loads float4s: 4 loads per 16 values instead of 16, and none of the
// per-element index arithmetic (the forward's K and V tiles at head dim 64: 289 instructions
// per thread and 32-key tile, 856 element by element; cuobjdump, sm_90). Thread -> element
// maps keep the shared-memory stores free of bank conflicts: consecutive threads take
// consecutive rows for a transposed tile (its 4 scalar stores hit 32 banks; each thread's
// 16-byte global read is half a 32-byte sector, the other half read by the same warp for the
// next group, from L1), consecutive groups of a row for a tile stored as is (float4 stores).
// A tile wanted both ways takes the row order: its float4 stores then conflict (8 ways).
template <int D, int R>
__device__ __forceinline__ void tile_in(float* dst_t, int pad, float* dst, const float* src, index_t rs, index_t cs,
                                        index_t r0, index_t rows, int n, float mul, bool vec, int tid) {
  static_assert(D % 4 == 0 && (R & (R - 1)) == 0, "groups of 4; R a power of 2");
  vec = vec && cs == 1 && rs % 4 == 0 && n % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0;
  if (vec) {
    constexpr int G4 = D / 4;
    const bool by_row = dst_t != nullptr;
    for (int e = tid; e < R * G4; e += kTThreads) {
      const int rr = by_row ? e % R : e / G4, d = 4 * (by_row ? e / R : e % G4);
      const index_t r = r0 + rr;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (r < rows && d < n) {
        v = *reinterpret_cast<const float4*>(src + r * rs + d);
        v.x *= mul, v.y *= mul, v.z *= mul, v.w *= mul;
      }
      if (dst_t) {
        dst_t[(d + 0) * pad + rr] = v.x;
        dst_t[(d + 1) * pad + rr] = v.y;
        dst_t[(d + 2) * pad + rr] = v.z;
        dst_t[(d + 3) * pad + rr] = v.w;
      }
      if (dst) *reinterpret_cast<float4*>(dst + rr * D + d) = v;
    }
    return;
  }
  for (int e = tid; e < R * D; e += kTThreads) {
    const int rr = e / D, d = e % D;
    const index_t r = r0 + rr;
    const float v = (r < rows && d < n) ? src[r * rs + d * cs] * mul : 0.f;
    if (dst_t) dst_t[d * pad + rr] = v;
    if (dst) dst[rr * D + d] = v;
  }
}

template <int D>
constexpr int fwd_tiled_smem() {
  return int(sizeof(float)) * (D * kTQPad + D * kTKPad + kTBc * D + kTBc * kTQPad);
}

// D = 64 or 128 (head dims up to D): each thread's outputs are columns g * 32 + 4 tx + c
// of its 4 rows (g < D / 32, c < 4). Dynamic shared memory: 43.5 KB (D = 64), 78 KB (128).
template <int D>
__global__ void __launch_bounds__(kTThreads)
flash_fwd_tiled_kernel(float* __restrict__ out, float* __restrict__ lse, AttnOperand q, AttnOperand k,
                       AttnOperand v, index_t L, index_t S, int E, int Ev, float scale, bool causal,
                       AttnMaskView mask, bool vec) {
  constexpr int G = D / 32;  // 4-column groups per thread
  extern __shared__ __align__(16) float tsm[];
  float* Qt = tsm;                 // [D][kTQPad]: Q^T, scaled by scale log2(e)
  float* Kt = Qt + D * kTQPad;     // [D][kTKPad]: K^T
  float* Vs = Kt + D * kTKPad;     // [kTBc][D]: V
  float* Pt = Vs + kTBc * D;       // [kTBc][kTQPad]: P^T

  const int tid = threadIdx.x, tx = tid % 8, ty = tid / 8;
  const index_t bh = blockIdx.y, r0 = index_t(blockIdx.x) * kTBr;
  const float* qp = operand_base<float>(q, bh);
  const float* kp = operand_base<float>(k, bh);
  const float* vp = operand_base<float>(v, bh);
  // Scores in base 2 (FlashAttention-2's trick): Q scaled by scale log2(e), so that
  // exp(x - m) = exp2(x2 - m2) costs one subtraction and the hardware's exp2 instead of
  // expf's range reduction (about 7 instructions, 20 per thread and tile); lse = m2 ln 2 +
  // log(l) at the end.
  constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
  tile_in<D, kTBr>(Qt, kTQPad, nullptr, qp, q.rs, q.cs, r0, L, E, scale * kLog2e, vec, tid);
  const bool masked = mask.kind != AttnMaskView::none;
  const index_t mbase = masked ? mask_base(mask, bh) : 0;
  float acc[4][4 * G] = {};
  float m[4], l[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) m[i] = -INFINITY, l[i] = 0.f;

  index_t kv_end = S;
  if (causal) {
    const index_t last = r0 + kTBr < L ? r0 + kTBr : L;
    if (last < kv_end) kv_end = last;
  }
  for (index_t k0 = 0; k0 < kv_end; k0 += kTBc) {
    __syncthreads();  // Q^T written; the previous K, V and P tiles no longer read
    tile_in<D, kTBc>(Kt, kTKPad, nullptr, kp, k.rs, k.cs, k0, S, E, 1.f, vec, tid);
    tile_in<D, kTBc>(nullptr, 0, Vs, vp, v.rs, v.cs, k0, S, Ev, 1.f, vec, tid);
    __syncthreads();
    float s[4][4] = {};
#pragma unroll 8
    for (int d = 0; d < E; ++d) {
      float av[4], bv[4];
      ld4(Qt + d * kTQPad + 4 * ty, av);
      ld4(Kt + d * kTKPad + 4 * tx, bv);
      outer_fma(s, av, bv);
    }
    // A tile with every key inside S, below every row's diagonal, and no mask needs no test
    // per score (uniform across the block).
    const bool plain = !masked && k0 + kTBc <= S && (!causal || k0 + kTBc - 1 <= r0);
    if (!plain) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const index_t row = r0 + 4 * ty + i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const index_t key = k0 + 4 * tx + j;
          if (key >= S || (causal && key > row)) s[i][j] = -INFINITY;
          else if (masked && row < L) s[i][j] += kLog2e * mask_term<float>(mask, mbase, row, key);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float mt = fmaxf(fmaxf(s[i][0], s[i][1]), fmaxf(s[i][2], s[i][3]));
      mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
      mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
      mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 4));
      const float mn = fmaxf(m[i], mt);
      // Nothing visible in this row yet: p = 0 and nothing to rescale.
      const float corr = mn == -INFINITY ? 1.f : exp2f(m[i] - mn);
      float ls = 0.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        s[i][j] = mn == -INFINITY ? 0.f : exp2f(s[i][j] - mn);
        ls += s[i][j];
      }
      l[i] = l[i] * corr + ls;
#pragma unroll
      for (int c = 0; c < 4 * G; ++c) acc[i][c] *= corr;
      m[i] = mn;
    }
    store_tile_t(Pt + 4 * tx * kTQPad + 4 * ty, kTQPad, s);
    __syncthreads();
#pragma unroll 4
    for (int j = 0; j < kTBc; ++j) {
      float pr[4], vc[4 * G];
      ld4(Pt + j * kTQPad + 4 * ty, pr);
#pragma unroll
      for (int g = 0; g < G; ++g) ld4(Vs + j * D + g * 32 + 4 * tx, vc + 4 * g);
      outer_fma(acc, pr, vc);
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 4);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const index_t row = r0 + 4 * ty + i;
    if (row >= L) continue;
    const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
    float* o = out + (bh * L + row) * Ev;
#pragma unroll
    for (int c = 0; c < 4 * G; ++c) {
      const int col = (c / 4) * 32 + 4 * tx + c % 4;
      if (col < Ev) o[col] = acc[i][c] * inv;
    }
    if (tx == 0) lse[bh * L + row] = l[i] > 0.f ? m[i] * kLn2 + dev::log_(l[i]) : -INFINITY;
  }
}

// ---- tiled backward: float32, head dims <= 128 (dynamic shared memory) ----
// The same thread layout and register blocking as the tiled forward. P is recomputed from
// the forward's lse, dP = dO V^T, dS = P (dP - D). Templated on D = 64 / 128 (head dims up
// to D).
//   dQ: a block per 64 query rows (of q's own batch-heads, visiting the batch-heads q is
//       broadcast to); per 32-key tile, S and dP as 4 x 4 register tiles from Q^T / K^T and
//       dO^T / V^T, dS^T to shared memory, then dQ (4 rows x D / 8 columns per thread) += dS K.
//   dK, dV: a block per 32 keys (of k's own batch-heads, visiting the query heads of its
//       group and any broadcast dims); per 64-row query tile, S^T and dP^T as 4 x 4 tiles
//       (4 keys x 4 rows per thread) from K^T / Q^T and V^T / dO^T, P and dS to shared
//       memory, then dV (4 keys x D / 16 columns) += P dO and dK += dS Q (Q scaled, so dK
//       needs no further scale). Causal: query tiles from the block's first key on.
// Dynamic shared memory: dQ 70 KB (D = 64) / 131.5 KB (128); dK, dV 103 KB / 191 KB, more
// than an sm_80 block may have (163 KB): there the D = 128 backward uses the quad kernels.
template <int D>
constexpr int bwd_q_smem() {
  return int(sizeof(float)) * (2 * D * kTQPad + 2 * D * kTKPad + kTBc * D + kTBc * kTQPad);
}
template <int D>
constexpr int bwd_kv_smem() {
  return int(sizeof(float)) * (2 * D * kTKPad + 2 * D * kTQPad + 2 * kTBr * D + 2 * kTBr * kTKPad + 2 * kTBr);
}

// The 4 x 4 product sum_d a[d][ra + i] b[d][rb + j] over n rows of two transposed tiles.
__device__ __forceinline__ void tile_dot(float (&s)[4][4], const float* at, int apad, int ra, const float* bt,
                                         int bpad, int rb, int n) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) s[i][j] = 0.f;
  for (int d = 0; d < n; ++d) {
    float av[4], bv[4];
    ld4(at + d * apad + ra, av);
    ld4(bt + d * bpad + rb, bv);
    outer_fma(s, av, bv);
  }
}

template <int D>
__global__ void __launch_bounds__(kTThreads)
flash_bwd_q_tiled_kernel(float* __restrict__ dq, AttnOperand q, AttnOperand k, AttnOperand v,
                         const float* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ Dr,
                         index_t L, index_t S, int E, int Ev, float scale, bool causal, AttnMaskView mask,
                         bool vec) {
  constexpr int G = D / 32;  // 4-column groups of dQ per thread: columns g * 32 + 4 tx + c
  extern __shared__ __align__(16) float tsm[];
  float* Qt = tsm;                      // [D][kTQPad], scaled
  float* dOt = Qt + D * kTQPad;         // [D][kTQPad]
  float* Kt = dOt + D * kTQPad;         // [D][kTKPad]
  float* Vt = Kt + D * kTKPad;          // [D][kTKPad]
  float* Ks = Vt + D * kTKPad;          // [kTBc][D]
  float* dSt = Ks + kTBc * D;           // [kTBc][kTQPad]
  const int tid = threadIdx.x, tx = tid % 8, ty = tid / 8;
  const index_t own = blockIdx.y, nred = reduced_count(q), r0 = index_t(blockIdx.x) * kTBr;
  const bool masked = mask.kind != AttnMaskView::none;
  float acc[4][4 * G] = {};
  index_t kv_end = S;
  if (causal) {
    const index_t last = r0 + kTBr < L ? r0 + kTBr : L;
    if (last < kv_end) kv_end = last;
  }
  for (index_t red = 0; red < nred; ++red) {
    const index_t bh = expand_bh(q, own, red);
    const float* kp = operand_base<float>(k, bh);
    const float* vp = operand_base<float>(v, bh);
    const index_t mbase = masked ? mask_base(mask, bh) : 0;
    __syncthreads();  // the previous batch-head's tiles are no longer read
    tile_in<D, kTBr>(Qt, kTQPad, nullptr, operand_base<float>(q, bh), q.rs, q.cs, r0, L, E, scale, vec, tid);
    tile_in<D, kTBr>(dOt, kTQPad, nullptr, dout + bh * L * Ev, Ev, 1, r0, L, Ev, 1.f, vec, tid);
    float li[4], di[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const index_t row = r0 + 4 * ty + i;
      li[i] = row < L ? lse[bh * L + row] : -INFINITY;
      di[i] = row < L ? Dr[bh * L + row] : 0.f;
    }
    for (index_t k0 = 0; k0 < kv_end; k0 += kTBc) {
      __syncthreads();  // Q^T, dO^T written; the previous K, V and dS tiles no longer read
      tile_in<D, kTBc>(Kt, kTKPad, Ks, kp, k.rs, k.cs, k0, S, E, 1.f, vec, tid);
      tile_in<D, kTBc>(Vt, kTKPad, nullptr, vp, v.rs, v.cs, k0, S, Ev, 1.f, vec, tid);
      __syncthreads();
      float sc[4][4], dp[4][4];
      tile_dot(sc, Qt, kTQPad, 4 * ty, Kt, kTKPad, 4 * tx, E);
      tile_dot(dp, dOt, kTQPad, 4 * ty, Vt, kTKPad, 4 * tx, Ev);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const index_t row = r0 + 4 * ty + i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const index_t key = k0 + 4 * tx + j;
          const bool vis = row < L && key < S && li[i] != -INFINITY && !(causal && key > row);
          float x = sc[i][j];
          if (masked && vis) x += mask_term<float>(mask, mbase, row, key);
          const float p = vis ? dev::exp_(x - li[i]) : 0.f;
          sc[i][j] = p * (dp[i][j] - di[i]);  // dS
        }
      }
      store_tile_t(dSt + 4 * tx * kTQPad + 4 * ty, kTQPad, sc);
      __syncthreads();
#pragma unroll 4
      for (int j = 0; j < kTBc; ++j) {
        float dr[4], kc[4 * G];
        ld4(dSt + j * kTQPad + 4 * ty, dr);
#pragma unroll
        for (int g = 0; g < G; ++g) ld4(Ks + j * D + g * 32 + 4 * tx, kc + 4 * g);
        outer_fma(acc, dr, kc);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const index_t row = r0 + 4 * ty + i;
    if (row >= L) continue;
    float* o = dq + (own * L + row) * E;
#pragma unroll
    for (int c = 0; c < 4 * G; ++c) {
      const int col = (c / 4) * 32 + 4 * tx + c % 4;
      if (col < E) o[col] = acc[i][c] * scale;
    }
  }
}

template <int D>
__global__ void __launch_bounds__(kTThreads)
flash_bwd_kv_tiled_kernel(float* __restrict__ dk, float* __restrict__ dv, AttnOperand q, AttnOperand k,
                          AttnOperand v, const float* __restrict__ dout, const float* __restrict__ lse,
                          const float* __restrict__ Dr, index_t L, index_t S, int E, int Ev, float scale,
                          bool causal, AttnMaskView mask, bool vec) {
  constexpr int G = D / 64;  // 4-column groups of dK / dV per thread: columns g * 64 + 4 tr + c
  extern __shared__ __align__(16) float tsm[];
  float* Kt = tsm;                      // [D][kTKPad]
  float* Vt = Kt + D * kTKPad;          // [D][kTKPad]
  float* Qt = Vt + D * kTKPad;          // [D][kTQPad], scaled
  float* dOt = Qt + D * kTQPad;         // [D][kTQPad]
  float* Qs = dOt + D * kTQPad;         // [kTBr][D], scaled
  float* dOs = Qs + kTBr * D;           // [kTBr][D]
  float* Ps = dOs + kTBr * D;           // [kTBr][kTKPad]
  float* dSs = Ps + kTBr * kTKPad;      // [kTBr][kTKPad]
  float* Ls = dSs + kTBr * kTKPad;      // [kTBr]
  float* Ds = Ls + kTBr;                // [kTBr]
  const int tid = threadIdx.x, tk = tid % 8, tr = tid / 8;
  const index_t own = blockIdx.y, nred = reduced_count(k), k0 = index_t(blockIdx.x) * kTBc;
  const bool masked = mask.kind != AttnMaskView::none;
  {
    const index_t bh0 = expand_bh(k, own, 0);  // k and v are the same for every bh summed over
    tile_in<D, kTBc>(Kt, kTKPad, nullptr, operand_base<float>(k, bh0), k.rs, k.cs, k0, S, E, 1.f, vec, tid);
    tile_in<D, kTBc>(Vt, kTKPad, nullptr, operand_base<float>(v, bh0), v.rs, v.cs, k0, S, Ev, 1.f, vec, tid);
  }
  float dka[4][4 * G] = {}, dva[4][4 * G] = {};
  const index_t i_begin = causal ? (k0 / kTBr) * kTBr : 0;
  for (index_t red = 0; red < nred; ++red) {
    const index_t bh = expand_bh(k, own, red);
    const float* qp = operand_base<float>(q, bh);
    const float* dop = dout + bh * L * Ev;
    const index_t mbase = masked ? mask_base(mask, bh) : 0;
    for (index_t i0 = i_begin; i0 < L; i0 += kTBr) {
      __syncthreads();  // K^T, V^T written; the previous query tile no longer read
      tile_in<D, kTBr>(Qt, kTQPad, Qs, qp, q.rs, q.cs, i0, L, E, scale, vec, tid);
      tile_in<D, kTBr>(dOt, kTQPad, dOs, dop, Ev, 1, i0, L, Ev, 1.f, vec, tid);
      for (int r = tid; r < kTBr; r += kTThreads) {
        const bool in = i0 + r < L;
        Ls[r] = in ? lse[bh * L + i0 + r] : -INFINITY;
        Ds[r] = in ? Dr[bh * L + i0 + r] : 0.f;
      }
      __syncthreads();
      float sc[4][4], dp[4][4];
      tile_dot(sc, Kt, kTKPad, 4 * tk, Qt, kTQPad, 4 * tr, E);   // [key i][row j]
      tile_dot(dp, Vt, kTKPad, 4 * tk, dOt, kTQPad, 4 * tr, Ev);
      float p[4][4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const index_t key = k0 + 4 * tk + i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int rr = 4 * tr + j;
          const index_t row = i0 + rr;
          const float li = Ls[rr];
          const bool vis = key < S && row < L && li != -INFINITY && !(causal && key > row);
          float x = sc[i][j];
          if (masked && vis) x += mask_term<float>(mask, mbase, row, key);
          p[i][j] = vis ? dev::exp_(x - li) : 0.f;
          sc[i][j] = p[i][j] * (dp[i][j] - Ds[rr]);  // dS
        }
      }
      store_tile_t(Ps + 4 * tr * kTKPad + 4 * tk, kTKPad, p);
      store_tile_t(dSs + 4 * tr * kTKPad + 4 * tk, kTKPad, sc);
      __syncthreads();
#pragma unroll 4
      for (int r = 0; r < kTBr; ++r) {
        float pa[4], sa[4], oa[4 * G], qa[4 * G];
        ld4(Ps + r * kTKPad + 4 * tk, pa);
        ld4(dSs + r * kTKPad + 4 * tk, sa);
#pragma unroll
        for (int g = 0; g < G; ++g) {
          ld4(dOs + r * D + g * 64 + 4 * tr, oa + 4 * g);
          ld4(Qs + r * D + g * 64 + 4 * tr, qa + 4 * g);
        }
        outer_fma(dva, pa, oa);
        outer_fma(dka, sa, qa);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const index_t key = k0 + 4 * tk + i;
    if (key >= S) continue;
#pragma unroll
    for (int c = 0; c < 4 * G; ++c) {
      const int col = (c / 4) * 64 + 4 * tr + c % 4;
      if (col < E) dk[(own * S + key) * E + col] = dka[i][c];
      if (col < Ev) dv[(own * S + key) * Ev + col] = dva[i][c];
    }
  }
}

// The tiled kernels' 16-byte tile loads (tile_in); NNKERNELS_CUDA_ATTN_VEC=0 turns them off
// (read at every call, as the other kernel switches).
bool attn_vec_loads() { return !env_is("NNKERNELS_CUDA_ATTN_VEC", "0"); }

template <int D>
void launch_bwd_tiled(void* dq, void* dk, void* dv, const float* G, const AttnOperand& q, const AttnOperand& k,
                      const AttnOperand& v, const float* LS, const float* Dd, index_t L, index_t S, index_t E,
                      index_t Ev, double scale, bool causal, const AttnMaskView& mask) {
  constexpr int q_smem = bwd_q_smem<D>(), kv_smem = bwd_kv_smem<D>();
  if (L > 0) {
    ensure_dyn_smem(flash_bwd_q_tiled_kernel<D>, q_smem);
    flash_bwd_q_tiled_kernel<D><<<dim3(unsigned(ceil_div(L, index_t(kTBr))), unsigned(q.own_count())), kTThreads,
                                  q_smem>>>(static_cast<float*>(dq), q, k, v, G, LS, Dd, L, S, int(E), int(Ev),
                                            float(scale), causal, mask, attn_vec_loads());
    CUDA_CHECK(cudaGetLastError());
  }
  if (S > 0) {
    ensure_dyn_smem(flash_bwd_kv_tiled_kernel<D>, kv_smem);
    flash_bwd_kv_tiled_kernel<D><<<dim3(unsigned(ceil_div(S, index_t(kTBc))), unsigned(k.own_count())), kTThreads,
                                   kv_smem>>>(static_cast<float*>(dk), static_cast<float*>(dv), q, k, v, G, LS, Dd,
                                              L, S, int(E), int(Ev), float(scale), causal, mask, attn_vec_loads());
    CUDA_CHECK(cudaGetLastError());
  }
}

// The tiled backward for head dims <= 128 where the device gives a block the shared memory
// (an sm_80 block cannot hold the D = 128 dK / dV kernel's 191 KB); false: use the quad kernels.
bool try_bwd_tiled(void* dq, void* dk, void* dv, const float* G, const AttnOperand& q, const AttnOperand& k,
                   const AttnOperand& v, const float* LS, const float* Dd, index_t L, index_t S, index_t E,
                   index_t Ev, double scale, bool causal, const AttnMaskView& mask) {
  if (E <= 64 && Ev <= 64) {
    launch_bwd_tiled<64>(dq, dk, dv, G, q, k, v, LS, Dd, L, S, E, Ev, scale, causal, mask);
    return true;
  }
  const int optin = device_limits().optin;
  if (bwd_kv_smem<128>() > optin || bwd_q_smem<128>() > optin) return false;
  launch_bwd_tiled<128>(dq, dk, dv, G, q, k, v, LS, Dd, L, S, E, Ev, scale, causal, mask);
  return true;
}

// Whether the tiled kernels take a pass: float32, head dims <= max_dim (128 forward and
// backward; the backward also needs the shared memory: try_bwd_tiled), not switched off
// (NNKERNELS_CUDA_ATTN=quad, read at every call).
bool use_tiled(DType dt, index_t E, index_t Ev, index_t max_dim) {
  if (dt != DType::f32 || E > max_dim || Ev > max_dim) return false;
  return !env_is("NNKERNELS_CUDA_ATTN", "quad");
}

template <int D>
void launch_tiled_d(void* out, void* lse, const AttnOperand& q, const AttnOperand& k, const AttnOperand& v,
                    index_t BH, index_t L, index_t S, index_t E, index_t Ev, double scale, bool causal,
                    const AttnMaskView& mask) {
  constexpr int smem = fwd_tiled_smem<D>();
  ensure_dyn_smem(flash_fwd_tiled_kernel<D>, smem);
  flash_fwd_tiled_kernel<D><<<dim3(unsigned(ceil_div(L, index_t(kTBr))), unsigned(BH)), kTThreads, smem>>>(
      static_cast<float*>(out), static_cast<float*>(lse), q, k, v, L, S, int(E), int(Ev), float(scale), causal,
      mask, attn_vec_loads());
  CUDA_CHECK(cudaGetLastError());
}

void launch_tiled(void* out, void* lse, const AttnOperand& q, const AttnOperand& k, const AttnOperand& v,
                  index_t BH, index_t L, index_t S, index_t E, index_t Ev, double scale, bool causal,
                  const AttnMaskView& mask) {
  check_grid_yz(BH, 1, "scaled_dot_product_attention");
  if (E <= 64 && Ev <= 64) launch_tiled_d<64>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal, mask);
  else launch_tiled_d<128>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal, mask);
}

// ---- backward (FlashAttention-2 style, deterministic: no atomics) ----
// P is recomputed from the forward's lse: p_ij = exp(scale q_i . k_j - lse_i) (0 where masked
// or where row i saw no key), dp_ij = dO_i . v_j, ds_ij = p_ij (dp_ij - D_i) with
// D_i = dO_i . O_i. Three kernels:
//   1. D: one warp per row.
//   2. dK, dV: a block per (k's own batch-head, tile of kAttnRows keys), a quad per key
//      holding k_j, v_j and the dk_j, dv_j accumulators in registers (dims ql + 4 t); Q, dO,
//      lse and D tiles of BR queries in shared memory. dv_j += p dO_i, dk_j += ds q_i
//      (scaled at the end). Causal: query tiles from the block's first key on. The block
//      visits every batch-head k is broadcast or repeated to (GQA: the query heads of its
//      group) in turn, so the sum over them needs no expanded copy.
//   3. dQ: a block per (q's own batch-head, tile of kAttnRows queries), a quad per query
//      holding q_i, dO_i and the dq_i accumulator; K and V tiles in shared memory (as the
//      forward). dq_i += ds k_j (scaled at the end). Causal: key tiles up to the block's last
//      query. Likewise over the batch-heads q is broadcast to.
// Each output element has one owner thread and a fixed order of accumulation.

template <typename T>
__global__ void attn_rowdot_kernel(T* __restrict__ D, const T* __restrict__ dout,
                                   const T* __restrict__ out, index_t rows, int Ev) {
  const index_t r = index_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;  // uniform per warp
  T acc = T(0);
  for (int e = lane; e < Ev; e += 32) acc = fma(dout[r * Ev + e], out[r * Ev + e], acc);
  acc = dev::warp_sum(acc);
  if (lane == 0) D[r] = acc;
}

template <typename T, int MAXD, int BR>
__global__ void __launch_bounds__(4 * kAttnRows)
flash_bwd_kv_kernel(T* __restrict__ dk, T* __restrict__ dv, AttnOperand q, AttnOperand k, AttnOperand v,
                    const T* __restrict__ dout, const T* __restrict__ lse, const T* __restrict__ D, index_t L,
                    index_t S, int E, int Ev, T scale, bool causal, AttnMaskView mask) {
  constexpr int NT = 4 * kAttnRows, DQ = MAXD / 4;
  __shared__ T Qs[BR][MAXD];
  __shared__ T dOs[BR][MAXD];
  __shared__ T Ls[BR];
  __shared__ T Dsh[BR];

  const int tid = threadIdx.x, ql = tid % 4, row = tid / 4;
  const index_t own = blockIdx.y, nred = reduced_count(k);
  const index_t kj = index_t(blockIdx.x) * kAttnRows + row;
  const bool valid = kj < S;
  const bool masked = mask.kind != AttnMaskView::none;

  T kr[DQ], vr[DQ], dka[DQ] = {}, dva[DQ] = {};
  {
    const index_t bh0 = expand_bh(k, own, 0);  // k and v are the same for every bh summed over
    quad_load(kr, operand_base<T>(k, bh0) + (valid ? kj : 0) * k.rs, k.cs, valid, ql, E);
    quad_load(vr, operand_base<T>(v, bh0) + (valid ? kj : 0) * v.rs, v.cs, valid, ql, Ev);
  }
  // Causal (key j seen by queries i >= j): start at the tile holding the block's first key.
  const index_t i_begin = causal ? (index_t(blockIdx.x) * kAttnRows / BR) * BR : 0;
  for (index_t red = 0; red < nred; ++red) {
    const index_t bh = expand_bh(k, own, red);
    const T* qp = operand_base<T>(q, bh);
    const T* dop = dout + bh * L * Ev;
    const index_t mbase = masked ? mask_base(mask, bh) : 0;
    for (index_t i0 = i_begin; i0 < L; i0 += BR) {
      __syncthreads();  // the previous tile is no longer read
      load_tile<T, BR, MAXD, NT>(Qs, qp, q.rs, q.cs, i0, L, E, tid);
      load_tile<T, BR, MAXD, NT>(dOs, dop, Ev, 1, i0, L, Ev, tid);
      if (tid < BR) {
        const bool in = i0 + tid < L;
        Ls[tid] = in ? lse[bh * L + i0 + tid] : T(-INFINITY);
        Dsh[tid] = in ? D[bh * L + i0 + tid] : T(0);
      }
      __syncthreads();
#pragma unroll 1
      for (int ii = 0; ii < BR; ++ii) {
        const index_t qi = i0 + ii;
        T s = quad_dot<T, DQ, MAXD>(kr, Qs[ii], ql, E) * scale;
        const T dp = quad_dot<T, DQ, MAXD>(vr, dOs[ii], ql, Ev);
        const T li = Ls[ii];
        const bool vis = valid && qi < L && li != T(-INFINITY) && !(causal && kj > qi);
        if (masked && vis) s += mask_term<T>(mask, mbase, qi, kj);
        const T p = vis ? dev::exp_(s - li) : T(0);
        const T ds = p * (dp - Dsh[ii]);
#pragma unroll
        for (int t = 0; t < DQ; ++t) {
          const int d = ql + 4 * t;
          if (d < Ev) dva[t] = fma(p, dOs[ii][d], dva[t]);
          if (d < E) dka[t] = fma(ds, Qs[ii][d], dka[t]);
        }
      }
    }
  }
  if (!valid) return;
  quad_store(dk + (own * S + kj) * E, dka, ql, E, scale);
  quad_store(dv + (own * S + kj) * Ev, dva, ql, Ev);
}

template <typename T, int MAXD, int BC>
__global__ void __launch_bounds__(4 * kAttnRows)
flash_bwd_q_kernel(T* __restrict__ dq, AttnOperand q, AttnOperand k, AttnOperand v, const T* __restrict__ dout,
                   const T* __restrict__ lse, const T* __restrict__ D, index_t L, index_t S, int E, int Ev,
                   T scale, bool causal, AttnMaskView mask) {
  constexpr int NT = 4 * kAttnRows, DQ = MAXD / 4;
  __shared__ T Ks[BC][MAXD];
  __shared__ T Vs[BC][MAXD];

  const int tid = threadIdx.x, ql = tid % 4, row = tid / 4;
  const index_t own = blockIdx.y, nred = reduced_count(q);
  const index_t qi = index_t(blockIdx.x) * kAttnRows + row;
  const bool valid = qi < L;
  const bool masked = mask.kind != AttnMaskView::none && valid;

  T qr[DQ], gr[DQ], acc[DQ] = {};
  quad_load(qr, operand_base<T>(q, expand_bh(q, own, 0)) + (valid ? qi : 0) * q.rs, q.cs, valid, ql, E);
  const index_t kv_end = key_end(L, S, causal);
  for (index_t red = 0; red < nred; ++red) {
    const index_t bh = expand_bh(q, own, red);
    quad_load(gr, dout + (bh * L + (valid ? qi : 0)) * Ev, 1, valid, ql, Ev);
    const T li = valid ? lse[bh * L + qi] : T(-INFINITY);
    const T Di = valid ? D[bh * L + qi] : T(0);
    const index_t mbase = masked ? mask_base(mask, bh) : 0;
    const T* kp = operand_base<T>(k, bh);
    const T* vp = operand_base<T>(v, bh);
    for (index_t k0 = 0; k0 < kv_end; k0 += BC) {
      __syncthreads();  // the previous tile is no longer read
      load_tile<T, BC, MAXD, NT>(Ks, kp, k.rs, k.cs, k0, S, E, tid);
      load_tile<T, BC, MAXD, NT>(Vs, vp, v.rs, v.cs, k0, S, Ev, tid);
      __syncthreads();
#pragma unroll 1
      for (int j = 0; j < BC; ++j) {
        const index_t key = k0 + j;
        T s = quad_dot<T, DQ, MAXD>(qr, Ks[j], ql, E) * scale;
        const T dp = quad_dot<T, DQ, MAXD>(gr, Vs[j], ql, Ev);
        const bool vis = valid && key < S && li != T(-INFINITY) && !(causal && key > qi);
        if (masked && vis) s += mask_term<T>(mask, mbase, qi, key);
        const T p = vis ? dev::exp_(s - li) : T(0);
        const T ds = p * (dp - Di);
#pragma unroll
        for (int t = 0; t < DQ; ++t)
          if (ql + 4 * t < E) acc[t] = fma(ds, Ks[j][ql + 4 * t], acc[t]);
      }
    }
  }
  if (!valid) return;
  quad_store(dq + (own * L + qi) * E, acc, ql, E, scale);
}

template <typename T, int MAXD>
void launch_bwd(void* dq, void* dk, void* dv, const void* dout, const AttnOperand& q, const AttnOperand& k,
                const AttnOperand& v, const void* out, const void* lse, index_t BH, index_t L,
                index_t S, index_t E, index_t Ev, double scale, bool causal, const AttnMaskView& mask) {
  constexpr int BC = attn_bc(sizeof(T) == 4, MAXD);
  static_assert(MAXD <= kAttnMaxDim, "head dim");
  const T* G = static_cast<const T*>(dout);
  const T* LS = static_cast<const T*>(lse);
  DeviceScratch dbuf(sizeof(T) * size_t(BH * L));
  T* Dd = static_cast<T*>(dbuf.p);
  if (L > 0) {
    const Launch lr = attn_rowdot_launch(BH * L);
    attn_rowdot_kernel<T><<<dim3(unsigned(lr.grid_x)), lr.block>>>(Dd, G, static_cast<const T*>(out), BH * L, int(Ev));
    CUDA_CHECK(cudaGetLastError());
  }
  if constexpr (std::is_same<T, float>::value) {
    if (use_tiled(DType::f32, E, Ev, 128) && try_bwd_tiled(dq, dk, dv, G, q, k, v, LS, Dd, L, S, E, Ev, scale,
                                                          causal, mask))
      return;
  }
  if (L > 0) {
    const Launch lc = attn_launch(dtype_of<T>::value, q.own_count(), L);
    flash_bwd_q_kernel<T, MAXD, BC><<<dim3(unsigned(lc.grid_x), unsigned(lc.grid_y)), lc.block>>>(
        static_cast<T*>(dq), q, k, v, G, LS, Dd, L, S, int(E), int(Ev), T(scale), causal, mask);
    CUDA_CHECK(cudaGetLastError());
  }
  if (S > 0) {
    const Launch lk = attn_launch(dtype_of<T>::value, k.own_count(), S);  // key tiles of kAttnRows
    flash_bwd_kv_kernel<T, MAXD, BC><<<dim3(unsigned(lk.grid_x), unsigned(lk.grid_y)), lk.block>>>(
        static_cast<T*>(dk), static_cast<T*>(dv), q, k, v, G, LS, Dd, L, S, int(E), int(Ev), T(scale),
        causal, mask);
    CUDA_CHECK(cudaGetLastError());
  }
}

// ---- any head dim: the scores in memory, products by the GEMM ----
// For head dims over kAttnMaxDim (whose rows do not fit the kernels' registers), or with
// NNKERNELS_CUDA_ATTN=gemm: per batch-head and chunk of Lc query rows (Lc S <= kScoreChunk
// elements of scratch), S_c = scale Q_c K^T by the GEMM, the mask and causal masking applied
// and each row turned into its softmax (and lse) by a block, O_c = P_c V by the GEMM. The
// backward recomputes S_c and P_c from lse, forms dP_c = dO_c V^T, dS_c = P_c (dP_c - D) by a
// block per row, then dV += P_c^T dO_c, dQ_c += scale dS_c K, dK += scale dS_c^T Q_c, each
// gradient into its operand's own batch-head (the sums over broadcast / GQA heads in
// batch-head order, then chunk order: deterministic). Same results as the flash kernels up
// to rounding; a row with no visible key gives out 0, lse -inf and zero gradients.
constexpr index_t kScoreChunk = index_t(1) << 22;
constexpr int kSoftThreads = 256;

template <typename T, bool MAX>
__device__ __forceinline__ T block_reduce(T v, T* red) {
  v = MAX ? dev::warp_max(v) : dev::warp_sum(v);
  __syncthreads();  // red is reused
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  T r = red[0];
  for (int w = 1; w < kSoftThreads / 32; ++w) r = MAX ? fmax(r, red[w]) : r + red[w];
  return r;
}

// The score of (query i, key j) from the scaled product s: -inf past the causal diagonal
// (key j <= query i kept), else s plus the mask's term.
template <typename T>
__device__ __forceinline__ T masked_score(T s, index_t i, index_t j, bool causal, const AttnMaskView& mask,
                                          index_t mbase) {
  if (causal && j > i) return T(-INFINITY);
  return mask.kind == AttnMaskView::none ? s : s + mask_term<T>(mask, mbase, i, j);
}

// Block r: row r of the chunk (query i0 + r); Sc's row holds scale q_i . k_j and becomes P_i.
template <typename T>
__global__ void __launch_bounds__(kSoftThreads)
attn_softmax_rows_kernel(T* __restrict__ Sc, T* __restrict__ lse, index_t S, index_t i0, bool causal,
                         const AttnMaskView mask, index_t mbase) {
  __shared__ T red[kSoftThreads / 32];
  const index_t i = i0 + blockIdx.x;
  T* row = Sc + index_t(blockIdx.x) * S;
  T m = T(-INFINITY);
  for (index_t j = threadIdx.x; j < S; j += kSoftThreads) {
    const T s = masked_score(row[j], i, j, causal, mask, mbase);
    row[j] = s;
    m = fmax(m, s);
  }
  m = block_reduce<T, true>(m, red);
  const bool none = m == T(-INFINITY);
  T l = T(0);
  for (index_t j = threadIdx.x; j < S; j += kSoftThreads) {
    const T p = none ? T(0) : dev::exp_(row[j] - m);
    row[j] = p;
    l += p;
  }
  l = block_reduce<T, false>(l, red);
  const T inv = none ? T(0) : T(1) / l;
  for (index_t j = threadIdx.x; j < S; j += kSoftThreads) row[j] *= inv;
  if (threadIdx.x == 0) lse[i] = none ? T(-INFINITY) : m + dev::log_(l);
}

// Block r: P_i = exp(S_ij - lse_i) (0 where masked or where the row saw no key) into Sc's row,
// dS_i = P_i (dP_i - D_i) into dP's.
template <typename T>
__global__ void __launch_bounds__(kSoftThreads)
attn_ds_rows_kernel(T* __restrict__ Sc, T* __restrict__ dP, const T* __restrict__ lse, const T* __restrict__ Dd,
                    index_t S, index_t i0, bool causal, const AttnMaskView mask, index_t mbase) {
  const index_t i = i0 + blockIdx.x;
  T* srow = Sc + index_t(blockIdx.x) * S;
  T* drow = dP + index_t(blockIdx.x) * S;
  const T li = lse[i], Di = Dd[i];
  for (index_t j = threadIdx.x; j < S; j += kSoftThreads) {
    const T s = masked_score(srow[j], i, j, causal, mask, mbase);
    const T p = (li == T(-INFINITY) || s == T(-INFINITY)) ? T(0) : dev::exp_(s - li);
    srow[j] = p;
    drow[j] = p * (drow[j] - Di);
  }
}

// Batch-head bh's index among an operand's own batch-heads (its non-reduced dims, row-major).
index_t own_index(const AttnOperand& o, index_t bh) {
  index_t own = 0, mul = 1;
  for (int d = o.nb - 1; d >= 0; --d) {
    const index_t n = o.bshape[d], id = bh % n;
    bh /= n;
    if (!o.reduced[d]) {
      own += id * mul;
      mul *= n;
    }
  }
  return own;
}
template <typename T>
const T* host_base(const AttnOperand& o, index_t bh) {
  return static_cast<const T*>(o.p) + batch_offset(o.nb, o.bshape, o.bstride, bh);
}
// Query rows per chunk; NNKERNELS_CUDA_ATTN_CHUNK overrides the scratch budget (elements; the
// tests make it small to run several chunks).
index_t score_rows(index_t L, index_t S) {
  index_t budget = kScoreChunk;
  if (const char* e = std::getenv("NNKERNELS_CUDA_ATTN_CHUNK")) budget = std::max<index_t>(1, std::atoll(e));
  return std::max<index_t>(1, std::min<index_t>(L, budget / std::max<index_t>(S, 1)));
}

// C (M x N, row stride rs_c) = alpha A B (+ C when acc), A and B given by strides.
template <typename T>
void product(T* c, index_t rs_c, const T* a, index_t rs_a, index_t cs_a, const T* b, index_t rs_b, index_t cs_b,
             index_t M, index_t N, index_t K, double alpha, bool acc) {
  GemmParams g;
  g.dtype = dtype_of<T>::value;
  g.M = M; g.N = N; g.K = K;
  g.a = a; g.rs_a = rs_a; g.cs_a = cs_a;
  g.b = b; g.rs_b = rs_b; g.cs_b = cs_b;
  g.c = c; g.rs_c = rs_c;
  g.alpha = alpha;
  if (acc) { g.c_in = c; g.rs_cin = rs_c; g.cs_cin = 1; g.beta = 1.0; }
  gemm(g);
}

template <typename T>
void gemm_attention_forward(void* out_, void* lse_, const AttnOperand& q, const AttnOperand& k, const AttnOperand& v,
                            index_t BH, index_t L, index_t S, index_t E, index_t Ev, double scale, bool causal,
                            const AttnMaskView& mask) {
  T* out = static_cast<T*>(out_);
  T* lse = static_cast<T*>(lse_);
  const index_t Lc = score_rows(L, S);
  DeviceScratch sbuf(sizeof(T) * size_t(std::max<index_t>(Lc * S, 1)));
  T* Sc = static_cast<T*>(sbuf.p);
  for (index_t bh = 0; bh < BH; ++bh) {
    const T *qb = host_base<T>(q, bh), *kb = host_base<T>(k, bh), *vb = host_base<T>(v, bh);
    const index_t mbase = mask.kind == AttnMaskView::none ? 0 : batch_offset(mask.nb, mask.bshape, mask.bstride, bh);
    for (index_t i0 = 0; i0 < L; i0 += Lc) {
      const index_t n = std::min(Lc, L - i0);
      product<T>(Sc, S, qb + i0 * q.rs, q.rs, q.cs, kb, k.cs, k.rs, n, S, E, scale, false);  // scale Q_c K^T
      attn_softmax_rows_kernel<T><<<unsigned(n), kSoftThreads>>>(Sc, lse + bh * L, S, i0, causal, mask, mbase);
      CUDA_CHECK(cudaGetLastError());
      product<T>(out + (bh * L + i0) * Ev, Ev, Sc, S, 1, vb, v.rs, v.cs, n, Ev, S, 1.0, false);  // P_c V
    }
  }
}

template <typename T>
void gemm_attention_backward(void* dq_, void* dk_, void* dv_, const void* dout_, const AttnOperand& q,
                             const AttnOperand& k, const AttnOperand& v, const void* out_, const void* lse_,
                             index_t BH, index_t L, index_t S, index_t E, index_t Ev, double scale, bool causal,
                             const AttnMaskView& mask) {
  T* dq = static_cast<T*>(dq_);
  T* dk = static_cast<T*>(dk_);
  T* dv = static_cast<T*>(dv_);
  const T* dout = static_cast<const T*>(dout_);
  const T* lse = static_cast<const T*>(lse_);
  if (L == 0 || S == 0) {  // no product: zero gradients
    fill_zero(dq, sizeof(T) * size_t(q.own_count() * L * E));
    fill_zero(dk, sizeof(T) * size_t(k.own_count() * S * E));
    fill_zero(dv, sizeof(T) * size_t(v.own_count() * S * Ev));
    return;
  }
  DeviceScratch dbuf(sizeof(T) * size_t(BH * L));  // D_i = dO_i . O_i
  T* Dd = static_cast<T*>(dbuf.p);
  const Launch lr = attn_rowdot_launch(BH * L);
  attn_rowdot_kernel<T><<<dim3(unsigned(lr.grid_x)), lr.block>>>(Dd, dout, static_cast<const T*>(out_), BH * L,
                                                                 int(Ev));
  CUDA_CHECK(cudaGetLastError());
  const index_t Lc = score_rows(L, S);
  DeviceScratch sbuf(sizeof(T) * size_t(Lc * S)), pbuf(sizeof(T) * size_t(Lc * S));
  T* Sc = static_cast<T*>(sbuf.p);
  T* dP = static_cast<T*>(pbuf.p);
  // Whether an operand's own batch-head already holds a contribution: its first one is stored
  // (no zero fill first), later ones are added.
  std::vector<char> q_set(size_t(q.own_count())), k_set(size_t(k.own_count())), v_set(size_t(v.own_count()));
  for (index_t bh = 0; bh < BH; ++bh) {
    const T *qb = host_base<T>(q, bh), *kb = host_base<T>(k, bh), *vb = host_base<T>(v, bh);
    const index_t oq = own_index(q, bh), ok = own_index(k, bh), ov = own_index(v, bh);
    T* dqb = dq + oq * L * E;
    T* dkb = dk + ok * S * E;
    T* dvb = dv + ov * S * Ev;
    const index_t mbase = mask.kind == AttnMaskView::none ? 0 : batch_offset(mask.nb, mask.bshape, mask.bstride, bh);
    for (index_t i0 = 0; i0 < L; i0 += Lc) {
      const index_t n = std::min(Lc, L - i0);
      const T* qc = qb + i0 * q.rs;
      const T* doc = dout + (bh * L + i0) * Ev;
      product<T>(Sc, S, qc, q.rs, q.cs, kb, k.cs, k.rs, n, S, E, scale, false);  // scale Q_c K^T
      product<T>(dP, S, doc, Ev, 1, vb, v.cs, v.rs, n, S, Ev, 1.0, false);        // dO_c V^T
      attn_ds_rows_kernel<T><<<unsigned(n), kSoftThreads>>>(Sc, dP, lse + bh * L, Dd + bh * L, S, i0, causal, mask,
                                                            mbase);
      CUDA_CHECK(cudaGetLastError());
      const bool kv_acc = i0 > 0;  // later chunks add to the first
      product<T>(dvb, Ev, Sc, 1, S, doc, Ev, 1, S, Ev, n, 1.0, v_set[ov] || kv_acc);         // dV += P_c^T dO_c
      product<T>(dqb + i0 * E, E, dP, S, 1, kb, k.rs, k.cs, n, E, S, scale, q_set[oq]);     // dQ_c += scale dS_c K
      product<T>(dkb, E, dP, 1, S, qc, q.rs, q.cs, S, E, n, scale, k_set[ok] || kv_acc);    // dK += scale dS_c^T Q_c
    }
    q_set[oq] = k_set[ok] = v_set[ov] = 1;
  }
}

bool use_gemm_path(index_t E, index_t Ev) {
  return E > kAttnMaxDim || Ev > kAttnMaxDim || env_is("NNKERNELS_CUDA_ATTN", "gemm");
}

}  // namespace

void flash_attention_forward(DType dt, void* out, void* lse, const AttnOperand& q, const AttnOperand& k,
                             const AttnOperand& v, index_t BH, index_t L, index_t S, index_t E,
                             index_t Ev, double scale, bool causal, const AttnMaskView& mask) {
  if (BH == 0 || L == 0) return;
  if (use_gemm_path(E, Ev)) {
    if (dt == DType::f32) gemm_attention_forward<float>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal, mask);
    else gemm_attention_forward<double>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal, mask);
    return;
  }
  if (use_tiled(dt, E, Ev, 128)) return launch_tiled(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal, mask);
  const index_t dmax = E > Ev ? E : Ev;
  if (dt == DType::f32) {
    if (dmax <= 64) launch<float, 64>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal, mask);
    else if (dmax <= 128) launch<float, 128>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal, mask);
    else launch<float, 256>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal, mask);
  } else {
    if (dmax <= 64) launch<double, 64>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal, mask);
    else if (dmax <= 128) launch<double, 128>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal, mask);
    else launch<double, 256>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal, mask);
  }
}

void flash_attention_backward(DType dt, void* dq, void* dk, void* dv, const void* dout,
                              const AttnOperand& q, const AttnOperand& k, const AttnOperand& v,
                              const void* out, const void* lse, index_t BH, index_t L, index_t S, index_t E,
                              index_t Ev, double scale, bool causal, const AttnMaskView& mask) {
  if (BH > 0 && use_gemm_path(E, Ev)) {
    if (dt == DType::f32)
      gemm_attention_backward<float>(dq, dk, dv, dout, q, k, v, out, lse, BH, L, S, E, Ev, scale, causal, mask);
    else
      gemm_attention_backward<double>(dq, dk, dv, dout, q, k, v, out, lse, BH, L, S, E, Ev, scale, causal, mask);
    return;
  }
  if (BH == 0) {  // an empty batch: an operand broadcast over it still gets (zero) gradients
    const size_t es = dt == DType::f32 ? 4 : 8;
    fill_zero(dq, es * size_t(q.own_count() * L * E));
    fill_zero(dk, es * size_t(k.own_count() * S * E));
    fill_zero(dv, es * size_t(v.own_count() * S * Ev));
    return;
  }
  if (L == 0 && S == 0) return;
  const index_t dmax = E > Ev ? E : Ev;
  auto run = [&](auto t, auto maxd) {
    using T = decltype(t);
    launch_bwd<T, decltype(maxd)::value>(dq, dk, dv, dout, q, k, v, out, lse, BH, L, S, E, Ev, scale, causal, mask);
  };
  using D64 = std::integral_constant<int, 64>;
  using D128 = std::integral_constant<int, 128>;
  using D256 = std::integral_constant<int, 256>;
  if (dt == DType::f32) {
    if (dmax <= 64) run(0.0f, D64{});
    else if (dmax <= 128) run(0.0f, D128{});
    else run(0.0f, D256{});
  } else {
    if (dmax <= 64) run(0.0, D64{});
    else if (dmax <= 128) run(0.0, D128{});
    else run(0.0, D256{});
  }
}

}  // namespace nnk::cuda
