// Plain scalar reference of one recurrent step (the oracle for the fast driver in rnn.cpp).
// Maths as in rnn.h: a_ih = x W_ih^T + b_ih and a_hh = h W_hh^T + b_hh for all GH gates,
//   RNN:  h1 = act(a_ih + a_hh)
//   LSTM: i f g o = sigmoid, sigmoid, tanh, sigmoid of (a_ih + a_hh); c1 = f c + i g; h1 = o tanh(c1)
//   GRU:  r z = sigmoid(a_ih + a_hh); n = tanh(a_ih[n] + r a_hh[n]); h1 = (1 - z) n + z h
#include <cmath>
#include <vector>

#include "cpu/rnn/rnn.h"

namespace nnk {
namespace ref {

namespace {

template <typename T>
T sigm(T v) { return T(1) / (T(1) + std::exp(-v)); }

template <typename T>
void step_t(const RnnWeights& w, T* h1, T* c1, const T* x, const T* h, const T* c) {
  const index_t B = w.B, I = w.I, H = w.H, GH = rnn_gates(w.kind) * H;
  const T* wih = static_cast<const T*>(w.w_ih);
  const T* whh = static_cast<const T*>(w.w_hh);
  const T* bih = static_cast<const T*>(w.b_ih);
  const T* bhh = static_cast<const T*>(w.b_hh);
  std::vector<T> ai(GH), ah(GH);
  for (index_t b = 0; b < B; ++b) {
    for (index_t k = 0; k < GH; ++k) {
      T si = bih ? bih[k] : T(0), sh = bhh ? bhh[k] : T(0);
      for (index_t p = 0; p < I; ++p) si += x[b * I + p] * wih[k * w.rs_wih + p * w.cs_wih];
      for (index_t p = 0; p < H; ++p) sh += h[b * H + p] * whh[k * w.rs_whh + p * w.cs_whh];
      ai[k] = si;
      ah[k] = sh;
    }
    for (index_t j = 0; j < H; ++j) {
      const T hp = h[b * H + j];
      T out;
      switch (w.kind) {
        case RnnKind::rnn_tanh: out = std::tanh(ai[j] + ah[j]); break;
        case RnnKind::rnn_relu: {
          const T v = ai[j] + ah[j];
          out = (v > T(0) || std::isnan(v)) ? v : T(0);
          break;
        }
        case RnnKind::lstm: {
          const T ig = sigm(ai[j] + ah[j]), fg = sigm(ai[H + j] + ah[H + j]);
          const T gg = std::tanh(ai[2 * H + j] + ah[2 * H + j]), og = sigm(ai[3 * H + j] + ah[3 * H + j]);
          const T cn = fg * c[b * H + j] + ig * gg;
          c1[b * H + j] = cn;
          out = og * std::tanh(cn);
          break;
        }
        default: {  // gru
          const T r = sigm(ai[j] + ah[j]), z = sigm(ai[H + j] + ah[H + j]);
          const T n = std::tanh(ai[2 * H + j] + r * ah[2 * H + j]);
          out = (T(1) - z) * n + z * hp;
          break;
        }
      }
      h1[b * H + j] = out;
    }
  }
}

}  // namespace

void rnn_step(const RnnWeights& w, void* h1, void* c1, const void* x, const void* h, const void* c) {
  if (w.dtype == DType::f32)
    step_t<float>(w, static_cast<float*>(h1), static_cast<float*>(c1), static_cast<const float*>(x),
                  static_cast<const float*>(h), static_cast<const float*>(c));
  else
    step_t<double>(w, static_cast<double*>(h1), static_cast<double*>(c1), static_cast<const double*>(x),
                   static_cast<const double*>(h), static_cast<const double*>(c));
}

}  // namespace ref
}  // namespace nnk
