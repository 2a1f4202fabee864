// 2-D max and average pooling over planes (N*C planes of H x W, C-contiguous), forward and
// backward, with torch's semantics:
//   window of output (oh, ow): rows oh*sh - ph + i*dh (i < kh), columns ow*sw - pw + j*dw.
//   max:  y = max over the in-range window; indices = flat ih*W + iw of the first maximum,
//         a NaN wins (and a later NaN replaces an earlier one, as torch's CPU kernel);
//         a window of -inf keeps its first in-range position.
//   avg:  window rows clipped to [oh*sh - ph, min(oh*sh - ph + kh, H + ph)), then to [0, H);
//         divisor = the unclipped-to-[0, H) area when count_include_pad, else the in-range
//         area (a window hanging off the edge in ceil_mode counts only up to H + ph).
// Ho / Wo come from the caller (torch's pooling_output_shape, ceil_mode included).
#pragma once
#include <cstdint>

#include "core/types.h"

namespace nnk {

struct PoolGeom {
  index_t planes = 0, H = 0, W = 0, Ho = 0, Wo = 0;
  index_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
};

// y (planes, Ho, Wo); idx (planes, Ho, Wo) int64 or null.
void max_pool2d_forward(DType dt, const PoolGeom& g, void* y, int64_t* idx, const void* x);
// dx (planes, H, W) = scatter-add of dy at idx. Returns false (and skips the entry) when
// an index lies outside [0, H*W).
bool max_pool2d_backward(DType dt, const PoolGeom& g, void* dx, const void* dy, const int64_t* idx);
void avg_pool2d_forward(DType dt, const PoolGeom& g, void* y, const void* x, bool count_include_pad);
void avg_pool2d_backward(DType dt, const PoolGeom& g, void* dx, const void* dy, bool count_include_pad);

// One output row of the 2x2 / stride-2 max pool: r0, r1 the two input rows, y and idx
// (may be null) Wo outputs; base = flat index of r0[0] within the plane, W the row length.
namespace cpu::avx512 {
void max_pool2x2_row(const float* r0, const float* r1, float* y, int64_t* idx, index_t Wo,
                     int64_t base, int64_t W);
void max_pool2x2_row(const double* r0, const double* r1, double* y, int64_t* idx, index_t Wo,
                     int64_t base, int64_t W);
}  // namespace cpu::avx512

namespace ref {
void max_pool2d_forward(DType dt, const PoolGeom& g, void* y, int64_t* idx, const void* x);
void avg_pool2d_forward(DType dt, const PoolGeom& g, void* y, const void* x, bool count_include_pad);
}  // namespace ref

}  // namespace nnk
