// Vectorised im2col packing for stride-1 convolution ("shifted planes"), one build per ISA.
//
// The virtual B (Kg x L) of a convolution whose taps all read their planes with unit
// stride. Row p is tap t = p % ntaps of channel c = p / ntaps; it reads the plane at
// base + c * cstride + toff[t] (Hs x Ws elements, row-major) shifted by (dy[t], dx[t]):
//   B[p, l] = plane[(oh + dy[t]) * Ws + ow + dx[t]]  if 0 <= oh + dy[t] < Hs and 0 <= ow + dx[t] < Ws
//           = 0                                        otherwise                 (l = oh * Wo + ow)
// A stride-1 convolution is this with one plane per channel (toff = 0, dy = i*dh - pt,
// dx = j*dw - pl); a strided one is this over its stride phases (conv.cpp).
//
// shift_pack writes rows p0 .. p0 + kc, columns j0 .. j0 + nc into dst[panel][p][NR]
// (panels of NR columns, zero-padded), like a VirtualB packer (gemm.h). shift_pack_trans
// does the same for B^T (L x Kg: rows are pixels q, columns rows p of B), the virtual B of
// the backward-weight; it packs blocks of B as above and transposes them in registers.
// Method: for one panel, the NR output pixels fall into a few output-row segments; for a
// given tap each segment reads one contiguous run of one input row, clipped at the plane's
// edges. So, per panel, every (tap, vector of lanes) gets a short list of (offset, lane
// mask) pairs, built once (runs that continue on the next input row, as when Wo == Ws,
// share one entry); then, tap by tap, the rows of all channels are 1-2 masked vector loads
// per vector (merged) and one store, with the offsets and masks held in registers.
// Masked-off lanes may point outside the plane: masked loads do not touch them (AVX-512 /
// AVX2 fault suppression; the generic build reads lane by lane). Panels in which a vector
// needs more than two runs (outputs much narrower than a vector) are packed lane by lane.
#pragma once
#include <cstdint>

#include "core/types.h"

namespace nnk {

struct ShiftPack {
  const void* base = nullptr;
  index_t cstride = 0;                 // elements from one channel's planes to the next
  index_t ntaps = 0;
  const index_t* toff = nullptr;       // per tap: its plane's offset within the channel
  const index_t* dy = nullptr;         // per tap
  const index_t* dx = nullptr;         // per tap
  index_t Hs = 0, Ws = 0;              // plane
  index_t Ho = 0, Wo = 0;              // output grid (L = Ho * Wo)
  index_t istride = 0;                 // several images side by side: column l = n * L + (oh * Wo + ow)
                                       // reads image n's planes, istride elements further on
};

using ShiftPackFn = void (*)(DType, const ShiftPack&, void*, index_t, index_t, index_t, index_t, index_t);  // either

namespace cpu {
#define NNK_SHIFT_PACK_DECL                                                                         \
  void shift_pack(DType dt, const ShiftPack& s, void* dst, index_t p0, index_t kc, index_t j0, index_t nc, \
                  index_t NR);                                                                     \
  void shift_pack_trans(DType dt, const ShiftPack& s, void* dst, index_t q0, index_t kc, index_t j0,          \
                        index_t nc, index_t NR);
namespace generic { NNK_SHIFT_PACK_DECL }
namespace avx2 { NNK_SHIFT_PACK_DECL }
namespace avx512 { NNK_SHIFT_PACK_DECL }
#undef NNK_SHIFT_PACK_DECL
}  // namespace cpu

}  // namespace nnk
