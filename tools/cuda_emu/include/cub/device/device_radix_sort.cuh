// nnkernels CUDA emulator: cub::DeviceRadixSort::SortPairs as a host stable sort on the
// keys' bits [begin_bit, end_bit) (unsigned keys).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <numeric>
#include <type_traits>
#include <vector>

namespace cub {
struct DeviceRadixSort {
  template <class K, class V, class NumItems>
  static cudaError_t SortPairs(void* tmp, size_t& tmp_bytes, const K* kin, K* kout, const V* vin, V* vout,
                               NumItems n, int begin_bit = 0, int end_bit = int(sizeof(K) * 8),
                               cudaStream_t = nullptr) {
    static_assert(std::is_unsigned<K>::value, "the emulator sorts unsigned keys only");
    if (!tmp) {
      tmp_bytes = 16;
      return cudaSuccess;
    }
    const int width = end_bit - begin_bit;
    const K mask = width >= int(sizeof(K) * 8) ? K(~K(0)) : K((K(1) << width) - 1);
    std::vector<size_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return K((kin[a] >> begin_bit) & mask) < K((kin[b] >> begin_bit) & mask);
    });
    std::vector<K> ks(order.size());
    std::vector<V> vs(order.size());
    for (size_t i = 0; i < order.size(); ++i) ks[i] = kin[order[i]], vs[i] = vin[order[i]];
    std::copy(ks.begin(), ks.end(), kout);
    std::copy(vs.begin(), vs.end(), vout);
    return cudaSuccess;
  }
};
}  // namespace cub
