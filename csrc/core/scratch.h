// A 64-byte aligned per-thread workspace, grown on demand and kept for the thread's life
// (declare it thread_local): kernels that run on the pool reuse it call after call.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <new>

namespace nnk {

struct Scratch {
  void* p = nullptr;
  size_t cap = 0;
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(p); }
  void* get(size_t bytes) {
    if (bytes > cap) {
      std::free(p);
      p = nullptr;
      cap = 0;
      const size_t sz = (bytes + 4095) & ~size_t(4095);
      p = std::aligned_alloc(64, sz);
      if (!p) throw std::bad_alloc();
      cap = sz;
    }
    return p;
  }
};

}  // namespace nnk
