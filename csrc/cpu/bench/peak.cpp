// Dispatch and timing of the FMA throughput probe (baseline flags). Contract: peak.h.
#include "cpu/bench/peak.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <vector>

#include "core/errors.h"
#include "core/parallel.h"

namespace nnk {

PeakKernel peak_kernel_for(Isa isa) {
  const auto& ok = supported_isas();
  if (std::find(ok.begin(), ok.end(), isa) == ok.end())
    throw ValueError(std::string("peak_flops: this CPU cannot run the kernel set '") +
                     isa_name(isa) + "'");
  switch (isa) {
#if defined(NNK_X86)
    case Isa::avx512: return cpu::avx512::peak_kernel();
    case Isa::avx2: return cpu::avx2::peak_kernel();
#endif
    default: return cpu::generic::peak_kernel();
  }
}

namespace {

using Clock = std::chrono::steady_clock;

// Runs the loop in blocks of `block` iterations until `seconds` have passed; returns the
// number of iterations run. The clock is read once per block (~1e5 FMAs), so it costs nothing.
index_t run_for(double (*f)(index_t), index_t block, double seconds, volatile double* sink) {
  const auto t0 = Clock::now();
  index_t iters = 0;
  double s = 0;
  do {
    s += f(block);
    iters += block;
  } while (std::chrono::duration<double>(Clock::now() - t0).count() < seconds);
  *sink = s;
  return iters;
}

}  // namespace

double peak_flops(DType dt, Isa isa, int threads, double seconds) {
  const PeakKernel k = peak_kernel_for(isa);
  if (!(seconds > 0.0) || seconds > 60.0)
    throw ValueError("peak_flops: seconds must be in (0, 60]");
  if (threads < 0) throw ValueError("peak_flops: threads must be >= 0");
  const int saved = get_num_threads();
  const int T = threads == 0 ? saved : threads;
  if (T != saved) set_num_threads(T);
  double (*f)(index_t) = dt == DType::f32 ? k.f32 : k.f64;
  const double fpi = dt == DType::f32 ? k.flops_per_iter_f32 : k.flops_per_iter_f64;
  const index_t block = 4096;
  std::vector<index_t> iters(size_t(T), 0);
  std::vector<double> sink(size_t(T), 0.0);
  // Warm-up (clock ramp, wake the workers), then the measured run.
  parallel_run(T, [&](index_t c) { run_for(f, block, std::min(0.02, seconds), &sink[size_t(c)]); });
  const auto t0 = Clock::now();
  parallel_run(T, [&](index_t c) { iters[size_t(c)] = run_for(f, block, seconds, &sink[size_t(c)]); });
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  if (T != saved) set_num_threads(saved);
  double total = 0;
  for (index_t it : iters) total += double(it) * fpi;
  return total / wall;
}

}  // namespace nnk
