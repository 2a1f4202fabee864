// Activations and softmax: relu, leaky_relu, sigmoid, tanh, gelu, softmax, log_softmax and
// their backwards (+ the scalar references, for tests). Inputs of any strides are made
// C-contiguous; outputs are new C-contiguous arrays of the input's shape and dtype.
#include <string>

#include "bindings/common.h"
#include "core/cpu_features.h"
#include "cpu/act/act.h"

namespace nnk::bind {

namespace {

Act parse_gelu(const std::string& op, const std::string& approximate) {
  if (approximate == "none") return Act::gelu;
  if (approximate == "tanh") return Act::gelu_tanh;
  throw ValueError(op + ": approximate must be 'none' or 'tanh', got '" + approximate + "'");
}

Act parse_act(const std::string& name) {
  if (name == "relu") return Act::relu;
  if (name == "leaky_relu") return Act::leaky_relu;
  if (name == "sigmoid") return Act::sigmoid;
  if (name == "tanh") return Act::tanh;
  if (name == "gelu") return Act::gelu;
  if (name == "gelu_tanh") return Act::gelu_tanh;
  throw ValueError("unknown activation '" + name + "'");
}

void check_same_shape(const std::string& op, const Tensor& a, const char* an, const Tensor& b,
                      const char* bn) {
  if (a.shape != b.shape)
    throw ValueError(op + ": " + an + " " + shape_str(a) + " and " + bn + " " + shape_str(b) +
                     " must have the same shape");
}

py::object act_fwd(py::handle x_, Act act, double param, bool use_ref) {
  Tensor x = contiguous(as_float(x_, "x"));
  Tensor y = empty(x.dtype, x.shape);
  const index_t n = x.numel();
  const Isa isa = current_isa();
  {
    py::gil_scoped_release nogil;
    if (x.dtype == DType::f32) {
      if (use_ref) ref::act_forward<float>(y.data<float>(), x.data<float>(), n, act, float(param));
      else act_forward<float>(isa, y.data<float>(), x.data<float>(), n, act, float(param));
    } else {
      if (use_ref) ref::act_forward<double>(y.data<double>(), x.data<double>(), n, act, param);
      else act_forward<double>(isa, y.data<double>(), x.data<double>(), n, act, param);
    }
  }
  return y.arr;
}

// v is x or the forward output y, named `vname`.
py::object act_bwd(const std::string& op, py::handle g_, py::handle v_, const char* vname, Act act,
                   double param, bool use_ref) {
  Tensor g = as_float(g_, "grad");
  Tensor v = as_float(v_, vname);
  check_same_dtype(g, "grad", v, vname);
  check_same_shape(op, g, "grad", v, vname);
  g = contiguous(g);
  v = contiguous(v);
  Tensor dx = empty(g.dtype, g.shape);
  const index_t n = g.numel();
  const Isa isa = current_isa();
  {
    py::gil_scoped_release nogil;
    if (g.dtype == DType::f32) {
      if (use_ref) ref::act_backward<float>(dx.data<float>(), g.data<float>(), v.data<float>(), n, act, float(param));
      else act_backward<float>(isa, dx.data<float>(), g.data<float>(), v.data<float>(), n, act, float(param));
    } else {
      if (use_ref) ref::act_backward<double>(dx.data<double>(), g.data<double>(), v.data<double>(), n, act, param);
      else act_backward<double>(isa, dx.data<double>(), g.data<double>(), v.data<double>(), n, act, param);
    }
  }
  return dx.arr;
}

// (outer, D, inner) of t along `axis` (a 0-d array is one element along axis 0 or -1).
void split_axis(const std::string& op, const Tensor& t, int64_t axis, index_t& outer, index_t& D,
                index_t& inner) {
  const int nd = t.ndim();
  const int64_t r = nd == 0 ? 1 : nd;
  if (axis < -r || axis >= r)
    throw ValueError(op + ": axis " + std::to_string(axis) + " is out of range for an input of shape " +
                     shape_str(t));
  const int a = int(axis < 0 ? axis + r : axis);
  outer = 1; D = 1; inner = 1;
  for (int d = 0; d < nd; ++d) {
    if (d < a) outer *= t.shape[d];
    else if (d == a) D = t.shape[d];
    else inner *= t.shape[d];
  }
}

py::object softmax_fwd(const std::string& op, py::handle x_, int64_t axis, bool log, bool use_ref) {
  Tensor x = as_float(x_, "x");
  index_t outer, D, inner;
  split_axis(op, x, axis, outer, D, inner);
  x = contiguous(x);
  Tensor y = empty(x.dtype, x.shape);
  const Isa isa = current_isa();
  {
    py::gil_scoped_release nogil;
    if (x.dtype == DType::f32) {
      if (use_ref) ref::softmax_forward<float>(y.data<float>(), x.data<float>(), outer, D, inner, log);
      else softmax_forward<float>(isa, y.data<float>(), x.data<float>(), outer, D, inner, log);
    } else {
      if (use_ref) ref::softmax_forward<double>(y.data<double>(), x.data<double>(), outer, D, inner, log);
      else softmax_forward<double>(isa, y.data<double>(), x.data<double>(), outer, D, inner, log);
    }
  }
  return y.arr;
}

py::object softmax_bwd(const std::string& op, py::handle g_, py::handle y_, int64_t axis, bool log,
                       bool use_ref) {
  Tensor g = as_float(g_, "grad");
  Tensor y = as_float(y_, "y");
  check_same_dtype(g, "grad", y, "y");
  check_same_shape(op, g, "grad", y, "y");
  index_t outer, D, inner;
  split_axis(op, y, axis, outer, D, inner);
  g = contiguous(g);
  y = contiguous(y);
  Tensor dx = empty(g.dtype, g.shape);
  const Isa isa = current_isa();
  {
    py::gil_scoped_release nogil;
    if (g.dtype == DType::f32) {
      if (use_ref) ref::softmax_backward<float>(dx.data<float>(), g.data<float>(), y.data<float>(), outer, D, inner, log);
      else softmax_backward<float>(isa, dx.data<float>(), g.data<float>(), y.data<float>(), outer, D, inner, log);
    } else {
      if (use_ref) ref::softmax_backward<double>(dx.data<double>(), g.data<double>(), y.data<double>(), outer, D, inner, log);
      else softmax_backward<double>(isa, dx.data<double>(), g.data<double>(), y.data<double>(), outer, D, inner, log);
    }
  }
  return dx.arr;
}

}  // namespace

void bind_act(py::module_& m) {
  m.def("relu", [](py::handle x) { return act_fwd(x, Act::relu, 0.0, false); }, py::arg("x"));
  m.def("leaky_relu", [](py::handle x, double slope) { return act_fwd(x, Act::leaky_relu, slope, false); },
        py::arg("x"), py::arg("negative_slope"));
  m.def("sigmoid", [](py::handle x) { return act_fwd(x, Act::sigmoid, 0.0, false); }, py::arg("x"));
  m.def("tanh", [](py::handle x) { return act_fwd(x, Act::tanh, 0.0, false); }, py::arg("x"));
  m.def("gelu", [](py::handle x, const std::string& approximate) {
    return act_fwd(x, parse_gelu("gelu", approximate), 0.0, false);
  }, py::arg("x"), py::arg("approximate"));

  m.def("relu_backward", [](py::handle g, py::handle x) {
    return act_bwd("relu_backward", g, x, "x", Act::relu, 0.0, false);
  }, py::arg("grad"), py::arg("x"));
  m.def("leaky_relu_backward", [](py::handle g, py::handle x, double slope) {
    return act_bwd("leaky_relu_backward", g, x, "x", Act::leaky_relu, slope, false);
  }, py::arg("grad"), py::arg("x"), py::arg("negative_slope"));
  m.def("sigmoid_backward", [](py::handle g, py::handle y) {
    return act_bwd("sigmoid_backward", g, y, "y", Act::sigmoid, 0.0, false);
  }, py::arg("grad"), py::arg("y"));
  m.def("tanh_backward", [](py::handle g, py::handle y) {
    return act_bwd("tanh_backward", g, y, "y", Act::tanh, 0.0, false);
  }, py::arg("grad"), py::arg("y"));
  m.def("gelu_backward", [](py::handle g, py::handle x, const std::string& approximate) {
    return act_bwd("gelu_backward", g, x, "x", parse_gelu("gelu_backward", approximate), 0.0, false);
  }, py::arg("grad"), py::arg("x"), py::arg("approximate"));

  m.def("softmax", [](py::handle x, int64_t axis) { return softmax_fwd("softmax", x, axis, false, false); },
        py::arg("x"), py::arg("axis"));
  m.def("log_softmax", [](py::handle x, int64_t axis) { return softmax_fwd("log_softmax", x, axis, true, false); },
        py::arg("x"), py::arg("axis"));
  m.def("softmax_backward", [](py::handle g, py::handle y, int64_t axis) {
    return softmax_bwd("softmax_backward", g, y, axis, false, false);
  }, py::arg("grad"), py::arg("y"), py::arg("axis"));
  m.def("log_softmax_backward", [](py::handle g, py::handle y, int64_t axis) {
    return softmax_bwd("log_softmax_backward", g, y, axis, true, false);
  }, py::arg("grad"), py::arg("y"), py::arg("axis"));

  // Scalar references (nnk::ref), for tests: act is an activation name ("relu", "leaky_relu",
  // "sigmoid", "tanh", "gelu", "gelu_tanh"); v is x or y as for the public backward.
  m.def("act_ref", [](py::handle x, const std::string& act, double param) {
    return act_fwd(x, parse_act(act), param, true);
  }, py::arg("x"), py::arg("act"), py::arg("param"));
  m.def("act_backward_ref", [](py::handle g, py::handle v, const std::string& act, double param) {
    return act_bwd("act_backward_ref", g, v, "v", parse_act(act), param, true);
  }, py::arg("grad"), py::arg("v"), py::arg("act"), py::arg("param"));
  m.def("softmax_ref", [](py::handle x, int64_t axis, bool log) {
    return softmax_fwd("softmax_ref", x, axis, log, true);
  }, py::arg("x"), py::arg("axis"), py::arg("log"));
  m.def("softmax_backward_ref", [](py::handle g, py::handle y, int64_t axis, bool log) {
    return softmax_bwd("softmax_backward_ref", g, y, axis, log, true);
  }, py::arg("grad"), py::arg("y"), py::arg("axis"), py::arg("log"));
}

}  // namespace nnk::bind
