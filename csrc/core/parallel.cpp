#include "core/parallel.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif
#if defined(NNK_X86)
#include <immintrin.h>
#endif

#include "core/cpu_features.h"

namespace nnk {

namespace {

// Sets FTZ/DAZ for the scope when set_flush_denormal(true) is in force.
struct DenormalGuard {
  bool active = false;
#if defined(NNK_X86)
  unsigned int saved = 0;
  DenormalGuard() {
    if (flush_denormal_enabled()) {
      saved = _mm_getcsr();
      _mm_setcsr(saved | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
      active = true;
    }
  }
  ~DenormalGuard() { if (active) _mm_setcsr(saved); }
#elif defined(NNK_ARM64)
  uint64_t saved = 0;
  DenormalGuard() {
    if (flush_denormal_enabled()) {
      asm volatile("mrs %0, fpcr" : "=r"(saved));
      uint64_t v = saved | (uint64_t(1) << 24);  // FZ
      asm volatile("msr fpcr, %0" : : "r"(v));
      active = true;
    }
  }
  ~DenormalGuard() { if (active) asm volatile("msr fpcr, %0" : : "r"(saved)); }
#endif
};

thread_local bool t_in_region = false;

void run_chunks_inline(index_t nchunks, detail::ChunkFn fn, void* ctx) {
  DenormalGuard g;
  bool was = t_in_region;
  t_in_region = true;
  for (index_t c = 0; c < nchunks; ++c) fn(ctx, c);
  t_in_region = was;
}

class Pool {
 public:
  explicit Pool(int nthreads) : nthreads_(nthreads) {
    for (int w = 1; w < nthreads_; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_start_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return nthreads_; }

  // Caller holds busy_.
  void run(index_t nchunks, detail::ChunkFn fn, void* ctx) {
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = fn;
      ctx_ = ctx;
      nchunks_ = nchunks;
      pending_ = nthreads_ - 1;
      ++generation_;
    }
    cv_start_.notify_all();
    run_share(0);
    std::unique_lock<std::mutex> lk(m_);
    cv_done_.wait(lk, [this] { return pending_ == 0; });
  }

  std::mutex busy_;

 private:
  void run_share(int w) {
    DenormalGuard g;
    t_in_region = true;
    for (index_t c = w; c < nchunks_; c += nthreads_) fn_(ctx_, c);
    t_in_region = false;
  }
  void worker_loop(int w) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_start_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      run_share(w);
      bool last;
      {
        std::lock_guard<std::mutex> lk(m_);
        last = (--pending_ == 0);
      }
      if (last) cv_done_.notify_one();
    }
  }

  int nthreads_;
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable cv_start_, cv_done_;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  detail::ChunkFn fn_ = nullptr;
  void* ctx_ = nullptr;
  index_t nchunks_ = 0;
};

std::mutex g_pool_mutex;       // guards g_pool and g_nthreads
Pool* g_pool = nullptr;        // created lazily; replaced by set_num_threads
std::atomic<int> g_nthreads{0};

#if defined(__linux__)
void after_fork_child() {
  // The workers do not exist in the child: forget the pool (leaked on purpose; its
  // threads cannot be joined) and build a new one on first use.
  g_pool = nullptr;
  new (&g_pool_mutex) std::mutex();
}
#endif

}  // namespace

int default_num_threads() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

int get_num_threads() {
  int n = g_nthreads.load(std::memory_order_relaxed);
  if (n > 0) return n;
  int d = default_num_threads();
  int expected = 0;
  g_nthreads.compare_exchange_strong(expected, d);
  return g_nthreads.load();
}

void set_num_threads(int n) {
  if (n < 1) n = 1;
  std::lock_guard<std::mutex> lk(g_pool_mutex);
  Pool* old = g_pool;
  g_pool = nullptr;
  g_nthreads.store(n);
  if (old) {
    // No new region can reach `old` (we hold g_pool_mutex); wait for one in flight.
    { std::lock_guard<std::mutex> busy(old->busy_); }
    delete old;
  }
}

namespace detail {

void parallel_run_impl(index_t nchunks, ChunkFn fn, void* ctx) {
  if (nchunks <= 0) return;
  int T = get_num_threads();
  if (nchunks == 1 || T == 1 || t_in_region) {
    run_chunks_inline(nchunks, fn, ctx);
    return;
  }
  std::unique_lock<std::mutex> lk(g_pool_mutex);
#if defined(__linux__)
  static bool registered = [] { pthread_atfork(nullptr, nullptr, after_fork_child); return true; }();
  (void)registered;
#endif
  if (!g_pool) g_pool = new Pool(T);
  Pool* pool = g_pool;
  std::unique_lock<std::mutex> busy(pool->busy_, std::try_to_lock);
  lk.unlock();
  if (!busy.owns_lock()) {
    // Another thread is using the pool: same chunks, run here one after another.
    run_chunks_inline(nchunks, fn, ctx);
    return;
  }
  pool->run(nchunks, fn, ctx);
}

}  // namespace detail

}  // namespace nnk
