// im2col / col2im and the GEMMs of conv2d and conv_transpose2d on the GPU:
//   conv2d:               cols = im2col(x), then per group y_g = W_g cols_g (conv_gemm_forward)
//   conv2d backward:      dW_g = sum_n dY_{n,g} cols_{n,g}^T in image order (conv_gemm_dweight),
//                         dcols_g = W_g^T dY_g (conv_gemm_dcols), dx = col2im(dcols), db = sums
//   conv_transpose2d:     conv2d's backward-data: cols_g = W_g^T x_g, y = col2im(cols) + bias
//   its backward:         dx = conv2d(dY, W) (im2col + conv_gemm_forward), dW by
//                         conv_gemm_dweight with x in dY's place, db = channel sums of dY
// The column layout is F.unfold's:
//   cols[n, (c * KH + i) * KW + j, oh * OW + ow] = x[n, c, oh * sh - ph + i * dh, ow * sw - pw + j * dw]
// (0 outside the image). im2col: one thread per element of cols; consecutive threads take
// consecutive output positions, so writes coalesce and reads mostly do. col2im: one thread per
// pixel gathering its entries (no atomics). Everything is deterministic.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <string>

#include "cuda/api.h"
#include "cuda/device.cuh"
#include "cuda/cuda_check.h"
#include "cuda/launch.h"

namespace nnk::cuda {

namespace {

template <typename T>
__global__ void im2col_kernel(T* __restrict__ cols, const T* __restrict__ x, index_t total,
                              index_t C, index_t H, index_t W, index_t KH, index_t KW, index_t ph,
                              index_t pw, index_t sh, index_t sw, index_t dh, index_t dw,
                              index_t OH, index_t OW) {
  for (index_t e = blockIdx.x * index_t(blockDim.x) + threadIdx.x; e < total;
       e += index_t(gridDim.x) * blockDim.x) {
    const index_t ow = e % OW;
    index_t r = e / OW;
    const index_t oh = r % OH;
    r /= OH;
    const index_t j = r % KW;
    r /= KW;
    const index_t i = r % KH;
    r /= KH;
    const index_t c = r % C;
    const index_t n = r / C;
    const index_t h = oh * sh - ph + i * dh, w = ow * sw - pw + j * dw;
    cols[e] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : T(0);
  }
}

// col2im as a gather (deterministic, no atomics): one thread per element of dx,
//   dx[n, c, h, w] = sum over (i, j) with h = oh * sh - ph + i * dh, w = ow * sw - pw + j * dw
//                    of cols[n, (c * KH + i) * KW + j, oh * OW + ow]  (+ bias[c] when given,
//                    added after the sum as the CPU's conv_transpose2d does).
template <typename T>
__global__ void col2im_kernel(T* __restrict__ dx, const T* __restrict__ cols, const T* __restrict__ bias,
                              index_t total,
                              index_t C, index_t H, index_t W, index_t KH, index_t KW, index_t ph,
                              index_t pw, index_t sh, index_t sw, index_t dh, index_t dw,
                              index_t OH, index_t OW) {
  for (index_t e = blockIdx.x * index_t(blockDim.x) + threadIdx.x; e < total;
       e += index_t(gridDim.x) * blockDim.x) {
    const index_t w = e % W;
    index_t r = e / W;
    const index_t h = r % H;
    r /= H;
    const index_t c = r % C;
    const index_t n = r / C;
    const T* cn = cols + (n * C + c) * KH * KW * OH * OW;
    T acc = T(0);
    for (index_t i = 0; i < KH; ++i) {
      const index_t th = h + ph - i * dh;  // = oh * sh
      if (th < 0 || th % sh) continue;
      const index_t oh = th / sh;
      if (oh >= OH) continue;
      for (index_t j = 0; j < KW; ++j) {
        const index_t tw = w + pw - j * dw;
        if (tw < 0 || tw % sw) continue;
        const index_t ow = tw / sw;
        if (ow >= OW) continue;
        acc += cn[(i * KW + j) * OH * OW + oh * OW + ow];
      }
    }
    dx[e] = bias ? acc + bias[c] : acc;
  }
}

// db[o] = sum over n and positions of dy[n, o, :]: a block of kSumThreads per channel. Thread
// t adds positions t, t + kSumThreads, ... of each image in order (coalesced reads), then the
// warps' sums (dev::warp_sum) are added in warp order: a fixed order, so every run gives the
// same bits (not the CPU's sequential order). A thread per channel had summed N * P values
// serially: milliseconds for a few channels of large images.
constexpr int kSumThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kSumThreads) channel_sum_kernel(T* __restrict__ db, const T* __restrict__ dy,
                                                                  index_t N, index_t O, index_t P) {
  __shared__ T part[kSumThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (index_t o = blockIdx.x; o < O; o += gridDim.x) {
    T acc = T(0);
    if (P == 1) {  // column sums of an (N, O) matrix (linear_backward's bias): threads over n
      for (index_t n = threadIdx.x; n < N; n += kSumThreads) acc += dy[n * O + o];
    } else {
      for (index_t n = 0; n < N; ++n) {
        const T* row = dy + (n * O + o) * P;
        for (index_t q = threadIdx.x; q < P; q += kSumThreads) acc += row[q];
      }
    }
    acc = dev::warp_sum(acc);
    if (lane == 0) part[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
      T sum = T(0);
      for (int w = 0; w < kSumThreads / 32; ++w) sum += part[w];
      db[o] = sum;
    }
    __syncthreads();  // part is rewritten for the next channel
  }
}

}  // namespace

void col2im(DType dt, void* dx, const void* cols, index_t N, index_t C, index_t H, index_t W,
            index_t KH, index_t KW, index_t ph, index_t pw, index_t sh, index_t sw, index_t dh,
            index_t dw, index_t OH, index_t OW, const void* bias) {
  const index_t total = N * C * H * W;
  if (total == 0) return;
  const Launch l = elementwise_launch(total);
  if (dt == DType::f32)
    col2im_kernel<float><<<unsigned(l.grid_x), l.block>>>(
        static_cast<float*>(dx), static_cast<const float*>(cols), static_cast<const float*>(bias), total,
        C, H, W, KH, KW, ph, pw, sh, sw, dh, dw, OH, OW);
  else
    col2im_kernel<double><<<unsigned(l.grid_x), l.block>>>(
        static_cast<double*>(dx), static_cast<const double*>(cols), static_cast<const double*>(bias), total,
        C, H, W, KH, KW, ph, pw, sh, sw, dh, dw, OH, OW);
  CUDA_CHECK(cudaGetLastError());
}

void channel_sum(DType dt, void* db, const void* dy, index_t N, index_t O, index_t P) {
  if (O == 0) return;
  const unsigned grid = unsigned(std::min<index_t>(O, index_t(1) << 20));  // grid-stride over channels
  if (dt == DType::f32)
    channel_sum_kernel<float><<<grid, kSumThreads>>>(static_cast<float*>(db), static_cast<const float*>(dy), N, O, P);
  else
    channel_sum_kernel<double><<<grid, kSumThreads>>>(static_cast<double*>(db), static_cast<const double*>(dy), N, O, P);
  CUDA_CHECK(cudaGetLastError());
}

void im2col(DType dt, void* cols, const void* x, index_t N, index_t C, index_t H, index_t W,
            index_t KH, index_t KW, index_t ph, index_t pw, index_t sh, index_t sw, index_t dh,
            index_t dw, index_t OH, index_t OW) {
  const index_t total = N * C * KH * KW * OH * OW;
  if (total == 0) return;
  const Launch l = elementwise_launch(total);
  if (dt == DType::f32)
    im2col_kernel<float><<<unsigned(l.grid_x), l.block>>>(
        static_cast<float*>(cols), static_cast<const float*>(x), total, C, H, W, KH, KW, ph, pw,
        sh, sw, dh, dw, OH, OW);
  else
    im2col_kernel<double><<<unsigned(l.grid_x), l.block>>>(
        static_cast<double*>(cols), static_cast<const double*>(x), total, C, H, W, KH, KW, ph, pw,
        sh, sw, dh, dw, OH, OW);
  CUDA_CHECK(cudaGetLastError());
}

// The per-group GEMMs (ConvGemmDims in api.h). Offsets in elements, scaled by the item size.
namespace {
const void* at(const void* p, index_t off, index_t item) { return static_cast<const char*>(p) + off * item; }
void* at(void* p, index_t off, index_t item) { return static_cast<char*>(p) + off * item; }
}  // namespace

void conv_gemm_forward(const ConvGemmDims& d, void* y, const void* w, const void* cols, const void* bias) {
  const index_t Cg = d.C / d.G, Og = d.O / d.G, item = dtype_size(d.dtype);
  for (index_t g = 0; g < d.G; ++g) {  // y_{n,g} (Og x P) = W_g (Og x Cg KK) cols_{n,g} (Cg KK x P), all n
    GemmParams p;
    p.dtype = d.dtype; p.M = Og; p.N = d.P; p.K = Cg * d.KK; p.batch = d.N;
    p.a = at(w, g * Og * Cg * d.KK, item); p.rs_a = Cg * d.KK; p.cs_a = 1;
    p.b = at(cols, g * Cg * d.KK * d.P, item); p.rs_b = d.P; p.cs_b = 1; p.batch_b = d.C * d.KK * d.P;
    p.c = at(y, g * Og * d.P, item); p.rs_c = d.P; p.batch_c = d.O * d.P;
    if (bias) { p.bias = at(bias, g * Og, item); p.bias_per_row = true; }
    gemm(p);
  }
}

namespace {
// The gather tables (gemm_conv): entry q = (c A + a) B + b is {c H W + r W + s, r, s} with
// r = a s1 - o1, s = b s2 - o2; entries n <= q < npad are {0, 32767, 0}, a row below every
// image (gemm_conv reads whole K-steps). Taps: (A, B) = (KH, KW), strides the dilations, no
// offsets: {c H W + i dh W + j dw, i dh, j dw}. Positions: (A, B) = (OH, OW), strides the
// convolution's, offsets its padding, c = 0: the window corners {bh W + bw, bh, bw}.
constexpr index_t kTapsAlign = 8;  // the GEMM's K-step (GemmTile<T>::BK)
constexpr index_t kTapFar = 32767;
__global__ void conv_table_kernel(ConvTap* __restrict__ t, index_t n, index_t npad, index_t A, index_t B, index_t s1,
                                  index_t o1, index_t s2, index_t o2, index_t H, index_t W) {
  for (index_t q = blockIdx.x * index_t(blockDim.x) + threadIdx.x; q < npad; q += index_t(gridDim.x) * blockDim.x) {
    if (q >= n) {
      t[q] = ConvTap{0, short(kTapFar), 0};
      continue;
    }
    const index_t c = q / (A * B), r = q / B % A * s1 - o1, s = q % B * s2 - o2;
    t[q] = ConvTap{int(c * H * W + r * W + s), short(r), short(s)};
  }
}

// A gather table of n entries padded to npad, over images of H x W, on the device
// (conv_table_kernel's arguments).
DeviceScratch make_table(index_t n, index_t npad, index_t A, index_t B, index_t s1, index_t o1, index_t s2,
                         index_t o2, index_t H, index_t W) {
  DeviceScratch t(size_t(std::max<index_t>(npad, 1)) * sizeof(ConvTap));
  if (npad > 0) {
    const Launch l = elementwise_launch(npad);
    conv_table_kernel<<<unsigned(l.grid_x), l.block>>>(static_cast<ConvTap*>(t.p), n, npad, A, B, s1, o1, s2, o2,
                                                      H, W);
    CUDA_CHECK(cudaGetLastError());
  }
  return t;
}
DeviceScratch make_taps(const ConvFold& f, index_t K, index_t Kpad) {
  return make_table(K, Kpad, f.KH, f.KW, f.dh, 0, f.dw, 0, f.H, f.W);
}
index_t pad_steps(index_t n) { return std::max<index_t>(ceil_div(n, kTapsAlign), 1) * kTapsAlign; }

// wt[g][c][o][m][n] = w[g Og + o][c][i0 + m si][j0 + n sj] (m < ni, n < nj): each group's
// weights at the taps of one input-gradient phase as a (Cg, Og ni nj) matrix (all taps, in
// order, for stride 1).
template <typename T>
__global__ void weight_phase_kernel(T* __restrict__ wt, const T* __restrict__ w, index_t total, index_t Og,
                                    index_t Cg, index_t KH, index_t KW, index_t i0, index_t si, index_t ni, index_t j0,
                                    index_t sj, index_t nj) {
  for (index_t e = blockIdx.x * index_t(blockDim.x) + threadIdx.x; e < total; e += index_t(gridDim.x) * blockDim.x) {
    const index_t n = e % nj, m = e / nj % ni, o = e / (nj * ni) % Og, c = e / (nj * ni * Og) % Cg;
    const index_t g = e / (nj * ni * Og * Cg);
    wt[e] = w[(((g * Og + o) * Cg + c) * KH + i0 + m * si) * KW + j0 + n * sj];
  }
}

// One dimension of an input-gradient phase: input positions h = r + s q (q < count) take the
// taps i = i0 + m si (m < ni), those with (r + p - i d) a multiple of s, from dy's position
// q + a0 - m step (a0 = (r + p - i0 d) / s, step = d si / s).
struct PhaseDim {
  index_t count = 0, i0 = 0, si = 1, ni = 0, a0 = 0, step = 0;
};
PhaseDim phase_dim(index_t r, index_t n, index_t k, index_t p, index_t s, index_t d) {
  PhaseDim ph;
  ph.count = r < n ? ceil_div(n - r, s) : 0;
  ph.si = s / std::gcd(s, d);
  auto mod = [s](index_t x) { return ((x % s) + s) % s; };
  ph.i0 = -1;
  for (index_t i = 0; i < ph.si && i < k; ++i)
    if (mod(r + p - i * d) == 0) {
      ph.i0 = i;
      break;
    }
  if (ph.i0 < 0) {
    ph.i0 = 0;
    return ph;  // no tap reaches this phase
  }
  ph.ni = ceil_div(k - ph.i0, ph.si);
  ph.a0 = (r + p - ph.i0 * d) / s;
  ph.step = d * ph.si / s;
  return ph;
}
}  // namespace

bool conv_implicit_ok(const ConvGemmDims& d, const ConvFold& f) {
  if (env_is("NNKERNELS_CUDA_CONV", "im2col")) return false;
  // The gather's int terms: the taps' offsets, and the window corners (negative in the
  // padding); rows and columns reached stay below 2^29 (a column past the output has its
  // corner row at -2^29).
  const index_t lim = std::numeric_limits<int>::max(), lim29 = index_t(1) << 29;
  const index_t Cg = d.C / std::max<index_t>(d.G, 1);
  const index_t tap_max = Cg * f.H * f.W + f.KH * f.dh * f.W + f.KW * f.dw;
  const index_t corner_max = (f.OH * f.sh + f.ph) * f.W + f.OW * f.sw + f.pw;
  // The taps' row / column offsets are shorts; the padding taps' row offset (kTapFar) lies
  // below every window's reach: -ph + kTapFar >= H.
  // The weight gradient's positions hold window corners as shorts too.
  return tap_max < lim && corner_max < lim && f.OH * f.sh + f.ph + f.KH * f.dh < lim29 &&
         f.OW * f.sw + f.pw + f.KW * f.dw < lim29 && f.KH * f.dh <= kTapFar && f.KW * f.dw <= kTapFar &&
         f.H + f.ph <= kTapFar && f.OH * f.sh + f.ph <= kTapFar && f.OW * f.sw + f.pw <= kTapFar;
}

void conv_forward_implicit(const ConvGemmDims& d, const ConvFold& f, void* y, const void* w, const void* x,
                           const void* bias) {
  const index_t Cg = d.C / d.G, Og = d.O / d.G, K = Cg * d.KK, item = dtype_size(d.dtype);
  if (d.N == 0 || d.P == 0 || Og == 0) return;
  const DeviceScratch taps = make_taps(f, K, pad_steps(K));
  for (index_t g = 0; g < d.G; ++g) {  // y_{n,g} (Og x P) = W_g (Og x K) im2col(x_{n,g}) (K x P), all n
    GemmParams p;
    p.dtype = d.dtype; p.M = Og; p.N = d.P; p.K = K; p.batch = d.N;
    p.a = at(w, g * Og * K, item); p.rs_a = K; p.cs_a = 1;
    p.c = at(y, g * Og * d.P, item); p.rs_c = d.P; p.batch_c = d.O * d.P;
    if (bias) { p.bias = at(bias, g * Og, item); p.bias_per_row = true; }
    ConvGather cv;
    cv.x = at(x, g * Cg * f.H * f.W, item); cv.batch_x = d.C * f.H * f.W; cv.taps = static_cast<const ConvTap*>(taps.p);
    cv.H = f.H; cv.W = f.W; cv.OW = f.OW; cv.ph = f.ph; cv.pw = f.pw; cv.sh = f.sh; cv.sw = f.sw;
    gemm_conv(p, cv);
  }
}

void conv_weight_grad_implicit(const ConvGemmDims& d, const ConvFold& f, void* dw, const void* dy, const void* x) {
  const index_t Cg = d.C / d.G, Og = d.O / d.G, K = Cg * d.KK, item = dtype_size(d.dtype);
  if (Og == 0 || K == 0) return;
  const DeviceScratch taps = make_taps(f, K, K);  // per column: no padding
  const DeviceScratch pos = make_table(d.P, pad_steps(d.P), f.OH, f.OW, f.sh, f.ph, f.sw, f.pw, f.H, f.W);
  for (index_t g = 0; g < d.G; ++g) {  // dW_g = sum over images n of dY_{n,g} (Og x P) im2col(x_{n,g})^T (P x K)
    GemmParams p;
    p.dtype = d.dtype; p.M = Og; p.N = K; p.K = d.P; p.batch = d.N;
    p.a = at(dy, g * Og * d.P, item); p.rs_a = d.P; p.cs_a = 1; p.batch_a = d.O * d.P;
    p.c = at(dw, g * Og * K, item); p.rs_c = K;
    ConvGather cv;
    cv.x = at(x, g * Cg * f.H * f.W, item); cv.batch_x = d.C * f.H * f.W;
    cv.taps = static_cast<const ConvTap*>(pos.p); cv.cols = static_cast<const ConvTap*>(taps.p);
    cv.H = f.H; cv.W = f.W; cv.OW = f.OW; cv.ph = f.ph; cv.pw = f.pw; cv.sh = f.sh; cv.sw = f.sw;
    gemm_batch_sum(p, &cv);  // the images' products at once, summed in image order
  }
}

bool conv_input_grad_ok(const ConvGemmDims& d, const ConvFold& f) {
  // dy is the gathered image here: its offsets fit ints, its rows and the padding taps' shorts
  const index_t lim = std::numeric_limits<int>::max(), Og = d.O / std::max<index_t>(d.G, 1);
  return conv_implicit_ok(d, f) && Og * f.OH * f.OW < lim &&
         (f.H + f.ph) * f.OW + f.W + f.pw < lim && f.OH <= kTapFar && f.H + f.ph <= kTapFar &&
         f.W + f.pw <= kTapFar;
}

void conv_input_grad_implicit(const ConvGemmDims& d, const ConvFold& f, void* dx, const void* w, const void* dy,
                              const void* bias) {
  const index_t Cg = d.C / d.G, Og = d.O / d.G, item = dtype_size(d.dtype);
  if (d.N == 0 || Cg == 0 || f.H * f.W == 0) return;
  // dx[c, h, w] = sum over (o, i, j) of W[o, c, i, j] dy[o, (h + ph - i dh) / sh, (w + pw - j dw) / sw]
  // where both divide exactly. Per phase (rh, rw) of the input positions (h = rh + sh qh, ...),
  // the taps that reach it (phase_dim) make a stride-1 correlation over the phase's grid: the
  // phase's transposed weights (Cg x Og ni nj) times dy gathered through taps {o OH OW + r OW
  // + s, r, s}, r = a0 - m step, from each column's corner (qh, qw); the GEMM's column map
  // stores column (qh, qw) at dx's (rh + sh qh, rw + sw qw). Stride 1: one phase, all taps.
  const bool strided = f.sh != 1 || f.sw != 1;
  for (index_t rh = 0; rh < f.sh; ++rh)
    for (index_t rw = 0; rw < f.sw; ++rw) {
      const PhaseDim ph = phase_dim(rh, f.H, f.KH, f.ph, f.sh, f.dh), pw = phase_dim(rw, f.W, f.KW, f.pw, f.sw, f.dw);
      if (ph.count == 0 || pw.count == 0) continue;
      const index_t Kx = Og * ph.ni * pw.ni;
      const DeviceScratch taps = make_table(Kx, pad_steps(Kx), ph.ni, pw.ni, -ph.step, -ph.a0, -pw.step, -pw.a0,
                                            f.OH, f.OW);
      DeviceScratch wt(size_t(std::max<index_t>(d.G * Cg * Kx, 1)) * size_t(item));
      if (Kx > 0) {
        const index_t total = d.G * Cg * Kx;
        const Launch l = elementwise_launch(total);
        auto run = [&](auto zero) {
          using T = decltype(zero);
          weight_phase_kernel<T><<<unsigned(l.grid_x), l.block>>>(static_cast<T*>(wt.p), static_cast<const T*>(w),
                                                                  total, Og, Cg, f.KH, f.KW, ph.i0, ph.si, ph.ni,
                                                                  pw.i0, pw.si, pw.ni);
        };
        if (d.dtype == DType::f32) run(0.0f);
        else run(0.0);
        CUDA_CHECK(cudaGetLastError());
      }
      for (index_t g = 0; g < d.G; ++g) {  // dx_{n,g} at the phase = W_g^T at its taps (Cg x Kx) gathered dy (Kx x QH QW)
        GemmParams p;
        p.dtype = d.dtype; p.M = Cg; p.N = ph.count * pw.count; p.K = Kx; p.batch = d.N;
        p.a = at(wt.p, g * Cg * Kx, item); p.rs_a = Kx; p.cs_a = 1;
        p.c = at(dx, g * Cg * f.H * f.W + rh * f.W + rw, item); p.rs_c = f.H * f.W; p.batch_c = d.C * f.H * f.W;
        if (strided) { p.c_cols = pw.count; p.c_rs2 = f.sh * f.W; p.c_cs = f.sw; }
        if (bias) { p.bias = at(bias, g * Cg, item); p.bias_per_row = true; }
        ConvGather cv;
        cv.x = at(dy, g * Og * d.P, item); cv.batch_x = d.O * d.P; cv.taps = static_cast<const ConvTap*>(taps.p);
        cv.H = f.OH; cv.W = f.OW; cv.OW = pw.count; cv.ph = 0; cv.pw = 0; cv.sh = 1; cv.sw = 1;
        gemm_conv(p, cv);
      }
    }
}

void conv_gemm_dcols(const ConvGemmDims& d, void* dcols, const void* w, const void* dy) {
  const index_t Cg = d.C / d.G, Og = d.O / d.G, item = dtype_size(d.dtype);
  for (index_t g = 0; g < d.G; ++g) {  // dcols_{n,g} (Cg KK x P) = W_g^T (Cg KK x Og) dY_{n,g} (Og x P), all n
    GemmParams q;
    q.dtype = d.dtype; q.M = Cg * d.KK; q.N = d.P; q.K = Og; q.batch = d.N;
    q.a = at(w, g * Og * Cg * d.KK, item); q.rs_a = 1; q.cs_a = Cg * d.KK;
    q.b = at(dy, g * Og * d.P, item); q.rs_b = d.P; q.cs_b = 1; q.batch_b = d.O * d.P;
    q.c = at(dcols, g * Cg * d.KK * d.P, item); q.rs_c = d.P; q.batch_c = d.C * d.KK * d.P;
    gemm(q);
  }
}

void conv_gemm_dweight(const ConvGemmDims& d, void* dw, const void* dy, const void* cols) {
  const index_t Cg = d.C / d.G, Og = d.O / d.G, item = dtype_size(d.dtype);
  for (index_t g = 0; g < d.G; ++g) {  // dW_g = sum over images n of dY_{n,g} (Og x P) cols_{n,g}^T (P x Cg KK)
    GemmParams p;
    p.dtype = d.dtype; p.M = Og; p.N = Cg * d.KK; p.K = d.P; p.batch = d.N;
    p.a = at(dy, g * Og * d.P, item); p.rs_a = d.P; p.cs_a = 1; p.batch_a = d.O * d.P;
    p.b = at(cols, g * Cg * d.KK * d.P, item); p.rs_b = 1; p.cs_b = d.P; p.batch_b = d.C * d.KK * d.P;
    p.c = at(dw, g * Og * Cg * d.KK, item); p.rs_c = Cg * d.KK;
    gemm_batch_sum(p);  // the images' products at once, summed in image order
  }
}

}  // namespace nnk::cuda
