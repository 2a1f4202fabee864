// Losses: mse_loss, cross_entropy, binary_cross_entropy_with_logits and their backwards.
// Checks dtypes, shapes, the reduction name and grad_out, makes the inputs C-contiguous,
// allocates the output and calls the drivers of cpu/loss/loss.h without the GIL.
// "mean"/"sum" return Python floats; "none" returns an array of the unreduced shape.
#include <string>

#include "bindings/loss_args.h"

namespace nnk::bind {

Reduction parse_reduction(py::handle h, const char* op) {
  if (py::isinstance<py::str>(h)) {
    const std::string s = h.cast<std::string>();
    if (s == "mean") return Reduction::mean;
    if (s == "sum") return Reduction::sum;
    if (s == "none") return Reduction::none;
    throw ValueError(std::string(op) + ": reduction: unknown reduction '" + s +
                     "' (expected 'none', 'mean' or 'sum')");
  }
  throw ValueError(std::string(op) + ": reduction: expected 'none', 'mean' or 'sum', got " +
                   std::string(py::str(py::repr(h))));
}

// grad_out of a reduced loss: None (1), a Python number or a 0-d array.
double scalar_grad(py::handle h, const char* op, Reduction r) {
  if (h.is_none()) return 1.0;
  py::array a = py::array::ensure(h);
  if (!a) {
    PyErr_Clear();
    throw TypeError(std::string(op) + ": grad_out: expected a number or a 0-d array, got " +
                    std::string(py::str(py::type::of(h).attr("__name__"))));
  }
  const char kind = a.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u')
    throw TypeError(std::string(op) + ": grad_out: expected a real number, got dtype " +
                    std::string(py::str(a.dtype())));
  if (a.ndim() != 0)
    throw ValueError(std::string(op) + ": grad_out must be a scalar (shape ()) for reduction='" +
                     (r == Reduction::mean ? "mean" : "sum") + "', got shape " +
                     shape_str(std::vector<index_t>(a.shape(), a.shape() + a.ndim())));
  return a.attr("item")().cast<double>();
}

void check_pair_shapes(const std::vector<index_t>& x, const char* xn, const std::vector<index_t>& y,
                       const char* yn, const char* op) {
  if (x != y)
    throw ValueError(std::string(op) + ": " + xn + " " + shape_str(x) + " and " + yn + " " +
                     shape_str(y) + " must have the same shape");
}

std::vector<index_t> ce_loss_shape(const std::vector<index_t>& logits, const std::vector<index_t>& target,
                                   const char* op, index_t& N, index_t& C) {
  if (logits.size() != 1 && logits.size() != 2)
    throw ValueError(std::string(op) + ": logits must be 2-D (N, C) or 1-D (C,), got shape " +
                     shape_str(logits));
  const bool batched = logits.size() == 2;
  N = batched ? logits[0] : 1;
  C = logits.back();
  std::vector<index_t> loss = batched ? std::vector<index_t>{N} : std::vector<index_t>{};
  if (target != loss)
    throw ValueError(std::string(op) + ": logits " + shape_str(logits) + " and target " +
                     shape_str(target) + " do not match: target must have shape " + shape_str(loss));
  return loss;
}

namespace {

// grad_out of an unreduced loss: None (ones) or an array of exactly `shape`.
// Returns false (and leaves g alone) for None.
bool array_grad(py::handle h, const char* op, const Tensor& x, const char* xname,
                const std::vector<index_t>& shape, Tensor& g) {
  if (h.is_none()) return false;
  g = as_float(h, "grad_out");
  check_same_dtype(x, xname, g, "grad_out");
  if (g.shape != shape)
    throw ValueError(std::string(op) + ": grad_out " + shape_str(g) +
                     " must have the unreduced loss's shape " + shape_str(shape) +
                     " for reduction='none'");
  g = contiguous(g);
  return true;
}

// (input, target) pair of one float dtype and one shape (mse_loss, bce with logits).
void check_pair(const Tensor& x, const char* xn, const Tensor& y, const char* yn, const char* op) {
  check_same_dtype(x, xn, y, yn);
  check_pair_shapes(x.shape, xn, y.shape, yn, op);
}

// ---- mse_loss / binary_cross_entropy_with_logits ----------------------------------------

enum class Elementwise { mse, bce };

// `oracle`: run the scalar reference kernels of nnk::ref instead (internal, for tests).
template <typename T>
double elementwise_fwd(Elementwise op, bool oracle, T* out, const T* x, const T* y, index_t n,
                       Reduction r) {
  if (op == Elementwise::mse)
    return oracle ? ref::mse_loss_fwd<T>(out, x, y, n, r) : mse_loss_fwd<T>(out, x, y, n, r);
  return oracle ? ref::bce_logits_fwd<T>(out, x, y, n, r) : bce_logits_fwd<T>(out, x, y, n, r);
}
template <typename T>
void elementwise_bwd(Elementwise op, bool oracle, T* gx, const T* x, const T* y, const T* g,
                     double gs, index_t n, Reduction r) {
  if (op == Elementwise::mse)
    (oracle ? ref::mse_loss_bwd<T> : mse_loss_bwd<T>)(gx, x, y, g, gs, n, r);
  else
    (oracle ? ref::bce_logits_bwd<T> : bce_logits_bwd<T>)(gx, x, y, g, gs, n, r);
}

struct ElementwiseNames {
  const char* op;
  const char* bwd;
  const char* x;
};
ElementwiseNames names(Elementwise op) {
  return op == Elementwise::mse
             ? ElementwiseNames{"mse_loss", "mse_loss_backward", "input"}
             : ElementwiseNames{"binary_cross_entropy_with_logits",
                                "binary_cross_entropy_with_logits_backward", "logits"};
}

py::object py_elementwise(Elementwise op, bool oracle, py::handle x_, py::handle y_, py::handle red_) {
  const ElementwiseNames nm = names(op);
  const Reduction r = parse_reduction(red_, nm.op);
  Tensor x = as_float(x_, nm.x);
  Tensor y = as_float(y_, "target");
  check_pair(x, nm.x, y, "target", nm.op);
  x = contiguous(x);
  y = contiguous(y);
  const index_t n = x.numel();
  Tensor out;
  if (r == Reduction::none) out = empty(x.dtype, x.shape);
  double v;
  {
    py::gil_scoped_release nogil;
    if (x.dtype == DType::f32)
      v = elementwise_fwd<float>(op, oracle, out.data<float>(), x.data<float>(), y.data<float>(), n, r);
    else
      v = elementwise_fwd<double>(op, oracle, out.data<double>(), x.data<double>(), y.data<double>(), n, r);
  }
  if (r == Reduction::none) return out.arr;
  return py::float_(v);
}

py::object py_elementwise_bwd(Elementwise op, bool oracle, py::handle x_, py::handle y_, py::handle red_,
                              py::handle go_) {
  const ElementwiseNames nm = names(op);
  const Reduction r = parse_reduction(red_, nm.bwd);
  Tensor x = as_float(x_, nm.x);
  Tensor y = as_float(y_, "target");
  check_pair(x, nm.x, y, "target", nm.bwd);
  Tensor g;
  bool have_g = false;
  double gs = 1.0;
  if (r == Reduction::none) have_g = array_grad(go_, nm.bwd, x, nm.x, x.shape, g);
  else gs = scalar_grad(go_, nm.bwd, r);
  x = contiguous(x);
  y = contiguous(y);
  Tensor gx = empty(x.dtype, x.shape);
  const index_t n = x.numel();
  {
    py::gil_scoped_release nogil;
    if (x.dtype == DType::f32)
      elementwise_bwd<float>(op, oracle, gx.data<float>(), x.data<float>(), y.data<float>(),
                             have_g ? g.data<float>() : nullptr, gs, n, r);
    else
      elementwise_bwd<double>(op, oracle, gx.data<double>(), x.data<double>(), y.data<double>(),
                              have_g ? g.data<double>() : nullptr, gs, n, r);
  }
  return gx.arr;
}

// ---- cross_entropy -------------------------------------------------------------------

// logits (N, C) with target (N,), or unbatched logits (C,) with a 0-d target.
struct CeArgs {
  Tensor x, t;
  index_t N = 0, C = 0;
  bool t64 = false;
  std::vector<index_t> loss_shape;  // (N,) or ()
};

CeArgs ce_args(py::handle x_, py::handle t_, const char* op) {
  CeArgs a;
  a.x = as_float(x_, "logits");
  a.t = as_index(t_, "target");
  a.loss_shape = ce_loss_shape(a.x.shape, a.t.shape, op, a.N, a.C);
  a.t64 = a.t.arr.itemsize() == 8;
  a.x = contiguous(a.x);
  a.t = contiguous(a.t);
  return a;
}

py::object py_cross_entropy(bool oracle, py::handle x_, py::handle t_, py::handle red_, int64_t ignore) {
  const Reduction r = parse_reduction(red_, "cross_entropy");
  CeArgs a = ce_args(x_, t_, "cross_entropy");
  Tensor out;
  if (r == Reduction::none) out = empty(a.x.dtype, a.loss_shape);
  double v;
  {
    py::gil_scoped_release nogil;
    if (a.x.dtype == DType::f32)
      v = (oracle ? ref::cross_entropy_fwd<float> : cross_entropy_fwd<float>)(out.data<float>(), a.x.data<float>(), a.t.ptr, a.t64, a.N, a.C, r, ignore);
    else
      v = (oracle ? ref::cross_entropy_fwd<double> : cross_entropy_fwd<double>)(out.data<double>(), a.x.data<double>(), a.t.ptr, a.t64, a.N, a.C, r, ignore);
  }
  if (r == Reduction::none) return out.arr;
  return py::float_(v);
}

py::object py_cross_entropy_bwd(bool oracle, py::handle x_, py::handle t_, py::handle red_, py::handle go_,
                                int64_t ignore) {
  const char* op = "cross_entropy_backward";
  const Reduction r = parse_reduction(red_, op);
  CeArgs a = ce_args(x_, t_, op);
  Tensor g;
  bool have_g = false;
  double gs = 1.0;
  if (r == Reduction::none) have_g = array_grad(go_, op, a.x, "logits", a.loss_shape, g);
  else gs = scalar_grad(go_, op, r);
  Tensor gx = empty(a.x.dtype, a.x.shape);
  {
    py::gil_scoped_release nogil;
    if (a.x.dtype == DType::f32)
      (oracle ? ref::cross_entropy_bwd<float> : cross_entropy_bwd<float>)(gx.data<float>(), a.x.data<float>(), a.t.ptr, a.t64,
                               have_g ? g.data<float>() : nullptr, gs, a.N, a.C, r, ignore);
    else
      (oracle ? ref::cross_entropy_bwd<double> : cross_entropy_bwd<double>)(gx.data<double>(), a.x.data<double>(), a.t.ptr, a.t64,
                                have_g ? g.data<double>() : nullptr, gs, a.N, a.C, r, ignore);
  }
  return gx.arr;
}

Elementwise parse_elementwise(const std::string& kind) {
  if (kind == "mse") return Elementwise::mse;
  if (kind == "bce") return Elementwise::bce;
  throw ValueError("loss_ref: kind must be 'mse', 'bce' or 'ce', got '" + kind + "'");
}

}  // namespace

void bind_loss(py::module_& m) {
  m.def("mse_loss", [](py::handle x, py::handle y, py::handle r) {
    return py_elementwise(Elementwise::mse, false, x, y, r);
  }, py::arg("input"), py::arg("target"), py::arg("reduction"));
  m.def("mse_loss_backward", [](py::handle x, py::handle y, py::handle r, py::handle g) {
    return py_elementwise_bwd(Elementwise::mse, false, x, y, r, g);
  }, py::arg("input"), py::arg("target"), py::arg("reduction"), py::arg("grad_out"));
  m.def("binary_cross_entropy_with_logits", [](py::handle x, py::handle y, py::handle r) {
    return py_elementwise(Elementwise::bce, false, x, y, r);
  }, py::arg("logits"), py::arg("target"), py::arg("reduction"));
  m.def("binary_cross_entropy_with_logits_backward",
        [](py::handle x, py::handle y, py::handle r, py::handle g) {
          return py_elementwise_bwd(Elementwise::bce, false, x, y, r, g);
        },
        py::arg("logits"), py::arg("target"), py::arg("reduction"), py::arg("grad_out"));
  m.def("cross_entropy", [](py::handle x, py::handle t, py::handle r, int64_t ignore) {
    return py_cross_entropy(false, x, t, r, ignore);
  }, py::arg("logits"), py::arg("target"), py::arg("reduction"), py::arg("ignore_index") = -100);
  m.def("cross_entropy_backward", [](py::handle x, py::handle t, py::handle r, py::handle g, int64_t ignore) {
    return py_cross_entropy_bwd(false, x, t, r, g, ignore);
  }, py::arg("logits"), py::arg("target"), py::arg("reduction"), py::arg("grad_out"), py::arg("ignore_index") = -100);

  // Internal: the scalar reference kernels (the oracle in tests); kind "mse", "bce" or "ce"
  // (ignore_index applies to "ce" only).
  m.def("loss_ref", [](const std::string& kind, py::handle x, py::handle t, py::handle r, int64_t ignore) {
    if (kind == "ce") return py_cross_entropy(true, x, t, r, ignore);
    return py_elementwise(parse_elementwise(kind), true, x, t, r);
  }, py::arg("kind"), py::arg("x"), py::arg("t"), py::arg("reduction"), py::arg("ignore_index") = -100);
  m.def("loss_ref_backward",
        [](const std::string& kind, py::handle x, py::handle t, py::handle r, py::handle g, int64_t ignore) {
          if (kind == "ce") return py_cross_entropy_bwd(true, x, t, r, g, ignore);
          return py_elementwise_bwd(parse_elementwise(kind), true, x, t, r, g);
        },
        py::arg("kind"), py::arg("x"), py::arg("t"), py::arg("reduction"), py::arg("grad_out"),
        py::arg("ignore_index") = -100);
}

}  // namespace nnk::bind
