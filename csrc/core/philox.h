// Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) and
// dropout's use of it, shared by the CPU path (cpu/norm/norm.cpp) and the CUDA path
// (cuda/embed.cu) so that one seed gives the same mask on both:
//   block b (elements 4b .. 4b + 3) runs Philox with counter (b lo, b hi, 0, 0) and key
//   (seed lo, seed hi); element i is kept when word i % 4 >= thr = p 2^32 (2^32 for p = 1),
//   and y = x * scale, scale = 1 / (1 - p) in T (0 for p = 1).
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define NNK_PHILOX_HD __host__ __device__ __forceinline__
#else
#define NNK_PHILOX_HD inline
#endif

namespace nnk {

// Ten rounds on the counter c with key (k0, k1); c becomes the four random words.
NNK_PHILOX_HD void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = uint64_t(M0) * c[0], p1 = uint64_t(M1) * c[2];
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    const uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
    k0 += W0;
    k1 += W1;
  }
}

struct DropoutParams {
  uint64_t thr;   // keep a word >= thr
  double scale;   // kept values times scale (cast to T once)
  uint32_t k0, k1;
};

inline DropoutParams dropout_params(double p, uint64_t seed) {
  DropoutParams d;
  d.thr = p >= 1.0 ? (uint64_t(1) << 32) : uint64_t(std::ldexp(p, 32));
  d.scale = p >= 1.0 ? 0.0 : 1.0 / (1.0 - p);
  d.k0 = uint32_t(seed);
  d.k1 = uint32_t(seed >> 32);
  return d;
}

}  // namespace nnk
