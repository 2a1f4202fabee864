// Loss arguments shared by the CPU (bind_loss.cpp) and CUDA (bind_cuda.cpp) bindings.
#pragma once
#include "bindings/common.h"
#include "cpu/loss/loss.h"

namespace nnk::bind {

// "mean" / "sum" / "none"; ValueError naming op otherwise.
Reduction parse_reduction(py::handle h, const char* op);
// grad_out of a reduced loss: None (1), a Python number or a 0-d host array.
double scalar_grad(py::handle h, const char* op, Reduction r);

}  // namespace nnk::bind
