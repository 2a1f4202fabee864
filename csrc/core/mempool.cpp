#include "core/mempool.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace nnk {

namespace {

constexpr size_t kHuge = size_t(2) << 20;

struct Pool {
  std::mutex m;
  std::unordered_map<void*, size_t> live;   // pooled block -> capacity
  std::multimap<size_t, void*> free_blocks; // capacity -> block
  size_t cached = 0;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: arrays may die after static teardown
  return *p;
}

#if defined(NNK_SANITIZE)
constexpr bool kEnabled = false;
#else
constexpr bool kEnabled = true;
#endif

}  // namespace

void* pool_alloc(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (!kEnabled || bytes < kPoolMinBytes) {
    void* p = std::aligned_alloc(64, (bytes + 63) & ~size_t(63));
    if (!p) throw std::bad_alloc();
    return p;
  }
  if (bytes > (size_t(1) << 62)) throw std::bad_alloc();
  const size_t cap = (bytes + kHuge - 1) & ~(kHuge - 1);
  Pool& P = pool();
  {
    std::lock_guard<std::mutex> lk(P.m);
    auto it = P.free_blocks.lower_bound(cap);
    if (it != P.free_blocks.end() && it->first <= cap + cap / 4) {
      void* p = it->second;
      P.cached -= it->first;
      P.live.emplace(p, it->first);
      P.free_blocks.erase(it);
      return p;
    }
  }
  void* p = std::aligned_alloc(kHuge, cap);
  if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(p, cap, MADV_HUGEPAGE);
#endif
  std::lock_guard<std::mutex> lk(P.m);
  P.live.emplace(p, cap);
  return p;
}

void pool_free(void* p) {
  if (!p) return;
  if (kEnabled) {
    Pool& P = pool();
    std::lock_guard<std::mutex> lk(P.m);
    auto it = P.live.find(p);
    if (it != P.live.end()) {
      const size_t cap = it->second;
      P.live.erase(it);
      if (P.cached + cap <= kPoolMaxCachedBytes) {
        P.free_blocks.emplace(cap, p);
        P.cached += cap;
        return;
      }
    }
  }
  std::free(p);
}

}  // namespace nnk
