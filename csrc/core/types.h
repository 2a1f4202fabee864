// Basic types shared by every kernel. Sizes and offsets are always int64 (index_t).
#pragma once
#include <cstdint>

namespace nnk {

using index_t = int64_t;

enum class DType : int { f32 = 0, f64 = 1 };

inline const char* dtype_name(DType dt) { return dt == DType::f32 ? "float32" : "float64"; }
inline index_t dtype_size(DType dt) { return dt == DType::f32 ? 4 : 8; }

template <typename T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
inline index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }

}  // namespace nnk
