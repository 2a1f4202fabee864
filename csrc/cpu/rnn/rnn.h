// Recurrent networks on the GEMM engine: one-layer RNN (tanh / relu), LSTM and GRU over a
// sequence, and backpropagation through time. Cells are sequences of length 1.
//
// Letters: T steps, B batch, I input size, H hidden size, G gates per step (RNN 1,
// LSTM 4: i f g o, GRU 3: r z n), GH = G * H. Maths as torch.nn.RNN / LSTM / GRU:
//   RNN:  h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)
//   LSTM: [i f g o] = x W_ih^T + b_ih + h W_hh^T + b_hh; i f o sigmoid, g tanh;
//         c' = f c + i g;  h' = o tanh(c')
//   GRU:  [r z] = sigmoid(x W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T + b_h{r,z});
//         n = tanh(x W_in^T + b_in + r (h W_hn^T + b_hn));  h' = (1 - z) n + z h
//
// Forward: P = X W_ih^T + b_ih for all T steps is one GEMM (M = T*B) into the step buffer
// (RNN: the output itself); W_hh^T is packed once per gate block (H x H) for the sequence.
// Step t is one parallel region in which each thread owns NR-wide panels of hidden units,
// the same for every gate: it packs h_{t-1} (all B rows), runs the micro-kernel on its
// columns of each gate, accumulating onto P[t] (beta = 1) with b_hh as the column bias
// (GRU n gate: into a B x H scratch, because b_hn sits inside r * (...)), then applies the
// gate maths (per-ISA vector kernels, rnn_kernels.inl) to those columns. RNN applies act in
// the micro-kernel epilogue, so h' is written once. A cell (T = 1) also runs its input
// projection inside the same region (each thread packs only its own weight columns).
// Every element is computed the same way whatever the split: bitwise reproducible.
//
// Backward: per step only the sequential work: the elementwise pass that turns dh (and
// dc) into the pre-activation gradients D[t] (B x GH), then dh_{t-1} = D[t] W_hh (one
// GEMM, W_hh packed once). At the end, one GEMM each over all T*B rows:
//   dX = D W_ih; dW_ih = D^T X; dW_hh = D^T [h0; out[0..T-2]]; db = column sums of D.
// (GRU: the hidden side differs in the n block, D_h[n] = D[n] * r.)
//
// Layouts: x (T, B, I), out (T, B, H), h0 / h_n / c0 / c_n / dh0 / dc0 (B, H), gates
// (T, B, GH), cell / hn (T, B, H): all C-contiguous. Weights w_ih (GH, I), w_hh (GH, H)
// with any element strides; biases (GH) contiguous or null.
#pragma once
#include "core/types.h"

namespace nnk {

enum class RnnKind : int { rnn_tanh = 0, rnn_relu, lstm, gru };

inline index_t rnn_gates(RnnKind k) { return k == RnnKind::lstm ? 4 : (k == RnnKind::gru ? 3 : 1); }

struct RnnWeights {
  RnnKind kind = RnnKind::rnn_tanh;
  DType dtype = DType::f32;
  index_t T = 0, B = 0, I = 0, H = 0;
  const void* w_ih = nullptr; index_t rs_wih = 0, cs_wih = 0;  // (GH, I)
  const void* w_hh = nullptr; index_t rs_whh = 0, cs_whh = 0;  // (GH, H)
  const void* b_ih = nullptr;  // (GH) or null
  const void* b_hh = nullptr;  // (GH) or null
};

// Forward over the sequence.
//   out (T,B,H); h_n (B,H); c_n (B,H) LSTM only; x (T,B,I); h0 (B,H); c0 (B,H) LSTM only.
//   gates (T,B,GH) or null (LSTM / GRU; unused by RNN): on return the activated gates
//     (LSTM i f g o; GRU r z n), which backward needs. Null: a workspace is used.
//   extra (T,B,H) or null: LSTM the cell state c_t of every step; GRU the hidden part of
//     the n gate, h_{t-1} W_hn^T + b_hn. Backward needs it.
void rnn_forward(const RnnWeights& w, void* out, void* h_n, void* c_n, const void* x,
                 const void* h0, const void* c0, void* gates, void* extra);

// Backward through time. Outputs (all written, `=` not `+=`):
//   dx (T,B,I); dh0 (B,H); dc0 (B,H) LSTM only; dw_ih (GH,I), dw_hh (GH,H) contiguous;
//   db_ih, db_hh (GH) or null (not computed).
// Inputs: dout (T,B,H) or null (zero); dh_n (B,H) or null; dc_n (B,H) or null (LSTM);
//   x, h0, c0 as in the forward; out, gates, extra as the forward wrote them.
struct RnnGrads {
  void* dx = nullptr; void* dh0 = nullptr; void* dc0 = nullptr;
  void* dw_ih = nullptr; void* dw_hh = nullptr; void* db_ih = nullptr; void* db_hh = nullptr;
};
struct RnnSaved {
  const void* dout = nullptr; const void* dh_n = nullptr; const void* dc_n = nullptr;
  const void* x = nullptr; const void* h0 = nullptr; const void* c0 = nullptr;
  const void* out = nullptr; const void* gates = nullptr; const void* extra = nullptr;
};
void rnn_backward(const RnnWeights& w, const RnnGrads& g, const RnnSaved& s);

namespace ref {
// Plain scalar forward of one step for B rows (the oracle for the fast driver):
// h1 (B,H), c1 (B,H) LSTM only, from x (B,I), h (B,H), c (B,H) LSTM only.
void rnn_step(const RnnWeights& w, void* h1, void* c1, const void* x, const void* h, const void* c);
}  // namespace ref

}  // namespace nnk
