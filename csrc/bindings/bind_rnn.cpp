// Bindings of the rnn family (filled in by its issue's work).
#include "bindings/common.h"

namespace nnk::bind {
void bind_rnn(py::module_& m) {}
}  // namespace nnk::bind
