// Per-ISA micro-kernels and cache block sizes (BLIS: block sizes are data).
//
// Sizing rules (element counts; f = element bytes), for the cores this was tuned on
// (AMD Zen 5: 48 KiB L1d, 1 MiB L2 per core, 32 MiB shared L3):
//   KC: long enough to amortise each micro-kernel call's fixed cost (the C tile's load and
//       store, the call, the loop's ramp): per call 14 * KC FMA cycles. The B micro-panel
//       KC x NR then outgrows L1 (1024 * 32 * 4 = 128 KiB for f32), which costs little: 2 B
//       vectors per 14 FMA cycles is ~9 B/cycle from L2. K is cut into equal blocks of at
//       most KC (K = 3000: 3 x 1000), so K = 1024 runs as one block and C is read and written
//       once.
//   MC: the A block MC x KC stays in L2 with the B micro-panel and the C tiles, a multiple of
//       MR: 112 * 1024 * 4 = 448 KiB (f32) + 128 KiB of B panel; 84 * 1024 * 8 = 672 KiB (f64)
//       + 128 KiB.
//   Measured (fifth session; Zen 5, 2 threads, GFLOP/s, four / three interleaved rounds of
//   separate processes; the machine's noise is +-3%):
//       f32 MC,KC  n = 1024           n = 2048           f64 MC,KC  n = 1024           n = 2048
//       224,512    443-470            454-460            224,512    220-227            208-220
//       112,512    465-487            445-465            56,1024    217-225            213-219
//       112,768    458-480            462-475            84,768     218-232            214-223
//       168,768    463-492            464-469            112,768    227-234            225-229
//       112,1024   465-485            480-489
//   Sixth session, f64 (2 threads, eight interleaved rounds, GFLOP/s at n = 1024; the host was
//   slower that day): 112,768 198-220, 84,1024 197-227, 70,1024 203-226; KC 1024 won in 7 of
//   the 8 paired rounds by 2-7%. n = 512 (one K block either way) and 2048 the same within
//   noise; n = 3000 (K blocks of 1000 instead of 750) 199-208 against 205-210.
//   (Earlier, one thread with B pre-packed: KC 256 -> 228-238, 384 -> 238-241, 512 -> 245.)
//   NC: the B block KC x NC sits in L3 (shared by the cores): 2048 * 1024 * 4 = 8 MiB per
//       thread (f32), 2048 * 1024 * 8 = 16 MiB (f64). f32 n = 4096: NC 4096 (16 MiB) and 2048
//       measured the same (474-486 GFLOP/s); the smaller block leaves L3 room for both threads.
// AVX2 keeps the Haswell-class BLIS shapes (6x16 / 6x8) with the same rules for 32 KiB L1.
// The generic kernels use small tiles the compiler can keep in 16 SSE registers.
#include <algorithm>

#include "cpu/gemm/ukr.h"

namespace nnk {

// The epilogue's activation for tiles of one ISA: its vectorised activation, row by row.
template <typename T, Isa I>
static void act_tile(T* c, index_t ldc, index_t m, index_t n, Act act, T p) {
  for (index_t i = 0; i < m; ++i) act_forward_contig<T>(I, c + i * ldc, c + i * ldc, n, act, p);
}

template <>
const GemmKernel<float>& gemm_kernel<float>(Isa isa) {
  //                                         ukr                      MR  NR   MC   KC    NC
  static const GemmKernel<float> generic = {cpu::generic::sgemm_ukr_6x8, 6, 8, 144, 256, 2048, act_tile<float, Isa::generic>,
                                             cpu::generic::pack_a<float>, cpu::generic::pack_b<float>,
                                            cpu::generic::sdot_kernel};
#if defined(NNK_X86)
  static const GemmKernel<float> avx2 = {cpu::avx2::sgemm_ukr_6x16, 6, 16, 144, 256, 4080, act_tile<float, Isa::avx2>,
                                          cpu::generic::pack_a<float>, cpu::generic::pack_b<float>,
                                            cpu::avx2::sdot_kernel};
  static const GemmKernel<float> avx512 = {cpu::avx512::sgemm_ukr_14x32, 14, 32, 112, 1024, 2048, act_tile<float, Isa::avx512>,
                                            cpu::avx512::pack_a<float>, cpu::avx512::pack_b<float>,
                                            cpu::avx512::sdot_kernel};
  if (isa == Isa::avx512) return avx512;
  if (isa == Isa::avx2) return avx2;
#endif
  return generic;
}

template <>
const GemmKernel<double>& gemm_kernel<double>(Isa isa) {
  static const GemmKernel<double> generic = {cpu::generic::dgemm_ukr_4x4, 4, 4, 96, 256, 2048, act_tile<double, Isa::generic>,
                                              cpu::generic::pack_a<double>, cpu::generic::pack_b<double>,
                                            cpu::generic::ddot_kernel};
#if defined(NNK_X86)
  static const GemmKernel<double> avx2 = {cpu::avx2::dgemm_ukr_6x8, 6, 8, 72, 256, 4080, act_tile<double, Isa::avx2>,
                                           cpu::generic::pack_a<double>, cpu::generic::pack_b<double>,
                                            cpu::avx2::ddot_kernel};
  static const GemmKernel<double> avx512 = {cpu::avx512::dgemm_ukr_14x16, 14, 16, 84, 1024, 2048, act_tile<double, Isa::avx512>,
                                             cpu::avx512::pack_a<double>, cpu::avx512::pack_b<double>,
                                            cpu::avx512::ddot_kernel};
  if (isa == Isa::avx512) return avx512;
  if (isa == Isa::avx2) return avx2;
#endif
  return generic;
}

namespace {
// Rows a kernel of MR computes for M.
inline index_t padded_rows(index_t M, index_t MR) { return ceil_div(std::max<index_t>(M, 1), MR) * MR; }

template <typename T>
const GemmKernel<T>& pick(const GemmKernel<T>& big, const GemmKernel<T>& small, index_t M, index_t packed_mr) {
  if (packed_mr) return packed_mr == small.MR ? small : big;
  // The small tile loads B twice as often per FMA; take it only when it saves >= 5% rows.
  return padded_rows(M, small.MR) * 20 < padded_rows(M, big.MR) * 19 ? small : big;
}
}  // namespace

#if defined(NNK_X86)
template <typename T> const GemmKernel<T>& avx512_8rows();
template <>
const GemmKernel<float>& avx512_8rows<float>() {
  static const GemmKernel<float> k = {cpu::avx512::sgemm_ukr_8x32, 8, 32, 112, 1024, 2048, act_tile<float, Isa::avx512>,
                                      cpu::avx512::pack_a<float>, cpu::avx512::pack_b<float>, cpu::avx512::sdot_kernel};
  return k;
}
template <>
const GemmKernel<double>& avx512_8rows<double>() {
  static const GemmKernel<double> k = {cpu::avx512::dgemm_ukr_8x16, 8, 16, 80, 1024, 2048, act_tile<double, Isa::avx512>,
                                       cpu::avx512::pack_a<double>, cpu::avx512::pack_b<double>, cpu::avx512::ddot_kernel};
  return k;
}
#endif

template <typename T>
const GemmKernel<T>& gemm_kernel_for(Isa isa, index_t M, index_t packed_mr) {
#if defined(NNK_X86)
  if (isa == Isa::avx512) return pick(gemm_kernel<T>(isa), avx512_8rows<T>(), M, packed_mr);
#endif
  (void)M; (void)packed_mr;
  return gemm_kernel<T>(isa);
}
template const GemmKernel<float>& gemm_kernel_for<float>(Isa, index_t, index_t);
template const GemmKernel<double>& gemm_kernel_for<double>(Isa, index_t, index_t);

}  // namespace nnk
