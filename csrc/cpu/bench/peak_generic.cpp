// Multiply-add throughput loop in plain C++ (baseline flags): the peak of the code the
// generic kernels are made of, i.e. whatever the compiler vectorises acc * a + b into
// (SSE2 mul + add on x86-64, NEON FMA on aarch64 when contracted). 12 accumulators of one
// 16-byte vector each, so they and the two constants stay in the 16 SSE registers.
// FLOPs are counted as 2 per accumulator element per iteration. Math and contract: peak.h.
#include "cpu/bench/peak.h"

namespace nnk::cpu::generic {

namespace {
constexpr int NACC = 12;

// Each accumulator is an array of LANES (one 16-byte vector) so the compiler can vectorise.
template <typename T>
double loop(index_t iters) {
  constexpr int LANES = 16 / int(sizeof(T));
  const T a = T(1) - T(1.0 / (1 << 20)), b = T(1.0 / (1 << 20));
  T acc[NACC][LANES];
  for (int i = 0; i < NACC; ++i)
    for (int l = 0; l < LANES; ++l) acc[i][l] = T(i * LANES + l) * T(0.001);
  for (index_t k = 0; k < iters; ++k) {
    for (int i = 0; i < NACC; ++i)
      for (int l = 0; l < LANES; ++l) acc[i][l] = acc[i][l] * a + b;
  }
  double r = 0;
  for (int i = 0; i < NACC; ++i)
    for (int l = 0; l < LANES; ++l) r += double(acc[i][l]);
  return r;
}
}  // namespace

PeakKernel peak_kernel() {
  return {loop<float>, loop<double>, 2.0 * NACC * 4, 2.0 * NACC * 2};
}

}  // namespace nnk::cpu::generic
