// Activations and softmax (filled in by the elementwise work).
#include "bindings/common.h"

namespace nnk::bind {
void bind_act(py::module_& m) {}
}  // namespace nnk::bind
