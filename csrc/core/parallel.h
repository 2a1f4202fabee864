// One persistent thread pool with static partitioning.
//
// parallel_run(nchunks, fn) calls fn(chunk) once for every chunk in [0, nchunks); the pool's
// threads (the caller included) claim chunks one at a time until none are left. The split
// of the work into chunks is decided by the caller from get_num_threads() only, and a
// chunk computes the same thing whichever thread runs it, so results are bitwise
// reproducible for a given thread count: when the pool is busy (another Python thread is
// inside a kernel) or the call is nested, the same chunks run one after another on the
// calling thread. Between jobs a worker polls for the next one for a bounded time
// (NNKERNELS_SPIN_US, default 200 us), then sleeps on a condition variable.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/types.h"

namespace nnk {

int get_num_threads();
void set_num_threads(int n);
// The cores this process may run on (sched_getaffinity), at least 1.
int default_num_threads();
// True inside a chunk of parallel_run (on any thread): nested regions run inline, so work
// split for several threads there only adds overhead.
bool in_parallel_region();

namespace detail {
using ChunkFn = void (*)(void* ctx, index_t chunk);
void parallel_run_impl(index_t nchunks, ChunkFn fn, void* ctx);
}  // namespace detail

template <class F>
void parallel_run(index_t nchunks, F&& f) {
  if (nchunks <= 0) return;
  using Fn = std::remove_reference_t<F>;
  auto tramp = [](void* ctx, index_t c) { (*static_cast<Fn*>(ctx))(c); };
  detail::parallel_run_impl(nchunks, tramp, const_cast<void*>(static_cast<const void*>(&f)));
}

// Split [0, n) into at most get_num_threads() contiguous ranges of at least `grain`
// items (one range when n < 2 * grain) and call f(begin, end) for each.
template <class F>
void parallel_for(index_t n, index_t grain, F&& f) {
  if (n <= 0) return;
  index_t T = get_num_threads();
  index_t parts = std::max<index_t>(1, std::min<index_t>(T, n / std::max<index_t>(grain, 1)));
  auto body = [&](index_t c) {
    index_t b = n * c / parts, e = n * (c + 1) / parts;
    f(b, e);
  };
  parallel_run(parts, body);
}

}  // namespace nnk
