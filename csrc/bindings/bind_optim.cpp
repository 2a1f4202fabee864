// sgd_step_, adam_step_: fused in-place optimizer steps.
#include "bindings/common.h"
#include "cpu/optim/optim.h"

namespace nnk::bind {

namespace {

// A state array updated in place: writeable, C-contiguous, param's dtype and shape.
Tensor inplace(py::handle h, const char* name, const Tensor* like) {
  if (!py::isinstance<py::array>(h))
    throw TypeError(std::string(name) + ": expected a numpy array (updated in place), got " +
                    std::string(py::str(py::type::of(h).attr("__name__"))));
  Tensor t = as_float(h, name);
  if (like) {
    check_same_dtype(*like, "param", t, name);
    if (t.shape != like->shape)
      throw ValueError(std::string(name) + ": shape " + shape_str(t) + " does not match param's " +
                       shape_str(*like));
  }
  if (!t.is_contiguous()) throw ValueError(std::string(name) + ": must be C-contiguous (updated in place)");
  if (!t.arr.writeable()) throw ValueError(std::string(name) + ": is read-only");
  return t;
}

void check_disjoint(std::initializer_list<std::pair<const Tensor*, const char*>> ts) {
  for (auto a = ts.begin(); a != ts.end(); ++a) {
    for (auto b = a + 1; b != ts.end(); ++b) {
      if (!a->first->arr || !b->first->arr) continue;
      if (overlaps(*a->first, *b->first))
        throw ValueError(std::string(a->second) + " and " + b->second + " overlap in memory");
    }
  }
}

void py_sgd(py::handle p_, py::handle g_, py::handle buf_, double lr, double momentum,
            double dampening, double weight_decay, bool nesterov, index_t step) {
  Tensor p = inplace(p_, "param", nullptr);
  Tensor g = contiguous(as_float(g_, "grad"));
  check_same_dtype(p, "param", g, "grad");
  if (g.shape != p.shape)
    throw ValueError("sgd_step_: grad " + shape_str(g) + " does not match param " + shape_str(p));
  if (step < 1) throw ValueError("sgd_step_: step must be >= 1, got " + std::to_string(step));
  if (nesterov && (momentum <= 0.0 || dampening != 0.0))
    throw ValueError("sgd_step_: nesterov needs momentum > 0 and dampening == 0");
  Tensor buf;
  if (momentum != 0.0) {
    if (buf_.is_none()) throw ValueError("sgd_step_: momentum_buffer is required when momentum != 0");
    buf = inplace(buf_, "momentum_buffer", &p);
  }
  check_disjoint({{&p, "param"}, {&g, "grad"}, {&buf, "momentum_buffer"}});
  SgdParams hp{lr, momentum, dampening, weight_decay, nesterov, step};
  const index_t n = p.numel();
  py::gil_scoped_release nogil;
  if (p.dtype == DType::f32) sgd_step(p.data<float>(), buf.arr ? buf.data<float>() : nullptr, g.data<float>(), n, hp);
  else sgd_step(p.data<double>(), buf.arr ? buf.data<double>() : nullptr, g.data<double>(), n, hp);
}

void py_adam(py::handle p_, py::handle g_, py::handle m_, py::handle v_, index_t step, double lr,
             double beta1, double beta2, double eps, double weight_decay, bool decoupled) {
  Tensor p = inplace(p_, "param", nullptr);
  Tensor g = contiguous(as_float(g_, "grad"));
  check_same_dtype(p, "param", g, "grad");
  if (g.shape != p.shape)
    throw ValueError("adam_step_: grad " + shape_str(g) + " does not match param " + shape_str(p));
  Tensor m = inplace(m_, "exp_avg", &p);
  Tensor v = inplace(v_, "exp_avg_sq", &p);
  if (step < 1) throw ValueError("adam_step_: step must be >= 1, got " + std::to_string(step));
  check_disjoint({{&p, "param"}, {&g, "grad"}, {&m, "exp_avg"}, {&v, "exp_avg_sq"}});
  AdamParams hp{lr, beta1, beta2, eps, weight_decay, decoupled, step};
  const index_t n = p.numel();
  py::gil_scoped_release nogil;
  if (p.dtype == DType::f32) adam_step(p.data<float>(), m.data<float>(), v.data<float>(), g.data<float>(), n, hp);
  else adam_step(p.data<double>(), m.data<double>(), v.data<double>(), g.data<double>(), n, hp);
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def("sgd_step_", &py_sgd, py::arg("param"), py::arg("grad"), py::arg("momentum_buffer"),
        py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"),
        py::arg("nesterov"), py::arg("step"));
  m.def("adam_step_", &py_adam, py::arg("param"), py::arg("grad"), py::arg("exp_avg"),
        py::arg("exp_avg_sq"), py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"),
        py::arg("eps"), py::arg("weight_decay"), py::arg("decoupled"));
}

}  // namespace nnk::bind
