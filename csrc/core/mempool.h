// A caching pool for large output and workspace blocks.
//
// The first touch of a fresh 4 KiB page costs ~1.5 us on these machines, so a large output
// allocated anew on every call can cost more than the kernel. Blocks of at least
// kPoolMinBytes are served from a cache of earlier blocks (size classes of 2 MiB, reused
// when at most 25% larger than asked), allocated 2 MiB-aligned with transparent huge pages
// requested (madvise), and handed back by pool_free when their owner dies. At most
// kPoolMaxCachedBytes stay cached; beyond that blocks go back to the system. Smaller
// requests use plain malloc. Thread-safe. Disabled in sanitizer builds so ASan sees every
// use after free.
#pragma once
#include <algorithm>
#include <cstddef>
#include <memory>

#include "core/errors.h"
#include "core/types.h"

namespace nnk {

constexpr size_t kPoolMinBytes = size_t(1) << 20;         // 1 MiB
constexpr size_t kPoolMaxCachedBytes = size_t(1) << 30;   // 1 GiB kept for reuse at most

// 64-byte aligned (2 MiB-aligned for pooled blocks); throws std::bad_alloc.
void* pool_alloc(size_t bytes);
void pool_free(void* p);

// An owning, uninitialised block of n (at least 1) elements of T from the pool; the byte
// count is overflow-checked (`what` names the buffer in the error).
struct PoolDelete { void operator()(void* p) const { pool_free(p); } };
template <typename T>
using PoolBuffer = std::unique_ptr<T, PoolDelete>;
template <typename T>
PoolBuffer<T> pool_buffer(index_t n, const char* what) {
  const size_t bytes = size_t(checked_mul(std::max<index_t>(n, 1), index_t(sizeof(T)), what));
  return PoolBuffer<T>(static_cast<T*>(pool_alloc(bytes)));
}

}  // namespace nnk
