// gemm, matmul, linear, linear_backward (+ the internal pre-packed weight and reference).
#include <algorithm>
#include <cstring>

#include "bindings/common.h"
#include "cpu/gemm/gemm.h"
#include "cpu/gemm/ukr.h"

namespace nnk::bind {

namespace {

Act parse_act(py::handle h) {
  if (h.is_none()) return Act::none;
  if (!py::isinstance<py::str>(h)) throw ValueError("activation: expected a string or None");
  const std::string s = h.cast<std::string>();
  if (s == "relu") return Act::relu;
  if (s == "gelu") return Act::gelu;
  if (s == "gelu_tanh") return Act::gelu_tanh;
  if (s == "tanh") return Act::tanh;
  if (s == "sigmoid") return Act::sigmoid;
  throw ValueError("activation: unknown activation '" + s +
                   "' (expected None, 'relu', 'gelu', 'gelu_tanh', 'tanh' or 'sigmoid')");
}

// Rows of t (all dims but the last) as one strided dimension: M and its row stride.
// Copies t to C-contiguous when its leading dims cannot be collapsed.
void as_matrix(Tensor& t, index_t& M, index_t& rs) {
  const int nd = t.ndim();
  M = 1;
  for (int d = 0; d < nd - 1; ++d) M *= t.shape[d];
  bool ok = true;
  index_t stride = 0;
  bool have = false;
  // Walk the leading dims from the innermost; size-1 dims never matter.
  index_t expect = 0;
  for (int d = nd - 2; d >= 0; --d) {
    if (t.shape[d] == 1) continue;
    if (!have) { stride = t.strides[d]; expect = stride * t.shape[d]; have = true; continue; }
    if (t.strides[d] != expect) { ok = false; break; }
    expect *= t.shape[d];
  }
  if (!ok) {
    t = contiguous(t);
    stride = nd >= 2 ? t.strides[nd - 2] : 0;
  }
  rs = have || !ok ? stride : 0;
}

GemmArgs base_args(DType dt) {
  GemmArgs g;
  g.dtype = dt;
  return g;
}

py::object py_gemm(py::handle a_, py::handle b_, py::handle c_, bool trans_a, bool trans_b,
                   double alpha, double beta, py::handle out_) {
  Tensor a = as_float(a_, "a");
  Tensor b = as_float(b_, "b");
  check_same_dtype(a, "a", b, "b");
  check_rank(a, "a", {2});
  check_rank(b, "b", {2});
  const index_t M = trans_a ? a.shape[1] : a.shape[0];
  const index_t K = trans_a ? a.shape[0] : a.shape[1];
  const index_t Kb = trans_b ? b.shape[1] : b.shape[0];
  const index_t N = trans_b ? b.shape[0] : b.shape[1];
  if (K != Kb)
    throw ValueError("gemm: a " + shape_str(a) + (trans_a ? " (transposed)" : "") + " and b " +
                     shape_str(b) + (trans_b ? " (transposed)" : "") + " cannot be multiplied");
  Tensor c;
  const bool use_c = !c_.is_none() && beta != 0.0;
  if (!c_.is_none()) {
    c = as_float(c_, "c");
    check_same_dtype(a, "a", c, "c");
    check_rank(c, "c", {0, 1, 2});
    const index_t cm = c.ndim() == 2 ? c.shape[0] : 1;
    const index_t cn = c.ndim() >= 1 ? c.shape[c.ndim() - 1] : 1;
    if ((cm != 1 && cm != M) || (cn != 1 && cn != N))
      throw ValueError("gemm: c " + shape_str(c) + " does not broadcast to the product's shape " +
                       shape_str({M, N}));
  }
  Tensor out = output(out_, a.dtype, {M, N}, {&a, &b, c_.is_none() ? nullptr : &c});
  GemmArgs g = base_args(a.dtype);
  g.M = M; g.N = N; g.K = K;
  g.a = a.ptr; g.rs_a = trans_a ? a.strides[1] : a.strides[0]; g.cs_a = trans_a ? a.strides[0] : a.strides[1];
  g.b = b.ptr; g.rs_b = trans_b ? b.strides[1] : b.strides[0]; g.cs_b = trans_b ? b.strides[0] : b.strides[1];
  g.c = out.ptr; g.rs_c = N; g.cs_c = 1;
  g.alpha = alpha;
  g.beta = use_c ? beta : 0.0;
  if (use_c) {
    g.c_in = c.ptr;
    const int cd = c.ndim();
    g.rs_cin = (cd == 2 && c.shape[0] != 1) ? c.strides[0] : 0;
    g.cs_cin = (cd >= 1 && c.shape[cd - 1] != 1) ? c.strides[cd - 1] : 0;
  }
  {
    py::gil_scoped_release nogil;
    gemm(g);
  }
  return out.arr;
}

py::object py_matmul(py::handle a_, py::handle b_, py::handle out_) {
  Tensor a = as_float(a_, "a");
  Tensor b = as_float(b_, "b");
  check_same_dtype(a, "a", b, "b");
  const MatmulGeom mg = matmul_geom(a.shape, a.strides, b.shape, b.strides);
  Tensor out = output(out_, a.dtype, mg.oshape, {&a, &b});
  // C strides of the (..., M, N) view of out.
  const int bd = int(mg.batch.size());
  std::vector<index_t> sc(static_cast<size_t>(bd));
  index_t st = mg.M * mg.N;
  for (int d = bd - 1; d >= 0; --d) { sc[d] = st; st *= mg.batch[d]; }
  GemmArgs g = base_args(a.dtype);
  g.M = mg.M; g.N = mg.N; g.K = mg.K;
  g.a = a.ptr; g.rs_a = mg.rs_a; g.cs_a = mg.cs_a;
  g.b = b.ptr; g.rs_b = mg.rs_b; g.cs_b = mg.cs_b;
  g.c = out.ptr; g.rs_c = mg.N; g.cs_c = 1;
  g.beta = 0.0;
  BatchSpec bs;
  bs.ndim = bd;
  bs.shape = mg.batch.data();
  bs.stride_a = mg.sa.data();
  bs.stride_b = mg.sb.data();
  bs.stride_c = sc.data();
  {
    py::gil_scoped_release nogil;
    gemm_batched(g, bs);
  }
  return out.arr;
}

py::object py_linear(py::handle x_, py::handle w_, py::handle b_, py::handle act_, py::handle out_) {
  Tensor x = as_float(x_, "x");
  Tensor w = as_float(w_, "weight");
  check_same_dtype(x, "x", w, "weight");
  check_rank(w, "weight", {2});
  if (x.ndim() == 0) throw ValueError("linear: x must have at least 1 dimension, got shape ()");
  const index_t K = w.shape[1], N = w.shape[0];
  if (x.size(-1) != K)
    throw ValueError("linear: x " + shape_str(x) + " and weight " + shape_str(w) +
                     ": x.shape[-1] must equal weight.shape[1]");
  Tensor bias;
  if (!b_.is_none()) {
    bias = as_float(b_, "bias");
    check_same_dtype(x, "x", bias, "bias");
    if (bias.ndim() != 1 || bias.shape[0] != N)
      throw ValueError("linear: bias " + shape_str(bias) + " must have shape " + shape_str({N}) +
                       " for weight " + shape_str(w));
    bias = contiguous(bias);
  }
  const Act act = parse_act(act_);
  std::vector<index_t> oshape(x.shape.begin(), x.shape.end() - 1);
  oshape.push_back(N);
  Tensor out = output(out_, x.dtype, oshape, {&x, &w, b_.is_none() ? nullptr : &bias});
  index_t M, rs;
  as_matrix(x, M, rs);
  GemmArgs g = base_args(x.dtype);
  g.M = M; g.N = N; g.K = K;
  g.a = x.ptr; g.rs_a = rs; g.cs_a = x.stride(-1);
  g.b = w.ptr; g.rs_b = w.strides[1]; g.cs_b = w.strides[0];
  g.c = out.ptr; g.rs_c = N; g.cs_c = 1;
  g.beta = 0.0;
  g.bias_n = b_.is_none() ? nullptr : bias.ptr;
  g.act = act;
  {
    py::gil_scoped_release nogil;
    gemm(g);
  }
  return out.arr;
}

py::tuple py_linear_backward(py::handle go_, py::handle x_, py::handle w_, bool want_bias) {
  Tensor go = as_float(go_, "grad_out");
  Tensor x = as_float(x_, "x");
  Tensor w = as_float(w_, "weight");
  check_same_dtype(x, "x", go, "grad_out");
  check_same_dtype(x, "x", w, "weight");
  check_rank(w, "weight", {2});
  const index_t N = w.shape[0], K = w.shape[1];
  if (x.ndim() == 0 || x.size(-1) != K)
    throw ValueError("linear_backward: x " + shape_str(x) + " and weight " + shape_str(w) +
                     ": x.shape[-1] must equal weight.shape[1]");
  std::vector<index_t> gshape(x.shape.begin(), x.shape.end() - 1);
  gshape.push_back(N);
  if (go.shape != gshape)
    throw ValueError("linear_backward: grad_out " + shape_str(go) + " must have shape " +
                     shape_str(gshape) + " for x " + shape_str(x) + " and weight " + shape_str(w));
  Tensor gx = empty(x.dtype, x.shape);
  Tensor gw = empty(x.dtype, w.shape);
  Tensor gb;
  if (want_bias) gb = empty(x.dtype, {N});
  index_t M, rsx, rsg;
  as_matrix(x, M, rsx);
  as_matrix(go, M, rsg);
  const double one = 1.0;
  {
    py::gil_scoped_release nogil;
    // grad_x (M, K) = grad_out (M, N) @ weight (N, K)
    GemmArgs g = base_args(x.dtype);
    g.M = M; g.N = K; g.K = N;
    g.a = go.ptr; g.rs_a = rsg; g.cs_a = go.stride(-1);
    g.b = w.ptr; g.rs_b = w.strides[0]; g.cs_b = w.strides[1];
    g.c = gx.ptr; g.rs_c = K;
    gemm(g);
    // grad_weight (N, K) = grad_out^T (N, M) @ x (M, K)
    GemmArgs h = base_args(x.dtype);
    h.M = N; h.N = K; h.K = M;
    h.a = go.ptr; h.rs_a = go.stride(-1); h.cs_a = rsg;
    h.b = x.ptr; h.rs_b = rsx; h.cs_b = x.stride(-1);
    h.c = gw.ptr; h.rs_c = K;
    gemm(h);
    if (want_bias) {
      // grad_bias (1, N) = ones (1, M) @ grad_out (M, N): the ones are one value read with
      // zero strides, so this is a vectorised, threaded column sum on the GEMM engine.
      const float onef = 1.0f;
      GemmArgs s = base_args(x.dtype);
      s.M = 1; s.N = N; s.K = M;
      s.a = x.dtype == DType::f32 ? static_cast<const void*>(&onef) : static_cast<const void*>(&one);
      s.rs_a = 0; s.cs_a = 0;
      s.b = go.ptr; s.rs_b = rsg; s.cs_b = go.stride(-1);
      s.c = gb.ptr; s.rs_c = N;
      gemm(s);
    }
  }
  return py::make_tuple(gx.arr, gw.arr, want_bias ? py::object(gb.arr) : py::object(py::none()));
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def("gemm", &py_gemm, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("trans_a"),
        py::arg("trans_b"), py::arg("alpha"), py::arg("beta"), py::arg("out"));
  m.def("matmul", &py_matmul, py::arg("a"), py::arg("b"), py::arg("out"));
  m.def("linear", &py_linear, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("activation"), py::arg("out"));
  m.def("linear_backward", &py_linear_backward, py::arg("grad_out"), py::arg("x"),
        py::arg("weight"), py::arg("bias"));

  // Internal: a weight packed once for the current ISA (reused by RNN / conv / tests).
  py::class_<PackedMatrix>(m, "PackedMatrix")
      .def_property_readonly("shape", [](const PackedMatrix& p) { return py::make_tuple(p.rows, p.cols); })
      .def_property_readonly("isa", [](const PackedMatrix& p) { return std::string(isa_name(p.isa)); });
  m.def("pack_b", [](py::handle b_) {
    Tensor b = as_float(b_, "b");
    check_rank(b, "b", {2});
    py::gil_scoped_release nogil;
    return pack_b(b.dtype, b.shape[0], b.shape[1], b.ptr, b.strides[0], b.strides[1]);
  });
  m.def("pack_a", [](py::handle a_) {
    Tensor a = as_float(a_, "a");
    check_rank(a, "a", {2});
    py::gil_scoped_release nogil;
    return pack_a(a.dtype, a.shape[0], a.shape[1], a.ptr, a.strides[0], a.strides[1]);
  });
  // a @ b with either operand pre-packed (the other a plain 2-D array).
  m.def("gemm_packed", [](py::handle a_, py::handle b_) {
    const bool pa = py::isinstance<PackedMatrix>(a_), pb = py::isinstance<PackedMatrix>(b_);
    if (pa == pb) throw ValueError("gemm_packed: exactly one operand must be a PackedMatrix");
    const PackedMatrix& P = pa ? a_.cast<const PackedMatrix&>() : b_.cast<const PackedMatrix&>();
    if (P.is_a != pa) throw ValueError("gemm_packed: operand packed for the other side");
    Tensor o = as_float(pa ? b_ : a_, pa ? "b" : "a");
    check_rank(o, "operand", {2});
    if (o.dtype != P.dtype) throw TypeError("gemm_packed: dtypes differ");
    GemmArgs g = base_args(o.dtype);
    if (pa) {
      if (o.shape[0] != P.cols) throw ValueError("gemm_packed: shapes do not match");
      g.M = P.rows; g.K = P.cols; g.N = o.shape[1];
      g.b = o.ptr; g.rs_b = o.strides[0]; g.cs_b = o.strides[1]; g.packed_a = &P;
    } else {
      if (o.shape[1] != P.rows) throw ValueError("gemm_packed: shapes do not match");
      g.M = o.shape[0]; g.K = P.rows; g.N = P.cols;
      g.a = o.ptr; g.rs_a = o.strides[0]; g.cs_a = o.strides[1]; g.packed_b = &P;
    }
    Tensor out = empty(o.dtype, {g.M, g.N});
    g.c = out.ptr; g.rs_c = g.N;
    {
      py::gil_scoped_release nogil;
      gemm(g);
    }
    return out.arr;
  });
  // Internal: block sizes of one ISA's kernel for one dtype (tests pick shapes one off
  // each). isa: a name from isas(); dtype: "float32" or "float64".
  m.def("gemm_block_sizes", [](const std::string& isa_s, const std::string& dtype) {
    const Isa* found = nullptr;
    for (const Isa& i : supported_isas())
      if (isa_s == isa_name(i)) found = &i;
    if (!found) throw ValueError("gemm_block_sizes: unknown or unsupported kernel set '" + isa_s + "'");
    auto dict = [](const auto& k) {
      py::dict d;
      d["MR"] = k.MR; d["NR"] = k.NR; d["MC"] = k.MC; d["KC"] = k.KC; d["NC"] = k.NC;
      return d;
    };
    if (dtype == "float32") return dict(gemm_kernel<float>(*found));
    if (dtype == "float64") return dict(gemm_kernel<double>(*found));
    throw TypeError("gemm_block_sizes: dtype must be 'float32' or 'float64', got '" + dtype + "'");
  }, py::arg("isa"), py::arg("dtype"));
  // Internal: the reference triple loop (the oracle in tests).
  m.def("gemm_ref", [](py::handle a_, py::handle b_) {
    Tensor a = as_float(a_, "a"), b = as_float(b_, "b");
    check_same_dtype(a, "a", b, "b");
    check_rank(a, "a", {2});
    check_rank(b, "b", {2});
    if (a.shape[1] != b.shape[0]) throw ValueError("gemm_ref: shapes do not match");
    Tensor out = empty(a.dtype, {a.shape[0], b.shape[1]});
    GemmArgs g = base_args(a.dtype);
    g.M = a.shape[0]; g.N = b.shape[1]; g.K = a.shape[1];
    g.a = a.ptr; g.rs_a = a.strides[0]; g.cs_a = a.strides[1];
    g.b = b.ptr; g.rs_b = b.strides[0]; g.cs_b = b.strides[1];
    g.c = out.ptr; g.rs_c = g.N;
    ref::gemm(g);
    return out.arr;
  });
}

}  // namespace nnk::bind
