// Bindings of the attn family (filled in by its issue's work).
#include "bindings/common.h"

namespace nnk::bind {
void bind_attn(py::module_& m) {}
}  // namespace nnk::bind
