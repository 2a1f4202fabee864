// Peak floating-point throughput probe (used by bench/ to measure the machine's FMA peak).
//
// Each kernel runs `iters` iterations of NACC independent multiply-adds per vector lane,
//   acc_i <- acc_i * a + b        (i = 0 .. NACC-1, a = 1 - 2^-20, b = 2^-20)
// which is one FMA (2 FLOP per lane) per accumulator per iteration, and returns the sum of
// the accumulators so the loop cannot be removed. acc converges to b / (1 - a) = 1, so the
// values stay normal (no overflow, no denormal slow path). NACC is chosen per ISA so that
// NACC >= FMA latency x FMA pipes (4 x 2 on current x86 cores): every pipe issues every cycle.
//
// flops_per_iter(kernel) = 2 * NACC * lanes. peak_flops() runs the chosen kernel on every
// thread of the pool for about `seconds` and returns the FLOP/s of all threads together.
#pragma once
#include "core/cpu_features.h"
#include "core/types.h"

namespace nnk {

struct PeakKernel {
  double (*f32)(index_t iters);
  double (*f64)(index_t iters);
  double flops_per_iter_f32;
  double flops_per_iter_f64;
};

namespace cpu::avx512 { PeakKernel peak_kernel(); }
namespace cpu::avx2 { PeakKernel peak_kernel(); }
namespace cpu::generic { PeakKernel peak_kernel(); }

// The probe's kernel for `isa` (throws ValueError if this CPU cannot run it).
PeakKernel peak_kernel_for(Isa isa);

// FLOP/s of the FMA loop on `threads` pool threads (0: get_num_threads()), all together,
// measured over about `seconds` of wall time. Sets the pool size for the call if it
// differs and restores it afterwards.
double peak_flops(DType dt, Isa isa, int threads, double seconds);

}  // namespace nnk
