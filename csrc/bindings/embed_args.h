// Embedding and dropout argument checks shared by the CPU (bind_attn.cpp) and CUDA
// (bind_cuda.cpp) bindings, so both raise the same errors.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "bindings/common.h"

namespace nnk::bind {

// An id outside [0, V) at flat position pos (C order).
inline IndexError embedding_index_error(const char* op, long long id, index_t pos, index_t V) {
  return IndexError(std::string(op) + ": index " + std::to_string(id) + " at flat position " + std::to_string(pos) +
                    " is out of range for num_embeddings " + std::to_string(V));
}

// embedding_backward: num_embeddings >= 0, grad_out of shape indices + (D,).
inline void check_embedding_backward(index_t V, const std::vector<index_t>& grad_out,
                                     const std::vector<index_t>& indices) {
  if (V < 0) throw ValueError("embedding_backward: num_embeddings must be >= 0, got " + std::to_string(V));
  if (grad_out.size() != indices.size() + 1 || !std::equal(indices.begin(), indices.end(), grad_out.begin()))
    throw ValueError("embedding_backward: grad_out " + shape_str(grad_out) + " must have shape indices " +
                     shape_str(indices) + " + (D,)");
}

inline void check_dropout_p(double p) {
  if (!(p >= 0.0 && p <= 1.0)) throw ValueError("dropout: p must be in [0, 1], got " + std::to_string(p));
}

}  // namespace nnk::bind
