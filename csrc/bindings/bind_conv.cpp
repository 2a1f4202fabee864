// Bindings of the conv family (filled in by its issue's work).
#include "bindings/common.h"

namespace nnk::bind {
void bind_conv(py::module_& m) {}
}  // namespace nnk::bind
