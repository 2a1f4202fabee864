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
// A row with no visible key (S == 0) gives out 0 and lse -inf.
#include <cuda_runtime.h>

#include "cuda/api.h"
#include "cuda/cuda_check.h"
#include "cuda/device.cuh"
#include "cuda/launch.h"

namespace nnk::cuda {

namespace {

template <typename T, int MAXD, int BC>
__global__ void __launch_bounds__(4 * kAttnRows)
flash_fwd_kernel(T* __restrict__ out, T* __restrict__ lse, const T* __restrict__ q,
                 const T* __restrict__ k, const T* __restrict__ v, index_t L, index_t S, int E,
                 int Ev, T scale, bool causal) {
  constexpr int NT = 4 * kAttnRows, DQ = MAXD / 4;
  __shared__ T Ks[BC][MAXD];
  __shared__ T Vs[BC][MAXD];

  const int tid = threadIdx.x, ql = tid % 4, row = tid / 4;
  const index_t bh = blockIdx.y;
  const index_t qi = index_t(blockIdx.x) * kAttnRows + row;
  const bool valid = qi < L;
  const T* qp = q + (bh * L + (valid ? qi : 0)) * E;
  const T* kp = k + bh * S * E;
  const T* vp = v + bh * S * Ev;

  T qr[DQ], acc[DQ];
#pragma unroll
  for (int t = 0; t < DQ; ++t) {
    const int d = ql + 4 * t;
    qr[t] = (valid && d < E) ? qp[d] * scale : T(0);
    acc[t] = T(0);
  }
  T m = -INFINITY, l = T(0);

  index_t kv_end = S;
  if (causal) {
    index_t last = (index_t(blockIdx.x) + 1) * kAttnRows;
    if (last > L) last = L;
    if (last < kv_end) kv_end = last;
  }
  for (index_t k0 = 0; k0 < kv_end; k0 += BC) {
    __syncthreads();  // the previous tile is no longer read
    for (int e = tid; e < BC * E; e += NT) {
      const int kk = e / E, d = e % E;
      Ks[kk][d] = k0 + kk < S ? kp[(k0 + kk) * E + d] : T(0);
    }
    for (int e = tid; e < BC * Ev; e += NT) {
      const int kk = e / Ev, d = e % Ev;
      Vs[kk][d] = k0 + kk < S ? vp[(k0 + kk) * Ev + d] : T(0);
    }
    __syncthreads();

    T s[BC];
    T mt = -INFINITY;
#pragma unroll
    for (int j = 0; j < BC; ++j) {
      T part = T(0);
#pragma unroll
      for (int t = 0; t < DQ; ++t)
        if (ql + 4 * t < E) part = fma(qr[t], Ks[j][ql + 4 * t], part);
      part += __shfl_xor_sync(0xffffffffu, part, 1);
      part += __shfl_xor_sync(0xffffffffu, part, 2);
      const index_t key = k0 + j;
      s[j] = (key < S && !(causal && key > qi)) ? part : T(-INFINITY);
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
  T* op = out + (bh * L + qi) * Ev;
  const T inv = l > T(0) ? T(1) / l : T(0);
#pragma unroll
  for (int t = 0; t < DQ; ++t) {
    const int d = ql + 4 * t;
    if (d < Ev) op[d] = acc[t] * inv;
  }
  if (ql == 0) lse[bh * L + qi] = l > T(0) ? m + dev::log_(l) : T(-INFINITY);
}

template <typename T, int MAXD>
void launch(void* out, void* lse, const void* q, const void* k, const void* v, index_t BH,
            index_t L, index_t S, index_t E, index_t Ev, double scale, bool causal) {
  constexpr int BC = sizeof(T) == 4 ? 32 : 16;
  static_assert(MAXD <= kAttnMaxDim, "head dim");
  const Launch lc = attn_launch(dtype_of<T>::value, BH, L);
  flash_fwd_kernel<T, MAXD, BC><<<dim3(unsigned(lc.grid_x), unsigned(lc.grid_y)), lc.block>>>(
      static_cast<T*>(out), static_cast<T*>(lse), static_cast<const T*>(q),
      static_cast<const T*>(k), static_cast<const T*>(v), L, S, int(E), int(Ev), T(scale), causal);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void flash_attention_forward(DType dt, void* out, void* lse, const void* q, const void* k,
                             const void* v, index_t BH, index_t L, index_t S, index_t E,
                             index_t Ev, double scale, bool causal) {
  if (BH == 0 || L == 0) return;
  if (E > kAttnMaxDim || Ev > kAttnMaxDim)
    throw ValueError("scaled_dot_product_attention: CUDA head dims must be <= 128");
  const bool small = E <= 64 && Ev <= 64;
  if (dt == DType::f32) {
    if (small) launch<float, 64>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal);
    else launch<float, 128>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal);
  } else {
    if (small) launch<double, 64>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal);
    else launch<double, 128>(out, lse, q, k, v, BH, L, S, E, Ev, scale, causal);
  }
}

}  // namespace nnk::cuda
