// Stride-1 im2col packing, generic build (the kernel: shift_pack.inl). The "vectors" are
// small arrays the compiler may keep in registers; masked lanes are read one by one.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/conv/shift_pack.h"

namespace nnk::cpu::generic {

template <typename T, int N>
struct Lanes {
  static constexpr int L = N;
  struct reg { T v[N]; };
  using msk = uint32_t;
  static msk mask(uint32_t b) { return b; }
  static reg load_merge(reg r, msk m, const T* p) {
    for (int i = 0; i < N; ++i)
      if (m >> i & 1u) r.v[i] = p[i];
    return r;
  }
  static reg load(msk m, const T* p) {
    reg r;
    for (int i = 0; i < N; ++i) r.v[i] = T(0);
    return load_merge(r, m, p);
  }
  static void store(T* p, const reg& r) { for (int i = 0; i < N; ++i) p[i] = r.v[i]; }
  static void transpose(const T* s, index_t lds, T* d, index_t ldd) {
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < N; ++j) d[i * ldd + j] = s[j * lds + i];
  }
};
using VF = Lanes<float, 4>;  // NR = 8
using VD = Lanes<double, 2>; // NR = 4

#include "cpu/conv/shift_pack.inl"

}  // namespace nnk::cpu::generic
