// Where non-temporal (streaming) vector stores into an output can start: shared by the
// kernel sets' elementwise and row kernels (act_kernels.inl, norm_kernels.inl).
#pragma once
#include <algorithm>
#include <cstdint>

#include "core/types.h"

namespace nnk::cpu {

// The number of elements of p before its first `vec_bytes`-aligned one (at most n): the head
// that takes plain stores; -1 when p is not even element-aligned, so never vector-aligned
// (plain stores throughout).
template <typename T>
inline index_t stream_head(const T* p, index_t n, uintptr_t vec_bytes) {
  const uintptr_t mis = reinterpret_cast<uintptr_t>(p) % vec_bytes;
  if (mis % sizeof(T) != 0) return -1;
  return std::min<index_t>(n, index_t((vec_bytes - mis) % vec_bytes / sizeof(T)));
}

}  // namespace nnk::cpu
