#include "core/parallel.h"

#include <atomic>
#include <chrono>
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

inline void cpu_relax() {
#if defined(NNK_X86)
  _mm_pause();
#elif defined(NNK_ARM64)
  asm volatile("yield" ::: "memory");
#endif
}

// How long an idle worker keeps polling for the next job before it sleeps, and how long a
// caller polls for the workers' last chunks before it sleeps. Waking a sleeping thread
// costs 10-50 us on the VMs measured, as much as a whole RNN step or a 256^3 GEMM: ops
// issued back to back (an RNN's steps, a training step's layers) find the worker awake.
// NNKERNELS_SPIN_US overrides it (0: always sleep at once).
int64_t spin_ns() {
  static const int64_t ns = [] {
    const char* e = std::getenv("NNKERNELS_SPIN_US");
    if (e && *e) {
      char* end = nullptr;
      long v = std::strtol(e, &end, 10);
      if (end && *end == '\0' && v >= 0 && v <= 1000000) return int64_t(v) * 1000;
    }
    return int64_t(200) * 1000;
  }();
  return ns;
}

constexpr int64_t kSpinPauseOnlyNs = 20000;

// Polls until done() or spin_ns() has passed; returns done().
template <class Done>
bool spin_until(Done&& done) {
  const int64_t limit = spin_ns();
  if (limit <= 0) return done();
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 32; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    const int64_t el =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    if (el > limit) return done();
    // Past the first stretch, let other runnable threads of this core go first: on a
    // loaded machine the thread we wait for may be queued behind us.
    if (el > kSpinPauseOnlyNs) std::this_thread::yield();
  }
}

void run_chunks_inline(index_t nchunks, detail::ChunkFn fn, void* ctx) {
  DenormalGuard g;
  bool was = t_in_region;
  t_in_region = true;
  for (index_t c = 0; c < nchunks; ++c) fn(ctx, c);
  t_in_region = was;
}

// Chunks are claimed through an atomic counter by whichever thread gets to them first: the
// caller starts at once and, when a worker wakes late (waking a sleeping core costs ~50 us
// on the VMs measured), the caller simply runs the remaining chunks itself. Which thread
// runs a chunk never changes what the chunk computes, so results stay bitwise the same.
class Pool {
 public:
  explicit Pool(int nthreads) : nthreads_(nthreads) {
    for (int w = 1; w < nthreads_; ++w) workers_.emplace_back([this] { worker_loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_.store(true);
    }
    cv_start_.notify_all();
    for (auto& t : workers_) t.join();
  }

  // Caller holds busy_.
  void run(index_t nchunks, detail::ChunkFn fn, void* ctx) {
    // A worker that picked up the previous job late may still be leaving it: the job's
    // counters are reset only when no worker holds them (polled first: the worker is
    // usually a few instructions from leaving).
    spin_until([this] { return active_.load(std::memory_order_acquire) == 0; });
    {
      std::unique_lock<std::mutex> lk(m_);
      cv_done_.wait(lk, [this] { return active_.load(std::memory_order_relaxed) == 0; });
      fn_ = fn;
      ctx_ = ctx;
      nchunks_ = nchunks;
      next_.store(0, std::memory_order_relaxed);
      done_.store(0, std::memory_order_relaxed);
      generation_.store(generation_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
    cv_start_.notify_all();
    claim_and_run(fn, ctx, nchunks);
    // Chunks claimed by a worker may still be running.
    if (!spin_until([&] { return done_.load(std::memory_order_acquire) == nchunks; })) {
      std::unique_lock<std::mutex> lk(m_);
      cv_done_.wait(lk, [&] { return done_.load(std::memory_order_acquire) == nchunks; });
    }
  }

  std::mutex busy_;

 private:
  void claim_and_run(detail::ChunkFn fn, void* ctx, index_t nchunks) {
    DenormalGuard g;
    t_in_region = true;
    for (;;) {
      const index_t c = next_.fetch_add(1, std::memory_order_relaxed);
      if (c >= nchunks) break;
      fn(ctx, c);
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == nchunks) {
        std::lock_guard<std::mutex> lk(m_);
        cv_done_.notify_all();
      }
    }
    t_in_region = false;
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      detail::ChunkFn fn;
      void* ctx;
      index_t nchunks;
      // Poll for the next job for a while (no lock), then sleep.
      spin_until([&] {
        return generation_.load(std::memory_order_acquire) != seen || stop_.load(std::memory_order_relaxed);
      });
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_start_.wait(lk, [&] { return stop_.load(std::memory_order_relaxed) || generation_.load(std::memory_order_relaxed) != seen; });
        if (stop_.load(std::memory_order_relaxed)) return;
        seen = generation_.load(std::memory_order_relaxed);
        fn = fn_;
        ctx = ctx_;
        nchunks = nchunks_;
        ++active_;
      }
      // If the job is already finished, no chunk can be claimed and fn is never called.
      claim_and_run(fn, ctx, nchunks);
      {
        std::lock_guard<std::mutex> lk(m_);
        if (--active_ == 0) cv_done_.notify_all();
      }
    }
  }

  int nthreads_;
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable cv_start_, cv_done_;
  std::atomic<uint64_t> generation_{0};  // written under m_; polled without it by idle workers
  std::atomic<bool> stop_{false};
  detail::ChunkFn fn_ = nullptr;  // the current job, written under m_ while active_ == 0
  void* ctx_ = nullptr;
  index_t nchunks_ = 0;
  std::atomic<index_t> next_{0};  // next chunk to claim
  std::atomic<index_t> done_{0};  // chunks finished
  std::atomic<int> active_{0};    // workers between picking up the job and leaving it
                                  // (changed under m_)
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

bool in_parallel_region() { return t_in_region; }

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
