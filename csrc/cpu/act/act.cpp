// Threaded drivers of the activation / softmax family: pick the ISA's kernel table
// (act_isa.h) and split the work with parallel_for. The kernels are in act_kernels.inl.
//   Elementwise: one thread below 2 kGrain elements; else up to kChunksPerThread chunks per
//   thread of at least kGrain elements (boundaries on multiples of 16 elements, so a vector
//   never straddles two chunks), claimed one at a time by the pool's threads: a thread
//   slowed by other work on its core takes fewer.
//   Softmax, inner == 1: whole rows per thread. inner > 1: (outer index, block of kColBlock
//   columns) work items, so threads never share a column.
// Every element's value is independent of the split, so any thread count gives the same bits.
// Streaming: when an elementwise op's arrays together pass the last-level cache, its output
// goes out by non-temporal stores (no read for ownership). Measured (bench --family act, 4M
// float32, two builds, two runs each, us): relu_backward 329-366 -> 296-310, sigmoid_backward
// 362-370 -> 293-300, tanh_backward 378-381 -> 279-284; relu forward (32 MiB: x and y just fit
// the 32 MiB L3, so no streaming) streamed anyway: 162-170 -> 202-208, hence the strict test.
#include <algorithm>

#include "core/cpu_features.h"
#include "core/parallel.h"
#include "cpu/act/act.h"
#include "cpu/act/act_isa.h"

namespace nnk {

namespace {

constexpr index_t kGrain = 16384;    // elements per thread at least (~64-128 KiB of input)
constexpr index_t kColBlock = 64;    // columns of inner per softmax work item (multiple of every L)
constexpr index_t kChunksPerThread = 4;

// f(begin, end) over [0, n) in the elementwise chunks described above.
template <class F>
void elementwise_chunks(index_t n, F&& f) {
  const index_t T = get_num_threads();
  if (T == 1 || n < 2 * kGrain) {  // one part (inline, under the denormal setting)
    if (n > 0) parallel_run(1, [&](index_t) { f(index_t(0), n); });
    return;
  }
  const index_t nch = std::min(n / kGrain, T * kChunksPerThread);
  auto edge = [&](index_t c) { return c == nch ? n : (n * c / nch) & ~index_t(15); };
  parallel_run(nch, [&](index_t c) { f(edge(c), edge(c + 1)); });
}

template <typename T>
const ActIsaKernels<T>& kernels(Isa isa) {
#if defined(NNK_X86)
  if (isa == Isa::avx512) return cpu::avx512::act_kernels(T());
  if (isa == Isa::avx2) return cpu::avx2::act_kernels(T());
#endif
  return cpu::generic::act_kernels(T());
}

}  // namespace

template <typename T>
void act_forward_contig(Isa isa, T* y, const T* x, index_t n, Act act, T param) {
  if (n > 0) kernels<T>(isa).fwd(y, x, n, act, param, false);
}

template <typename T>
void act_forward(Isa isa, T* y, const T* x, index_t n, Act act, T param) {
  const auto& k = kernels<T>(isa);
  const bool stream = stream_output(2.0 * double(n) * double(sizeof(T)));  // x and y past the LLC
  elementwise_chunks(n, [&](index_t b, index_t e) { k.fwd(y + b, x + b, e - b, act, param, stream); });
}

template <typename T>
void act_backward(Isa isa, T* dx, const T* g, const T* v, index_t n, Act act, T param) {
  const auto& k = kernels<T>(isa);
  const bool stream = stream_output(3.0 * double(n) * double(sizeof(T)));  // g, v and dx past the LLC
  elementwise_chunks(n, [&](index_t b, index_t e) { k.bwd(dx + b, g + b, v + b, e - b, act, param, stream); });
}

// The softmax split described at the top: rows(b, e) for whole rows (inner == 1), else
// cols(off, c0, c1) for each (outer index, block of columns) work item.
template <class Rows, class Cols>
void softmax_items(index_t outer, index_t D, index_t inner, Rows&& rows, Cols&& cols) {
  if (inner == 1) {
    parallel_for(outer, std::max<index_t>(1, kGrain / D), rows);
    return;
  }
  const index_t nb = ceil_div(inner, kColBlock);
  const index_t per_item = D * std::min(inner, kColBlock);
  parallel_for(outer * nb, std::max<index_t>(1, kGrain / per_item), [&](index_t b, index_t e) {
    for (index_t it = b; it < e; ++it) {
      const index_t o = it / nb, c0 = (it % nb) * kColBlock;
      cols(o * D * inner, c0, std::min(inner, c0 + kColBlock));
    }
  });
}

template <typename T>
void softmax_forward(Isa isa, T* y, const T* x, index_t outer, index_t D, index_t inner, bool log) {
  if (outer == 0 || D == 0 || inner == 0) return;
  const auto& k = kernels<T>(isa);
  softmax_items(
      outer, D, inner,
      [&](index_t b, index_t e) { k.softmax_rows(y + b * D, x + b * D, e - b, D, log); },
      [&](index_t off, index_t c0, index_t c1) { k.softmax_cols(y + off, x + off, D, inner, c0, c1, log); });
}

template <typename T>
void softmax_backward(Isa isa, T* dx, const T* g, const T* y, index_t outer, index_t D,
                      index_t inner, bool log) {
  if (outer == 0 || D == 0 || inner == 0) return;
  const auto& k = kernels<T>(isa);
  softmax_items(
      outer, D, inner,
      [&](index_t b, index_t e) { k.softmax_bwd_rows(dx + b * D, g + b * D, y + b * D, e - b, D, log); },
      [&](index_t off, index_t c0, index_t c1) {
        k.softmax_bwd_cols(dx + off, g + off, y + off, D, inner, c0, c1, log);
      });
}

template void act_forward_contig<float>(Isa, float*, const float*, index_t, Act, float);
template void act_forward<float>(Isa, float*, const float*, index_t, Act, float);
template void act_backward<float>(Isa, float*, const float*, const float*, index_t, Act, float);
template void softmax_forward<float>(Isa, float*, const float*, index_t, index_t, index_t, bool);
template void softmax_backward<float>(Isa, float*, const float*, const float*, index_t, index_t, index_t, bool);
template void act_forward_contig<double>(Isa, double*, const double*, index_t, Act, double);
template void act_forward<double>(Isa, double*, const double*, index_t, Act, double);
template void act_backward<double>(Isa, double*, const double*, const double*, index_t, Act, double);
template void softmax_forward<double>(Isa, double*, const double*, index_t, index_t, index_t, bool);
template void softmax_backward<double>(Isa, double*, const double*, const double*, index_t, index_t, index_t, bool);

}  // namespace nnk
