// Host-side entry points of the CUDA part (implemented in csrc/cuda/*.cu). Plain C++: the
// bindings include this without the CUDA headers. Pointers are device pointers; sizes and
// strides are int64 element counts; every function checks each CUDA call and throws
// std::runtime_error (naming the call, file, line and CUDA's message) on failure. Kernels
// are queued on the legacy default stream (stream 0), asynchronously.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/types.h"

namespace nnk::cuda {

// Activation codes; the same numbering as nnk::Act (cpu/act/act.h).
enum class Act : int { none = 0, relu, leaky_relu, gelu, gelu_tanh, tanh, sigmoid };

// ---- runtime (runtime.cu) ----
int device_count();                 // 0 without a driver or GPU (never throws)
int current_device();
// Stream-ordered allocation from the device's default memory pool (cudaMallocAsync on
// stream 0; the pool keeps freed blocks for reuse). bytes == 0 gives nullptr.
void* device_malloc(size_t bytes);
void device_free(void* p) noexcept;  // errors (e.g. at interpreter exit) are ignored
// Device scratch freed at scope exit (stream-ordered: after the kernels queued before it).
struct DeviceScratch {
  void* p;
  explicit DeviceScratch(size_t bytes) : p(device_malloc(bytes)) {}
  ~DeviceScratch() { device_free(p); }
  DeviceScratch(DeviceScratch&& o) noexcept : p(o.p) { o.p = nullptr; }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
};
void copy_h2d(void* dst, const void* src, size_t bytes);
void copy_d2h(void* dst, const void* src, size_t bytes);
void synchronize();
// Make stream 0 wait for work queued so far on `stream` (a cudaStream_t as an integer, as
// in __cuda_array_interface__: 1 legacy default, 2 per-thread default).
void wait_stream(uintptr_t stream);
// Make `stream` wait for the work queued so far on stream 0 (DLPack export).
void stream_wait_default(uintptr_t stream);
// dst (C-contiguous) = src (any element strides), ndim <= 8.
void strided_copy(DType dt, void* dst, const void* src, int ndim, const index_t* shape,
                  const index_t* strides);
// The same for elements of item_bytes = 1, 4 or 8 bytes (bool, int32, int64 arrays): raw copies.
void strided_copy_items(index_t item_bytes, void* dst, const void* src, int ndim, const index_t* shape,
                        const index_t* strides);
void fill_zero(void* dst, size_t bytes);
// y += x over n contiguous elements, in place (the nn layers' gradient accumulation).
void add_inplace(DType dt, void* y, const void* x, index_t n);
void copy_d2d(void* dst, const void* src, size_t bytes);  // queued on stream 0
// rows rows of width bytes each, from src (rows spitch bytes apart) to dst (dpitch apart);
// queued on stream 0 (cudaMemcpy2DAsync).
void copy_d2d_rows(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows);

// ---- GEMM (gemm.cu) ----
// Float32 GEMMs on TF32 tensor cores (inputs rounded to a 10-bit mantissa) while set; off by
// default (torch's allow_tf32 for matmuls). Process-wide.
void set_allow_tf32(bool on);
bool allow_tf32();
// C[b][m, n] = act(alpha * sum_k A[b][m, k] B[b][k, n] + beta * Cin[m, n] + bias), per batch
// b < batch with A[b] = a + b * batch_a (likewise B, C; Cin is shared). Cin is read only when
// beta != 0. bias: length N (per column) or, with bias_per_row, length M.
struct GemmParams {
  DType dtype = DType::f32;
  index_t M = 0, N = 0, K = 0, batch = 1;
  const void* a = nullptr; index_t rs_a = 0, cs_a = 0, batch_a = 0;
  const void* b = nullptr; index_t rs_b = 0, cs_b = 0, batch_b = 0;
  void* c = nullptr; index_t rs_c = 0, batch_c = 0;  // unit column stride
  const void* c_in = nullptr; index_t rs_cin = 0, cs_cin = 0;
  const void* bias = nullptr; bool bias_per_row = false;
  double alpha = 1.0, beta = 0.0;
  Act act = Act::none;
  // gemm_conv only: when c_cols > 0, column n of C is stored at (n / c_cols) c_rs2 +
  // (n % c_cols) c_cs (a strided convolution's input-gradient phase), not at n.
  index_t c_cols = 0, c_rs2 = 0, c_cs = 0;
};
void gemm(const GemmParams& p);
// C = epilogue(sum over the p.batch entries z of A_z B_z) into one M x N C (p.batch_c unused):
// the products into scratch (one batched launch), then summed in order z = 0, 1, ...
// (deterministic). No entries (or K = 0): the epilogue of zeros. gather: B gathered as in
// gemm_conv (declared below).
struct ConvGather;
void gemm_batch_sum(const GemmParams& p, const ConvGather* gather = nullptr);
// The GEMM with B gathered from a convolution's input instead of read (implicit GEMM; used by
// conv_forward_implicit): B[k, n] of batch entry z is x[z * batch_x + taps[k].off + corner(n)]
// inside the image, else 0, with taps (ConvTap) per k on the device, padded to a multiple of 8 entries with {0, 32767, 0} (outside every image), and corner(n) =
// (n / OW * sh - ph) * W + n % OW * sw - pw. g's b fields are unused.
struct alignas(8) ConvTap {
  int off;         // c H W + i dh W + j dw
  short dh, dw;    // i dh, j dw
};
// With cols (per column n, a tap), the roles swap: k is a position (oh, ow) and n a tap
// (c, i, j), the per-k table holds positions {corner, bh, bw} (the weight gradient's dY
// cols^T); the element is x[z * batch_x + taps[k].off + cols[n].off] when inside the image.
struct ConvGather {
  const void* x = nullptr;
  index_t batch_x = 0;
  const ConvTap* taps = nullptr;
  const ConvTap* cols = nullptr;
  index_t H = 0, W = 0, OW = 0, ph = 0, pw = 0, sh = 0, sw = 0;
};
void gemm_conv(const GemmParams& g, const ConvGather& gather);

// ---- elementwise activations, softmax (act.cu) ----
// y = act(x), n contiguous elements; param: the leaky-ReLU slope.
void act_forward(DType dt, void* y, const void* x, index_t n, Act act, double param);
// dx = grad * act'(v); v is x (relu, leaky_relu, gelu*) or the forward's y (sigmoid, tanh).
void act_backward(DType dt, void* dx, const void* grad, const void* v, index_t n, Act act,
                  double param);
// Softmax over the middle dim of a contiguous (outer, C, inner) array.
void softmax(DType dt, void* y, const void* x, index_t outer, index_t C, index_t inner, bool log);
void softmax_backward(DType dt, void* dx, const void* grad, const void* y, index_t outer,
                      index_t C, index_t inner, bool log);

// ---- losses (loss.cu); inputs contiguous ----
enum class LossKind : int { mse = 0, bce = 1 };  // bce: binary cross-entropy with logits
// out[i] = loss(x[i], t[i]).
void loss_none(DType dt, LossKind k, void* out, const void* x, const void* t, index_t n);
// sum_i loss(x[i], t[i]) in double (deterministic); waits for the result.
double loss_sum(DType dt, LossKind k, const void* x, const void* t, index_t n);
// dx[i] = dloss/dx(x[i], t[i]) * (g ? g[i] : scale).
void loss_backward(DType dt, LossKind k, void* dx, const void* x, const void* t, const void* g,
                   double scale, index_t n);
// Class-index targets t (int32 / int64 by bits, element stride ts): the first n < N with
// t[n] outside [0, C), or -1; waits. With `ignore` given, targets equal to *ignore are
// allowed, and *n_ignored (when given) receives their count. read_class copies one target
// to the host.
index_t first_bad_class(const void* t, int bits, index_t ts, index_t N, index_t C, const long long* ignore = nullptr,
                        index_t* n_ignored = nullptr);
long long read_class(const void* t, int bits, index_t ts, index_t n);
// Cross-entropy of logits x (N, C) contiguous: per-row losses (T), their sum in double
// (waits), and dx = (softmax(x) - onehot(t)) * (g ? g[n * gs] : scale). Rows whose target
// equals `ignore` give loss 0 and a zero gradient row.
void cross_entropy_none(DType dt, void* loss, const void* x, index_t N, index_t C, const void* t, int bits,
                        index_t ts, long long ignore);
double cross_entropy_sum(DType dt, const void* x, index_t N, index_t C, const void* t, int bits, index_t ts,
                         long long ignore);
void cross_entropy_backward(DType dt, void* dx, const void* x, index_t N, index_t C, const void* t, int bits,
                            index_t ts, long long ignore, const void* g, index_t gs, double scale);

// ---- layer norm (norm.cu) ----
// rows x D contiguous; w, b may be null; mean and rstd (length rows) are written.
void layer_norm(DType dt, void* y, void* mean, void* rstd, const void* x, const void* w,
                const void* b, index_t rows, index_t D, double eps);
// dx (rows x D); dw, db (length D, may be null) reduced per column in a fixed order.
void layer_norm_backward(DType dt, void* dx, void* dw, void* db, const void* grad,
                         const void* x, const void* mean, const void* rstd, const void* w,
                         index_t rows, index_t D);

// ---- optimizer steps (optim.cu), in place, n contiguous elements ----
void sgd_step(DType dt, void* param, const void* grad, void* buf, index_t n, double lr,
              double momentum, double dampening, double weight_decay, bool nesterov,
              bool first_step);
void adam_step(DType dt, void* param, const void* grad, void* m, void* v, index_t n, double lr,
               double beta1, double beta2, double eps, double weight_decay, bool decoupled,
               int64_t step);

// ---- convolution (conv.cu) ----
// cols (N, C * KH * KW, OH * OW) from x (N, C, H, W), both contiguous (F.unfold layout).
void im2col(DType dt, void* cols, const void* x, index_t N, index_t C, index_t H, index_t W,
            index_t KH, index_t KW, index_t ph, index_t pw, index_t sh, index_t sw, index_t dh,
            index_t dw, index_t OH, index_t OW);

// dx (N, C, H, W) = the sum of the columns' entries over the patches that read each pixel
// (the adjoint of im2col; a gather, deterministic), plus bias[c] (length C) when not null
// (conv_transpose2d). Same geometry arguments as im2col.
void col2im(DType dt, void* dx, const void* cols, index_t N, index_t C, index_t H, index_t W,
            index_t KH, index_t KW, index_t ph, index_t pw, index_t sh, index_t sw, index_t dh,
            index_t dw, index_t OH, index_t OW, const void* bias = nullptr);
// db[o] = sum of dy[n, o, :] over n and the P positions (dy contiguous (N, O, P)): a block
// per channel, partial sums and a tree in a fixed order (deterministic).
void channel_sum(DType dt, void* db, const void* dy, index_t N, index_t O, index_t P);
// The per-group GEMMs of a convolution x (N, C, H, W) -> y (N, O, OH, OW) with G groups,
// weight (O, C / G, KH, KW), KK = KH * KW, P = OH * OW, cols = im2col(x) (N, C * KK, P); all
// contiguous. conv_transpose2d runs the same GEMMs with its x in y's place.
struct ConvGemmDims {
  DType dtype = DType::f32;
  index_t N = 0, C = 0, O = 0, G = 1, KK = 0, P = 0;
};
// y_{n,g} = W_g cols_{n,g} (+ bias (O) per output channel when not null): one batched GEMM per group.
void conv_gemm_forward(const ConvGemmDims& d, void* y, const void* w, const void* cols, const void* bias);
// Geometry of a convolution's input side (im2col's arguments).
struct ConvFold {
  index_t H = 0, W = 0, KH = 0, KW = 0, ph = 0, pw = 0, sh = 0, sw = 0, dh = 0, dw = 0, OH = 0, OW = 0;
};
// Whether conv_forward_implicit takes this convolution: its per-image offsets fit 32-bit ints,
// and NNKERNELS_CUDA_CONV is not "im2col" (read at every call).
bool conv_implicit_ok(const ConvGemmDims& d, const ConvFold& f);
// y = conv2d(x, w) (+ bias) with x (N, C, H, W) contiguous, as im2col + conv_gemm_forward but
// without the columns: per group one batched implicit GEMM (gemm_conv) reading x through a
// table of the kernel's taps.
void conv_forward_implicit(const ConvGemmDims& d, const ConvFold& f, void* y, const void* w, const void* x,
                           const void* bias);
// dw = conv2d's weight gradient from dy (N, O, OH, OW) and x (N, C, H, W), contiguous, as
// conv_gemm_dweight with cols = im2col(x) but without the columns: per group one
// gemm_batch_sum over the images with B gathered from x (positions along k, taps along n).
// Under conv_implicit_ok. Zero when N or P is 0.
void conv_weight_grad_implicit(const ConvGemmDims& d, const ConvFold& f, void* dw, const void* dy, const void* x);
// Whether conv_input_grad_implicit takes this convolution: its offsets fit (any stride).
bool conv_input_grad_ok(const ConvGemmDims& d, const ConvFold& f);
// dx = conv2d's input gradient (col2im(W^T dy)), or conv_transpose2d's output with bias (per
// channel of dx, may be null), without columns: per phase of the stride (one for stride 1)
// and group one batched implicit GEMM of the phase's transposed weights (a (Cg, Og ni nj)
// copy) with dy gathered through the phase's taps, stored through the GEMM's column map.
void conv_input_grad_implicit(const ConvGemmDims& d, const ConvFold& f, void* dx, const void* w, const void* dy,
                              const void* bias);
// dcols_{n,g} = W_g^T dy_{n,g} (dcols like cols, dy like y): one batched GEMM per group.
void conv_gemm_dcols(const ConvGemmDims& d, void* dcols, const void* w, const void* dy);
// dw_g = sum over n, in image order, of dy_{n,g} cols_{n,g}^T (per group one gemm_batch_sum
// over the images: deterministic); zero when N or P is 0.
void conv_gemm_dweight(const ConvGemmDims& d, void* dw, const void* dy, const void* cols);

// ---- pooling (pool.cu) ----
// 2-D pooling over planes (the N * C planes of an (N, C, H, W) or (C, H, W) array), geometry
// and conventions as the CPU path (cpu/pool/pool.h, torch's): output (oh, ow) pools rows
// oh * sh - ph + i * dh (i < kh) and columns ow * sw - pw + j * dw; Ho, Wo from the caller.
struct PoolDims {
  index_t planes = 0, H = 0, W = 0, Ho = 0, Wo = 0;
  index_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
};
// A strided (planes, rows, cols) view: element (q, r, s) at p + (q / C) * sn + (q % C) * sc +
// r * sr + s * ss elements (a 3-D array: C = planes, sn = 0).
struct PlaneView {
  const void* p = nullptr;
  index_t C = 1, sn = 0, sc = 0, sr = 0, ss = 0;
};
// y (planes, Ho, Wo) = window maxima; idx (same shape, int64, flat within the H * W plane) or
// null. A NaN wins (the last NaN of the window), as the CPU path; a thread per output.
void max_pool2d(DType dt, const PoolDims& g, void* y, int64_t* idx, const PlaneView& x);
// dx (planes, H, W) = dy (planes, Ho, Wo) summed at idx (contiguous, int32 / int64 by
// idx_bits; every value must already be checked to lie in [0, H * W)); per element in
// output order (deterministic, bitwise the CPU's sums): a warp per plane, no atomics.
void max_pool2d_backward(DType dt, const PoolDims& g, void* dx, const void* dy, const void* idx,
                         int idx_bits);
// y (planes, Ho, Wo) = window means; divisors as the CPU path (count_include_pad, ceil_mode).
void avg_pool2d(DType dt, const PoolDims& g, void* y, const PlaneView& x, bool count_include_pad);
// dx (planes, H, W): each element gathers dy / divisor over the windows holding it, in
// output order (deterministic); a thread per input element.
void avg_pool2d_backward(DType dt, const PoolDims& g, void* dx, const PlaneView& dy,
                         bool count_include_pad);

// ---- recurrent layers (rnn.cu) ----
enum class RnnFamily : int { rnn_tanh = 0, rnn_relu, lstm, gru };
// x (T, B, I) contiguous; h0 / c0 (B, H) contiguous (c0: LSTM); w_ih (G H, I) and w_hh
// (G H, H) with any element strides; b_ih / b_hh (G H) or null. G = 1, 4 (i, f, g, o), 3
// (r, z, n). Gate maths and order as torch.
struct RnnParams {
  DType dtype = DType::f32;
  RnnFamily kind = RnnFamily::rnn_tanh;
  index_t T = 0, B = 0, I = 0, H = 0;
  const void* x = nullptr;
  const void* h0 = nullptr;
  const void* c0 = nullptr;
  const void* w_ih = nullptr; index_t rs_wih = 0, cs_wih = 0;
  const void* w_hh = nullptr; index_t rs_whh = 0, cs_whh = 0;
  const void* b_ih = nullptr;
  const void* b_hh = nullptr;
};
// out (T, B, H); h_n (B, H) or null (cells: out is h_n); c_n (B, H) for LSTM; gates (T, B, G H)
// and extra (T, B, H) or null: the cache of the CPU driver (activated gates; c_t for LSTM, the
// n gate's hidden side for GRU).
void rnn_forward(const RnnParams& p, void* out, void* h_n, void* c_n, void* gates, void* extra);
// Backward through time (the CPU driver's contract, csrc/cpu/rnn/rnn.h): outputs dx (T, B, I),
// dh0, dc0 (LSTM) (B, H), dw_ih (G H, I), dw_hh (G H, H) contiguous, db_ih / db_hh (G H) or
// null; inputs dout (T, B, H), dh_n, dc_n (B, H) or null (zero), out, gates, extra as the
// forward wrote them (gates / extra: LSTM and GRU). p: the forward's parameters (biases unused).
struct RnnBackward {
  void* dx = nullptr; void* dh0 = nullptr; void* dc0 = nullptr;
  void* dw_ih = nullptr; void* dw_hh = nullptr; void* db_ih = nullptr; void* db_hh = nullptr;
  const void* dout = nullptr; const void* dh_n = nullptr; const void* dc_n = nullptr;
  const void* out = nullptr; const void* gates = nullptr; const void* extra = nullptr;
};
void rnn_backward(const RnnParams& p, const RnnBackward& g);

// ---- attention (attention.cu) ----
// An attention mask as a strided view: the element of (batch-head bh, query i, key j) is at
// p + base(bh) + i * sl + j * ss (elements), base(bh) decomposing bh over the batch dims
// bshape (row-major) with strides bstride (0 where the mask broadcasts). kind: none; boolean
// (one byte, nonzero = takes part); additive (the dtype of q, added to the scaled score).
struct AttnMaskView {
  enum Kind : int { none = 0, boolean = 1, additive = 2 };
  const void* p = nullptr;
  int kind = none;
  int nb = 0;
  index_t bshape[8] = {};
  index_t bstride[8] = {};
  index_t sl = 0, ss = 0;
};
// An attention operand (q, k or v) read in place: row r, column c of batch-head bh (an index
// over the broadcast batch, GQA's head dim split as (key/value heads, group)) at
// p + base(bh) + r * rs + c * cs (elements), base(bh) decomposing bh over bshape (row-major)
// with strides bstride. reduced[d]: the operand is broadcast or repeated over dim d (stride
// 0); its gradient sums over those dims, so it has the operand's own layout: the other dims,
// row-major, then (rows, cols), contiguous.
struct AttnOperand {
  const void* p = nullptr;
  int nb = 0;
  index_t bshape[8] = {};
  index_t bstride[8] = {};
  bool reduced[8] = {};
  index_t rs = 0, cs = 1;
  index_t own_count() const {  // batch-heads of the operand's own layout
    index_t n = 1;
    for (int d = 0; d < nb; ++d) n *= reduced[d] ? 1 : bshape[d];
    return n;
  }
  index_t reduced_count() const {  // batch-heads summed into each of them
    index_t n = 1;
    for (int d = 0; d < nb; ++d) n *= reduced[d] ? bshape[d] : 1;
    return n;
  }
};
// q (BH, L, E), k (BH, S, E), v (BH, S, Ev) as AttnOperands (any strides, broadcast and GQA
// read in place); out (BH, L, Ev), lse (BH, L) contiguous; E, Ev <= kAttnMaxDim. A row whose
// keys are all masked out gives out 0 and lse -inf.
void flash_attention_forward(DType dt, void* out, void* lse, const AttnOperand& q, const AttnOperand& k,
                             const AttnOperand& v, index_t BH, index_t L, index_t S, index_t E,
                             index_t Ev, double scale, bool causal, const AttnMaskView& mask);
// Gradients from dout (BH, L, Ev) and the forward's out and lse (contiguous): dq, dk, dv in
// their operands' own layouts (contiguous; summed over the dims each operand is broadcast or
// repeated over, in a fixed order); deterministic (each element has one owner thread).
void flash_attention_backward(DType dt, void* dq, void* dk, void* dv, const void* dout,
                              const AttnOperand& q, const AttnOperand& k, const AttnOperand& v,
                              const void* out, const void* lse, index_t BH, index_t L, index_t S, index_t E,
                              index_t Ev, double scale, bool causal, const AttnMaskView& mask);

// ---- embedding, dropout (embed.cu) ----
// Embedding ids as a strided view: int32 / int64 (bits) of any shape (ndim <= 8) with element
// strides; position i is the C-order flat index (as the CPU path's contiguous copy).
struct IndexView {
  const void* p = nullptr;
  int bits = 64;
  int ndim = 0;
  index_t shape[8] = {};
  index_t strides[8] = {};
};
// The first position whose id lies outside [0, V), its id in *bad_id; -1 when every id is in
// range (then *bad_id is untouched). Waits for the result.
index_t embedding_first_bad(const IndexView& ids, index_t V, long long* bad_id);
// out (N, D) contiguous: row i = weight row id_i; weight (V, D) read through its element
// strides rs, cs. Ids must be in range (embedding_first_bad).
void embedding_forward(DType dt, void* out, const void* weight, index_t rs, index_t cs,
                       const IndexView& ids, index_t D);
// dw (V, D) contiguous, written with `=`: row v = the sum of g's rows i (g (N, D) contiguous)
// with id_i = v, added in increasing i (the CPU path's order and bits; no atomics); rows no
// id names are 0. Ids must be in range.
void embedding_backward(DType dt, void* dw, const void* g, const IndexView& ids, index_t V,
                        index_t D);
// y, mask (one byte per element, 0 / 1), x: n contiguous elements. The CPU path's dropout_fwd
// bit for bit: Philox 4x32-10 keyed by seed, counter i / 4, word i % 4; p in [0, 1].
void dropout(DType dt, void* y, void* mask, const void* x, index_t n, double p, uint64_t seed);
// dx = dy * mask * scale (n contiguous elements; mask one byte each), scale = 1 / (1 - p)
// cast to the dtype (0 when p == 1): the backward of dropout, as the nn layer's CPU path.
void dropout_backward(DType dt, void* dx, const void* dy, const void* mask, index_t n, double p);

}  // namespace nnk::cuda
