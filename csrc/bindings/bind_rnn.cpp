// Bindings of the recurrent family: rnn_forward / rnn_backward for RNN, LSTM and GRU
// (cells are sequences of length 1), and the scalar reference step (internal).
// ops.py composes the public functions (unbatched inputs, caches) on top of these.
#include <cstring>
#include <string>

#include "bindings/common.h"
#include "cpu/rnn/rnn.h"

namespace nnk::bind {

namespace {

RnnKind parse_kind(const std::string& family, py::handle nl, const std::string& op) {
  if (family == "lstm") return RnnKind::lstm;
  if (family == "gru") return RnnKind::gru;
  if (family != "rnn") throw ValueError(op + ": unknown recurrent family '" + family + "'");
  const std::string s = py::isinstance<py::str>(nl) ? nl.cast<std::string>() : std::string(py::str(py::repr(nl)));
  if (py::isinstance<py::str>(nl) && s == "tanh") return RnnKind::rnn_tanh;
  if (py::isinstance<py::str>(nl) && s == "relu") return RnnKind::rnn_relu;
  throw ValueError(op + ": unknown nonlinearity '" + s + "' (expected 'tanh' or 'relu')");
}

Tensor zeros(DType dt, const std::vector<index_t>& shape) {
  Tensor t = empty(dt, shape);
  if (t.numel() > 0) std::memset(t.ptr, 0, size_t(t.numel() * dtype_size(dt)));
  return t;
}

// Checked, contiguous inputs of one call with the sizes they imply.
struct Inputs {
  RnnWeights w;
  Tensor x, h0, c0, w_ih, w_hh, b_ih, b_hh;
  bool bias = false;
};

// cell: x (B, I), h / c (B, H); sequence: x (T, B, I), h0 / c0 (B, H). None states: zeros.
// b_ih / b_hh: each may be None (no bias).
Inputs parse(const std::string& op, RnnKind kind, bool cell, py::handle x_, py::handle h0_,
             py::handle c0_, py::handle w_ih_, py::handle w_hh_, py::handle b_ih_, py::handle b_hh_) {
  const char* hn = cell ? "h" : "h0";
  const char* cn = cell ? "c" : "c0";
  Inputs in;
  in.x = as_float(x_, "x");
  in.w_ih = as_float(w_ih_, "w_ih");
  in.w_hh = as_float(w_hh_, "w_hh");
  check_same_dtype(in.x, "x", in.w_ih, "w_ih");
  check_same_dtype(in.x, "x", in.w_hh, "w_hh");
  check_rank(in.x, "x", {cell ? 2 : 3});
  check_rank(in.w_ih, "w_ih", {2});
  check_rank(in.w_hh, "w_hh", {2});
  const DType dt = in.x.dtype;
  const index_t G = rnn_gates(kind);
  const std::string gs = G == 1 ? "H" : std::to_string(G) + "*H";
  const index_t T = cell ? 1 : in.x.shape[0];
  const index_t B = in.x.size(-2), I = in.x.size(-1);
  const index_t H = in.w_hh.shape[1], GH = checked_mul(G, H, "hidden size");
  if (in.w_hh.shape[0] != GH)
    throw ValueError(op + ": w_hh " + shape_str(in.w_hh) + " must have shape (" + gs + ", H) = " +
                     shape_str({GH, H}));
  if (in.w_ih.shape[0] != GH || in.w_ih.shape[1] != I)
    throw ValueError(op + ": w_ih " + shape_str(in.w_ih) + " must have shape (" + gs + ", I) = " +
                     shape_str({GH, I}) + " for x " + shape_str(in.x) + " and w_hh " + shape_str(in.w_hh));
  auto state = [&](py::handle h, const char* name) {
    if (h.is_none()) return zeros(dt, {B, H});
    Tensor s = as_float(h, name);
    check_same_dtype(in.x, "x", s, name);
    if (s.shape != std::vector<index_t>{B, H})
      throw ValueError(op + ": " + name + " " + shape_str(s) + " must have shape (B, H) = " +
                       shape_str({B, H}) + " for x " + shape_str(in.x) + " and w_hh " + shape_str(in.w_hh));
    return contiguous(s);
  };
  in.h0 = state(h0_, hn);
  if (kind == RnnKind::lstm) in.c0 = state(c0_, cn);
  in.bias = !b_ih_.is_none() || !b_hh_.is_none();
  auto bias = [&](py::handle b, const char* name) {
    Tensor t = as_float(b, name);
    check_same_dtype(in.x, "x", t, name);
    if (t.shape != std::vector<index_t>{GH})
      throw ValueError(op + ": " + name + " " + shape_str(t) + " must have shape (" + gs + ",) = " +
                       shape_str({GH}) + " for w_hh " + shape_str(in.w_hh));
    return contiguous(t);
  };
  if (!b_ih_.is_none()) in.b_ih = bias(b_ih_, "b_ih");
  if (!b_hh_.is_none()) in.b_hh = bias(b_hh_, "b_hh");
  in.x = contiguous(in.x);
  RnnWeights& w = in.w;
  w.kind = kind;
  w.dtype = dt;
  w.T = T; w.B = B; w.I = I; w.H = H;
  w.w_ih = in.w_ih.ptr; w.rs_wih = in.w_ih.strides[0]; w.cs_wih = in.w_ih.strides[1];
  w.w_hh = in.w_hh.ptr; w.rs_whh = in.w_hh.strides[0]; w.cs_whh = in.w_hh.strides[1];
  w.b_ih = b_ih_.is_none() ? nullptr : in.b_ih.ptr;
  w.b_hh = b_hh_.is_none() ? nullptr : in.b_hh.ptr;
  return in;
}

py::object or_none(bool have, const Tensor& t) { return have ? py::object(t.arr) : py::object(py::none()); }

// -> (out, h_n, c_n or None, gates or None, extra or None); cell: out (B, H) and h_n is out.
py::tuple py_forward(const std::string& op, const std::string& family, py::handle nl, bool cell,
                     py::handle x_, py::handle h0_, py::handle c0_, py::handle w_ih_,
                     py::handle w_hh_, py::handle b_ih_, py::handle b_hh_, bool cache) {
  const RnnKind kind = parse_kind(family, nl, op);
  Inputs in = parse(op, kind, cell, x_, h0_, c0_, w_ih_, w_hh_, b_ih_, b_hh_);
  const RnnWeights& w = in.w;
  const DType dt = w.dtype;
  const bool lstm = kind == RnnKind::lstm, gated = lstm || kind == RnnKind::gru;
  const bool keep = cache && gated;
  Tensor out = cell ? empty(dt, {w.B, w.H}) : empty(dt, {w.T, w.B, w.H});
  Tensor h_n = cell ? out : empty(dt, {w.B, w.H});
  Tensor c_n, gates, extra;
  if (lstm) c_n = empty(dt, {w.B, w.H});
  if (keep) {
    gates = empty(dt, {w.T, w.B, rnn_gates(kind) * w.H});
    extra = empty(dt, {w.T, w.B, w.H});
  }
  {
    py::gil_scoped_release nogil;
    rnn_forward(w, out.ptr, cell ? nullptr : h_n.ptr, lstm ? c_n.ptr : nullptr, in.x.ptr, in.h0.ptr,
                lstm ? in.c0.ptr : nullptr, keep ? gates.ptr : nullptr, keep ? extra.ptr : nullptr);
  }
  return py::make_tuple(out.arr, h_n.arr, or_none(lstm, c_n), or_none(keep, gates), or_none(keep, extra));
}

void check_shape(const std::string& op, const Tensor& t, const char* name,
                 const std::vector<index_t>& want) {
  if (t.shape != want)
    throw ValueError(op + ": " + name + " " + shape_str(t) + " must have shape " + shape_str(want));
}

// -> (dx, dh0, dc0 or None, dw_ih, dw_hh, db_ih or None, db_hh or None)
py::tuple py_backward(const std::string& op, const std::string& family, py::handle nl,
                      py::handle dout_, py::handle dh_n_, py::handle dc_n_, py::handle x_,
                      py::handle h0_, py::handle c0_, py::handle w_ih_, py::handle w_hh_,
                      py::handle out_, py::handle gates_, py::handle extra_, bool want_bias) {
  const RnnKind kind = parse_kind(family, nl, op);
  Inputs in = parse(op, kind, false, x_, h0_, c0_, w_ih_, w_hh_, py::none(), py::none());
  const RnnWeights& w = in.w;
  const DType dt = w.dtype;
  const index_t T = w.T, B = w.B, H = w.H, GH = rnn_gates(kind) * w.H;
  const bool lstm = kind == RnnKind::lstm, gated = lstm || kind == RnnKind::gru;
  auto get = [&](py::handle h, const char* name, const std::vector<index_t>& shape) {
    Tensor t = as_float(h, name);
    check_same_dtype(in.x, "x", t, name);
    check_shape(op, t, name, shape);
    return contiguous(t);
  };
  Tensor out = get(out_, "output", {T, B, H});
  Tensor dout, dh_n, dc_n, gates, extra;
  if (!dout_.is_none()) dout = get(dout_, "grad_output", {T, B, H});
  if (!dh_n_.is_none()) dh_n = get(dh_n_, "grad_h_n", {B, H});
  if (lstm && !dc_n_.is_none()) dc_n = get(dc_n_, "grad_c_n", {B, H});
  if (gated) {
    if (gates_.is_none() || extra_.is_none())
      throw ValueError(op + ": the forward's cache is required (call the forward with return_cache=True)");
    gates = get(gates_, "cache[0] (gates)", {T, B, GH});
    extra = get(extra_, "cache[1]", {T, B, H});
  }
  Tensor dx = empty(dt, {T, B, w.I}), dh0 = empty(dt, {B, H}), dc0;
  if (lstm) dc0 = empty(dt, {B, H});
  Tensor dw_ih = empty(dt, {GH, w.I}), dw_hh = empty(dt, {GH, H}), db_ih, db_hh;
  if (want_bias) {
    db_ih = empty(dt, {GH});
    db_hh = empty(dt, {GH});
  }
  RnnGrads g;
  g.dx = dx.ptr; g.dh0 = dh0.ptr; g.dc0 = lstm ? dc0.ptr : nullptr;
  g.dw_ih = dw_ih.ptr; g.dw_hh = dw_hh.ptr;
  g.db_ih = want_bias ? db_ih.ptr : nullptr; g.db_hh = want_bias ? db_hh.ptr : nullptr;
  RnnSaved s;
  s.dout = dout_.is_none() ? nullptr : dout.ptr;
  s.dh_n = dh_n_.is_none() ? nullptr : dh_n.ptr;
  s.dc_n = (lstm && !dc_n_.is_none()) ? dc_n.ptr : nullptr;
  s.x = in.x.ptr; s.h0 = in.h0.ptr; s.c0 = lstm ? in.c0.ptr : nullptr;
  s.out = out.ptr;
  s.gates = gated ? gates.ptr : nullptr;
  s.extra = gated ? extra.ptr : nullptr;
  {
    py::gil_scoped_release nogil;
    rnn_backward(w, g, s);
  }
  return py::make_tuple(dx.arr, dh0.arr, or_none(lstm, dc0), dw_ih.arr, dw_hh.arr,
                        or_none(want_bias, db_ih), or_none(want_bias, db_hh));
}

// Internal: the scalar reference step -> (h1, c1 or None).
py::tuple py_step_ref(const std::string& family, py::handle nl, py::handle x_, py::handle h_,
                      py::handle c_, py::handle w_ih_, py::handle w_hh_, py::handle b_ih_,
                      py::handle b_hh_) {
  const std::string op = "rnn_step_ref";
  const RnnKind kind = parse_kind(family, nl, op);
  Inputs in = parse(op, kind, true, x_, h_, c_, w_ih_, w_hh_, b_ih_, b_hh_);
  const bool lstm = kind == RnnKind::lstm;
  Tensor h1 = empty(in.w.dtype, {in.w.B, in.w.H}), c1;
  if (lstm) c1 = empty(in.w.dtype, {in.w.B, in.w.H});
  {
    py::gil_scoped_release nogil;
    ref::rnn_step(in.w, h1.ptr, lstm ? c1.ptr : nullptr, in.x.ptr, in.h0.ptr, lstm ? in.c0.ptr : nullptr);
  }
  return py::make_tuple(h1.arr, or_none(lstm, c1));
}

}  // namespace

void bind_rnn(py::module_& m) {
  m.def("rnn_forward", &py_forward, py::arg("op"), py::arg("family"), py::arg("nonlinearity"),
        py::arg("cell"), py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"), py::arg("cache"));
  m.def("rnn_backward", &py_backward, py::arg("op"), py::arg("family"), py::arg("nonlinearity"),
        py::arg("grad_output"), py::arg("grad_h_n"), py::arg("grad_c_n"), py::arg("x"),
        py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("output"),
        py::arg("gates"), py::arg("extra"), py::arg("bias"));
  m.def("rnn_step_ref", &py_step_ref, py::arg("family"), py::arg("nonlinearity"), py::arg("x"),
        py::arg("h"), py::arg("c"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"),
        py::arg("b_hh"));
}

}  // namespace nnk::bind
