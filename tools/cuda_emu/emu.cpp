// nnkernels CUDA emulator: the scheduler (one fiber per CUDA thread) and the runtime API.
// See tools/cuda_emu/README.md.
#include <cuda_runtime.h>
#include <sys/mman.h>
#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

// ---- fiber context switch: a few instructions on x86-64 (no signal-mask syscall, as
// swapcontext makes), ucontext elsewhere ----
#if defined(__x86_64__)
extern "C" void nnk_emu_switch(void** save_sp, void* new_sp);
asm(R"(
  .text
  .globl nnk_emu_switch
  .type nnk_emu_switch, @function
nnk_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size nnk_emu_switch, .-nnk_emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

namespace nnk_emu {

thread_local Current cur;

struct Ctx {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

enum class Wait { run, block_bar, warp_bar, grid_bar, done };

struct ThreadState {
  Ctx ctx;
  void* stack = nullptr;
  void* asan_fake = nullptr;
  Wait wait = Wait::run;
  unsigned warp_mask = 0;   // at a warp barrier: the lanes it waits for
  const char* bar_file = nullptr;
  int bar_line = 0;
  uint3 idx;
  int linear = 0;
};

namespace {

constexpr size_t kStack = size_t(1) << 18;  // 256 KiB per fiber (only touched pages are committed)

struct StackPool {
  std::vector<void*> free_;
  void* get() {
    if (!free_.empty()) {
      void* p = free_.back();
      free_.pop_back();
      return p;
    }
    void* p = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("CUDA emulator: cannot map a fiber stack");
    return p;
  }
  void put(void* p) { free_.push_back(p); }
  ~StackPool() {
    for (void* p : free_) munmap(p, kStack);
  }
};
thread_local StackPool g_stacks;

struct Block {
  uint3 idx;
  std::vector<ThreadState> th;
  std::vector<unsigned char> dyn;
  std::vector<uint64_t> slots;  // warp exchange: one value per thread
  Ctx sched;
  const void* sched_stack = nullptr;  // the scheduler's stack, for ASan's fiber annotations
  size_t sched_stack_size = 0;
  std::exception_ptr error;
  bool at_grid = false, finished = false;
};

thread_local Block* g_block = nullptr;
thread_local const std::function<void()>* g_body = nullptr;

std::string where(const char* what) {
  const uint3 b = cur.block_idx, t = cur.thread_idx;
  return std::string("CUDA emulator: ") + what + " (block (" + std::to_string(b.x) + "," + std::to_string(b.y) +
         "," + std::to_string(b.z) + "), thread (" + std::to_string(t.x) + "," + std::to_string(t.y) + "," +
         std::to_string(t.z) + "))";
}

#if defined(__SANITIZE_ADDRESS__)
void asan_start(void** fake, const void* bottom, size_t size) { __sanitizer_start_switch_fiber(fake, bottom, size); }
void asan_finish(void* fake, const void** bottom, size_t* size) { __sanitizer_finish_switch_fiber(fake, bottom, size); }
#else
void asan_start(void**, const void*, size_t) {}
void asan_finish(void*, const void**, size_t*) {}
#endif

void raw_switch(Ctx& from, Ctx& to) {
#if defined(__x86_64__)
  nnk_emu_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
}

// Scheduler -> thread t, until t yields or exits.
void enter(Block& b, ThreadState& t) {
  void* fake = nullptr;
  asan_start(&fake, t.stack, kStack);
  raw_switch(b.sched, t.ctx);
  asan_finish(fake, nullptr, nullptr);
}

// Thread -> scheduler; returns when the scheduler resumes the thread.
void leave(bool exiting) {
  ThreadState* t = cur.thread;
  Block* b = g_block;
  asan_start(exiting ? nullptr : &t->asan_fake, b->sched_stack, b->sched_stack_size);
  raw_switch(t->ctx, b->sched);
  asan_finish(t->asan_fake, &b->sched_stack, &b->sched_stack_size);
}

void yield_to_scheduler() { leave(false); }

[[noreturn]] void fiber_entry() {
  Block* b = g_block;
  ThreadState* t = cur.thread;
  asan_finish(nullptr, &b->sched_stack, &b->sched_stack_size);
  try {
    (*g_body)();
  } catch (...) {
    if (!b->error) b->error = std::current_exception();
  }
  t->wait = Wait::done;
  leave(true);
  __builtin_trap();  // never resumed
}

void init_fiber(ThreadState& t) {
#if defined(__SANITIZE_ADDRESS__)
  // A reused stack keeps the redzones of the frames its last fiber left without returning.
  ASAN_UNPOISON_MEMORY_REGION(t.stack, kStack);
#endif
#if defined(__x86_64__)
  // The stack nnk_emu_switch pops into fiber_entry: MXCSR / x87 control word, r15..r12, rbx,
  // rbp, the return address, and a null "caller" so that fiber_entry starts 16-byte aligned
  // less 8, as after a call.
  auto* top = reinterpret_cast<uint64_t*>(static_cast<char*>(t.stack) + kStack);
  uint64_t* sp = top - 9;
  sp[8] = 0;
  sp[7] = reinterpret_cast<uint64_t>(&fiber_entry);
  for (int i = 1; i <= 6; ++i) sp[i] = 0;
  sp[0] = 0x037Full << 32 | 0x1F80u;
  t.ctx.sp = sp;
#else
  getcontext(&t.ctx.uc);
  t.ctx.uc.uc_stack.ss_sp = t.stack;
  t.ctx.uc.uc_stack.ss_size = kStack;
  t.ctx.uc.uc_link = nullptr;
  makecontext(&t.ctx.uc, reinterpret_cast<void (*)()>(&fiber_entry), 0);
#endif
}

// fwd / rev / rand: each pass runs every runnable thread (in that order) until it blocks.
// warp / warprev: each warp in turn (in order / reversed, its lanes too) runs as far as it can, its own
// warp barriers released on the way, before the next warp starts: a warp races ahead of
// the others up to the next __syncthreads (exposing a missing barrier between a read of
// shared memory and a later write of it).
enum class Order { fwd, rev, rand, warp, warprev };
Order order() {
  static Order o = [] {
    const char* e = std::getenv("NNK_EMU_ORDER");
    std::string s = e ? e : "fwd";
    if (s == "rev") return Order::rev;
    if (s == "rand") return Order::rand;
    if (s == "warp") return Order::warp;
    if (s == "warprev") return Order::warprev;
    return Order::fwd;
  }();
  return o;
}
bool reversed() { return order() == Order::rev || order() == Order::warprev; }
thread_local std::mt19937 g_rng(12345);

int warp_of(const ThreadState& t) { return t.linear / 32; }

// Run the block's fibers until each is done or waiting at the grid barrier. Throws on
// a deadlock, a divergent barrier or an exception inside the kernel.
void run_block(Block& b, const LaunchState& ls, const std::function<void()>& body) {
  const int n = int(b.th.size());
  std::vector<int> seq(n);
  for (int i = 0; i < n; ++i) seq[i] = reversed() ? n - 1 - i : i;
  g_block = &b;
  g_body = &body;
  cur.launch = &ls;
  cur.block_idx = b.idx;
  cur.dyn_smem = b.dyn.empty() ? nullptr : b.dyn.data();
  b.at_grid = false;
  const int warps = (n + 31) / 32;
  // Release warp w's warp barrier when every lane of its masks has arrived; true if released.
  auto release_warp = [&](int w) {
    unsigned waiting = 0, need = 0, exited = 0;
    for (int l = 0; l < 32 && w * 32 + l < n; ++l) {
      const ThreadState& t = b.th[w * 32 + l];
      if (t.wait == Wait::warp_bar) waiting |= 1u << l, need |= t.warp_mask;
      if (t.wait == Wait::done) exited |= 1u << l;
    }
    if (!waiting) return false;
    const int lanes = std::min(32, n - w * 32);
    const unsigned exist = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
    if (need & ~exist) {
      cur.thread = &b.th[w * 32];
      throw std::runtime_error(where("warp sync mask names lanes past the block's last thread"));
    }
    if (need & exited) {
      cur.thread_idx = b.th[w * 32 + __builtin_ctz(need & exited)].idx;
      throw std::runtime_error(where("a lane in a __shfl_sync / __syncwarp mask has exited"));
    }
    if ((need & waiting) != need) return false;
    for (int l = 0; l < 32; ++l)
      if (waiting >> l & 1) b.th[w * 32 + l].wait = Wait::run;
    return true;
  };
  auto run_thread = [&](ThreadState& t) {
    cur.thread = &t;
    cur.thread_idx = t.idx;
    enter(b, t);
    if (b.error) std::rethrow_exception(b.error);
  };
  const bool warp_ahead = order() == Order::warp || order() == Order::warprev;
  for (;;) {
    if (order() == Order::rand) std::shuffle(seq.begin(), seq.end(), g_rng);
    bool ran = false, released = false;
    if (warp_ahead) {
      for (int wi = 0; wi < warps; ++wi) {
        const int w = reversed() ? warps - 1 - wi : wi;
        for (;;) {
          bool any = false;
          const int lanes = std::min(32, n - w * 32);
          for (int li = 0; li < lanes; ++li) {
            ThreadState& t = b.th[w * 32 + (reversed() ? lanes - 1 - li : li)];
            if (t.wait != Wait::run) continue;
            any = ran = true;
            run_thread(t);
          }
          const bool rel = release_warp(w);
          released = released || rel;
          if (!any && !rel) break;
        }
      }
    } else {
      for (int i : seq) {
        ThreadState& t = b.th[i];
        if (t.wait != Wait::run) continue;
        ran = true;
        run_thread(t);
      }
    }
    // Release the barriers whose members have all arrived.
    int alive = 0, at_block = 0, at_grid = 0;
    for (auto& t : b.th) {
      alive += t.wait != Wait::done;
      at_block += t.wait == Wait::block_bar;
      at_grid += t.wait == Wait::grid_bar;
    }
    if (alive == 0) {
      b.finished = true;
      return;
    }
    for (int w = 0; w < warps; ++w) released = release_warp(w) || released;
    if (!released && at_block && at_block == alive) {
      const ThreadState* first = nullptr;
      for (auto& t : b.th) {
        if (t.wait != Wait::block_bar) continue;
        if (!first) first = &t;
        else if (t.bar_line != first->bar_line || std::strcmp(t.bar_file, first->bar_file) != 0) {
          cur.thread_idx = t.idx;
          throw std::runtime_error(where(("threads wait at different __syncthreads (lines " +
                                          std::to_string(first->bar_line) + " and " + std::to_string(t.bar_line) +
                                          ")").c_str()));
        }
      }
      for (auto& t : b.th)
        if (t.wait == Wait::block_bar) t.wait = Wait::run;
      released = true;
    }
    if (!released && at_grid && at_grid == alive) {
      b.at_grid = true;
      return;
    }
    if (!released && !ran) {
      std::string s = "deadlock: " + std::to_string(alive) + " live threads, " + std::to_string(at_block) +
                      " at __syncthreads, " + std::to_string(at_grid) + " at grid.sync(), the rest at warp barriers";
      throw std::runtime_error(where(s.c_str()));
    }
  }
}

std::mutex g_mu;
std::map<const void*, size_t> g_dyn_smem;
thread_local cudaError_t g_last = cudaSuccess;
int sms() {
  static int n = [] {
    const char* e = std::getenv("NNK_EMU_SMS");
    return e ? std::max(1, std::atoi(e)) : 132;  // an H200's SM count
  }();
  return n;
}
constexpr int kOptin = 232448;  // sm_90's opt-in shared memory per block

}  // namespace

int lane_id() { return cur.thread->linear % 32; }

[[noreturn]] void fail(const char* what) { throw std::runtime_error(where(what)); }

void syncthreads(const char* file, int line) {
  ThreadState* t = cur.thread;
  t->wait = Wait::block_bar;
  t->bar_file = file;
  t->bar_line = line;
  yield_to_scheduler();
}

void syncwarp(unsigned mask) {
  ThreadState* t = cur.thread;
  if (!(mask >> (t->linear % 32) & 1)) fail("__syncwarp / __shfl_sync called by a lane outside its mask");
  t->wait = Wait::warp_bar;
  t->warp_mask = mask;
  yield_to_scheduler();
}

uint64_t warp_exchange(unsigned mask, uint64_t v, int src_lane) {
  ThreadState* t = cur.thread;
  Block* b = g_block;
  b->slots[t->linear] = v;
  syncwarp(mask);  // everyone has published
  if (src_lane < 0 || src_lane > 31 || !(mask >> src_lane & 1)) fail("shuffle from a lane outside the mask");
  const uint64_t r = b->slots[(t->linear / 32) * 32 + src_lane];
  syncwarp(mask);  // everyone has read before the slots are reused
  return r;
}

void grid_sync() {
  ThreadState* t = cur.thread;
  t->wait = Wait::grid_bar;
  yield_to_scheduler();
}

// The dynamic shared memory a launch of `func` may ask for: 48 KiB unless raised by
// cudaFuncSetAttribute. Launches through <<<>>> do not know their function (func null: the
// rewritten launch wraps the kernel in a lambda); they get the largest value set for any.
size_t max_dyn_smem(const void* func) {
  std::lock_guard<std::mutex> g(g_mu);
  size_t m = 48 * 1024;
  if (!func) {
    for (auto& kv : g_dyn_smem) m = std::max(m, kv.second);
    return m;
  }
  auto it = g_dyn_smem.find(func);
  return it == g_dyn_smem.end() ? m : it->second;
}
void set_max_dyn_smem(const void* func, int bytes) {
  std::lock_guard<std::mutex> g(g_mu);
  g_dyn_smem[func] = size_t(bytes);
}
cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) g_last = e;
  return e;
}

// NNK_EMU_TRACE=path: at exit, append one line per launch site that ran ("count name file:line").
struct Trace {
  std::mutex mu;
  std::map<std::string, long> counts;
  const char* path = std::getenv("NNK_EMU_TRACE");
  void add(const char* name, const char* file, int line) {
    if (!path) return;
    std::lock_guard<std::mutex> g(mu);
    ++counts[std::string(name) + " " + file + ":" + std::to_string(line)];
  }
  ~Trace() {
    if (!path) return;
    if (FILE* f = std::fopen(path, "a")) {
      for (auto& kv : counts) std::fprintf(f, "%ld %s\n", kv.second, kv.first.c_str());
      std::fclose(f);
    }
  }
};
Trace g_trace;

void run_grid(const char* name, const char* file, int line, const Cfg& c, const void* func,
              const std::function<void()>& body, bool cooperative) {
  g_trace.add(name, file, line);
  const dim3 g = c.grid, bl = c.block;
  const unsigned long long threads = 1ull * bl.x * bl.y * bl.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 || g.z > 65535 || g.x > 0x7fffffffu || threads == 0 ||
      threads > 1024 || bl.z > 64 || c.smem > max_dyn_smem(func)) {
    set_error(cudaErrorInvalidConfiguration);
    return;
  }
  const unsigned long long blocks = 1ull * g.x * g.y * g.z;
  if (cooperative) {
    int per_sm = 0;
    nnk_emu_occupancy(&per_sm, func, int(threads), c.smem);
    if (blocks > 1ull * per_sm * unsigned(sms())) {
      set_error(cudaErrorCooperativeLaunchTooLarge);
      return;
    }
  }
  LaunchState ls;
  ls.grid = g;
  ls.block = bl;
  ls.smem = c.smem;
  const Current saved = cur;
  Block* saved_block = g_block;
  const std::function<void()>* saved_body = g_body;
  auto make_block = [&](unsigned long long i) {
    auto b = std::make_unique<Block>();
    b->idx = {unsigned(i % g.x), unsigned(i / g.x % g.y), unsigned(i / (1ull * g.x * g.y))};
    b->th.resize(threads);
    b->slots.assign(threads, 0);
    if (c.smem) {
      b->dyn.resize(c.smem);
      // Uninitialized on the GPU: fill with a signalling pattern (NaN for float / double reads).
      std::memset(b->dyn.data(), 0xff, c.smem);
    }
    for (unsigned long long k = 0; k < threads; ++k) {
      ThreadState& t = b->th[k];
      t.linear = int(k);
      t.idx = {unsigned(k % bl.x), unsigned(k / bl.x % bl.y), unsigned(k / (1ull * bl.x * bl.y))};
      t.stack = g_stacks.get();
      init_fiber(t);
    }
    return b;
  };
  auto release = [&](Block& b) {
    for (auto& t : b.th) g_stacks.put(t.stack);
    b.th.clear();
  };
  auto restore = [&] {
    cur = saved;
    g_block = saved_block;
    g_body = saved_body;
  };
  std::vector<unsigned long long> ids(blocks);
  for (unsigned long long i = 0; i < blocks; ++i) ids[i] = reversed() ? blocks - 1 - i : i;
  if (order() == Order::rand) std::shuffle(ids.begin(), ids.end(), g_rng);
  try {
    if (!cooperative) {
      for (unsigned long long i : ids) {
        auto b = make_block(i);
        try {
          run_block(*b, ls, body);
        } catch (...) {
          release(*b);
          throw;
        }
        release(*b);
        if (!b->finished) throw std::runtime_error("CUDA emulator: grid.sync() outside a cooperative launch");
      }
    } else {
      std::vector<std::unique_ptr<Block>> all;
      for (unsigned long long i : ids) all.push_back(make_block(i));
      try {
        for (;;) {
          int finished = 0;
          for (auto& b : all) {
            if (b->finished) {
              ++finished;
              continue;
            }
            run_block(*b, ls, body);
          }
          if (finished == int(all.size())) break;
          int at_grid = 0, done = 0;
          for (auto& b : all) at_grid += b->at_grid, done += b->finished;
          if (at_grid && done)
            throw std::runtime_error("CUDA emulator: some blocks finished while others wait at grid.sync()");
          for (auto& b : all)
            for (auto& t : b->th)
              if (t.wait == Wait::grid_bar) t.wait = Wait::run;
        }
      } catch (...) {
        for (auto& b : all) release(*b);
        throw;
      }
      for (auto& b : all) release(*b);
    }
  } catch (const std::exception& e) {
    restore();
    throw std::runtime_error(std::string(e.what()) + " in kernel " + name + " launched at " + file + ":" +
                             std::to_string(line));
  }
  restore();
}

}  // namespace nnk_emu

using nnk_emu::set_error;

cudaError_t nnk_emu_occupancy(int* n, const void* func, int threads, size_t smem) {
  (void)func;
  if (threads <= 0 || threads > 1024) return set_error(cudaErrorInvalidValue);
  int by_threads = 2048 / threads;
  int by_smem = smem ? int(233472 / (smem + 1024)) : 32;
  *n = std::max(0, std::min({32, by_threads, by_smem}));
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  cudaError_t e = nnk_emu::g_last;
  nnk_emu::g_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return nnk_emu::g_last; }
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidPitchValue: return "invalid pitch argument";
    case cudaErrorCooperativeLaunchTooLarge: return "too many blocks in cooperative launch";
    default: return "unknown error";
  }
}
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidPitchValue: return "cudaErrorInvalidPitchValue";
    case cudaErrorCooperativeLaunchTooLarge: return "cudaErrorCooperativeLaunchTooLarge";
    default: return "cudaErrorUnknown";
  }
}
cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : set_error(cudaErrorInvalidDevice); }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d != 0) return set_error(cudaErrorInvalidDevice);
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "nnkernels CUDA emulator (host, %d SMs)", nnk_emu::sms());
  p->multiProcessorCount = nnk_emu::sms();
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = nnk_emu::kOptin;
  p->major = 9;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d) {
  if (d != 0) return set_error(cudaErrorInvalidDevice);
  switch (a) {
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = 48 * 1024; break;
    case cudaDevAttrMultiProcessorCount: *v = nnk_emu::sms(); break;
    case cudaDevAttrCooperativeLaunch: *v = 1; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = nnk_emu::kOptin; break;
    default: return set_error(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int) {
  *pool = reinterpret_cast<cudaMemPool_t>(0x1);
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }
cudaError_t cudaMalloc(void** p, size_t bytes) {
  // 256-byte aligned as cudaMalloc's; filled with 0xff (NaN) so reads of unwritten memory show.
  const size_t n = (bytes + 255) / 256 * 256;
  *p = n ? std::aligned_alloc(256, n) : nullptr;
  if (n && !*p) return set_error(cudaErrorMemoryAllocation);
  if (n) std::memset(*p, 0xff, n);
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, k);
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind, cudaStream_t) {
  if (width > dpitch || width > spitch) return ::nnk_emu::set_error(cudaErrorInvalidPitchValue);
  for (size_t r = 0; r < height; ++r)
    std::memmove(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* dst, int v, size_t bytes) {
  if (bytes) std::memset(dst, v, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* dst, int v, size_t bytes, cudaStream_t) { return cudaMemset(dst, v, bytes); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
  *e = reinterpret_cast<cudaEvent_t>(0x1);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
