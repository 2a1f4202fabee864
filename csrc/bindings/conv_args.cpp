#include "bindings/conv_args.h"

namespace nnk::bind {

std::string pair_str(const Pair& p) { return "(" + std::to_string(p[0]) + ", " + std::to_string(p[1]) + ")"; }

// int or a sequence of 1 or 2 ints -> (h, w).
Pair parse_pair(py::handle h, const char* name, const char* op) {
  auto as_int = [&](py::handle v) -> index_t {
    if (py::isinstance<py::bool_>(v) || !py::isinstance<py::int_>(py::reinterpret_borrow<py::object>(v))) {
      // numpy integers are accepted through __index__.
      if (!PyIndex_Check(v.ptr()) || py::isinstance<py::bool_>(v))
        throw TypeError(std::string(op) + ": " + name + " must be an int or a pair of ints, got " +
                        std::string(py::str(py::type::of(v).attr("__name__"))));
    }
    return py::reinterpret_steal<py::object>(PyNumber_Index(v.ptr())).cast<index_t>();
  };
  if (py::isinstance<py::tuple>(h) || py::isinstance<py::list>(h)) {
    py::sequence s = py::reinterpret_borrow<py::sequence>(h);
    if (s.size() == 1) { index_t v = as_int(s[0]); return {v, v}; }
    if (s.size() != 2)
      throw ValueError(std::string(op) + ": " + name + " must be an int or a pair of ints, got a sequence of " +
                       std::to_string(s.size()));
    return {as_int(s[0]), as_int(s[1])};
  }
  index_t v = as_int(h);
  return {v, v};
}

void check_positive(const Pair& p, const char* name, const char* op) {
  if (p[0] <= 0 || p[1] <= 0)
    throw ValueError(std::string(op) + ": " + name + " must be positive, got " + pair_str(p));
}
void check_nonneg(const Pair& p, const char* name, const char* op) {
  if (p[0] < 0 || p[1] < 0)
    throw ValueError(std::string(op) + ": " + name + " must be non-negative, got " + pair_str(p));
}

// Geometry of unfold / fold (groups 1, no weight).
ConvGeom fold_geom(const char* op, index_t N, index_t C, index_t H, index_t W, py::handle k_, py::handle d_,
                   py::handle p_, py::handle s_) {
  const Pair k = parse_pair(k_, "kernel_size", op), d = parse_pair(d_, "dilation", op);
  const Pair p = parse_pair(p_, "padding", op), s = parse_pair(s_, "stride", op);
  check_positive(k, "kernel_size", op);
  check_positive(d, "dilation", op);
  check_positive(s, "stride", op);
  check_nonneg(p, "padding", op);
  ConvGeom g;
  g.N = N; g.C = C; g.H = H; g.W = W; g.Cout = C;
  g.kh = k[0]; g.kw = k[1]; g.dh = d[0]; g.dw = d[1]; g.pt = p[0]; g.pl = p[1]; g.sh = s[0]; g.sw = s[1];
  const index_t nh = H + 2 * p[0] - d[0] * (k[0] - 1) - 1, nw = W + 2 * p[1] - d[1] * (k[1] - 1) - 1;
  if (nh < 0 || nw < 0)
    throw ValueError(std::string(op) + ": kernel_size " + pair_str(k) + " with dilation " + pair_str(d) +
                     " is larger than the padded spatial size " + pair_str({H + 2 * p[0], W + 2 * p[1]}));
  g.Ho = nh / s[0] + 1;
  g.Wo = nw / s[1] + 1;
  return g;
}

std::vector<index_t> im2col_shape(const ConvGeom& g, bool batched) {
  const index_t K = checked_mul(g.C, checked_mul(g.kh, g.kw, "im2col"), "im2col");
  std::vector<index_t> shape = {K, g.L()};
  if (batched) shape.insert(shape.begin(), g.N);
  return shape;
}

ConvGeom col2im_geom(const std::vector<index_t>& cs, py::handle size_, py::handle k, py::handle d, py::handle p,
                     py::handle s, bool& batched) {
  const char* op = "col2im";
  if (cs.size() != 2 && cs.size() != 3)
    throw ValueError(std::string(op) + ": cols must be 2-D (C*kh*kw, L) or 3-D (N, C*kh*kw, L), got shape " + shape_str(cs));
  batched = cs.size() == 3;
  const Pair sz = parse_pair(size_, "output_size", op);
  check_nonneg(sz, "output_size", op);
  const Pair kk = parse_pair(k, "kernel_size", op);
  check_positive(kk, "kernel_size", op);
  const index_t N = batched ? cs[0] : 1, K = cs[batched ? 1 : 0], L = cs[batched ? 2 : 1];
  if (K % (kk[0] * kk[1]) != 0)
    throw ValueError(std::string(op) + ": cols " + shape_str(cs) + ": dimension " + std::to_string(K) +
                     " is not divisible by the kernel size " + pair_str(kk));
  ConvGeom g = fold_geom(op, N, K / (kk[0] * kk[1]), sz[0], sz[1], k, d, p, s);
  if (g.L() != L)
    throw ValueError(std::string(op) + ": cols " + shape_str(cs) + " has " + std::to_string(L) +
                     " blocks, but output_size " + pair_str(sz) + " with these parameters gives " +
                     pair_str({g.Ho, g.Wo}) + " = " + std::to_string(g.L()));
  return g;
}

}  // namespace nnk::bind
