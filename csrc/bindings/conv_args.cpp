#include "bindings/conv_args.h"

#include <algorithm>

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

// Geometry of the convolution that conv_transpose2d transposes: its input side is the
// transposed op's output (N, Cout_t, Ho_t, Wo_t), its output side the transposed op's x.
ConvGeom convt_geom(const char* op, const std::vector<index_t>& x, const std::vector<index_t>& w, py::handle stride_,
                    py::handle padding_, py::handle output_padding_, index_t groups, py::handle dilation_) {
  if (w.size() != 4)
    throw ValueError(std::string(op) + ": weight must be 4-D (C_in, C_out/groups, kh, kw), got shape " + shape_str(w));
  const Pair st = parse_pair(stride_, "stride", op), dl = parse_pair(dilation_, "dilation", op);
  const Pair pd = parse_pair(padding_, "padding", op), op_ = parse_pair(output_padding_, "output_padding", op);
  check_positive(st, "stride", op);
  check_positive(dl, "dilation", op);
  check_nonneg(pd, "padding", op);
  check_nonneg(op_, "output_padding", op);
  if (groups <= 0) throw ValueError(std::string(op) + ": groups must be positive, got " + std::to_string(groups));
  if ((op_[0] >= st[0] && op_[0] >= dl[0]) || (op_[1] >= st[1] && op_[1] >= dl[1]))
    throw ValueError(std::string(op) + ": output_padding " + pair_str(op_) + " must be smaller than either stride " +
                     pair_str(st) + " or dilation " + pair_str(dl));
  const index_t Cin = x[1];
  if (Cin % groups != 0)
    throw ValueError(std::string(op) + ": groups=" + std::to_string(groups) + " does not divide the input channels of x " +
                     shape_str(x));
  if (w[0] != Cin)
    throw ValueError(std::string(op) + ": weight " + shape_str(w) + " expects " + std::to_string(w[0]) +
                     " input channels (weight.shape[0]), but x " + shape_str(x) + " has " + std::to_string(Cin));
  if (w[2] <= 0 || w[3] <= 0)
    throw ValueError(std::string(op) + ": weight " + shape_str(w) + " has an empty kernel");
  ConvGeom g;
  g.N = x[0];
  g.Cout = Cin; g.Ho = x[2]; g.Wo = x[3];
  g.C = w[1] * groups;
  g.kh = w[2]; g.kw = w[3];
  g.sh = st[0]; g.sw = st[1]; g.dh = dl[0]; g.dw = dl[1]; g.pt = pd[0]; g.pl = pd[1]; g.groups = groups;
  g.H = (g.Ho - 1) * g.sh - 2 * pd[0] + g.dh * (g.kh - 1) + op_[0] + 1;
  g.W = (g.Wo - 1) * g.sw - 2 * pd[1] + g.dw * (g.kw - 1) + op_[1] + 1;
  if (g.H <= 0 || g.W <= 0)
    throw ValueError(std::string(op) + ": x " + shape_str(x) + " and weight " + shape_str(w) +
                     " give a non-positive output size " + pair_str({g.H, g.W}));
  return g;
}

PoolArgs pool_args(const char* op, const std::vector<index_t>& xs, py::handle k_, py::handle s_, py::handle p_,
                   py::handle d_, bool ceil) {
  if (xs.size() != 3 && xs.size() != 4)
    throw ValueError(std::string(op) + ": x must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape " + shape_str(xs));
  const Pair k = parse_pair(k_, "kernel_size", op);
  const bool no_stride = s_.is_none() || (py::isinstance<py::sequence>(s_) && !py::isinstance<py::str>(s_) &&
                                          py::len(s_) == 0);
  const Pair s = no_stride ? k : parse_pair(s_, "stride", op);
  const Pair p = parse_pair(p_, "padding", op), d = parse_pair(d_, "dilation", op);
  check_positive(k, "kernel_size", op);
  check_positive(s, "stride", op);
  check_positive(d, "dilation", op);
  check_nonneg(p, "padding", op);
  if (p[0] > k[0] / 2 || p[1] > k[1] / 2)
    throw ValueError(std::string(op) + ": padding " + pair_str(p) + " must be at most half of kernel_size " + pair_str(k));
  PoolArgs a;
  a.batched = xs.size() == 4;
  const index_t H = xs[xs.size() - 2], W = xs[xs.size() - 1];
  index_t planes = 1;
  for (size_t i = 0; i + 2 < xs.size(); ++i) planes *= xs[i];
  if (H <= 0 || W <= 0 || xs[xs.size() - 3] <= 0)
    throw ValueError(std::string(op) + ": x " + shape_str(xs) + " must have non-zero channel and spatial sizes");
  PoolGeom& g = a.g;
  g.planes = planes; g.H = H; g.W = W;
  g.kh = k[0]; g.kw = k[1]; g.sh = s[0]; g.sw = s[1]; g.ph = p[0]; g.pw = p[1]; g.dh = d[0]; g.dw = d[1];
  g.Ho = pool_out_size(H, k[0], s[0], p[0], d[0], ceil);
  g.Wo = pool_out_size(W, k[1], s[1], p[1], d[1], ceil);
  if (g.Ho < 1 || g.Wo < 1)
    throw ValueError(std::string(op) + ": x " + shape_str(xs) + " with kernel_size " + pair_str(k) + ", dilation " +
                     pair_str(d) + " and padding " + pair_str(p) + " gives an empty output " + pair_str({g.Ho, g.Wo}));
  a.in_shape = xs;
  a.out_shape = xs;
  a.out_shape[xs.size() - 2] = g.Ho;
  a.out_shape[xs.size() - 1] = g.Wo;
  return a;
}

std::vector<index_t> shape_arg(py::handle h, const char* name, const char* op) {
  std::vector<index_t> v;
  if (!py::isinstance<py::sequence>(h) || py::isinstance<py::str>(h))
    throw TypeError(std::string(op) + ": " + name + " must be a sequence of ints");
  for (py::handle e : py::reinterpret_borrow<py::sequence>(h)) {
    PyObject* i = PyNumber_Index(e.ptr());  // numpy integers too; TypeError for anything else
    if (!i) throw py::error_already_set();
    v.push_back(py::reinterpret_steal<py::object>(i).cast<index_t>());
  }
  return v;
}

PoolGeom max_pool_backward_geom(const std::vector<index_t>& xs, const std::vector<index_t>& go,
                                const std::vector<index_t>& idx) {
  const char* op = "max_pool2d_backward";
  if (xs.size() != 3 && xs.size() != 4)
    throw ValueError(std::string(op) + ": input_shape must have 3 or 4 entries, got " + shape_str(xs));
  for (index_t v : xs)
    if (v < 0) throw ValueError(std::string(op) + ": input_shape " + shape_str(xs) + " has a negative size");
  if (go != idx)
    throw ValueError(std::string(op) + ": grad_out " + shape_str(go) + " and indices " + shape_str(idx) +
                     " must have the same shape");
  if (go.size() != xs.size() || !std::equal(xs.begin(), xs.end() - 2, go.begin()))
    throw ValueError(std::string(op) + ": grad_out " + shape_str(go) + " does not match input_shape " + shape_str(xs));
  PoolGeom g;
  g.H = xs[xs.size() - 2]; g.W = xs[xs.size() - 1];
  g.Ho = go[xs.size() - 2]; g.Wo = go[xs.size() - 1];
  g.planes = 1;
  for (size_t i = 0; i + 2 < xs.size(); ++i) g.planes *= xs[i];
  return g;
}

}  // namespace nnk::bind
