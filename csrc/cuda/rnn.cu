// RNN / LSTM / GRU forward over a sequence on the GPU, composed from the tiled GEMM (gemm.cu)
// and one elementwise gate kernel per step (torch's maths and gate order; the CPU driver's
// layout of the cache, csrc/cpu/rnn/rnn.h):
//   1. P = X W_ih^T + b_ih for all T steps: one GEMM (M = T B, N = G H, K = I).
//   2. per step t, the recurrent product into the step's slice of P, fused in the GEMM's
//      epilogue: P_t += h_{t-1} W_hh^T + b_hh. RNN: the nonlinearity too, and P is the output
//      itself (h_t written once). GRU: the n gate's hidden side goes to a (B, H) scratch
//      instead (it is multiplied by r).
//   3. LSTM / GRU: a gate kernel over B x H: the activations (written back into P, which is
//      the `gates` cache when asked for), the cell update, h_t into the output; the cache's
//      `extra` gets c_t (LSTM) or the n gate's hidden side (GRU).
// Kernels are queued on stream 0 one after another, so step t's GEMM reads h_{t-1} after the
// previous gate kernel wrote it.
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

// Device scratch freed at scope exit (stream-ordered).
struct Scratch {
  void* p;
  explicit Scratch(size_t bytes) : p(device_malloc(bytes)) {}
  ~Scratch() { device_free(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

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
  Scratch pbuf(rnn || gates ? 0 : es * size_t(Tn * B * GH));
  T* P = rnn ? out : (gates ? gates : static_cast<T*>(pbuf.p));
  Scratch sbuf(gru ? es * size_t(B * H) : 0);
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

}  // namespace

void rnn_forward(const RnnParams& p, void* out, void* h_n, void* c_n, void* gates, void* extra) {
  if (p.dtype == DType::f32)
    forward_t<float>(p, static_cast<float*>(out), static_cast<float*>(h_n), static_cast<float*>(c_n),
                     static_cast<float*>(gates), static_cast<float*>(extra));
  else
    forward_t<double>(p, static_cast<double*>(out), static_cast<double*>(h_n), static_cast<double*>(c_n),
                      static_cast<double*>(gates), static_cast<double*>(extra));
}

}  // namespace nnk::cuda
