// Benchmark probes (filled in by the bench work).
#include "bindings/common.h"

namespace nnk::bind {
void bind_bench(py::module_& m) {}
}  // namespace nnk::bind
