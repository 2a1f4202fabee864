// The CUDA overloads of the ops, and nnkernels.cuda's helpers (DeviceArray: cuda_array.cpp).
//
// Routing: each op below is registered as an extra overload of the CPU binding of the same
// name, placed first (py::prepend) and taking a DevArg as first argument. pybind11 tries it
// first; DevArg's caster accepts only CUDA arrays (a numpy array fails at once), so host
// calls fall through to the CPU binding at the cost of one failed type check. A host array
// among later arguments of a CUDA call -> ValueError; a CUDA array among later arguments of
// a host call -> ValueError (common.cpp). Ops with no CUDA kernel reach the CPU binding and
// raise that ValueError too.
//
// Order inside each op: parse every argument (no CUDA call), check dtypes / shapes / values
// exactly as the CPU binding does, then dev_prepare (device, streams), allocate, launch.
// Kernels are queued asynchronously on the legacy default stream; the GIL is released
// around the launches.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "bindings/conv_args.h"
#include "bindings/cuda_array.h"
#include "bindings/embed_args.h"
#include "bindings/loss_args.h"
#if defined(NNK_WITH_CUDA)
#include "cuda/api.h"
#include "cuda/launch.h"
#endif

namespace nnk::bind {

#if defined(NNK_WITH_CUDA)
namespace {

namespace cu = nnk::cuda;

// Every (thread, register) position of one side of the GEMM tile, thread-major (tests).
template <typename T>
py::object gemm_tile_positions(bool rows) {
  using G = cu::GemmTile<T>;
  const int per = rows ? G::TM : G::TN, threads = rows ? G::BM / G::TM : G::BN / G::TN;
  std::vector<int> pos;
  for (int t = 0; t < threads; ++t)
    for (int i = 0; i < per; ++i) pos.push_back(cu::gemm_tile_pos(t, i, threads, G::VW));
  py::dict d;
  d["pos"] = pos;
  d["per"] = per;
  d["vw"] = G::VW;
  d["size"] = rows ? G::BM : G::BN;
  return py::object(d);
}

[[noreturn]] void not_on_cuda(const std::string& what) {
  PyErr_SetString(PyExc_NotImplementedError, (what + " is not implemented on CUDA yet").c_str());
  throw py::error_already_set();
}

void same_dtype(const DevTensor& a, const char* an, const DevTensor& b, const char* bn) {
  if (a.dtype != b.dtype)
    throw TypeError(std::string(bn) + ": dtype " + dtype_name(b.dtype) + " does not match " + an +
                    "'s dtype " + dtype_name(a.dtype));
}
void rank(const DevTensor& t, const char* name, std::initializer_list<int> ranks) {
  check_rank(t.shape, name, ranks);  // the CPU binding's message
}
void same_shape(const DevTensor& a, const char* an, const DevTensor& b, const char* bn) {
  if (a.shape != b.shape)
    throw ValueError(std::string(bn) + ": shape " + shape_str(b.shape) + " does not match " + an +
                     "'s shape " + shape_str(a.shape));
}
DevTensor out_or_new(DevTensor o, DType dt, const std::vector<index_t>& shape) {
  return o.ptr || (o.owner && o.numel() == 0) ? o : dev_empty(dt, shape);
}

cu::Act parse_act(py::handle h) {
  if (h.is_none()) return cu::Act::none;
  if (!py::isinstance<py::str>(h)) throw ValueError("activation: expected a string or None");
  const std::string s = h.cast<std::string>();
  if (s == "relu") return cu::Act::relu;
  if (s == "gelu") return cu::Act::gelu;
  if (s == "gelu_tanh") return cu::Act::gelu_tanh;
  if (s == "tanh") return cu::Act::tanh;
  if (s == "sigmoid") return cu::Act::sigmoid;
  throw ValueError("activation: unknown activation '" + s +
                   "' (expected None, 'relu', 'gelu', 'gelu_tanh', 'tanh' or 'sigmoid')");
}
cu::Act gelu_kind(const std::string& approximate) {
  if (approximate == "none") return cu::Act::gelu;
  if (approximate == "tanh") return cu::Act::gelu_tanh;
  throw ValueError("gelu: approximate must be 'none' or 'tanh', got '" + approximate + "'");
}

// ---- matrix products ----
py::object cu_gemm(DevArg a_, py::handle b_, py::handle c_, bool ta, bool tb, double alpha,
                   double beta, py::handle out_) {
  DevTensor a = as_device(a_.h, "a"), b = as_device(b_, "b");
  same_dtype(a, "a", b, "b");
  rank(a, "a", {2});
  rank(b, "b", {2});
  const index_t M = ta ? a.shape[1] : a.shape[0], K = ta ? a.shape[0] : a.shape[1];
  const index_t Kb = tb ? b.shape[1] : b.shape[0], N = tb ? b.shape[0] : b.shape[1];
  if (K != Kb)
    throw ValueError("gemm: a " + shape_str(a.shape) + " and b " + shape_str(b.shape) + " cannot be multiplied");
  DevTensor c;
  const bool use_c = !c_.is_none() && beta != 0.0;
  if (!c_.is_none()) {
    c = as_device(c_, "c");
    same_dtype(a, "a", c, "c");
    rank(c, "c", {0, 1, 2});
    const index_t cm = c.ndim() == 2 ? c.shape[0] : 1, cn = c.ndim() >= 1 ? c.shape[c.ndim() - 1] : 1;
    if ((cm != 1 && cm != M) || (cn != 1 && cn != N))
      throw ValueError("gemm: c " + shape_str(c.shape) + " does not broadcast to " + shape_str({M, N}));
  }
  DevTensor out = dev_output_check(out_, a.dtype, {M, N}, {&a, &b, c_.is_none() ? nullptr : &c});
  dev_prepare({&a, &b, c_.is_none() ? nullptr : &c});
  out = out_or_new(out, a.dtype, {M, N});
  cu::GemmParams g;
  g.dtype = a.dtype; g.M = M; g.N = N; g.K = K;
  g.a = a.ptr; g.rs_a = ta ? a.strides[1] : a.strides[0]; g.cs_a = ta ? a.strides[0] : a.strides[1];
  g.b = b.ptr; g.rs_b = tb ? b.strides[1] : b.strides[0]; g.cs_b = tb ? b.strides[0] : b.strides[1];
  g.c = out.ptr; g.rs_c = N;
  g.alpha = alpha;
  if (use_c) {
    g.c_in = c.ptr; g.beta = beta;
    const int cd = c.ndim();
    g.rs_cin = (cd == 2 && c.shape[0] != 1) ? c.strides[0] : 0;
    g.cs_cin = (cd >= 1 && c.shape[cd - 1] != 1) ? c.strides[cd - 1] : 0;
  }
  {
    py::gil_scoped_release nogil;
    cu::gemm(g);
  }
  return out.owner;
}

// One operand of a batched product over the flattened batch: its element stride from one
// batch entry to the next, when its strides over `batch` (C order) allow a single one
// (broadcast dims have stride 0; dims of size 1 do not count).
bool single_batch_stride(const std::vector<index_t>& batch, const std::vector<index_t>& st, index_t& step) {
  bool first = true;
  index_t expect = 0;  // the stride the next outer dim needs
  step = 0;
  for (int d = int(batch.size()) - 1; d >= 0; --d) {
    if (batch[d] == 1) continue;
    if (first) step = st[d];
    else if (st[d] != expect) return false;
    first = false;
    expect = st[d] * batch[d];
  }
  return true;
}

// matmul as torch: 1-D operands, broadcast batch dims (the same geometry as the CPU path,
// matmul_geom). The product is one batched GEMM over the flattened batch: an operand whose
// batch strides do not flatten to one stride (for example broadcast over an inner batch dim
// only) is first copied out to (batch..., M, K) (or (batch..., K, N)).
py::object cu_matmul(DevArg a_, py::handle b_, py::handle out_) {
  DevTensor a = as_device(a_.h, "a"), b = as_device(b_, "b");
  same_dtype(a, "a", b, "b");
  const MatmulGeom mg = matmul_geom(a.shape, a.strides, b.shape, b.strides);
  DevTensor out = dev_output_check(out_, a.dtype, mg.oshape, {&a, &b});
  cu::gemm_launch(a.dtype, mg.M, mg.N, 1);  // grid y <= 65535 (ValueError), before any CUDA call
  dev_prepare({&a, &b});
  index_t batch = 1;
  for (index_t s : mg.batch) batch *= s;
  // The operand as a (batch..., R, C) view with strides (sx..., rs, cs), flattened.
  auto flat = [&](const DevTensor& t, const std::vector<index_t>& sx, index_t R, index_t C, index_t& rs,
                  index_t& cs, index_t& step) {
    if (single_batch_stride(mg.batch, sx, step)) return t;
    DevTensor v = t;
    v.shape = mg.batch; v.shape.push_back(R); v.shape.push_back(C);
    v.strides = sx; v.strides.push_back(rs); v.strides.push_back(cs);
    DevTensor c = dev_contiguous(v);
    rs = C; cs = 1; step = R * C;
    return c;
  };
  cu::GemmParams g;
  g.dtype = a.dtype; g.M = mg.M; g.N = mg.N; g.K = mg.K; g.batch = batch;
  g.rs_a = mg.rs_a; g.cs_a = mg.cs_a; g.rs_b = mg.rs_b; g.cs_b = mg.cs_b;
  const DevTensor af = flat(a, mg.sa, mg.M, mg.K, g.rs_a, g.cs_a, g.batch_a);
  const DevTensor bf = flat(b, mg.sb, mg.K, mg.N, g.rs_b, g.cs_b, g.batch_b);
  out = out_or_new(out, a.dtype, mg.oshape);
  g.a = af.ptr; g.b = bf.ptr;
  g.c = out.ptr; g.rs_c = mg.N; g.batch_c = mg.M * mg.N;
  {
    py::gil_scoped_release nogil;
    cu::gemm(g);
  }
  return out.owner;
}

py::object cu_linear(DevArg x_, py::handle w_, py::handle b_, py::handle act_, py::handle out_) {
  DevTensor x = as_device(x_.h, "x"), w = as_device(w_, "weight");
  same_dtype(x, "x", w, "weight");
  rank(w, "weight", {2});
  if (x.ndim() < 1) throw ValueError("linear: x must have at least 1 dimension");
  const index_t I = x.shape[x.ndim() - 1], O = w.shape[0];
  if (w.shape[1] != I)
    throw ValueError("linear: x " + shape_str(x.shape) + " and weight " + shape_str(w.shape) + " do not match");
  DevTensor bias;
  if (!b_.is_none()) {
    bias = as_device(b_, "bias");
    same_dtype(x, "x", bias, "bias");
    if (bias.shape != std::vector<index_t>{O})
      throw ValueError("linear: bias " + shape_str(bias.shape) + " does not match weight " + shape_str(w.shape));
  }
  const cu::Act act = parse_act(act_);
  std::vector<index_t> oshape(x.shape.begin(), x.shape.end() - 1);
  oshape.push_back(O);
  DevTensor out = dev_output_check(out_, x.dtype, oshape, {&x, &w, b_.is_none() ? nullptr : &bias});
  dev_prepare({&x, &w, b_.is_none() ? nullptr : &bias});
  x = dev_contiguous(x);
  if (!b_.is_none()) bias = dev_contiguous(bias);
  out = out_or_new(out, x.dtype, oshape);
  cu::GemmParams g;
  g.dtype = x.dtype; g.M = x.numel() / (I ? I : 1); g.N = O; g.K = I;
  if (I == 0) { g.M = 1; for (size_t d = 0; d + 1 < x.shape.size(); ++d) g.M *= x.shape[d]; }
  g.a = x.ptr; g.rs_a = I; g.cs_a = 1;
  g.b = w.ptr; g.rs_b = w.strides[1]; g.cs_b = w.strides[0];  // B = weight^T
  g.c = out.ptr; g.rs_c = O;
  g.bias = b_.is_none() ? nullptr : bias.ptr;
  g.act = act;
  {
    py::gil_scoped_release nogil;
    cu::gemm(g);
  }
  return out.owner;
}

// -> (grad_x, grad_weight, grad_bias or None): grad_x = grad_out W, grad_weight = grad_out^T x
// (rows of x and grad_out flattened), grad_bias = column sums of grad_out (in order).
py::tuple cu_linear_backward(DevArg g_, py::handle x_, py::handle w_, bool want_bias) {
  DevTensor go = as_device(g_.h, "grad_out"), x = as_device(x_, "x"), w = as_device(w_, "weight");
  same_dtype(x, "x", go, "grad_out");
  same_dtype(x, "x", w, "weight");
  rank(w, "weight", {2});
  const index_t N = w.shape[0], K = w.shape[1];
  if (x.ndim() == 0 || x.shape.back() != K)
    throw ValueError("linear_backward: x " + shape_str(x.shape) + " and weight " + shape_str(w.shape) +
                     ": x.shape[-1] must equal weight.shape[1]");
  std::vector<index_t> gshape(x.shape.begin(), x.shape.end() - 1);
  gshape.push_back(N);
  if (go.shape != gshape)
    throw ValueError("linear_backward: grad_out " + shape_str(go.shape) + " must have shape " +
                     shape_str(gshape) + " for x " + shape_str(x.shape) + " and weight " + shape_str(w.shape));
  dev_prepare({&go, &x, &w});
  go = dev_contiguous(go);
  x = dev_contiguous(x);
  index_t M = 1;
  for (size_t d = 0; d + 1 < x.shape.size(); ++d) M *= x.shape[d];
  const DType dt = x.dtype;
  DevTensor gx = dev_empty(dt, x.shape), gw = dev_empty(dt, w.shape), gb;
  if (want_bias) gb = dev_empty(dt, {N});
  {
    py::gil_scoped_release nogil;
    cu::GemmParams a;  // grad_x (M, K) = grad_out (M, N) @ weight (N, K)
    a.dtype = dt; a.M = M; a.N = K; a.K = N;
    a.a = go.ptr; a.rs_a = N; a.cs_a = 1;
    a.b = w.ptr; a.rs_b = w.strides[0]; a.cs_b = w.strides[1];
    a.c = gx.ptr; a.rs_c = K;
    cu::gemm(a);
    cu::GemmParams b;  // grad_weight (N, K) = grad_out^T (N, M) @ x (M, K)
    b.dtype = dt; b.M = N; b.N = K; b.K = M;
    b.a = go.ptr; b.rs_a = 1; b.cs_a = N;
    b.b = x.ptr; b.rs_b = K; b.cs_b = 1;
    b.c = gw.ptr; b.rs_c = K;
    if (M == 0) cu::fill_zero(gw.ptr, size_t(N * K * dtype_size(dt)));
    else cu::gemm(b);
    if (want_bias) cu::channel_sum(dt, gb.ptr, go.ptr, M, N, 1);
  }
  return py::make_tuple(gx.owner, gw.owner, want_bias ? gb.owner : py::object(py::none()));
}

// ---- activations, softmax ----
py::object cu_act(DevArg x_, cu::Act act, double param) {
  DevTensor x = as_device(x_.h, "x");
  dev_prepare({&x});
  x = dev_contiguous(x);
  DevTensor y = dev_empty(x.dtype, x.shape);
  {
    py::gil_scoped_release nogil;
    cu::act_forward(x.dtype, y.ptr, x.ptr, x.numel(), act, param);
  }
  return y.owner;
}

py::object cu_act_bwd(DevArg g_, py::handle v_, const char* vname, cu::Act act, double param) {
  DevTensor g = as_device(g_.h, "grad"), v = as_device(v_, vname);
  same_dtype(g, "grad", v, vname);
  same_shape(g, "grad", v, vname);
  dev_prepare({&g, &v});
  g = dev_contiguous(g);
  v = dev_contiguous(v);
  DevTensor dx = dev_empty(g.dtype, g.shape);
  {
    py::gil_scoped_release nogil;
    cu::act_backward(g.dtype, dx.ptr, g.ptr, v.ptr, g.numel(), act, param);
  }
  return dx.owner;
}

void split_axis(const DevTensor& x, int64_t axis, const char* op, index_t& outer, index_t& C, index_t& inner) {
  const int nd = x.ndim();
  const int64_t lim = nd == 0 ? 1 : nd;
  if (axis < -lim || axis >= lim)
    throw ValueError(std::string(op) + ": axis " + std::to_string(axis) + " is out of range for shape " +
                     shape_str(x.shape));
  if (nd == 0) { outer = C = inner = 1; return; }
  const int a = int(axis < 0 ? axis + nd : axis);
  outer = inner = 1;
  for (int d = 0; d < a; ++d) outer *= x.shape[d];
  C = x.shape[a];
  for (int d = a + 1; d < nd; ++d) inner *= x.shape[d];
}

py::object cu_softmax(DevArg x_, int64_t axis, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  DevTensor x = as_device(x_.h, "x");
  index_t outer, C, inner;
  split_axis(x, axis, op, outer, C, inner);
  dev_prepare({&x});
  x = dev_contiguous(x);
  DevTensor y = dev_empty(x.dtype, x.shape);
  {
    py::gil_scoped_release nogil;
    cu::softmax(x.dtype, y.ptr, x.ptr, outer, C, inner, log);
  }
  return y.owner;
}

py::object cu_softmax_bwd(DevArg g_, py::handle y_, int64_t axis, bool log) {
  const char* op = log ? "log_softmax_backward" : "softmax_backward";
  DevTensor g = as_device(g_.h, "grad"), y = as_device(y_, "y");
  same_dtype(g, "grad", y, "y");
  same_shape(g, "grad", y, "y");
  index_t outer, C, inner;
  split_axis(y, axis, op, outer, C, inner);
  dev_prepare({&g, &y});
  g = dev_contiguous(g);
  y = dev_contiguous(y);
  DevTensor dx = dev_empty(g.dtype, g.shape);
  {
    py::gil_scoped_release nogil;
    cu::softmax_backward(g.dtype, dx.ptr, g.ptr, y.ptr, outer, C, inner, log);
  }
  return dx.owner;
}

// ---- losses (maths and errors as bind_loss.cpp; "mean" / "sum" return Python floats and
// wait for the GPU) ----
struct LossNames {
  const char* op;
  const char* bwd;
  const char* x;
};
LossNames loss_names(cu::LossKind k) {
  return k == cu::LossKind::mse ? LossNames{"mse_loss", "mse_loss_backward", "input"}
                                : LossNames{"binary_cross_entropy_with_logits",
                                            "binary_cross_entropy_with_logits_backward", "logits"};
}

// grad_out of a backward: for "none" an array of `shape` (g, true) or None (false); for
// "mean" / "sum" a host number (gs) or a 0-d CUDA array (g, read after dev_prepare).
struct GradArg {
  DevTensor g;
  bool array = false, dev_scalar = false;
  double gs = 1.0;
};
GradArg grad_arg(py::handle go_, const char* op, Reduction r, const DevTensor& x, const char* xname,
                 const std::vector<index_t>& shape) {
  GradArg a;
  if (go_.is_none()) return a;
  if (r == Reduction::none) {
    a.g = as_device(go_, "grad_out");
    same_dtype(x, xname, a.g, "grad_out");
    if (a.g.shape != shape)
      throw ValueError(std::string(op) + ": grad_out " + shape_str(a.g.shape) +
                       " must have the unreduced loss's shape " + shape_str(shape) + " for reduction='none'");
    a.array = true;
  } else if (is_device_like(go_)) {
    a.g = as_device(go_, "grad_out");
    if (a.g.ndim() != 0)
      throw ValueError(std::string(op) + ": grad_out must be a scalar (shape ()) for reduction='" +
                       (r == Reduction::mean ? "mean" : "sum") + "', got shape " + shape_str(a.g.shape));
    a.dev_scalar = true;
  } else {
    a.gs = scalar_grad(go_, op, r);
  }
  return a;
}
// After dev_prepare: read a device scalar, make an array contiguous.
void grad_ready(GradArg& a) {
  if (a.dev_scalar) {
    if (a.g.dtype == DType::f32) {
      float v = 0;
      cu::copy_d2h(&v, a.g.ptr, sizeof(v));
      a.gs = v;
    } else {
      cu::copy_d2h(&a.gs, a.g.ptr, sizeof(a.gs));
    }
  }
  if (a.array) a.g = dev_contiguous(a.g);
}
const DevTensor* grad_ptr(const GradArg& a) { return a.array || a.dev_scalar ? &a.g : nullptr; }

void loss_pair(const DevTensor& x, const char* xn, const DevTensor& t, const char* op) {
  same_dtype(x, xn, t, "target");
  check_pair_shapes(x.shape, xn, t.shape, "target", op);
}

py::object cu_elem_loss(cu::LossKind k, DevArg x_, py::handle t_, py::handle red_) {
  const LossNames nm = loss_names(k);
  const Reduction r = parse_reduction(red_, nm.op);
  DevTensor x = as_device(x_.h, nm.x), t = as_device(t_, "target");
  loss_pair(x, nm.x, t, nm.op);
  dev_prepare({&x, &t});
  x = dev_contiguous(x);
  t = dev_contiguous(t);
  const index_t n = x.numel();
  if (r == Reduction::none) {
    DevTensor out = dev_empty(x.dtype, x.shape);
    {
      py::gil_scoped_release nogil;
      cu::loss_none(x.dtype, k, out.ptr, x.ptr, t.ptr, n);
    }
    return out.owner;  // with the GIL held
  }
  double s;
  {
    py::gil_scoped_release nogil;
    s = cu::loss_sum(x.dtype, k, x.ptr, t.ptr, n);
  }
  return py::float_(r == Reduction::mean ? s / double(n) : s);
}

py::object cu_elem_loss_bwd(cu::LossKind k, DevArg x_, py::handle t_, py::handle red_, py::handle go_) {
  const LossNames nm = loss_names(k);
  const Reduction r = parse_reduction(red_, nm.bwd);
  DevTensor x = as_device(x_.h, nm.x), t = as_device(t_, "target");
  loss_pair(x, nm.x, t, nm.bwd);
  GradArg g = grad_arg(go_, nm.bwd, r, x, nm.x, x.shape);
  dev_prepare({&x, &t, grad_ptr(g)});
  grad_ready(g);
  x = dev_contiguous(x);
  t = dev_contiguous(t);
  const index_t n = x.numel();
  DevTensor dx = dev_empty(x.dtype, x.shape);
  {
    py::gil_scoped_release nogil;
    cu::loss_backward(x.dtype, k, dx.ptr, x.ptr, t.ptr, g.array ? g.g.ptr : nullptr,
                      r == Reduction::mean ? g.gs / double(n) : g.gs, n);
  }
  return dx.owner;
}

// logits (N, C) with target (N,), or (C,) with a 0-d target; int32 / int64 targets, read in
// place with their stride; out-of-range targets -> IndexError before any loss is computed.
struct CuCe {
  DevTensor x, t;
  index_t N = 0, C = 0, ts = 0;
  long long ignore = -100;
  index_t kept = 0;  // targets not equal to ignore (the count "mean" divides by)
  std::vector<index_t> loss_shape;
};
CuCe cu_ce_args(DevArg x_, py::handle t_, int64_t ignore, const char* op) {
  CuCe a;
  a.x = as_device(x_.h, "logits");
  a.t = as_device_index(t_, "target");
  a.loss_shape = ce_loss_shape(a.x.shape, a.t.shape, op, a.N, a.C);
  a.ts = a.loss_shape.empty() ? 0 : a.t.strides[0];
  a.ignore = ignore;
  return a;
}
void cu_ce_ready(CuCe& a) {
  a.x = dev_contiguous(a.x);
  index_t bad, ignored;
  {
    py::gil_scoped_release nogil;
    bad = cu::first_bad_class(a.t.ptr, a.t.index_bits, a.ts, a.N, a.C, &a.ignore, &ignored);
  }
  if (bad >= 0)
    throw target_out_of_range(bad, cu::read_class(a.t.ptr, a.t.index_bits, a.ts, bad), a.C);
  a.kept = a.N - ignored;
}

py::object cu_cross_entropy(DevArg x_, py::handle t_, py::handle red_, int64_t ignore) {
  const char* op = "cross_entropy";
  const Reduction r = parse_reduction(red_, op);
  CuCe a = cu_ce_args(x_, t_, ignore, op);
  dev_prepare({&a.x, &a.t});
  cu_ce_ready(a);
  if (r == Reduction::none) {
    DevTensor out = dev_empty(a.x.dtype, a.loss_shape);
    {
      py::gil_scoped_release nogil;
      cu::cross_entropy_none(a.x.dtype, out.ptr, a.x.ptr, a.N, a.C, a.t.ptr, a.t.index_bits, a.ts, a.ignore);
    }
    return out.owner;  // with the GIL held
  }
  double s;
  {
    py::gil_scoped_release nogil;
    s = cu::cross_entropy_sum(a.x.dtype, a.x.ptr, a.N, a.C, a.t.ptr, a.t.index_bits, a.ts, a.ignore);
  }
  if (r == Reduction::mean) s = a.kept ? s / double(a.kept) : std::numeric_limits<double>::quiet_NaN();
  return py::float_(s);
}

py::object cu_cross_entropy_bwd(DevArg x_, py::handle t_, py::handle red_, py::handle go_, int64_t ignore) {
  const char* op = "cross_entropy_backward";
  const Reduction r = parse_reduction(red_, op);
  CuCe a = cu_ce_args(x_, t_, ignore, op);
  GradArg g = grad_arg(go_, op, r, a.x, "logits", a.loss_shape);
  dev_prepare({&a.x, &a.t, grad_ptr(g)});
  grad_ready(g);
  cu_ce_ready(a);
  DevTensor dx = dev_empty(a.x.dtype, a.x.shape);
  // kept == 0 under "mean": every row is ignored (zero), so the scale is never used.
  const double scale = r == Reduction::mean ? (a.kept ? g.gs / double(a.kept) : 0.0) : g.gs;
  {
    py::gil_scoped_release nogil;
    cu::cross_entropy_backward(a.x.dtype, dx.ptr, a.x.ptr, a.N, a.C, a.t.ptr, a.t.index_bits, a.ts, a.ignore,
                               g.array ? g.g.ptr : nullptr, 1, scale);
  }
  return dx.owner;
}

// ---- layer norm ----
index_t norm_rows(const DevTensor& x, const std::vector<index_t>& ns, index_t& D) {
  const int k = int(ns.size());
  if (k == 0 || x.ndim() < k ||
      !std::equal(ns.begin(), ns.end(), x.shape.end() - k))
    throw ValueError("layer_norm: normalized_shape " + shape_str(ns) + " does not match the trailing dims of x " +
                     shape_str(x.shape));
  D = 1;
  for (index_t s : ns) D *= s;
  index_t rows = 1;
  for (int d = 0; d < x.ndim() - k; ++d) rows *= x.shape[d];
  return rows;
}

py::object cu_layer_norm(DevArg x_, const std::vector<index_t>& ns, py::handle w_, py::handle b_,
                         double eps, bool return_stats) {
  DevTensor x = as_device(x_.h, "x"), w, b;
  index_t D;
  const index_t rows = norm_rows(x, ns, D);
  if (!w_.is_none()) {
    w = as_device(w_, "weight");
    same_dtype(x, "x", w, "weight");
    if (w.shape != ns) throw ValueError("layer_norm: weight " + shape_str(w.shape) + " does not match normalized_shape " + shape_str(ns));
  }
  if (!b_.is_none()) {
    b = as_device(b_, "bias");
    same_dtype(x, "x", b, "bias");
    if (b.shape != ns) throw ValueError("layer_norm: bias " + shape_str(b.shape) + " does not match normalized_shape " + shape_str(ns));
  }
  dev_prepare({&x, w_.is_none() ? nullptr : &w, b_.is_none() ? nullptr : &b});
  x = dev_contiguous(x);
  if (!w_.is_none()) w = dev_contiguous(w);
  if (!b_.is_none()) b = dev_contiguous(b);
  std::vector<index_t> sshape(x.shape.begin(), x.shape.end() - ns.size());
  DevTensor y = dev_empty(x.dtype, x.shape), mean = dev_empty(x.dtype, sshape), rstd = dev_empty(x.dtype, sshape);
  {
    py::gil_scoped_release nogil;
    cu::layer_norm(x.dtype, y.ptr, mean.ptr, rstd.ptr, x.ptr, w_.is_none() ? nullptr : w.ptr,
                   b_.is_none() ? nullptr : b.ptr, rows, D, eps);
  }
  if (return_stats) return py::make_tuple(y.owner, mean.owner, rstd.owner);
  return y.owner;
}

py::object cu_layer_norm_bwd(DevArg g_, py::handle x_, const std::vector<index_t>& ns, py::handle mean_,
                             py::handle rstd_, py::handle w_, py::handle b_) {
  DevTensor g = as_device(g_.h, "grad_out"), x = as_device(x_, "x");
  DevTensor mean = as_device(mean_, "mean"), rstd = as_device(rstd_, "rstd"), w;
  same_dtype(x, "x", g, "grad_out");
  same_shape(x, "x", g, "grad_out");
  same_dtype(x, "x", mean, "mean");
  same_dtype(x, "x", rstd, "rstd");
  index_t D;
  const index_t rows = norm_rows(x, ns, D);
  const std::vector<index_t> sshape(x.shape.begin(), x.shape.end() - ns.size());
  if (mean.shape != sshape || rstd.shape != sshape)
    throw ValueError("layer_norm_backward: mean / rstd must have shape " + shape_str(sshape));
  if (!w_.is_none()) {
    w = as_device(w_, "weight");
    same_dtype(x, "x", w, "weight");
    if (w.shape != ns) throw ValueError("layer_norm_backward: weight " + shape_str(w.shape) + " does not match normalized_shape");
  }
  if (!b_.is_none()) {
    DevTensor b = as_device(b_, "bias");
    if (b.shape != ns) throw ValueError("layer_norm_backward: bias " + shape_str(b.shape) + " does not match normalized_shape");
  }
  dev_prepare({&g, &x, &mean, &rstd, w_.is_none() ? nullptr : &w});
  g = dev_contiguous(g); x = dev_contiguous(x); mean = dev_contiguous(mean); rstd = dev_contiguous(rstd);
  if (!w_.is_none()) w = dev_contiguous(w);
  DevTensor dx = dev_empty(x.dtype, x.shape), dw, db;
  if (!w_.is_none()) dw = dev_empty(x.dtype, ns);
  if (!b_.is_none()) db = dev_empty(x.dtype, ns);
  {
    py::gil_scoped_release nogil;
    cu::layer_norm_backward(x.dtype, dx.ptr, dw.ptr, db.ptr, g.ptr, x.ptr, mean.ptr, rstd.ptr,
                            w_.is_none() ? nullptr : w.ptr, rows, D);
  }
  return py::make_tuple(dx.owner, w_.is_none() ? py::object(py::none()) : dw.owner,
                        b_.is_none() ? py::object(py::none()) : db.owner);
}

// ---- optimizers ----
DevTensor state(py::handle h, const char* name, const DevTensor* like) {
  DevTensor t = as_device(h, name);
  if (like) {
    same_dtype(*like, "param", t, name);
    if (t.shape != like->shape)
      throw ValueError(std::string(name) + ": shape " + shape_str(t.shape) + " does not match param's " + shape_str(like->shape));
  }
  if (!t.is_contiguous()) throw ValueError(std::string(name) + ": must be C-contiguous (updated in place)");
  if (t.readonly) throw ValueError(std::string(name) + ": is read-only");
  return t;
}

void cu_sgd(DevArg p_, py::handle g_, py::handle buf_, double lr, double momentum, double dampening,
            double weight_decay, bool nesterov, index_t step) {
  DevTensor p = state(p_.h, "param", nullptr), g = as_device(g_, "grad"), buf;
  same_dtype(p, "param", g, "grad");
  if (g.shape != p.shape)
    throw ValueError("sgd_step_: grad " + shape_str(g.shape) + " does not match param " + shape_str(p.shape));
  if (step < 1) throw ValueError("sgd_step_: step must be >= 1, got " + std::to_string(step));
  if (nesterov && (momentum <= 0.0 || dampening != 0.0))
    throw ValueError("sgd_step_: nesterov needs momentum > 0 and dampening == 0");
  if (momentum != 0.0) {
    if (buf_.is_none()) throw ValueError("sgd_step_: momentum_buffer is required when momentum != 0");
    buf = state(buf_, "momentum_buffer", &p);
    if (buf.ptr == p.ptr && p.numel()) throw ValueError("param and momentum_buffer overlap in memory");
  }
  dev_prepare({&p, &g, momentum != 0.0 ? &buf : nullptr});
  g = dev_contiguous(g);
  py::gil_scoped_release nogil;
  cu::sgd_step(p.dtype, p.ptr, g.ptr, buf.ptr, p.numel(), lr, momentum, dampening, weight_decay,
               nesterov, step <= 1);
}

void cu_adam(DevArg p_, py::handle g_, py::handle m_, py::handle v_, index_t step, double lr,
             double beta1, double beta2, double eps, double weight_decay, bool decoupled) {
  DevTensor p = state(p_.h, "param", nullptr), g = as_device(g_, "grad");
  same_dtype(p, "param", g, "grad");
  if (g.shape != p.shape)
    throw ValueError("adam_step_: grad " + shape_str(g.shape) + " does not match param " + shape_str(p.shape));
  DevTensor m = state(m_, "exp_avg", &p), v = state(v_, "exp_avg_sq", &p);
  if (step < 1) throw ValueError("adam_step_: step must be >= 1, got " + std::to_string(step));
  if (p.numel() && (m.ptr == p.ptr || v.ptr == p.ptr || m.ptr == v.ptr))
    throw ValueError("adam_step_: param, exp_avg and exp_avg_sq must not overlap in memory");
  dev_prepare({&p, &g, &m, &v});
  g = dev_contiguous(g);
  py::gil_scoped_release nogil;
  cu::adam_step(p.dtype, p.ptr, g.ptr, m.ptr, v.ptr, p.numel(), lr, beta1, beta2, eps, weight_decay,
                decoupled, step);
}

// ---- conv2d forward: im2col + batched GEMM per group ----
std::array<index_t, 2> pair_arg(py::handle h, const char* name) {
  if (py::isinstance<py::int_>(h)) { const index_t v = h.cast<index_t>(); return {v, v}; }
  if (py::isinstance<py::tuple>(h) || py::isinstance<py::list>(h)) {
    py::sequence s = py::reinterpret_borrow<py::sequence>(h);
    if (py::len(s) == 2) return {s[0].cast<index_t>(), s[1].cast<index_t>()};
  }
  throw ValueError(std::string("conv2d: ") + name + " must be an int or a pair of ints");
}

// The geometry of a conv2d call (x (N, C, H, W) or unbatched (C, H, W), weight (O, C/groups,
// KH, KW)), checked as the CPU binding does.
struct ConvGeom {
  bool unbatched = false;
  index_t N = 1, C = 0, H = 0, W = 0, O = 0, KH = 0, KW = 0, G = 1, OH = 0, OW = 0;
  std::array<index_t, 2> st{1, 1}, dl{1, 1}, pd{0, 0};
  std::vector<index_t> out_shape() const {
    return unbatched ? std::vector<index_t>{O, OH, OW} : std::vector<index_t>{N, O, OH, OW};
  }
};

ConvGeom conv_geom(const char* op, const DevTensor& x, const DevTensor& w, py::handle stride_,
                   py::handle padding_, py::handle dilation_, int64_t groups) {
  const std::string fn(op);
  rank(x, "x", {3, 4});
  rank(w, "weight", {4});
  ConvGeom g;
  g.unbatched = x.ndim() == 3;
  g.N = g.unbatched ? 1 : x.shape[0];
  g.C = x.shape[x.ndim() - 3];
  g.H = x.shape[x.ndim() - 2];
  g.W = x.shape[x.ndim() - 1];
  g.O = w.shape[0];
  g.KH = w.shape[2];
  g.KW = w.shape[3];
  if (groups < 1) throw ValueError(fn + ": groups must be >= 1");
  g.G = groups;
  if (g.C % groups || g.O % groups || w.shape[1] != g.C / groups)
    throw ValueError(fn + ": x " + shape_str(x.shape) + ", weight " + shape_str(w.shape) + " and groups " +
                     std::to_string(groups) + " do not match");
  g.st = pair_arg(stride_, "stride");
  g.dl = pair_arg(dilation_, "dilation");
  if (g.st[0] < 1 || g.st[1] < 1 || g.dl[0] < 1 || g.dl[1] < 1)
    throw ValueError(fn + ": stride and dilation must be >= 1");
  bool same = false;
  if (py::isinstance<py::str>(padding_)) {
    const std::string p = padding_.cast<std::string>();
    if (p == "same") {
      if (g.st[0] != 1 || g.st[1] != 1) throw ValueError(fn + ": padding='same' needs stride 1");
      same = true;
      g.pd = {g.dl[0] * (g.KH - 1) / 2, g.dl[1] * (g.KW - 1) / 2};
    } else if (p != "valid") {
      throw ValueError(fn + ": padding must be an int, a pair, 'same' or 'valid'");
    }
  } else {
    g.pd = pair_arg(padding_, "padding");
    if (g.pd[0] < 0 || g.pd[1] < 0) throw ValueError(fn + ": padding must be >= 0");
  }
  g.OH = same ? g.H : (g.H + 2 * g.pd[0] - g.dl[0] * (g.KH - 1) - 1) / g.st[0] + 1;
  g.OW = same ? g.W : (g.W + 2 * g.pd[1] - g.dl[1] * (g.KW - 1) - 1) / g.st[1] + 1;
  if (g.OH <= 0 || g.OW <= 0 || g.H + 2 * g.pd[0] < g.dl[0] * (g.KH - 1) + 1 ||
      g.W + 2 * g.pd[1] < g.dl[1] * (g.KW - 1) + 1)
    throw ValueError(fn + ": the kernel is larger than the padded input " + shape_str(x.shape));
  return g;
}

cu::ConvFold conv_fold(const ConvGeom& g) {
  cu::ConvFold f;
  f.H = g.H; f.W = g.W; f.KH = g.KH; f.KW = g.KW; f.ph = g.pd[0]; f.pw = g.pd[1];
  f.sh = g.st[0]; f.sw = g.st[1]; f.dh = g.dl[0]; f.dw = g.dl[1]; f.OH = g.OH; f.OW = g.OW;
  return f;
}

cu::ConvGemmDims conv_gemm_dims(DType dt, const ConvGeom& g) {
  cu::ConvGemmDims d;
  d.dtype = dt; d.N = g.N; d.C = g.C; d.O = g.O; d.G = g.G; d.KK = g.KH * g.KW; d.P = g.OH * g.OW;
  return d;
}

py::object cu_conv2d(DevArg x_, py::handle w_, py::handle b_, py::handle stride_, py::handle padding_,
                     py::handle dilation_, int64_t groups, py::handle out_) {
  DevTensor x = as_device(x_.h, "x"), w = as_device(w_, "weight"), bias;
  same_dtype(x, "x", w, "weight");
  const ConvGeom cg = conv_geom("conv2d", x, w, stride_, padding_, dilation_, groups);
  const index_t N = cg.N, C = cg.C, H = cg.H, W = cg.W, O = cg.O, KH = cg.KH, KW = cg.KW;
  const index_t OH = cg.OH, OW = cg.OW;
  if (!b_.is_none()) {
    bias = as_device(b_, "bias");
    same_dtype(x, "x", bias, "bias");
    if (bias.shape != std::vector<index_t>{O}) throw ValueError("conv2d: bias " + shape_str(bias.shape) + " must have shape (" + std::to_string(O) + ",)");
  }
  const std::vector<index_t> oshape = cg.out_shape();
  DevTensor out = dev_output_check(out_, x.dtype, oshape, {&x, &w, b_.is_none() ? nullptr : &bias});
  dev_prepare({&x, &w, b_.is_none() ? nullptr : &bias});
  x = dev_contiguous(x);
  w = dev_contiguous(w);
  if (!b_.is_none()) bias = dev_contiguous(bias);
  out = out_or_new(out, x.dtype, oshape);
  const cu::ConvGemmDims d = conv_gemm_dims(x.dtype, cg);
  const cu::ConvFold f = conv_fold(cg);
  if (cu::conv_implicit_ok(d, f)) {  // no columns in memory
    {
      py::gil_scoped_release nogil;
      cu::conv_forward_implicit(d, f, out.ptr, w.ptr, x.ptr, b_.is_none() ? nullptr : bias.ptr);
    }
    return out.owner;
  }
  DevTensor cols = dev_empty(x.dtype, {N, C * KH * KW, OH * OW});
  {
    py::gil_scoped_release nogil;
    cu::im2col(x.dtype, cols.ptr, x.ptr, N, C, H, W, KH, KW, cg.pd[0], cg.pd[1], cg.st[0], cg.st[1], cg.dl[0], cg.dl[1], OH, OW);
    cu::conv_gemm_forward(d, out.ptr, w.ptr, cols.ptr, b_.is_none() ? nullptr : bias.ptr);
  }
  return out.owner;
}

// -> (grad_x, grad_weight, grad_bias): cols = im2col(x); per group dW = sum_n dY_n cols_n^T
// (one GEMM per image, accumulated in order), dcols_n = W^T dY_n (one batched GEMM), dx =
// col2im(dcols), db = channel sums of dY. Deterministic.
py::tuple cu_conv2d_backward(DevArg g_, py::handle x_, py::handle w_, py::handle stride_,
                             py::handle padding_, py::handle dilation_, int64_t groups) {
  DevTensor gy = as_device(g_.h, "grad_out"), x = as_device(x_, "x"), w = as_device(w_, "weight");
  same_dtype(x, "x", w, "weight");
  same_dtype(x, "x", gy, "grad_out");
  const ConvGeom cg = conv_geom("conv2d_backward", x, w, stride_, padding_, dilation_, groups);
  const std::vector<index_t> oshape = cg.out_shape();
  if (gy.shape != oshape)
    throw ValueError("conv2d_backward: grad_out " + shape_str(gy.shape) + " must have the output's shape " + shape_str(oshape));
  dev_prepare({&gy, &x, &w});
  gy = dev_contiguous(gy);
  x = dev_contiguous(x);
  w = dev_contiguous(w);
  const DType dt = x.dtype;
  const index_t N = cg.N, C = cg.C, O = cg.O, KK = cg.KH * cg.KW, P = cg.OH * cg.OW;
  const cu::ConvGemmDims d = conv_gemm_dims(dt, cg);
  const cu::ConvFold f = conv_fold(cg);
  const bool implicit = cu::conv_implicit_ok(d, f);          // dW without the columns of x
  const bool implicit_dx = cu::conv_input_grad_ok(d, f);     // dx without the columns of W^T dy
  DevTensor dx = dev_empty(dt, x.shape), dw = dev_empty(dt, w.shape), db = dev_empty(dt, {O});
  DevTensor cols = implicit ? DevTensor() : dev_empty(dt, {N, C * KK, P});
  DevTensor dcols = implicit_dx ? DevTensor() : dev_empty(dt, {N, C * KK, P});
  {
    py::gil_scoped_release nogil;
    if (implicit) {
      cu::conv_weight_grad_implicit(d, f, dw.ptr, gy.ptr, x.ptr);
    } else {
      cu::im2col(dt, cols.ptr, x.ptr, N, C, cg.H, cg.W, cg.KH, cg.KW, cg.pd[0], cg.pd[1], cg.st[0], cg.st[1],
                 cg.dl[0], cg.dl[1], cg.OH, cg.OW);
      cu::conv_gemm_dweight(d, dw.ptr, gy.ptr, cols.ptr);
    }
    if (implicit_dx) {
      cu::conv_input_grad_implicit(d, f, dx.ptr, w.ptr, gy.ptr, nullptr);
    } else {
      cu::conv_gemm_dcols(d, dcols.ptr, w.ptr, gy.ptr);
      cu::col2im(dt, dx.ptr, dcols.ptr, N, C, cg.H, cg.W, cg.KH, cg.KW, cg.pd[0], cg.pd[1], cg.st[0], cg.st[1],
                 cg.dl[0], cg.dl[1], cg.OH, cg.OW);
    }
    cu::channel_sum(dt, db.ptr, gy.ptr, N, O, P);
  }
  return py::make_tuple(dx.owner, dw.owner, db.owner);
}

// ---- im2col / col2im (F.unfold / F.fold) ----
// The CPU binding's geometry and messages (conv_args.h); the kernels of conv.cu.
// im2col / col2im after their checks: `in` made contiguous, a new output of `shape`, then
// kernel(dtype, out, in, the geometry's sizes) (cu::im2col or cu::col2im).
template <class Kernel>
py::object run_fold(DevTensor in, const std::vector<index_t>& shape, const nnk::ConvGeom& g, Kernel kernel) {
  dev_prepare({&in});
  in = dev_contiguous(in);
  DevTensor out = dev_empty(in.dtype, shape);
  {
    py::gil_scoped_release nogil;
    kernel(in.dtype, out.ptr, in.ptr, g.N, g.C, g.H, g.W, g.kh, g.kw, g.pt, g.pl, g.sh, g.sw, g.dh, g.dw, g.Ho, g.Wo);
  }
  return out.owner;
}

py::object cu_im2col(DevArg x_, py::handle k, py::handle d, py::handle p, py::handle s) {
  const char* op = "im2col";
  DevTensor x = as_device(x_.h, "x");
  if (x.ndim() != 3 && x.ndim() != 4)
    throw ValueError(std::string(op) + ": x must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape " + shape_str(x.shape));
  const bool batched = x.ndim() == 4;
  const int o = batched ? 1 : 0;
  const nnk::ConvGeom g = fold_geom(op, batched ? x.shape[0] : 1, x.shape[size_t(o)], x.shape[size_t(o + 1)],
                                    x.shape[size_t(o + 2)], k, d, p, s);
  return run_fold(x, im2col_shape(g, batched), g, [](auto... a) { cu::im2col(a...); });
}

py::object cu_col2im(DevArg c_, py::handle size, py::handle k, py::handle d, py::handle p, py::handle s) {
  DevTensor c = as_device(c_.h, "cols");
  bool batched;
  const nnk::ConvGeom g = col2im_geom(c.shape, size, k, d, p, s, batched);
  return run_fold(c, batched ? std::vector<index_t>{g.N, g.C, g.H, g.W} : std::vector<index_t>{g.C, g.H, g.W}, g,
                  [](auto... a) { cu::col2im(a...); });
}

// ---- conv_transpose2d, pooling ----
// Checks and messages as the CPU binding (bind_conv.cpp), all before the first CUDA call.

// conv_transpose2d as the conv2d whose backward-data it is (ConvGeom above): that conv's input
// is the transposed op's output (N, C = weight.shape[1] * groups, H, W), its output the
// transposed op's x (N, O = C_in, OH, OW); weight (C_in, C / groups, KH, KW) is that conv's
// weight as it stands. H = (OH - 1) sh - 2 ph + dh (KH - 1) + output_padding_h + 1.
ConvGeom convt_geom(const std::string& op, const DevTensor& x, const DevTensor& w, py::handle stride_,
                    py::handle padding_, py::handle output_padding_, int64_t groups, py::handle dilation_) {
  if (x.ndim() != 3 && x.ndim() != 4)
    throw ValueError(op + ": x must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape " + shape_str(x.shape));
  std::vector<index_t> x4 = x.shape;
  if (x.ndim() == 3) x4.insert(x4.begin(), 1);
  const nnk::ConvGeom t = nnk::bind::convt_geom(op.c_str(), x4, w.shape, stride_, padding_, output_padding_, groups,
                                                dilation_);  // the CPU binding's checks (conv_args.h)
  ConvGeom g;
  g.unbatched = x.ndim() == 3;
  g.N = t.N;
  g.O = t.Cout; g.OH = t.Ho; g.OW = t.Wo;
  g.C = t.C; g.H = t.H; g.W = t.W; g.KH = t.kh; g.KW = t.kw; g.G = t.groups;
  g.st = {t.sh, t.sw}; g.dl = {t.dh, t.dw}; g.pd = {t.pt, t.pl};
  return g;
}
// The transposed op's output shape: (N, C, H, W), or (C, H, W) for an unbatched x.
std::vector<index_t> convt_out_shape(const ConvGeom& g) {
  return g.unbatched ? std::vector<index_t>{g.C, g.H, g.W} : std::vector<index_t>{g.N, g.C, g.H, g.W};
}

// y = col2im(cols) + bias with cols_{n,g} = W_g^T x_{n,g} (conv2d's backward-data); where its
// offsets fit, conv_input_grad_implicit instead (no columns).
py::object cu_conv_transpose2d(DevArg x_, py::handle w_, py::handle b_, py::handle stride_, py::handle padding_,
                               py::handle output_padding_, int64_t groups, py::handle dilation_) {
  const std::string op = "conv_transpose2d";
  DevTensor x = as_device(x_.h, "x"), w = as_device(w_, "weight"), bias;
  same_dtype(x, "x", w, "weight");
  const ConvGeom cg = convt_geom(op, x, w, stride_, padding_, output_padding_, groups, dilation_);
  if (!b_.is_none()) {
    bias = as_device(b_, "bias");
    same_dtype(x, "x", bias, "bias");
    if (bias.shape != std::vector<index_t>{cg.C})
      throw ValueError(op + ": bias " + shape_str(bias.shape) + " must have shape " + shape_str({cg.C}) +
                       " for weight " + shape_str(w.shape) + " and groups=" + std::to_string(groups));
  }
  dev_prepare({&x, &w, b_.is_none() ? nullptr : &bias});
  x = dev_contiguous(x);
  w = dev_contiguous(w);
  if (!b_.is_none()) bias = dev_contiguous(bias);
  const DType dt = x.dtype;
  const cu::ConvGemmDims d = conv_gemm_dims(dt, cg);
  DevTensor out = dev_empty(dt, convt_out_shape(cg));
  const cu::ConvFold f = conv_fold(cg);
  if (cu::conv_input_grad_ok(d, f)) {  // implicit GEMMs (one per phase of the stride), no columns
    {
      py::gil_scoped_release nogil;
      cu::conv_input_grad_implicit(d, f, out.ptr, w.ptr, x.ptr, b_.is_none() ? nullptr : bias.ptr);
    }
    return out.owner;
  }
  DevTensor cols = dev_empty(dt, {cg.N, cg.C * d.KK, d.P});
  {
    py::gil_scoped_release nogil;
    cu::conv_gemm_dcols(d, cols.ptr, w.ptr, x.ptr);
    cu::col2im(dt, out.ptr, cols.ptr, cg.N, cg.C, cg.H, cg.W, cg.KH, cg.KW, cg.pd[0], cg.pd[1], cg.st[0], cg.st[1],
               cg.dl[0], cg.dl[1], cg.OH, cg.OW, b_.is_none() ? nullptr : bias.ptr);
  }
  return out.owner;
}

// -> (grad_x, grad_weight, grad_bias): cols = im2col(grad_out); grad_x = conv2d(grad_out, W)
// (per group W_g cols_g); grad_W_g = sum over images, in order, of x_{n,g} cols_{n,g}^T;
// grad_b = channel sums of grad_out. Deterministic. Under conv_implicit_ok both products
// gather from grad_out instead of forming cols.
py::tuple cu_conv_transpose2d_backward(DevArg g_, py::handle x_, py::handle w_, py::handle stride_,
                                       py::handle padding_, py::handle output_padding_, int64_t groups,
                                       py::handle dilation_) {
  const std::string op = "conv_transpose2d_backward";
  DevTensor gy = as_device(g_.h, "grad_out"), x = as_device(x_, "x"), w = as_device(w_, "weight");
  same_dtype(x, "x", w, "weight");
  same_dtype(x, "x", gy, "grad_out");
  const ConvGeom cg = convt_geom(op, x, w, stride_, padding_, output_padding_, groups, dilation_);
  const std::vector<index_t> yshape = convt_out_shape(cg);
  if (gy.shape != yshape)
    throw ValueError(op + ": grad_out " + shape_str(gy.shape) + " must have shape " + shape_str(yshape));
  dev_prepare({&gy, &x, &w});
  gy = dev_contiguous(gy);
  x = dev_contiguous(x);
  w = dev_contiguous(w);
  const DType dt = x.dtype;
  const cu::ConvGemmDims d = conv_gemm_dims(dt, cg);
  const cu::ConvFold f = conv_fold(cg);
  DevTensor dx = dev_empty(dt, x.shape), dw = dev_empty(dt, w.shape), db = dev_empty(dt, {cg.C});
  if (cu::conv_implicit_ok(d, f)) {  // both products gather from grad_out: no columns
    {
      py::gil_scoped_release nogil;
      cu::conv_forward_implicit(d, f, dx.ptr, w.ptr, gy.ptr, nullptr);
      cu::conv_weight_grad_implicit(d, f, dw.ptr, x.ptr, gy.ptr);
      cu::channel_sum(dt, db.ptr, gy.ptr, cg.N, cg.C, cg.H * cg.W);
    }
    return py::make_tuple(dx.owner, dw.owner, db.owner);
  }
  DevTensor cols = dev_empty(dt, {cg.N, cg.C * d.KK, d.P});
  {
    py::gil_scoped_release nogil;
    cu::im2col(dt, cols.ptr, gy.ptr, cg.N, cg.C, cg.H, cg.W, cg.KH, cg.KW, cg.pd[0], cg.pd[1], cg.st[0], cg.st[1],
               cg.dl[0], cg.dl[1], cg.OH, cg.OW);
    cu::conv_gemm_forward(d, dx.ptr, w.ptr, cols.ptr, nullptr);
    cu::conv_gemm_dweight(d, dw.ptr, x.ptr, cols.ptr);
    cu::channel_sum(dt, db.ptr, gy.ptr, cg.N, cg.C, cg.H * cg.W);
  }
  return py::make_tuple(dx.owner, dw.owner, db.owner);
}

// The kernels' view of the CPU binding's pooling geometry (the same fields).
cu::PoolDims pool_dims(const PoolGeom& p) {
  cu::PoolDims g;
  g.planes = p.planes; g.H = p.H; g.W = p.W; g.Ho = p.Ho; g.Wo = p.Wo;
  g.kh = p.kh; g.kw = p.kw; g.sh = p.sh; g.sw = p.sw; g.ph = p.ph; g.pw = p.pw; g.dh = p.dh; g.dw = p.dw;
  return g;
}

// The (planes, rows, cols) view of a 3-D or 4-D CUDA array, read through its strides.
cu::PlaneView plane_view(const DevTensor& t) {
  const int nd = t.ndim();
  cu::PlaneView v;
  v.p = t.ptr;
  v.C = t.shape[nd - 3];
  v.sn = nd == 4 ? t.strides[0] : 0;
  v.sc = t.strides[nd - 3];
  v.sr = t.strides[nd - 2];
  v.ss = t.strides[nd - 1];
  return v;
}

py::object cu_max_pool2d(DevArg x_, py::handle k_, py::handle s_, py::handle p_, py::handle d_, bool ceil,
                         bool return_indices) {
  DevTensor x = as_device(x_.h, "x");
  const PoolArgs a = pool_args("max_pool2d", x.shape, k_, s_, p_, d_, ceil);
  dev_prepare({&x});
  DevTensor y = dev_empty(x.dtype, a.out_shape), idx;
  if (return_indices) idx = dev_empty_index(a.out_shape);
  {
    py::gil_scoped_release nogil;
    cu::max_pool2d(x.dtype, pool_dims(a.g), y.ptr, return_indices ? static_cast<int64_t*>(idx.ptr) : nullptr, plane_view(x));
  }
  if (return_indices) return py::make_tuple(y.owner, idx.owner);
  return y.owner;
}

// dx = grad_out summed at indices (int32 / int64, flat within each H * W plane). Every index is
// checked to lie in [0, H * W) before dx is written (IndexError otherwise, as the CPU path).
py::object cu_max_pool2d_backward(DevArg g_, py::handle idx_, py::handle shape_) {
  const std::string op = "max_pool2d_backward";
  DevTensor go = as_device(g_.h, "grad_out");
  DevTensor idx = as_device_index(idx_, "indices");
  const std::vector<index_t> xs = shape_arg(shape_, "input_shape", op.c_str());
  const cu::PoolDims g = pool_dims(max_pool_backward_geom(xs, go.shape, idx.shape));
  dev_prepare({&go, &idx});
  go = dev_contiguous(go);
  idx = dev_contiguous(idx);
  index_t bad;
  {
    py::gil_scoped_release nogil;
    bad = cu::first_bad_class(idx.ptr, idx.index_bits, 1, idx.numel(), g.H * g.W);
  }
  if (bad >= 0)
    throw IndexError(op + ": indices hold a value outside [0, H*W) for input_shape " + shape_str(xs));
  DevTensor dx = dev_empty(go.dtype, xs);
  {
    py::gil_scoped_release nogil;
    cu::max_pool2d_backward(go.dtype, g, dx.ptr, go.ptr, idx.ptr, idx.index_bits);
  }
  return dx.owner;
}

py::object cu_avg_pool2d(DevArg x_, py::handle k_, py::handle s_, py::handle p_, bool ceil, bool cip) {
  DevTensor x = as_device(x_.h, "x");
  const PoolArgs a = pool_args("avg_pool2d", x.shape, k_, s_, p_, py::int_(1), ceil);
  dev_prepare({&x});
  DevTensor y = dev_empty(x.dtype, a.out_shape);
  {
    py::gil_scoped_release nogil;
    cu::avg_pool2d(x.dtype, pool_dims(a.g), y.ptr, plane_view(x), cip);
  }
  return y.owner;
}

py::object cu_avg_pool2d_backward(DevArg g_, py::handle shape_, py::handle k_, py::handle s_, py::handle p_,
                                  bool ceil, bool cip) {
  const std::string op = "avg_pool2d_backward";
  DevTensor go = as_device(g_.h, "grad_out");
  const std::vector<index_t> xs = shape_arg(shape_, "input_shape", op.c_str());
  const PoolArgs a = pool_args(op.c_str(), xs, k_, s_, p_, py::int_(1), ceil);
  if (go.shape != a.out_shape)
    throw ValueError(op + ": grad_out " + shape_str(go.shape) + " must have shape " + shape_str(a.out_shape) +
                     " for input_shape " + shape_str(xs));
  dev_prepare({&go});
  DevTensor dx = dev_empty(go.dtype, xs);
  {
    py::gil_scoped_release nogil;
    cu::avg_pool2d_backward(go.dtype, pool_dims(a.g), dx.ptr, plane_view(go), cip);
  }
  return dx.owner;
}

// ---- attention forward ----
// An operand of attention laid out over the broadcast batch: the dims of the batch (with
// GQA's head dim split as (key/value heads, group)), then the operand's last two dims, with
// the operand's strides, 0 where it is broadcast or repeated (`reduced`: its gradient sums
// over those dims). The kernels read it in place through this view (no expanded copy).
struct ExpandedView {
  std::vector<index_t> shape, strides;
  std::vector<bool> reduced;
};

ExpandedView expanded_view(const AttnBatch& ab, const DevTensor& t, bool is_q) {
  ExpandedView e;
  const int nb = int(ab.out.size()), tb = t.ndim() - 2;
  auto add = [&](index_t n, index_t st, bool red) {
    e.shape.push_back(n);
    e.strides.push_back(red ? 0 : st);
    e.reduced.push_back(red);
  };
  for (int d = 0; d < nb; ++d) {
    const int o = d - (nb - tb);
    const index_t own = is_q ? ab.q_size(d) : ab.k_size(d), st = o < 0 ? 0 : t.strides[size_t(o)];
    const index_t group = is_q ? 1 : ab.group[size_t(d)];
    if (group != 1) {  // (group 0: q has no heads on this dim, enable_gqa)
      add(own, st, false);
      add(group, 0, true);
    } else {
      add(ab.out[size_t(d)], st, own == 1 && ab.out[size_t(d)] != 1);
    }
  }
  for (int d = tb; d < t.ndim(); ++d) add(t.shape[size_t(d)], t.strides[size_t(d)], false);
  return e;
}

// The kernels' view of operand t (its device pointer) through its expanded layout.
cu::AttnOperand operand_view(const DevTensor& t, const ExpandedView& e) {
  cu::AttnOperand o;
  o.p = t.ptr;
  o.nb = int(e.shape.size()) - 2;
  for (int d = 0; d < o.nb; ++d) {
    o.bshape[d] = e.shape[size_t(d)];
    o.bstride[d] = e.strides[size_t(d)];
    o.reduced[d] = e.reduced[size_t(d)];
  }
  o.rs = e.strides[size_t(o.nb)];
  o.cs = e.strides[size_t(o.nb) + 1];
  return o;
}

// The checked geometry of an attention call (forward and backward; `fn` names it in errors):
// the CPU path's shape rules (attn_batch: broadcast batch dims, GQA), a bool or float mask
// (q's dtype) broadcastable to (batch..., L, S); head dims over 128 not on CUDA yet.
struct SdpaGeom {
  AttnBatch ab;
  index_t L = 0, S = 0, E = 0, Ev = 0, BH = 1;
  double scale = 1.0;
  std::vector<index_t> out_shape, lse_shape;
  ExpandedView xq, xk, xv;
  DevTensor mask;  // parsed when given (mask.ptr / owner set)
  bool has_mask = false;
  std::vector<index_t> mask_strides;  // per dim of (batch..., L, S), 0 where broadcast
};

// The kernels' view of the (parsed, shape-checked) mask of g.
cu::AttnMaskView mask_view(const SdpaGeom& g) {
  cu::AttnMaskView m;
  if (!g.has_mask) return m;
  m.p = g.mask.ptr;
  m.kind = g.mask.boolean ? cu::AttnMaskView::boolean : cu::AttnMaskView::additive;
  m.nb = int(g.ab.out.size());
  for (int d = 0; d < m.nb; ++d) {
    m.bshape[d] = g.ab.out[size_t(d)];
    m.bstride[d] = g.mask_strides[size_t(d)];
  }
  m.sl = g.mask_strides[size_t(m.nb)];
  m.ss = g.mask_strides[size_t(m.nb) + 1];
  return m;
}

SdpaGeom sdpa_geom(const std::string& fn, const DevTensor& q, const DevTensor& k, const DevTensor& v,
                   py::handle mask, bool causal, py::handle scale_, bool gqa) {
  same_dtype(q, "q", k, "k");
  same_dtype(q, "q", v, "v");
  SdpaGeom g;
  g.ab = attn_batch(q.shape, k.shape, v.shape, gqa);
  if (!mask.is_none() && causal)
    throw ValueError(fn + ": attn_mask and is_causal=True cannot be combined");
  g.L = g.ab.L; g.S = g.ab.S; g.E = g.ab.E; g.Ev = g.ab.Ev;
  g.xq = expanded_view(g.ab, q, true);
  g.xk = expanded_view(g.ab, k, false);
  g.xv = expanded_view(g.ab, v, false);
  if (g.ab.out.size() > 6 || g.xk.shape.size() > 8)
    not_on_cuda(fn + " with more than 6 batch dims (or 5 with GQA)");
  if (!mask.is_none()) {
    g.mask = as_device_mask(mask, "attn_mask");
    if (!g.mask.boolean && g.mask.dtype != q.dtype)
      throw TypeError("attn_mask: float mask dtype " + std::string(dtype_name(g.mask.dtype)) +
                      " does not match q's dtype " + dtype_name(q.dtype));
    std::vector<index_t> full = g.ab.out;
    full.push_back(g.L);
    full.push_back(g.S);
    if (!broadcast_strides(g.mask.shape, g.mask.strides, full, g.mask_strides))
      throw ValueError(fn + ": attn_mask " + shape_str(g.mask.shape) + " does not broadcast to (batch..., L, S) = " +
                       shape_str(full) + " (q " + shape_str(q.shape) + ", k " + shape_str(k.shape) + ")");
    g.has_mask = true;
  }
  g.scale = scale_.is_none() ? 1.0 / std::sqrt(double(g.E)) : scale_.cast<double>();
  for (index_t d : g.ab.out) g.BH *= d;
  cu::check_grid_yz(g.BH, 1, fn.c_str());  // the kernels' grid y (ValueError), before any CUDA call
  g.out_shape = g.lse_shape = g.ab.out;
  g.out_shape.push_back(g.L);
  g.out_shape.push_back(g.Ev);
  g.lse_shape.push_back(g.L);
  return g;
}

// Broadcast batch dims, GQA and any strides: q, k, v are read in place (no copies); in the
// backward, the kernels sum each gradient over the dims its operand is broadcast or repeated
// over, in a fixed order.
py::object cu_sdpa(DevArg q_, py::handle k_, py::handle v_, py::handle mask, bool causal,
                   py::handle scale_, bool gqa, bool return_lse) {
  DevTensor q = as_device(q_.h, "q"), k = as_device(k_, "k"), v = as_device(v_, "v");
  const SdpaGeom sg = sdpa_geom("scaled_dot_product_attention", q, k, v, mask, causal, scale_, gqa);
  dev_prepare({&q, &k, &v, sg.has_mask ? &sg.mask : nullptr});
  const cu::AttnMaskView mv = mask_view(sg);
  DevTensor out = dev_empty(q.dtype, sg.out_shape), lse = dev_empty(q.dtype, sg.lse_shape);
  {
    py::gil_scoped_release nogil;
    cu::flash_attention_forward(q.dtype, out.ptr, lse.ptr, operand_view(q, sg.xq), operand_view(k, sg.xk),
                                operand_view(v, sg.xv), sg.BH, sg.L, sg.S, sg.E, sg.Ev, sg.scale, causal, mv);
  }
  if (return_lse) return py::make_tuple(out.owner, lse.owner);
  return out.owner;
}

// ---- attention backward ----
py::object cu_sdpa_bwd(DevArg g_, py::handle q_, py::handle k_, py::handle v_, py::handle out_,
                       py::handle lse_, py::handle mask, bool causal, py::handle scale_, bool gqa) {
  const std::string fn = "scaled_dot_product_attention_backward";
  DevTensor g = as_device(g_.h, "grad_out"), q = as_device(q_, "q"), k = as_device(k_, "k"),
            v = as_device(v_, "v"), out = as_device(out_, "out"), lse = as_device(lse_, "lse");
  same_dtype(q, "q", g, "grad_out");
  same_dtype(q, "q", out, "out");
  same_dtype(q, "q", lse, "lse");
  const SdpaGeom sg = sdpa_geom(fn, q, k, v, mask, causal, scale_, gqa);
  if (g.shape != sg.out_shape)
    throw ValueError(fn + ": grad_out " + shape_str(g.shape) + " must have the output's shape " + shape_str(sg.out_shape));
  if (out.shape != sg.out_shape)
    throw ValueError(fn + ": out " + shape_str(out.shape) + " must have the output's shape " + shape_str(sg.out_shape));
  if (lse.shape != sg.lse_shape)
    throw ValueError(fn + ": lse " + shape_str(lse.shape) + " must have shape " + shape_str(sg.lse_shape));
  dev_prepare({&g, &q, &k, &v, &out, &lse, sg.has_mask ? &sg.mask : nullptr});
  const cu::AttnMaskView mv = mask_view(sg);
  g = dev_contiguous(g);
  out = dev_contiguous(out);
  lse = dev_contiguous(lse);
  // Each gradient in its operand's shape (contiguous): the own layout the kernels write.
  DevTensor dq = dev_empty(q.dtype, q.shape), dk = dev_empty(q.dtype, k.shape), dv = dev_empty(q.dtype, v.shape);
  {
    py::gil_scoped_release nogil;
    cu::flash_attention_backward(q.dtype, dq.ptr, dk.ptr, dv.ptr, g.ptr, operand_view(q, sg.xq),
                                 operand_view(k, sg.xk), operand_view(v, sg.xv), out.ptr, lse.ptr, sg.BH, sg.L,
                                 sg.S, sg.E, sg.Ev, sg.scale, causal, mv);
  }
  return py::make_tuple(dq.owner, dk.owner, dv.owner);
}

// ---- recurrent layers ----
// The CUDA overloads of rnn_forward / rnn_backward (x is their first array argument that is
// never None); the same checks and results as the CPU bindings (bind_rnn.cpp).
struct CuRnnInputs {
  cu::RnnParams p;
  DevTensor x, h0, c0, w_ih, w_hh, b_ih, b_hh;
  // Unbatched forward (x (I,) for a cell, (T, I) for a sequence): x and the states are read
  // as B = 1; a state given as (H,) (or None) comes back as (H,), one given as (1, H) (a
  // sequence's only) as (1, H), as the CPU path's ops.py does.
  bool unbatched = false, h_1d = false, c_1d = false;
};

// Size-1 dim inserted at `pos` (stride 0): the batch dim of an unbatched input.
void insert_unit_dim(DevTensor& t, size_t pos) {
  t.shape.insert(t.shape.begin() + std::ptrdiff_t(pos), 1);
  t.strides.insert(t.strides.begin() + std::ptrdiff_t(pos), 0);
}

CuRnnInputs cu_rnn_parse(const std::string& op, const std::string& family, py::handle nl, bool cell,
                         py::handle x_, py::handle h0_, py::handle c0_, py::handle w_ih_,
                         py::handle w_hh_, py::handle b_ih_, py::handle b_hh_, bool allow_unbatched = false) {
  cu::RnnFamily kind;
  if (family == "lstm") {
    kind = cu::RnnFamily::lstm;
  } else if (family == "gru") {
    kind = cu::RnnFamily::gru;
  } else if (family == "rnn") {
    const bool str = py::isinstance<py::str>(nl);
    const std::string sv = str ? nl.cast<std::string>() : std::string(py::str(py::repr(nl)));
    if (str && sv == "tanh") kind = cu::RnnFamily::rnn_tanh;
    else if (str && sv == "relu") kind = cu::RnnFamily::rnn_relu;
    else throw ValueError(op + ": unknown nonlinearity '" + sv + "' (expected 'tanh' or 'relu')");
  } else {
    throw ValueError(op + ": unknown recurrent family '" + family + "'");
  }
  const bool lstm = kind == cu::RnnFamily::lstm, gated = lstm || kind == cu::RnnFamily::gru;
  CuRnnInputs in;
  DevTensor& x = in.x;
  x = as_device(x_, "x");
  in.w_ih = as_device(w_ih_, "w_ih");
  in.w_hh = as_device(w_hh_, "w_hh");
  same_dtype(x, "x", in.w_ih, "w_ih");
  same_dtype(x, "x", in.w_hh, "w_hh");
  in.unbatched = allow_unbatched && x.ndim() == (cell ? 1 : 2);
  if (in.unbatched) insert_unit_dim(x, cell ? 0 : 1);
  rank(x, "x", {cell ? 2 : 3});
  rank(in.w_ih, "w_ih", {2});
  rank(in.w_hh, "w_hh", {2});
  const DType dt = x.dtype;
  const index_t G = lstm ? 4 : (gated ? 3 : 1);
  const std::string gs = G == 1 ? "H" : std::to_string(G) + "*H";
  const index_t T = cell ? 1 : x.shape[0];
  const index_t B = x.shape[x.ndim() - 2], I = x.shape[x.ndim() - 1];
  const index_t H = in.w_hh.shape[1], GH = checked_mul(G, H, "hidden size");
  if (in.w_hh.shape[0] != GH)
    throw ValueError(op + ": w_hh " + shape_str(in.w_hh.shape) + " must have shape (" + gs + ", H) = " + shape_str({GH, H}));
  if (in.w_ih.shape[0] != GH || in.w_ih.shape[1] != I)
    throw ValueError(op + ": w_ih " + shape_str(in.w_ih.shape) + " must have shape (" + gs + ", I) = " +
                     shape_str({GH, I}) + " for x " + shape_str(x.shape) + " and w_hh " + shape_str(in.w_hh.shape));
  auto state = [&](py::handle h, const char* name, bool& one_d) {
    DevTensor t;
    one_d = in.unbatched;
    if (h.is_none()) return t;  // zeros, made after the checks
    t = as_device(h, name);
    same_dtype(x, "x", t, name);
    one_d = in.unbatched && (t.ndim() == 1 || cell);
    if (in.unbatched && cell && t.ndim() != 1)
      throw ValueError(op + ": " + name + " " + shape_str(t.shape) + " must have shape (H,) = " + shape_str({H}) +
                       " for an unbatched x " + shape_str({x.shape[1]}));
    if (one_d) insert_unit_dim(t, 0);
    if (t.shape != std::vector<index_t>{B, H})
      throw ValueError(op + ": " + name + " " + shape_str(t.shape) + " must have shape (B, H) = " +
                       shape_str({B, H}) + " for x " + shape_str(x.shape) + " and w_hh " + shape_str(in.w_hh.shape));
    return t;
  };
  auto bias = [&](py::handle b, const char* name) {
    DevTensor t;
    if (b.is_none()) return t;
    t = as_device(b, name);
    same_dtype(x, "x", t, name);
    if (t.shape != std::vector<index_t>{GH})
      throw ValueError(op + ": " + name + " " + shape_str(t.shape) + " must have shape (" + gs + ",) = " +
                       shape_str({GH}) + " for w_hh " + shape_str(in.w_hh.shape));
    return t;
  };
  in.h0 = state(h0_, cell ? "h" : "h0", in.h_1d);
  if (lstm) in.c0 = state(c0_, cell ? "c" : "c0", in.c_1d);
  in.b_ih = bias(b_ih_, "b_ih");
  in.b_hh = bias(b_hh_, "b_hh");
  cu::RnnParams& p = in.p;
  p.dtype = dt;
  p.kind = kind;
  p.T = T; p.B = B; p.I = I; p.H = H;
  return in;
}

// After every check: stream waits, contiguous copies, zero states; fills in.p's pointers.
void cu_rnn_prepare(CuRnnInputs& in, std::initializer_list<const DevTensor*> more) {
  const bool lstm = in.p.kind == cu::RnnFamily::lstm;
  dev_prepare({&in.x, &in.w_ih, &in.w_hh, in.h0.ptr ? &in.h0 : nullptr, in.c0.ptr ? &in.c0 : nullptr,
               in.b_ih.ptr ? &in.b_ih : nullptr, in.b_hh.ptr ? &in.b_hh : nullptr});
  dev_prepare(more);
  const index_t B = in.p.B, H = in.p.H;
  auto state = [&](DevTensor& t) {
    if (t.ptr || (t.owner && t.numel() == 0)) {
      t = dev_contiguous(t);
      return;
    }
    t = dev_empty(in.p.dtype, {B, H});
    cu::fill_zero(t.ptr, size_t(B * H) * size_t(dtype_size(in.p.dtype)));
  };
  in.x = dev_contiguous(in.x);
  state(in.h0);
  if (lstm) state(in.c0);
  if (in.b_ih.ptr) in.b_ih = dev_contiguous(in.b_ih);
  if (in.b_hh.ptr) in.b_hh = dev_contiguous(in.b_hh);
  cu::RnnParams& p = in.p;
  p.x = in.x.ptr; p.h0 = in.h0.ptr; p.c0 = lstm ? in.c0.ptr : nullptr;
  p.w_ih = in.w_ih.ptr; p.rs_wih = in.w_ih.strides[0]; p.cs_wih = in.w_ih.strides[1];
  p.w_hh = in.w_hh.ptr; p.rs_whh = in.w_hh.strides[0]; p.cs_whh = in.w_hh.strides[1];
  p.b_ih = in.b_ih.ptr; p.b_hh = in.b_hh.ptr;
}

py::object cu_or_none(bool have, const DevTensor& t) { return have ? t.owner : py::object(py::none()); }

// -> (out, h_n, c_n or None, gates or None, extra or None); cells: out (B, H) is h_n.
py::tuple cu_rnn_forward(const std::string& op, const std::string& family, py::handle nl, bool cell,
                         DevArg x_, py::handle h0_, py::handle c0_, py::handle w_ih_, py::handle w_hh_,
                         py::handle b_ih_, py::handle b_hh_, bool cache) {
  CuRnnInputs in = cu_rnn_parse(op, family, nl, cell, x_.h, h0_, c0_, w_ih_, w_hh_, b_ih_, b_hh_, true);
  if (in.unbatched && cache)
    throw ValueError(op + ": return_cache=True needs the batched layout (x (T, B, I))");
  cu_rnn_prepare(in, {});
  const cu::RnnParams& p = in.p;
  const DType dt = p.dtype;
  const index_t T = p.T, B = p.B, H = p.H;
  const bool lstm = p.kind == cu::RnnFamily::lstm, gated = lstm || p.kind == cu::RnnFamily::gru;
  const index_t GH = (lstm ? 4 : (gated ? 3 : 1)) * H;
  const bool keep = cache && gated;
  // Unbatched: the same elements as (., 1, H), shaped as the CPU path returns them.
  const std::vector<index_t> hs = in.h_1d ? std::vector<index_t>{H} : std::vector<index_t>{B, H};
  DevTensor out = cell ? dev_empty(dt, hs)
                       : dev_empty(dt, in.unbatched ? std::vector<index_t>{T, H} : std::vector<index_t>{T, B, H});
  DevTensor h_n = cell ? out : dev_empty(dt, hs);
  DevTensor c_n, gates, extra;
  if (lstm) c_n = dev_empty(dt, in.c_1d ? std::vector<index_t>{H} : std::vector<index_t>{B, H});
  if (keep) {
    gates = dev_empty(dt, {T, B, GH});
    extra = dev_empty(dt, {T, B, H});
  }
  {
    py::gil_scoped_release nogil;
    cu::rnn_forward(p, out.ptr, cell ? nullptr : h_n.ptr, lstm ? c_n.ptr : nullptr,
                    keep ? gates.ptr : nullptr, keep ? extra.ptr : nullptr);
  }
  return py::make_tuple(out.owner, h_n.owner, cu_or_none(lstm, c_n), cu_or_none(keep, gates),
                        cu_or_none(keep, extra));
}

// -> (dx, dh0, dc0 or None, dw_ih, dw_hh, db_ih or None, db_hh or None)
py::tuple cu_rnn_backward(const std::string& op, const std::string& family, py::handle nl,
                          py::handle dout_, py::handle dh_n_, py::handle dc_n_, DevArg x_,
                          py::handle h0_, py::handle c0_, py::handle w_ih_, py::handle w_hh_,
                          py::handle out_, py::handle gates_, py::handle extra_, bool want_bias) {
  CuRnnInputs in = cu_rnn_parse(op, family, nl, false, x_.h, h0_, c0_, w_ih_, w_hh_, py::none(), py::none());
  const DType dt = in.p.dtype;
  const index_t T = in.p.T, B = in.p.B, I = in.p.I, H = in.p.H;
  const bool lstm = in.p.kind == cu::RnnFamily::lstm, gated = lstm || in.p.kind == cu::RnnFamily::gru;
  const index_t GH = (lstm ? 4 : (gated ? 3 : 1)) * H;
  auto get = [&](py::handle h, const char* name, const std::vector<index_t>& shape) {
    DevTensor t;
    if (h.is_none()) return t;
    t = as_device(h, name);
    same_dtype(in.x, "x", t, name);
    if (t.shape != shape) throw ValueError(op + ": " + name + " " + shape_str(t.shape) + " must have shape " + shape_str(shape));
    return t;
  };
  if (out_.is_none()) throw ValueError(op + ": output is required");
  DevTensor out = get(out_, "output", {T, B, H});
  DevTensor dout = get(dout_, "grad_output", {T, B, H}), dh_n = get(dh_n_, "grad_h_n", {B, H});
  DevTensor dc_n = lstm ? get(dc_n_, "grad_c_n", {B, H}) : DevTensor();
  DevTensor gates, extra;
  if (gated) {
    if (gates_.is_none() || extra_.is_none())
      throw ValueError(op + ": the forward's cache is required (call the forward with return_cache=True)");
    gates = get(gates_, "cache[0] (gates)", {T, B, GH});
    extra = get(extra_, "cache[1]", {T, B, H});
  }
  auto opt = [](DevTensor& t) { return t.ptr ? &t : nullptr; };
  cu_rnn_prepare(in, {&out, opt(dout), opt(dh_n), opt(dc_n), opt(gates), opt(extra)});
  out = dev_contiguous(out);
  if (dout.ptr) dout = dev_contiguous(dout);
  if (dh_n.ptr) dh_n = dev_contiguous(dh_n);
  if (dc_n.ptr) dc_n = dev_contiguous(dc_n);
  if (gated) {
    gates = dev_contiguous(gates);
    extra = dev_contiguous(extra);
  }
  DevTensor dx = dev_empty(dt, {T, B, I}), dh0 = dev_empty(dt, {B, H}), dc0;
  if (lstm) dc0 = dev_empty(dt, {B, H});
  DevTensor dw_ih = dev_empty(dt, {GH, I}), dw_hh = dev_empty(dt, {GH, H}), db_ih, db_hh;
  if (want_bias) {
    db_ih = dev_empty(dt, {GH});
    db_hh = dev_empty(dt, {GH});
  }
  cu::RnnBackward g;
  g.dx = dx.ptr; g.dh0 = dh0.ptr; g.dc0 = lstm ? dc0.ptr : nullptr;
  g.dw_ih = dw_ih.ptr; g.dw_hh = dw_hh.ptr;
  g.db_ih = want_bias ? db_ih.ptr : nullptr; g.db_hh = want_bias ? db_hh.ptr : nullptr;
  g.dout = dout.ptr; g.dh_n = dh_n.ptr; g.dc_n = dc_n.ptr;
  g.out = out.ptr; g.gates = gates.ptr; g.extra = extra.ptr;
  {
    py::gil_scoped_release nogil;
    cu::rnn_backward(in.p, g);
  }
  return py::make_tuple(dx.owner, dh0.owner, cu_or_none(lstm, dc0), dw_ih.owner, dw_hh.owner,
                        cu_or_none(want_bias, db_ih), cu_or_none(want_bias, db_hh));
}

// ---- embedding, dropout ----
// Checks and messages as bind_attn.cpp. Ids (any shape, int32 / int64) are read in place through
// their strides; an id outside [0, V) -> IndexError naming the first bad position (C order),
// found before any output is allocated or written.
cu::IndexView ids_view(const DevTensor& t) {
  if (t.ndim() > 8) throw ValueError("indices: more than 8 dimensions");
  cu::IndexView v;
  v.p = t.ptr;
  v.bits = t.index_bits;
  v.ndim = t.ndim();
  for (int d = 0; d < t.ndim(); ++d) {
    v.shape[d] = t.shape[d];
    v.strides[d] = t.strides[d];
  }
  return v;
}
void cu_check_ids(const cu::IndexView& ids, index_t V, const char* op) {
  index_t bad;
  long long id = 0;
  {
    py::gil_scoped_release nogil;
    bad = cu::embedding_first_bad(ids, V, &id);
  }
  if (bad >= 0) throw embedding_index_error(op, id, bad, V);
}
// idx.shape + (D,), its byte count checked for int64 overflow (ValueError before any CUDA call).
std::vector<index_t> embedding_out_shape(const DevTensor& idx, index_t D, DType dt) {
  std::vector<index_t> s = idx.shape;
  s.push_back(D);
  index_t bytes = dtype_size(dt);
  for (index_t v : s) bytes = checked_mul(bytes, v, "output");
  return s;
}

py::object cu_embedding(DevArg i_, py::handle w_) {
  DevTensor idx = as_device_index(i_.h, "indices");
  DevTensor w = as_device(w_, "weight");
  rank(w, "weight", {2});
  const index_t V = w.shape[0], D = w.shape[1];
  const std::vector<index_t> os = embedding_out_shape(idx, D, w.dtype);
  const cu::IndexView ids = ids_view(idx);
  dev_prepare({&idx, &w});
  cu_check_ids(ids, V, "embedding");
  DevTensor out = dev_empty(w.dtype, os);
  {
    py::gil_scoped_release nogil;
    cu::embedding_forward(w.dtype, out.ptr, w.ptr, w.strides[0], w.strides[1], ids, D);
  }
  return out.owner;
}

py::object cu_embedding_bwd(DevArg g_, py::handle i_, index_t V) {
  DevTensor idx = as_device_index(i_, "indices");
  DevTensor g = as_device(g_.h, "grad_out");
  check_embedding_backward(V, g.shape, idx.shape);
  const index_t D = g.shape.back();
  checked_mul(checked_mul(V, D, "embedding_backward"), dtype_size(g.dtype), "embedding_backward");
  const cu::IndexView ids = ids_view(idx);
  dev_prepare({&g, &idx});
  cu_check_ids(ids, V, "embedding_backward");
  g = dev_contiguous(g);
  DevTensor dw = dev_empty(g.dtype, {V, D});
  {
    py::gil_scoped_release nogil;
    cu::embedding_backward(g.dtype, dw.ptr, g.ptr, ids, V, D);
  }
  return dw.owner;
}

// (y, mask): mask a bool CUDA array, both bitwise the CPU path's for the same seed.
py::tuple cu_dropout(DevArg x_, double p, uint64_t seed) {
  check_dropout_p(p);
  DevTensor x = as_device(x_.h, "x");
  dev_prepare({&x});
  x = dev_contiguous(x);
  DevTensor y = dev_empty(x.dtype, x.shape), mask = dev_empty_bool(x.shape);
  {
    py::gil_scoped_release nogil;
    cu::dropout(x.dtype, y.ptr, mask.ptr, x.ptr, x.numel(), p, seed);
  }
  return py::make_tuple(y.owner, mask.owner);
}

// The nn layers' device helpers (nnkernels.cuda's private functions): gradient accumulation,
// dropout's backward, and host values copied into an existing device array.
void cu_accumulate_(DevArg y_, py::handle x_) {
  DevTensor y = as_device(y_.h, "y"), x = as_device(x_, "x");
  same_dtype(y, "y", x, "x");
  if (x.shape != y.shape)
    throw ValueError("accumulate: shapes " + shape_str(y.shape) + " and " + shape_str(x.shape) + " differ");
  if (!y.is_contiguous() || y.readonly) throw ValueError("accumulate: y must be writeable and C-contiguous");
  dev_prepare({&y, &x});
  x = dev_contiguous(x);
  py::gil_scoped_release nogil;
  cu::add_inplace(y.dtype, y.ptr, x.ptr, y.numel());
}

py::object cu_dropout_backward(DevArg g_, py::handle mask_, double p) {
  check_dropout_p(p);
  DevTensor g = as_device(g_.h, "grad"), mask = as_device_mask(mask_, "mask");
  if (!mask.boolean) throw TypeError("mask: expected the bool mask of dropout");
  if (mask.shape != g.shape)
    throw ValueError("dropout_backward: mask " + shape_str(mask.shape) + " and grad " + shape_str(g.shape) + " differ");
  dev_prepare({&g, &mask});
  g = dev_contiguous(g);
  mask = dev_contiguous(mask);
  DevTensor dx = dev_empty(g.dtype, g.shape);
  {
    py::gil_scoped_release nogil;
    cu::dropout_backward(g.dtype, dx.ptr, g.ptr, mask.ptr, g.numel(), p);
  }
  return dx.owner;
}

void cu_copy_from_host_(DevArg dst_, py::handle src_) {
  DevTensor dst = as_device(dst_.h, "dst");
  Tensor src = contiguous(as_float(src_, "src"));
  if (src.dtype != dst.dtype)
    throw TypeError(std::string("copy_from_host: src dtype ") + dtype_name(src.dtype) + " is not dst's " +
                    dtype_name(dst.dtype));
  if (src.shape != dst.shape)
    throw ValueError("copy_from_host: shapes " + shape_str(dst.shape) + " and " + shape_str(src.shape) + " differ");
  if (!dst.is_contiguous() || dst.readonly) throw ValueError("copy_from_host: dst must be writeable and C-contiguous");
  dev_prepare({&dst});
  cu::copy_h2d(dst.ptr, src.ptr, size_t(src.numel() * dtype_size(src.dtype)));
}

void bind_cuda_ops(py::module_& m) {
  const auto pre = py::prepend();
  m.def("_cuda_accumulate_", &cu_accumulate_);
  m.def("_cuda_dropout_backward", &cu_dropout_backward);
  m.def("_cuda_copy_from_host_", &cu_copy_from_host_);
  m.def("gemm", &cu_gemm, pre);
  m.def("matmul", &cu_matmul, pre);
  m.def("linear", &cu_linear, pre);
  m.def("linear_backward", &cu_linear_backward, pre);
  m.def("relu", [](DevArg x) { return cu_act(x, cu::Act::relu, 0.0); }, pre);
  m.def("leaky_relu", [](DevArg x, double s) { return cu_act(x, cu::Act::leaky_relu, s); }, pre);
  m.def("sigmoid", [](DevArg x) { return cu_act(x, cu::Act::sigmoid, 0.0); }, pre);
  m.def("tanh", [](DevArg x) { return cu_act(x, cu::Act::tanh, 0.0); }, pre);
  m.def("gelu", [](DevArg x, const std::string& a) { return cu_act(x, gelu_kind(a), 0.0); }, pre);
  m.def("relu_backward", [](DevArg g, py::handle x) { return cu_act_bwd(g, x, "x", cu::Act::relu, 0.0); }, pre);
  m.def("leaky_relu_backward", [](DevArg g, py::handle x, double s) {
    return cu_act_bwd(g, x, "x", cu::Act::leaky_relu, s); }, pre);
  m.def("sigmoid_backward", [](DevArg g, py::handle y) { return cu_act_bwd(g, y, "y", cu::Act::sigmoid, 0.0); }, pre);
  m.def("tanh_backward", [](DevArg g, py::handle y) { return cu_act_bwd(g, y, "y", cu::Act::tanh, 0.0); }, pre);
  m.def("gelu_backward", [](DevArg g, py::handle x, const std::string& a) {
    return cu_act_bwd(g, x, "x", gelu_kind(a), 0.0); }, pre);
  m.def("softmax", [](DevArg x, int64_t axis) { return cu_softmax(x, axis, false); }, pre);
  m.def("log_softmax", [](DevArg x, int64_t axis) { return cu_softmax(x, axis, true); }, pre);
  m.def("softmax_backward", [](DevArg g, py::handle y, int64_t axis) { return cu_softmax_bwd(g, y, axis, false); }, pre);
  m.def("log_softmax_backward", [](DevArg g, py::handle y, int64_t axis) { return cu_softmax_bwd(g, y, axis, true); }, pre);
  m.def("mse_loss", [](DevArg x, py::handle t, py::handle r) { return cu_elem_loss(cu::LossKind::mse, x, t, r); }, pre);
  m.def("mse_loss_backward", [](DevArg x, py::handle t, py::handle r, py::handle g) {
    return cu_elem_loss_bwd(cu::LossKind::mse, x, t, r, g);
  }, pre);
  m.def("binary_cross_entropy_with_logits", [](DevArg x, py::handle t, py::handle r) {
    return cu_elem_loss(cu::LossKind::bce, x, t, r);
  }, pre);
  m.def("binary_cross_entropy_with_logits_backward", [](DevArg x, py::handle t, py::handle r, py::handle g) {
    return cu_elem_loss_bwd(cu::LossKind::bce, x, t, r, g);
  }, pre);
  m.def("cross_entropy", &cu_cross_entropy, py::arg("logits"), py::arg("target"), py::arg("reduction"),
        py::arg("ignore_index") = -100, pre);
  m.def("cross_entropy_backward", &cu_cross_entropy_bwd, py::arg("logits"), py::arg("target"), py::arg("reduction"),
        py::arg("grad_out"), py::arg("ignore_index") = -100, pre);
  m.def("layer_norm", &cu_layer_norm, pre);
  m.def("layer_norm_backward", &cu_layer_norm_bwd, pre);
  m.def("embedding", &cu_embedding, py::arg("indices"), py::arg("weight"), pre);
  m.def("embedding_backward", &cu_embedding_bwd, py::arg("grad_out"), py::arg("indices"),
        py::arg("num_embeddings"), pre);
  m.def("dropout", &cu_dropout, py::arg("x"), py::arg("p"), py::arg("seed"), pre);
  m.def("sgd_step_", &cu_sgd, pre);
  m.def("adam_step_", &cu_adam, pre);
  m.def("conv2d", &cu_conv2d, pre);
  m.def("conv2d_backward", &cu_conv2d_backward, pre);
  m.def("conv_transpose2d", &cu_conv_transpose2d, pre);
  m.def("conv_transpose2d_backward", &cu_conv_transpose2d_backward, pre);
  m.def("im2col", &cu_im2col, pre);
  m.def("col2im", &cu_col2im, pre);
  m.def("max_pool2d", &cu_max_pool2d, pre);
  m.def("max_pool2d_backward", &cu_max_pool2d_backward, pre);
  m.def("avg_pool2d", &cu_avg_pool2d, pre);
  m.def("avg_pool2d_backward", &cu_avg_pool2d_backward, pre);
  m.def("scaled_dot_product_attention", &cu_sdpa, pre);
  m.def("scaled_dot_product_attention_backward", &cu_sdpa_bwd, pre);
  m.def("rnn_forward", &cu_rnn_forward, pre);
  m.def("rnn_backward", &cu_rnn_backward, pre);
}

}  // namespace
#endif  // NNK_WITH_CUDA

void bind_cuda(py::module_& m) {
  bind_cuda_array(m);
  // The TF32 switch for float32 GEMMs (None: only read it). Kept without CUDA too (no effect).
  m.def("cuda_allow_tf32", [](py::handle flag) {
#if defined(NNK_WITH_CUDA)
    if (!flag.is_none()) cu::set_allow_tf32(flag.cast<bool>());
    return cu::allow_tf32();
#else
    static bool on = false;
    if (!flag.is_none()) on = flag.cast<bool>();
    return on;
#endif
  });
#if defined(NNK_WITH_CUDA)
  bind_cuda_ops(m);
  // Internal (tests): the launch-shape arithmetic of launch.h.
  m.def("_cuda_launch", [](const std::string& kind, const std::string& dtype, std::vector<index_t> a) {
    const DType dt = dtype == "float64" ? DType::f64 : DType::f32;
    auto need = [&](size_t n) {
      if (a.size() != n) throw ValueError("_cuda_launch: " + kind + " takes " + std::to_string(n) + " sizes");
    };
    cu::Launch l;
    if (kind == "gemm_tile_rows" || kind == "gemm_tile_cols") {
      need(0);
      return dt == DType::f32 ? gemm_tile_positions<float>(kind == "gemm_tile_rows")
                              : gemm_tile_positions<double>(kind == "gemm_tile_rows");
    }
    if (kind == "batch_stride") {  // a = batch shape then an operand's strides over it
      if (a.size() % 2) throw ValueError("_cuda_launch: batch_stride takes a shape and as many strides");
      const std::vector<index_t> shape(a.begin(), a.begin() + a.size() / 2), st(a.begin() + a.size() / 2, a.end());
      index_t step = 0;
      return single_batch_stride(shape, st, step) ? py::object(py::int_(step)) : py::object(py::none());
    }
    if (kind == "gemm_splits") {  // M, N, K, batch, SMs -> S, depth of each chunk but the last
      need(5);
      const index_t S = cu::gemm_splits(dt, a[0], a[1], a[2], a[3], a[4]);
      return py::object(py::make_tuple(S, S > 1 ? cu::gemm_split_depth(a[2], S) : a[2]));
    }
    if (kind == "rnn_plan") {  // nc, K, B, H, SMs, shared-memory limit -> (U, Rb, Q, Kc, blocks, smem) or None
      need(6);
      cu::RnnTiledPlan pl;
      if (!cu::rnn_tiled_plan(dt, a[0], a[1], a[2], a[3], a[4], size_t(a[5]), pl)) return py::object(py::none());
      return py::object(py::make_tuple(pl.U, pl.Rb, pl.Q, pl.Kc, pl.blocks, pl.smem));
    }
    if (kind == "gemm") { need(3); l = cu::gemm_launch(dt, a[0], a[1], a[2]); }
    else if (kind == "elementwise") { need(1); l = cu::elementwise_launch(a[0]); }
    else if (kind == "rows") { need(1); l = cu::rows_launch(a[0]); }
    else if (kind == "norm") { need(1); l = cu::norm_launch(a[0]); }
    else if (kind == "attention") { need(2); l = cu::attn_launch(dt, a[0], a[1]); }
    else if (kind == "attention_key_tiles") {  // L, S, query tile, causal[, head dim]
      if (a.size() != 5) need(4);
      return py::cast(cu::attn_key_tiles(dt, a[0], a[1], a[2], a[3] != 0, a.size() > 4 ? a[4] : 0));
    } else throw ValueError("_cuda_launch: unknown kind " + kind);
    py::dict d;
    d["grid"] = py::make_tuple(l.grid_x, l.grid_y, l.grid_z);
    d["block"] = l.block;
    return py::object(d);
  });
#endif
}

}  // namespace nnk::bind
