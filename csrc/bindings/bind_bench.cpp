// Benchmark probes: peak_flops (the FMA throughput of a kernel set, used by bench/).
#include "bindings/common.h"
#include "core/cpu_features.h"
#include "cpu/bench/peak.h"

namespace nnk::bind {

namespace {

double py_peak_flops(const std::string& dtype, const std::string& isa, int threads,
                     double seconds) {
  DType dt;
  if (dtype == "float32") dt = DType::f32;
  else if (dtype == "float64") dt = DType::f64;
  else throw TypeError("peak_flops: dtype must be 'float32' or 'float64', got '" + dtype + "'");
  Isa which = Isa::generic;
  bool found = false;
  for (Isa i : supported_isas())
    if (isa == isa_name(i)) { which = i; found = true; }
  if (!found) throw ValueError("peak_flops: this CPU cannot run the kernel set '" + isa + "'");
  if (threads < 0) throw ValueError("peak_flops: threads must be >= 0");
  if (!(seconds > 0.0 && seconds <= 60.0))
    throw ValueError("peak_flops: seconds must be in (0, 60]");
  py::gil_scoped_release nogil;
  return peak_flops(dt, which, threads, seconds);
}

}  // namespace

void bind_bench(py::module_& m) {
  m.def("peak_flops", &py_peak_flops, py::arg("dtype"), py::arg("isa"), py::arg("threads") = 0,
        py::arg("seconds") = 0.2,
        "FLOP/s of an FMA throughput loop of kernel set `isa` on `threads` pool threads "
        "(0: the current count) over about `seconds`, all threads together.");
}

}  // namespace nnk::bind
