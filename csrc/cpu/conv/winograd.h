// Winograd F(2x2, 3x3) convolution: 3x3 kernels, stride 1, dilation 1, one group.
//
// Each 2x2 block of outputs (a tile) comes from a 4x4 block d of the input:
//   Y = A^T [ sum_c (G g_c G^T) .* (B^T d_c B) ] A
// with the standard F(2, 3) matrices (Lavin & Gray, 2016)
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
//   A^T = [1 1 1 0; 0 1 -1 -1].
// For each of the 16 positions xi of the 4x4 transform, the channel sum is a matrix product
//   M_xi (Cout x tiles) = U_xi (Cout x C) @ V_xi (C x tiles)
// run on the GEMM micro-kernels: 16 products of 2 * Cout * C flops per tile against
// 36 * 2 * Cout * C / 4 per output pixel of the direct method, 2.25x fewer.
//
// The driver (conv_winograd.cpp) cuts the tiles (n, th, tw), numbered image by image and
// row by row, into blocks; per block, the input transform writes V straight into the
// micro-kernels' packed B layout, the 16 products write M, and the output transform adds the
// bias and writes Y. The transforms are the per-ISA kernels below (winograd.inl).
#pragma once
#include <algorithm>

#include "core/types.h"

namespace nnk {

struct WinoGeom {
  index_t N = 0, C = 0, H = 0, W = 0;   // input x (N, C, H, W)
  index_t Cout = 0, Ho = 0, Wo = 0;     // output y (N, Cout, Ho, Wo)
  index_t pt = 0, pl = 0;               // y[oh, ow] reads x[oh - pt + i, ow - pl + j]; may be negative
  index_t TH = 0, TW = 0;               // tiles per column / row: ceil(Ho / 2), ceil(Wo / 2)
};

namespace cpu {
// Input transform of the tiles [t0, t0 + nt) (nt <= NR) of x: V holds, for each xi, a C x NR
// matrix (one packed B panel of the micro-kernel: row c at c * NR), columns nt..NR zero.
// tmp: wino_tmp_elems(g, NR) elements.
// (With NR = a block length ld, V is a plain row-major C x ld matrix per xi: the weight
// gradient's use.)
// dY transform (weight gradient): Y_xi (Cout x ld) = (A dy A^T)[xi] of dY's tiles [t0, t0 + nt).
// Output transform: y's tiles [t0, t0 + nt) from M (16 row-major Cout x ntp matrices, one
// after another), plus bias[o] (may be null); false when an output is not finite.
#define NNK_WINO_DECL                                                                                 \
  void wino_input(DType dt, const WinoGeom& g, const void* x, index_t t0, index_t nt, index_t NR,     \
                  void* V, void* tmp);                                                                \
  bool wino_output(DType dt, const WinoGeom& g, const void* M, index_t t0, index_t nt, index_t ntp,   \
                   void* y, const void* bias, void* tmp);                                         \
  void wino_dy(DType dt, const WinoGeom& g, const void* dy, index_t t0, index_t nt, index_t ld, void* Y,  \
               void* tmp);
namespace generic { NNK_WINO_DECL }
namespace avx2 { NNK_WINO_DECL }
namespace avx512 { NNK_WINO_DECL }
#undef NNK_WINO_DECL
}  // namespace cpu

// Elements between consecutive xi matrices of V (rows = C) and M (rows = Cout): rows x NR plus a
// skew of 16 elements, so that the transforms' 16 streams do not fall in the same L1 sets
// (rows * NR * 4 bytes is a multiple of 4 KiB for 32, 64, 128, ... channels).
inline index_t wino_mat_stride(index_t rows, index_t NR) { return rows * NR + 16; }

inline index_t wino_tmp_elems(const WinoGeom& g, index_t ntp) { return std::max<index_t>(4 * ntp, 8 * (g.TW + 2)); }

// y = conv3x3(x, w) + bias in the geometry g (WinoGeom's reading rule). transposed: w is
// (C, Cout, 3, 3) and the kernel used is w[c, o, 2 - i, 2 - j] (backward-data of a
// convolution as a forward one); else w is (Cout, C, 3, 3).
// Returns false, y then holding garbage, when an output is not finite: an infinity in x or w
// meets both signs inside the transforms (inf - inf) and gives NaN where the direct sum gives
// +-inf, so the caller recomputes such a call by the direct (im2col) method, which
// propagates NaN and Inf as torch does. Finite data never take that path (barring overflow).
bool winograd_conv3x3(DType dt, const WinoGeom& g, void* y, const void* x, const void* w, bool transposed,
                      const void* bias);

// The weight gradient of y = conv3x3(x, w) in the geometry g, dw (Cout, C, 3, 3) overwritten:
//   dw[o, c, i, j] = sum_{n, oh, ow} dy[n, o, oh, ow] x[n, c, oh - pt + i, ow - pl + j]
// By the bilinear identity <dy, A^T (U .* D) A> = <A dy A^T, U .* D> and U = G g G^T:
//   dw = G^T [ sum_tiles (A dy_t A^T) .* (B^T d_t B) ] G,
// 16 products Mw_xi (Cout x C) = Y_xi (Cout x tiles) @ V_xi^T over all tiles (K = tiles).
// Returns false when an entry of dw is not finite (recompute as above).
bool winograd_conv3x3_weight(DType dt, const WinoGeom& g, void* dw, const void* dy, const void* x);

}  // namespace nnk
