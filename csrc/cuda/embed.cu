// Embedding (forward gather, deterministic backward) and dropout (the CPU path's Philox
// masks, bit for bit). Maths as the CPU path (cpu/norm/norm.h).
//
// Dimension letters: N positions (ids.numel()), V vocabulary (num_embeddings), D embedding
// size. ids: int32 / int64 of any shape (ndim <= 8), read in place through their element
// strides; position i is the C-order flat index (collapse() merges contiguous dims first).
//
// 1. embedding_first_bad: the smallest position whose id is outside [0, V) (grid-stride,
//    atomicMin), read back by the host, which raises before anything is written.
// 2. embedding_forward: out[i, :] = weight[id_i, :] (weight through its strides rs, cs);
//    one warp per position, lanes over d (coalesced for a row-major weight), grid-stride
//    over positions. A copy: bitwise the CPU's.
// 3. embedding_backward: dW[v, :] = sum_{i: id_i = v} g[i, :] in increasing i, written with
//    `=` (ids never seen give 0). keys = ids, values = positions 0 .. N-1; a stable radix sort
//    (cub::DeviceRadixSort::SortPairs on bits [0, bit_width(V - 1))) groups the positions by
//    id, increasing within each id; start[v] = lower_bound(sorted ids, v) (one thread per v,
//    a binary search); then one thread per (v, d) sums g[pos[s], d] over s in
//    [start[v], start[v + 1]) from 0 in order: the CPU's order of additions, so the same bits,
//    and no atomics (the same bits on every run).
// 4. dropout: one thread per Philox block b (elements 4b .. 4b + 3): counter (b lo, b hi, 0,
//    0), key (seed lo, seed hi), 10 rounds; keep_i = word (i % 4) >= thr, y_i = keep_i ?
//    x_i * scale : 0 with thr = p 2^32 (2^32 for p = 1) and scale = T(1 / (1 - p)) (0 for
//    p = 1) computed on the host by the CPU path's expressions; the product is __fmul_rn /
//    __dmul_rn (never contracted) and a NaN x passes through quieted as on the CPU, so y and
//    the mask are bitwise the CPU's.
#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/philox.h"
#include "cuda/api.h"
#include "cuda/cuda_check.h"
#include "cuda/launch.h"

namespace nnk::cuda {

namespace {

constexpr index_t kMaxGrid = index_t(1) << 20;  // blocks at most; grid-stride loops cover the rest

index_t numel(const IndexView& v) {
  index_t n = 1;
  for (int k = 0; k < v.ndim; ++k) n *= v.shape[k];
  return n;
}

// The same positions with size-1 dims dropped and dims that are contiguous in each other
// merged (a C-contiguous array becomes one dim of stride 1): fewer divisions per element.
IndexView collapse(const IndexView& in) {
  IndexView o = in;
  o.ndim = 0;
  for (int k = 0; k < in.ndim; ++k) {
    if (in.shape[k] == 1) continue;
    if (o.ndim > 0 && o.strides[o.ndim - 1] == in.strides[k] * in.shape[k]) {
      o.shape[o.ndim - 1] *= in.shape[k];
      o.strides[o.ndim - 1] = in.strides[k];
    } else {
      o.shape[o.ndim] = in.shape[k];
      o.strides[o.ndim] = in.strides[k];
      ++o.ndim;
    }
  }
  return o;
}

// Element offset of C-order position i.
__host__ __device__ __forceinline__ index_t id_offset(const IndexView& v, index_t i) {
  if (v.ndim == 1) return i * v.strides[0];  // contiguous or evenly strided ids: no division
  index_t off = 0;
  for (int k = v.ndim - 1; k >= 0; --k) {
    const index_t c = i % v.shape[k];
    i /= v.shape[k];
    off += c * v.strides[k];
  }
  return off;
}

__device__ __forceinline__ long long id_at(const IndexView& v, index_t i) {
  const index_t off = id_offset(v, i);
  return v.bits == 32 ? (long long)(static_cast<const int*>(v.p)[off]) : static_cast<const long long*>(v.p)[off];
}

__global__ void first_bad_id_kernel(IndexView ids, index_t N, index_t V, unsigned long long* __restrict__ first) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < N; i += index_t(gridDim.x) * blockDim.x) {
    const long long v = id_at(ids, i);
    if (v < 0 || v >= V) atomicMin(first, (unsigned long long)i);
  }
}

// One warp per position r: out[r, d] = w[id_r * rs + d * cs].
template <typename T>
__global__ void embed_fwd_kernel(T* __restrict__ out, const T* __restrict__ w, index_t rs, index_t cs,
                                 IndexView ids, index_t N, index_t D) {
  const int lane = threadIdx.x % 32;
  for (index_t r = index_t(blockIdx.x) * kRowWarps + threadIdx.x / 32; r < N; r += index_t(gridDim.x) * kRowWarps) {
    const T* src = w + index_t(id_at(ids, r)) * rs;
    T* dst = out + r * D;
    for (index_t d = lane; d < D; d += 32) dst[d] = src[d * cs];
  }
}

// Sort input: keys[i] = id_i (in [0, V): checked), pos[i] = i.
__global__ void sort_input_kernel(unsigned long long* __restrict__ keys, index_t* __restrict__ pos, IndexView ids,
                                  index_t N) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < N; i += index_t(gridDim.x) * blockDim.x) {
    keys[i] = (unsigned long long)id_at(ids, i);
    pos[i] = i;
  }
}

// start[v] = the first s with keys[s] >= v, for v in [0, V] (start[V] = N).
__global__ void segment_start_kernel(index_t* __restrict__ start, const unsigned long long* __restrict__ keys,
                                     index_t N, index_t V) {
  for (index_t v = blockIdx.x * index_t(blockDim.x) + threadIdx.x; v <= V; v += index_t(gridDim.x) * blockDim.x) {
    index_t lo = 0, hi = N;
    while (lo < hi) {
      const index_t mid = lo + (hi - lo) / 2;
      if (keys[mid] < (unsigned long long)v) lo = mid + 1;
      else hi = mid;
    }
    start[v] = lo;
  }
}

// One thread per (v, d): dw[v, d] = sum of g[pos[s], d] over id v's positions, in order.
template <typename T>
__global__ void embed_bwd_kernel(T* __restrict__ dw, const T* __restrict__ g, const index_t* __restrict__ pos,
                                 const index_t* __restrict__ start, index_t V, index_t D) {
  const index_t n = V * D;
  for (index_t e = blockIdx.x * index_t(blockDim.x) + threadIdx.x; e < n; e += index_t(gridDim.x) * blockDim.x) {
    const index_t v = e / D, d = e - v * D;
    T s = T(0);
    for (index_t k = start[v]; k < start[v + 1]; ++k) s += g[pos[k] * D + d];
    dw[e] = s;
  }
}

// x * scale as the CPU path computes it: an uncontracted product, and a NaN x comes out as
// itself, quieted (x86 and Arm propagate a NaN operand's payload; the GPU's product would be
// its canonical NaN). scale is finite and positive (p < 1), so only a NaN x gives a NaN.
__device__ __forceinline__ float scale_rn(float x, float scale) {
  return x != x ? __int_as_float(__float_as_int(x) | 0x00400000) : __fmul_rn(x, scale);
}
__device__ __forceinline__ double scale_rn(double x, double scale) {
  return x != x ? __longlong_as_double(__double_as_longlong(x) | 0x0008000000000000LL) : __dmul_rn(x, scale);
}

template <typename T>
__global__ void dropout_kernel(T* __restrict__ y, uint8_t* __restrict__ mask, const T* __restrict__ x, index_t n,
                               unsigned long long thr, T scale, uint32_t k0, uint32_t k1) {
  const index_t nb = (n + 3) / 4;
  for (index_t b = blockIdx.x * index_t(blockDim.x) + threadIdx.x; b < nb; b += index_t(gridDim.x) * blockDim.x) {
    uint32_t c[4] = {uint32_t(uint64_t(b)), uint32_t(uint64_t(b) >> 32), 0u, 0u};
    philox4x32_10(c, k0, k1);
    const index_t i0 = b * 4;
    const index_t m = n - i0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j < m) {
        const bool keep = (unsigned long long)c[j] >= thr;
        mask[i0 + j] = keep ? 1 : 0;
        y[i0 + j] = keep ? scale_rn(x[i0 + j], scale) : T(0);
      }
    }
  }
}

template <typename T>
__global__ void dropout_bwd_kernel(T* __restrict__ dx, const T* __restrict__ dy, const uint8_t* __restrict__ mask,
                                   index_t n, T scale) {
  for (index_t i = blockIdx.x * index_t(blockDim.x) + threadIdx.x; i < n; i += index_t(gridDim.x) * blockDim.x)
    dx[i] = (mask[i] ? dy[i] : T(0)) * scale;
}

unsigned grid_for(index_t n, int per_block) {
  return unsigned(std::clamp<index_t>(ceil_div(n, per_block), 1, kMaxGrid));
}

template <typename T>
void embed_fwd(void* out, const void* w, index_t rs, index_t cs, const IndexView& ids, index_t N, index_t D) {
  embed_fwd_kernel<T><<<grid_for(N, kRowWarps), 32 * kRowWarps>>>(static_cast<T*>(out), static_cast<const T*>(w), rs,
                                                                   cs, ids, N, D);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void embed_bwd(void* dw, const void* g, const index_t* pos, const index_t* start, index_t V, index_t D) {
  embed_bwd_kernel<T><<<grid_for(V * D, kEltBlock), kEltBlock>>>(static_cast<T*>(dw), static_cast<const T*>(g), pos,
                                                                  start, V, D);
  CUDA_CHECK(cudaGetLastError());
}

template <typename T>
void dropout_t(void* y, void* mask, const void* x, index_t n, double p, uint64_t seed) {
  const DropoutParams dp = dropout_params(p, seed);  // the CPU path's (core/philox.h)
  const index_t nb = ceil_div(n, 4);
  dropout_kernel<T><<<grid_for(nb, kEltBlock), kEltBlock>>>(static_cast<T*>(y), static_cast<uint8_t*>(mask),
                                                             static_cast<const T*>(x), n, dp.thr, T(dp.scale),
                                                             dp.k0, dp.k1);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

index_t embedding_first_bad(const IndexView& ids_in, index_t V, long long* bad_id) {
  const index_t N = numel(ids_in);
  if (N == 0) return -1;
  const IndexView ids = collapse(ids_in);
  DeviceScratch flag(sizeof(unsigned long long));
  unsigned long long none = ~0ull, r = 0;
  copy_h2d(flag.p, &none, sizeof(none));
  first_bad_id_kernel<<<grid_for(N, kEltBlock), kEltBlock>>>(ids, N, V, static_cast<unsigned long long*>(flag.p));
  CUDA_CHECK(cudaGetLastError());
  copy_d2h(&r, flag.p, sizeof(r));
  if (r == none) return -1;
  const index_t bad = index_t(r), off = id_offset(ids, bad);
  if (ids.bits == 32) {
    int v = 0;
    copy_d2h(&v, static_cast<const int*>(ids.p) + off, sizeof(v));
    *bad_id = v;
  } else {
    long long v = 0;
    copy_d2h(&v, static_cast<const long long*>(ids.p) + off, sizeof(v));
    *bad_id = v;
  }
  return bad;
}

void embedding_forward(DType dt, void* out, const void* weight, index_t rs, index_t cs, const IndexView& ids_in,
                       index_t D) {
  const index_t N = numel(ids_in);
  if (N == 0 || D == 0) return;
  const IndexView ids = collapse(ids_in);
  if (dt == DType::f32) embed_fwd<float>(out, weight, rs, cs, ids, N, D);
  else embed_fwd<double>(out, weight, rs, cs, ids, N, D);
}

void embedding_backward(DType dt, void* dw, const void* g, const IndexView& ids_in, index_t V, index_t D) {
  const index_t N = numel(ids_in);
  if (V == 0 || D == 0) return;
  if (N == 0) {
    fill_zero(dw, size_t(V * D) * dtype_size(dt));
    return;
  }
  const IndexView ids = collapse(ids_in);
  DeviceScratch keys_in(sizeof(unsigned long long) * size_t(N)), keys_out(sizeof(unsigned long long) * size_t(N));
  DeviceScratch pos_in(sizeof(index_t) * size_t(N)), pos_out(sizeof(index_t) * size_t(N));
  DeviceScratch start(sizeof(index_t) * size_t(V + 1));
  auto* kin = static_cast<unsigned long long*>(keys_in.p);
  auto* kout = static_cast<unsigned long long*>(keys_out.p);
  auto* pin = static_cast<index_t*>(pos_in.p);
  auto* pout = static_cast<index_t*>(pos_out.p);
  auto* st = static_cast<index_t*>(start.p);
  sort_input_kernel<<<grid_for(N, kEltBlock), kEltBlock>>>(kin, pin, ids, N);
  CUDA_CHECK(cudaGetLastError());
  // Ids are < V: only the low bit_width(V - 1) bits take part (at least one bit).
  int end_bit = 1;
  while (end_bit < 64 && (uint64_t(V - 1) >> end_bit) != 0) ++end_bit;
  size_t tmp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, tmp_bytes, kin, kout, pin, pout, N, 0, end_bit, cudaStream_t(0)));
  DeviceScratch tmp(std::max<size_t>(tmp_bytes, 1));
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(tmp.p, tmp_bytes, kin, kout, pin, pout, N, 0, end_bit, cudaStream_t(0)));
  segment_start_kernel<<<grid_for(V + 1, kEltBlock), kEltBlock>>>(st, kout, N, V);
  CUDA_CHECK(cudaGetLastError());
  if (dt == DType::f32) embed_bwd<float>(dw, g, pout, st, V, D);
  else embed_bwd<double>(dw, g, pout, st, V, D);
}

void dropout_backward(DType dt, void* dx, const void* dy, const void* mask, index_t n, double p) {
  if (n == 0) return;
  const double scale = p == 1.0 ? 0.0 : 1.0 / (1.0 - p);
  const auto* m = static_cast<const uint8_t*>(mask);
  if (dt == DType::f32)
    dropout_bwd_kernel<float><<<grid_for(n, kEltBlock), kEltBlock>>>(static_cast<float*>(dx),
                                                                    static_cast<const float*>(dy), m, n, float(scale));
  else
    dropout_bwd_kernel<double><<<grid_for(n, kEltBlock), kEltBlock>>>(static_cast<double*>(dx),
                                                                     static_cast<const double*>(dy), m, n, scale);
  CUDA_CHECK(cudaGetLastError());
}

void dropout(DType dt, void* y, void* mask, const void* x, index_t n, double p, uint64_t seed) {
  if (n == 0) return;
  if (dt == DType::f32) dropout_t<float>(y, mask, x, n, p, seed);
  else dropout_t<double>(y, mask, x, n, p, seed);
}

}  // namespace nnk::cuda
