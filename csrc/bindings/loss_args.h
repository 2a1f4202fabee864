// Loss arguments shared by the CPU (bind_loss.cpp) and CUDA (bind_cuda.cpp) bindings.
#pragma once
#include "bindings/common.h"
#include "cpu/loss/loss.h"

namespace nnk::bind {

// "mean" / "sum" / "none"; ValueError naming op otherwise.
Reduction parse_reduction(py::handle h, const char* op);
// grad_out of a reduced loss: None (1), a Python number or a 0-d host array.
double scalar_grad(py::handle h, const char* op, Reduction r);
// mse_loss / bce with logits: input and target of one shape (ValueError naming both).
void check_pair_shapes(const std::vector<index_t>& x, const char* xn, const std::vector<index_t>& y,
                       const char* yn, const char* op);
// cross_entropy: logits (N, C) with target (N,), or (C,) with a 0-d target; returns the
// unreduced loss's shape ((N,) or ()) and sets N, C. ValueError otherwise.
std::vector<index_t> ce_loss_shape(const std::vector<index_t>& logits, const std::vector<index_t>& target,
                                   const char* op, index_t& N, index_t& C);

}  // namespace nnk::bind
