// Argument parsing and geometry shared by the CPU and CUDA convolution-family bindings, with
// the CPU path's messages: (h, w) pairs, unfold / fold (im2col / col2im), conv_transpose2d
// and pooling. Shapes only: each binding checks its own arrays' dtypes.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "cpu/conv/conv.h"
#include "cpu/pool/pool.h"

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

// The convolution that conv_transpose2d transposes: its input side is the transposed op's
// output (N, Cout_t, Ho_t, Wo_t), its output side the transposed op's x (x: 4-D shape).
ConvGeom convt_geom(const char* op, const std::vector<index_t>& x, const std::vector<index_t>& w, py::handle stride,
                    py::handle padding, py::handle output_padding, index_t groups, py::handle dilation);

struct PoolArgs {
  PoolGeom g;
  bool batched;
  std::vector<index_t> in_shape, out_shape;
};
// x's shape (N, C, H, W) or (C, H, W) and the pooling parameters checked (torch's
// pool2d_shape_check); the geometry and the output shape.
PoolArgs pool_args(const char* op, const std::vector<index_t>& xs, py::handle k, py::handle s, py::handle p,
                   py::handle d, bool ceil);
// A sequence of ints (input_shape); TypeError otherwise.
std::vector<index_t> shape_arg(py::handle h, const char* name, const char* op);
// max_pool2d_backward's shapes checked: input_shape xs, grad_out and indices of one shape
// matching xs but in the last two dims.
PoolGeom max_pool_backward_geom(const std::vector<index_t>& xs, const std::vector<index_t>& grad_out,
                                const std::vector<index_t>& indices);

}  // namespace nnk::bind
