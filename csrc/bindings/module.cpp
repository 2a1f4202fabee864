// PYBIND11_MODULE(_C): one bind_<family>(m) call per family.
#include "bindings/common.h"

namespace nnk::bind {
void bind_runtime(py::module_& m);
void bind_gemm(py::module_& m);
void bind_act(py::module_& m);
void bind_loss(py::module_& m);
void bind_bench(py::module_& m);
void bind_conv(py::module_& m);
void bind_rnn(py::module_& m);
void bind_attn(py::module_& m);
void bind_optim(py::module_& m);
void bind_cuda(py::module_& m);
}  // namespace nnk::bind

PYBIND11_MODULE(_C, m) {
  m.doc() = "nnkernels private compiled module (use nnkernels.ops)";
  nnk::bind::register_errors(m);
  nnk::bind::bind_runtime(m);
  nnk::bind::bind_gemm(m);
  nnk::bind::bind_act(m);
  nnk::bind::bind_loss(m);
  nnk::bind::bind_bench(m);
  nnk::bind::bind_conv(m);
  nnk::bind::bind_rnn(m);
  nnk::bind::bind_attn(m);
  nnk::bind::bind_optim(m);
  nnk::bind::bind_cuda(m);  // last: its overloads go in front of the CPU ones
}
