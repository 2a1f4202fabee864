// conv2d, conv2d_backward, conv_transpose2d(_backward), im2col, col2im, max_pool2d,
// avg_pool2d and their backwards: argument checks (messages name arguments and shapes),
// geometry, outputs; the kernels are in cpu/conv and cpu/pool.
#include <array>
#include <string>

#include "bindings/common.h"
#include "bindings/conv_args.h"
#include "cpu/conv/conv.h"
#include "cpu/pool/pool.h"

namespace nnk::bind {

namespace {

// x (N, C, H, W) or (C, H, W) -> 4-D view (contiguous); `batched` says which.
Tensor as_image(py::handle h, const char* name, const char* op, bool& batched) {
  Tensor t = as_float(h, name);
  if (t.ndim() != 3 && t.ndim() != 4)
    throw ValueError(std::string(op) + ": " + name + " must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape " +
                     shape_str(t));
  batched = t.ndim() == 4;
  t = contiguous(t);
  if (!batched) {
    t.shape.insert(t.shape.begin(), 1);
    t.strides.insert(t.strides.begin(), t.shape[1] * t.shape[2] * t.shape[3]);
  }
  return t;
}

std::vector<index_t> image_shape(bool batched, index_t N, index_t C, index_t H, index_t W) {
  if (batched) return {N, C, H, W};
  return {C, H, W};
}

// Geometry of conv2d for x (N, C, H, W) and weight (Cout, C/groups, kh, kw).
ConvGeom conv_geom(const char* op, const Tensor& x, const Tensor& w, py::handle stride_,
                   py::handle padding_, py::handle dilation_, index_t groups, Pair* pads_out = nullptr) {
  if (w.ndim() != 4)
    throw ValueError(std::string(op) + ": weight must be 4-D (Cout, C/groups, kh, kw), got shape " + shape_str(w));
  const Pair st = parse_pair(stride_, "stride", op), dl = parse_pair(dilation_, "dilation", op);
  check_positive(st, "stride", op);
  check_positive(dl, "dilation", op);
  if (groups <= 0) throw ValueError(std::string(op) + ": groups must be positive, got " + std::to_string(groups));
  ConvGeom g;
  g.N = x.shape[0]; g.C = x.shape[1]; g.H = x.shape[2]; g.W = x.shape[3];
  g.Cout = w.shape[0]; g.kh = w.shape[2]; g.kw = w.shape[3];
  g.sh = st[0]; g.sw = st[1]; g.dh = dl[0]; g.dw = dl[1]; g.groups = groups;
  if (g.kh <= 0 || g.kw <= 0)
    throw ValueError(std::string(op) + ": weight " + shape_str(w) + " has an empty kernel");
  if (g.C % groups != 0)
    throw ValueError(std::string(op) + ": groups=" + std::to_string(groups) + " does not divide the input channels of x " +
                     shape_str(x));
  if (g.Cout % groups != 0)
    throw ValueError(std::string(op) + ": groups=" + std::to_string(groups) +
                     " does not divide the output channels of weight " + shape_str(w));
  if (w.shape[1] * groups != g.C)
    throw ValueError(std::string(op) + ": weight " + shape_str(w) + " expects " + std::to_string(w.shape[1] * groups) +
                     " input channels (weight.shape[1] * groups), but x " + shape_str(x) + " has " + std::to_string(g.C));
  const index_t ekh = g.dh * (g.kh - 1) + 1, ekw = g.dw * (g.kw - 1) + 1;
  index_t pt, pb, pl, pr;
  if (py::isinstance<py::str>(padding_)) {
    const std::string s = padding_.cast<std::string>();
    if (s == "valid") {
      pt = pb = pl = pr = 0;
    } else if (s == "same") {
      if (g.sh != 1 || g.sw != 1)
        throw ValueError(std::string(op) + ": padding='same' is not supported for strided convolutions (stride " +
                         pair_str(st) + ")");
      pt = (ekh - 1) / 2; pb = ekh - 1 - pt;
      pl = (ekw - 1) / 2; pr = ekw - 1 - pl;
    } else {
      throw ValueError(std::string(op) + ": padding must be an int, a pair, 'same' or 'valid', got '" + s + "'");
    }
  } else {
    const Pair pd = parse_pair(padding_, "padding", op);
    check_nonneg(pd, "padding", op);
    pt = pb = pd[0];
    pl = pr = pd[1];
  }
  if (g.H + pt + pb < ekh || g.W + pl + pr < ekw)
    throw ValueError(std::string(op) + ": the kernel of weight " + shape_str(w) + " (dilation " + pair_str(dl) +
                     ") is larger than the padded input of x " + shape_str(x));
  g.pt = pt; g.pl = pl;
  g.Ho = (g.H + pt + pb - ekh) / g.sh + 1;
  g.Wo = (g.W + pl + pr - ekw) / g.sw + 1;
  if (pads_out) *pads_out = {pt, pl};
  return g;
}

// The optional bias of a convolution: None (a null Tensor) or n values of x's dtype,
// contiguous; `ctx` ends the shape error's message.
Tensor conv_bias(py::handle b_, const Tensor& x, index_t n, const char* op, const std::string& ctx) {
  Tensor b;
  if (b_.is_none()) return b;
  b = as_float(b_, "bias");
  check_same_dtype(x, "x", b, "bias");
  if (b.ndim() != 1 || b.shape[0] != n)
    throw ValueError(std::string(op) + ": bias " + shape_str(b) + " must have shape " + shape_str({n}) + ctx);
  return contiguous(b);
}

py::object py_conv2d(py::handle x_, py::handle w_, py::handle b_, py::handle stride, py::handle padding,
                     py::handle dilation, index_t groups, py::handle out_) {
  const char* op = "conv2d";
  bool batched;
  Tensor x = as_image(x_, "x", op, batched);
  Tensor w = as_float(w_, "weight");
  check_same_dtype(x, "x", w, "weight");
  ConvGeom g = conv_geom(op, x, w, stride, padding, dilation, groups);
  w = contiguous(w);
  Tensor b = conv_bias(b_, x, g.Cout, op, " for weight " + shape_str(w));
  Tensor out = output(out_, x.dtype, image_shape(batched, g.N, g.Cout, g.Ho, g.Wo),
                      {&x, &w, b_.is_none() ? nullptr : &b});
  {
    py::gil_scoped_release nogil;
    conv2d_forward(x.dtype, g, out.ptr, x.ptr, w.ptr, b_.is_none() ? nullptr : b.ptr);
  }
  return out.arr;
}

// grad_out (N, Cout, Ho, Wo) (or unbatched like x), contiguous.
Tensor grad_image(py::handle h, const Tensor& ref, bool batched, const std::vector<index_t>& expect, const char* op) {
  Tensor go = as_float(h, "grad_out");
  check_same_dtype(ref, "x", go, "grad_out");
  if (go.shape != expect)
    throw ValueError(std::string(op) + ": grad_out " + shape_str(go) + " must have shape " + shape_str(expect));
  go = contiguous(go);
  if (!batched) {
    go.shape.insert(go.shape.begin(), 1);
    go.strides.insert(go.strides.begin(), 0);
  }
  return go;
}

py::tuple py_conv2d_backward(py::handle go_, py::handle x_, py::handle w_, py::handle stride, py::handle padding,
                             py::handle dilation, index_t groups) {
  const char* op = "conv2d_backward";
  bool batched;
  Tensor x = as_image(x_, "x", op, batched);
  Tensor w = as_float(w_, "weight");
  check_same_dtype(x, "x", w, "weight");
  ConvGeom g = conv_geom(op, x, w, stride, padding, dilation, groups);
  w = contiguous(w);
  Tensor go = grad_image(go_, x, batched, image_shape(batched, g.N, g.Cout, g.Ho, g.Wo), op);
  Tensor gx = empty(x.dtype, image_shape(batched, g.N, g.C, g.H, g.W));
  Tensor gw = empty(x.dtype, w.shape);
  Tensor gb = empty(x.dtype, {g.Cout});
  {
    py::gil_scoped_release nogil;
    conv2d_backward(x.dtype, g, gx.ptr, gw.ptr, gb.ptr, go.ptr, x.ptr, w.ptr);
  }
  return py::make_tuple(gx.arr, gw.arr, gb.arr);
}

py::object py_conv_transpose2d(py::handle x_, py::handle w_, py::handle b_, py::handle stride, py::handle padding,
                               py::handle output_padding, index_t groups, py::handle dilation) {
  const char* op = "conv_transpose2d";
  bool batched;
  Tensor x = as_image(x_, "x", op, batched);
  Tensor w = as_float(w_, "weight");
  check_same_dtype(x, "x", w, "weight");
  ConvGeom g = convt_geom(op, x.shape, w.shape, stride, padding, output_padding, groups, dilation);
  w = contiguous(w);
  Tensor b = conv_bias(b_, x, g.C, op, " for weight " + shape_str(w) + " and groups=" + std::to_string(groups));
  Tensor out = empty(x.dtype, image_shape(batched, g.N, g.C, g.H, g.W));
  {
    py::gil_scoped_release nogil;
    conv_transpose2d_forward(x.dtype, g, out.ptr, x.ptr, w.ptr, b_.is_none() ? nullptr : b.ptr);
  }
  return out.arr;
}

py::tuple py_conv_transpose2d_backward(py::handle go_, py::handle x_, py::handle w_, py::handle stride,
                                       py::handle padding, py::handle output_padding, index_t groups,
                                       py::handle dilation) {
  const char* op = "conv_transpose2d_backward";
  bool batched;
  Tensor x = as_image(x_, "x", op, batched);
  Tensor w = as_float(w_, "weight");
  check_same_dtype(x, "x", w, "weight");
  ConvGeom g = convt_geom(op, x.shape, w.shape, stride, padding, output_padding, groups, dilation);
  w = contiguous(w);
  Tensor go = grad_image(go_, x, batched, image_shape(batched, g.N, g.C, g.H, g.W), op);
  Tensor gx = empty(x.dtype, image_shape(batched, g.N, g.Cout, g.Ho, g.Wo));
  Tensor gw = empty(x.dtype, w.shape);
  Tensor gb = empty(x.dtype, {g.C});
  ConvGeom gbias;  // channel sums of grad_out (N, C, H, W)
  gbias.N = g.N; gbias.Cout = g.C; gbias.Ho = g.H; gbias.Wo = g.W;
  {
    py::gil_scoped_release nogil;
    // grad_x = conv2d(grad_out, weight); grad_weight = backward-weight with the roles of
    // the operands exchanged (x plays grad_out).
    conv2d_forward(x.dtype, g, gx.ptr, go.ptr, w.ptr, nullptr);
    conv2d_backward_weight(x.dtype, g, gw.ptr, x.ptr, go.ptr);
    conv2d_backward_bias(x.dtype, gbias, gb.ptr, go.ptr);
  }
  return py::make_tuple(gx.arr, gw.arr, gb.arr);
}

py::object py_im2col(py::handle x_, py::handle k, py::handle d, py::handle p, py::handle s) {
  const char* op = "im2col";
  bool batched;
  Tensor x = as_image(x_, "x", op, batched);
  const ConvGeom g = fold_geom(op, x.shape[0], x.shape[1], x.shape[2], x.shape[3], k, d, p, s);
  Tensor out = empty(x.dtype, im2col_shape(g, batched));
  {
    py::gil_scoped_release nogil;
    im2col(x.dtype, g, out.ptr, x.ptr);
  }
  return out.arr;
}

py::object py_col2im(py::handle c_, py::handle size_, py::handle k, py::handle d, py::handle p, py::handle s) {
  Tensor c = as_float(c_, "cols");
  bool batched;
  const ConvGeom g = col2im_geom(c.shape, size_, k, d, p, s, batched);
  c = contiguous(c);
  Tensor out = empty(c.dtype, image_shape(batched, g.N, g.C, g.H, g.W));
  {
    py::gil_scoped_release nogil;
    col2im(c.dtype, g, out.ptr, c.ptr);
  }
  return out.arr;
}

}  // namespace

void bind_pool(py::module_& m);

void bind_conv(py::module_& m) {
  m.def("conv2d", &py_conv2d, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("out"));
  m.def("conv2d_backward", &py_conv2d_backward, py::arg("grad_out"), py::arg("x"), py::arg("weight"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"));
  m.def("conv_transpose2d", &py_conv_transpose2d, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("stride"), py::arg("padding"), py::arg("output_padding"), py::arg("groups"), py::arg("dilation"));
  m.def("conv_transpose2d_backward", &py_conv_transpose2d_backward, py::arg("grad_out"), py::arg("x"),
        py::arg("weight"), py::arg("stride"), py::arg("padding"), py::arg("output_padding"), py::arg("groups"),
        py::arg("dilation"));
  m.def("im2col", &py_im2col, py::arg("x"), py::arg("kernel_size"), py::arg("dilation"), py::arg("padding"),
        py::arg("stride"));
  m.def("col2im", &py_col2im, py::arg("cols"), py::arg("output_size"), py::arg("kernel_size"),
        py::arg("dilation"), py::arg("padding"), py::arg("stride"));
  // Internal: the reference kernels (test oracles).
  m.def("conv2d_ref", [](py::handle x_, py::handle w_, py::handle b_, py::handle stride, py::handle padding,
                         py::handle dilation, index_t groups) {
    bool batched;
    Tensor x = as_image(x_, "x", "conv2d_ref", batched);
    Tensor w = contiguous(as_float(w_, "weight"));
    check_same_dtype(x, "x", w, "weight");
    ConvGeom g = conv_geom("conv2d_ref", x, w, stride, padding, dilation, groups);
    Tensor b;
    if (!b_.is_none()) { b = contiguous(as_float(b_, "bias")); check_same_dtype(x, "x", b, "bias"); }
    Tensor out = empty(x.dtype, image_shape(batched, g.N, g.Cout, g.Ho, g.Wo));
    {
      py::gil_scoped_release nogil;
      ref::conv2d_forward(x.dtype, g, out.ptr, x.ptr, w.ptr, b_.is_none() ? nullptr : b.ptr);
    }
    return out.arr;
  });
  bind_pool(m);
}

}  // namespace nnk::bind

namespace nnk::bind {

namespace {

py::object py_max_pool2d(py::handle x_, py::handle k, py::handle s, py::handle p, py::handle d, bool ceil,
                         bool return_indices) {
  const char* op = "max_pool2d";
  Tensor x = as_float(x_, "x");
  PoolArgs a = pool_args(op, x.shape, k, s, p, d, ceil);
  x = contiguous(x);
  Tensor y = empty(x.dtype, a.out_shape);
  py::array_t<int64_t> idx;
  int64_t* ip = nullptr;
  if (return_indices) {
    idx = py::array_t<int64_t>(std::vector<py::ssize_t>(a.out_shape.begin(), a.out_shape.end()));
    ip = idx.mutable_data();
  }
  {
    py::gil_scoped_release nogil;
    max_pool2d_forward(x.dtype, a.g, y.ptr, ip, x.ptr);
  }
  if (return_indices) return py::make_tuple(y.arr, idx);
  return y.arr;
}

py::object py_max_pool2d_backward(py::handle go_, py::handle idx_, py::handle shape_) {
  const char* op = "max_pool2d_backward";
  Tensor go = as_float(go_, "grad_out");
  Tensor idx = as_index(idx_, "indices");
  const std::vector<index_t> xs = shape_arg(shape_, "input_shape", op);
  const PoolGeom g = max_pool_backward_geom(xs, go.shape, idx.shape);
  go = contiguous(go);
  // int64 indices, contiguous.
  py::array_t<int64_t, py::array::c_style | py::array::forcecast> ii(idx.arr);
  Tensor dx = empty(go.dtype, xs);
  bool ok;
  {
    py::gil_scoped_release nogil;
    ok = max_pool2d_backward(go.dtype, g, dx.ptr, go.ptr, ii.data());
  }
  if (!ok)
    throw IndexError(std::string(op) + ": indices hold a value outside [0, H*W) for input_shape " + shape_str(xs));
  return dx.arr;
}

py::object py_avg_pool2d(py::handle x_, py::handle k, py::handle s, py::handle p, bool ceil, bool cip) {
  const char* op = "avg_pool2d";
  Tensor x = as_float(x_, "x");
  PoolArgs a = pool_args(op, x.shape, k, s, p, py::int_(1), ceil);
  x = contiguous(x);
  Tensor y = empty(x.dtype, a.out_shape);
  {
    py::gil_scoped_release nogil;
    avg_pool2d_forward(x.dtype, a.g, y.ptr, x.ptr, cip);
  }
  return y.arr;
}

py::object py_avg_pool2d_backward(py::handle go_, py::handle shape_, py::handle k, py::handle s, py::handle p,
                                  bool ceil, bool cip) {
  const char* op = "avg_pool2d_backward";
  Tensor go = as_float(go_, "grad_out");
  const std::vector<index_t> xs = shape_arg(shape_, "input_shape", op);
  PoolArgs a = pool_args(op, xs, k, s, p, py::int_(1), ceil);
  if (go.shape != a.out_shape)
    throw ValueError(std::string(op) + ": grad_out " + shape_str(go) + " must have shape " + shape_str(a.out_shape) +
                     " for input_shape " + shape_str(xs));
  go = contiguous(go);
  Tensor dx = empty(go.dtype, xs);
  {
    py::gil_scoped_release nogil;
    avg_pool2d_backward(go.dtype, a.g, dx.ptr, go.ptr, cip);
  }
  return dx.arr;
}

}  // namespace

void bind_pool(py::module_& m) {
  m.def("max_pool2d", &py_max_pool2d, py::arg("x"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
        py::arg("dilation"), py::arg("ceil_mode"), py::arg("return_indices"));
  m.def("max_pool2d_backward", &py_max_pool2d_backward, py::arg("grad_out"), py::arg("indices"),
        py::arg("input_shape"));
  m.def("avg_pool2d", &py_avg_pool2d, py::arg("x"), py::arg("kernel_size"), py::arg("stride"), py::arg("padding"),
        py::arg("ceil_mode"), py::arg("count_include_pad"));
  m.def("avg_pool2d_backward", &py_avg_pool2d_backward, py::arg("grad_out"), py::arg("input_shape"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("ceil_mode"),
        py::arg("count_include_pad"));
}

}  // namespace nnk::bind
