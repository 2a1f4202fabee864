// Argument parsing and geometry shared by the CPU and CUDA convolution-family bindings:
// (h, w) pairs, and unfold / fold (im2col / col2im) geometry with the CPU path's messages.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "cpu/conv/conv.h"

namespace nnk::bind {

using Pair = std::array<index_t, 2>;

std::string pair_str(const Pair& p);
// int or a sequence of 1 or 2 ints -> (h, w); TypeError / ValueError naming `name` and `op`.
Pair parse_pair(py::handle h, const char* name, const char* op);
void check_positive(const Pair& p, const char* name, const char* op);
void check_nonneg(const Pair& p, const char* name, const char* op);

// Geometry of unfold / fold (groups 1, no weight) for an (N, C, H, W) image.
ConvGeom fold_geom(const char* op, index_t N, index_t C, index_t H, index_t W, py::handle k, py::handle d,
                   py::handle p, py::handle s);
// im2col's output: (N, C*kh*kw, L), or (C*kh*kw, L) unbatched.
std::vector<index_t> im2col_shape(const ConvGeom& g, bool batched);
// col2im's geometry from cols (N, C*kh*kw, L) or (C*kh*kw, L) and output_size; `batched` set.
ConvGeom col2im_geom(const std::vector<index_t>& cols_shape, py::handle output_size, py::handle k, py::handle d,
                     py::handle p, py::handle s, bool& batched);

}  // namespace nnk::bind
