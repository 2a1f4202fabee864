// Packing of GEMM operands into micro-panels (contract in ukr.h):
//   pack_a: A block (mc x kc, strides rs, cs) -> dst[panel][p][MR], panels of MR rows.
//   pack_b: B block (kc x nc, strides rs, cs) -> dst[panel][p][NR], panels of NR columns.
// Both zero-pad the last panel. Any strides; the per-ISA versions vectorise the common
// layouts (contiguous copies and in-register transposes) and fall back to the portable one.
#pragma once
#include "core/types.h"

namespace nnk {

template <typename T>
using PackFn = void (*)(T* dst, const T* src, index_t rs, index_t cs, index_t rows,
                        index_t cols, index_t R);

namespace cpu::generic {
template <typename T>
void pack_a(T* dst, const T* a, index_t rs, index_t cs, index_t mc, index_t kc, index_t MR);
template <typename T>
void pack_b(T* dst, const T* b, index_t rs, index_t cs, index_t kc, index_t nc, index_t NR);
}  // namespace cpu::generic

namespace cpu::avx512 {
template <typename T>
void pack_a(T* dst, const T* a, index_t rs, index_t cs, index_t mc, index_t kc, index_t MR);
template <typename T>
void pack_b(T* dst, const T* b, index_t rs, index_t cs, index_t kc, index_t nc, index_t NR);
}  // namespace cpu::avx512

}  // namespace nnk
