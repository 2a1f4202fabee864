// Losses (filled in by the elementwise work).
#include "bindings/common.h"

namespace nnk::bind {
void bind_loss(py::module_& m) {}
}  // namespace nnk::bind
