// Runtime: version, kernel sets, threads, denormals, CUDA report.
#include "bindings/common.h"
#include "core/cpu_features.h"
#include "core/cuda_info.h"
#include "core/parallel.h"

namespace nnk::bind {

void bind_runtime(py::module_& m) {
  m.attr("__version__") = NNK_VERSION;
  m.def("isas", [] {
    std::vector<std::string> v;
    for (Isa i : supported_isas()) v.emplace_back(isa_name(i));
    return v;
  });
  m.def("current_isa", [] { return std::string(isa_name(current_isa())); });
  // Private (tests): the last-level cache size the kernels assume; n > 0 sets an override,
  // n == 0 clears it; returns the size in effect.
  m.def("_llc_bytes", [](long long n) {
    if (n >= 0) set_last_level_cache_bytes(n);
    return last_level_cache_bytes();
  }, py::arg("n") = -1);
  m.def("set_isa", [](const std::string& name) { return nnk::set_isa(name); });
  m.def("get_num_threads", &nnk::get_num_threads);
  m.def("default_num_threads", &nnk::default_num_threads);
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw ValueError("set_num_threads: n must be >= 1, got " + std::to_string(n));
    py::gil_scoped_release nogil;
    nnk::set_num_threads(n);
  });
  m.def("set_flush_denormal", [](bool on) {
    nnk::set_flush_denormal(on);
    return flush_denormal_supported();
  });
  m.def("cuda_info", [] {
    py::dict d;
    auto names = cuda_device_names();
    d["built"] = cuda_built();
    d["available"] = !names.empty();
    d["devices"] = names;
    return d;
  });
}

}  // namespace nnk::bind
