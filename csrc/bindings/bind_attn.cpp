// Attention, layer norm, embedding and dropout bindings.
//
// scaled_dot_product_attention: q (..., L, E), k (..., S, E), v (..., S, Ev). The batch
// dims (everything before the last two) broadcast as in torch.matmul; with enable_gqa the
// head dim (-3) of k and v may divide q's (query head h uses key/value head h / (Hq / Hkv)).
// The binding turns every output batch element into element offsets of q, k, v and the
// mask (broadcast dims get stride 0), so the kernels never copy K or V and read any strides.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "bindings/embed_args.h"
#include "core/cpu_features.h"
#include "cpu/attention/attention.h"
#include "cpu/norm/norm.h"

namespace nnk::bind {

namespace {

// ---- scaled dot-product attention -----------------------------------------------------

// A bool or float attn_mask as a strided view.
struct MaskView {
  py::array arr;
  AttnMask kind = AttnMask::none;
  const void* ptr = nullptr;
  std::vector<index_t> shape, strides;  // element strides
};

MaskView as_mask(py::handle obj, DType dt) {
  MaskView m;
  if (obj.is_none()) return m;
  py::array arr;
  if (py::isinstance<py::array>(obj)) {
    arr = py::reinterpret_borrow<py::array>(obj);
  } else {
    if (py::hasattr(obj, "__cuda_array_interface__"))
      throw std::runtime_error("attn_mask: is a CUDA array, but this build of nnkernels has no CUDA support");
    arr = py::module_::import("numpy").attr("asarray")(obj);
  }
  const py::dtype d = arr.dtype();
  if (d.kind() == 'b') {
    m.kind = AttnMask::boolean;
  } else if (d.kind() == 'f') {
    Tensor t = as_float(arr, "attn_mask");
    if (t.dtype != dt)
      throw TypeError(std::string("attn_mask: float mask dtype ") + dtype_name(t.dtype) +
                      " does not match q's dtype " + dtype_name(dt));
    m.arr = t.arr;
    m.kind = AttnMask::additive;
    m.ptr = t.ptr;
    m.shape = t.shape;
    m.strides = t.strides;
    return m;
  } else {
    throw TypeError("attn_mask: expected a bool or float mask, got dtype " + std::string(py::str(d)));
  }
  m.arr = arr;
  m.ptr = arr.data();
  for (py::ssize_t i = 0; i < arr.ndim(); ++i) {
    m.shape.push_back(arr.shape(i));
    m.strides.push_back(arr.strides(i));  // itemsize 1
  }
  return m;
}

// Everything the kernels need about one attention call's shapes.
struct AttnPlan {
  Tensor q, k, v;
  MaskView mask;
  AttnParams p;
  std::vector<index_t> out_batch;          // broadcast batch shape
  std::vector<index_t> off_q, off_k, off_v, off_m;
  std::vector<index_t> qflat, kvflat;      // q's / k's own flat batch index per output element
  index_t NQ = 1, NKV = 1;
};

AttnPlan plan_attention(py::handle qo, py::handle ko, py::handle vo, py::handle mask,
                        bool causal, py::handle scale, bool gqa) {
  AttnPlan a;
  a.q = as_float(qo, "q");
  a.k = as_float(ko, "k");
  a.v = as_float(vo, "v");
  check_same_dtype(a.q, "q", a.k, "k");
  check_same_dtype(a.q, "q", a.v, "v");
  const Tensor &q = a.q, &k = a.k, &v = a.v;
  const AttnBatch ab = attn_batch(q.shape, k.shape, v.shape, gqa);
  const std::vector<index_t>& group = ab.group;
  const int nb = int(ab.out.size());
  auto st = [&](const Tensor& t, int d) {  // stride of batch dim d (right-aligned), 0 if absent
    const int o = d - (nb - (t.ndim() - 2));
    return o < 0 ? index_t(0) : t.strides[size_t(o)];
  };
  a.out_batch = ab.out;
  const index_t L = ab.L, S = ab.S, E = ab.E, Ev = ab.Ev;

  // mask: broadcastable to (out_batch..., L, S)
  a.mask = as_mask(mask, q.dtype);
  std::vector<index_t> full = a.out_batch;
  full.push_back(L);
  full.push_back(S);
  std::vector<index_t> mst(full.size(), 0);  // the mask's stride per dim of full
  if (a.mask.kind != AttnMask::none) {
    if (causal)
      throw ValueError("scaled_dot_product_attention: attn_mask " + shape_str(a.mask.shape) +
                       " cannot be combined with is_causal=True");
    if (!broadcast_strides(a.mask.shape, a.mask.strides, full, mst))
      throw ValueError("scaled_dot_product_attention: attn_mask " + shape_str(a.mask.shape) +
                       " does not broadcast to (batch..., L, S) = " + shape_str(full) +
                       " (q " + shape_str(q) + ", k " + shape_str(k) + ")");
  }
  auto mstride = [&](int d) { return mst[size_t(d)]; };

  index_t NB = 1;
  for (index_t s : a.out_batch) NB = checked_mul(NB, s, "scaled_dot_product_attention: batch");
  for (index_t s : ab.qb) a.NQ *= s;
  for (index_t s : ab.kb) a.NKV *= s;
  a.off_q.resize(size_t(NB));
  a.off_k.resize(size_t(NB));
  a.off_v.resize(size_t(NB));
  a.off_m.resize(size_t(NB));
  a.qflat.resize(size_t(NB));
  a.kvflat.resize(size_t(NB));
  std::vector<index_t> idx(size_t(nb), 0);
  for (index_t b = 0; b < NB; ++b) {
    index_t oq = 0, ok_ = 0, ov = 0, om = 0, fq = 0, fk = 0;
    for (int d = 0; d < nb; ++d) {
      const index_t i = idx[size_t(d)];
      const index_t iq = ab.q_size(d) == 1 ? 0 : i;
      const index_t ik = ab.k_size(d) == 1 ? 0 : i / group[size_t(d)];
      oq += iq * st(q, d);
      ok_ += ik * st(k, d);
      ov += ik * st(v, d);
      om += i * mstride(d);
      fq = fq * ab.q_size(d) + iq;
      fk = fk * ab.k_size(d) + ik;
    }
    a.off_q[size_t(b)] = oq;
    a.off_k[size_t(b)] = ok_;
    a.off_v[size_t(b)] = ov;
    a.off_m[size_t(b)] = om;
    a.qflat[size_t(b)] = fq;
    a.kvflat[size_t(b)] = fk;
    for (int d = nb - 1; d >= 0; --d) {  // next multi-index, row-major
      if (++idx[size_t(d)] < a.out_batch[size_t(d)]) break;
      idx[size_t(d)] = 0;
    }
  }

  AttnParams& p = a.p;
  p.dtype = q.dtype;
  p.NB = NB; p.L = L; p.S = S; p.E = E; p.Ev = Ev;
  p.q = q.ptr; p.rs_q = q.stride(-2); p.cs_q = q.stride(-1);
  p.k = k.ptr; p.rs_k = k.stride(-2); p.cs_k = k.stride(-1);
  p.v = v.ptr; p.rs_v = v.stride(-2); p.cs_v = v.stride(-1);
  p.off_q = a.off_q.data(); p.off_k = a.off_k.data(); p.off_v = a.off_v.data();
  p.mask_kind = a.mask.kind;
  if (a.mask.kind != AttnMask::none) {
    p.mask = a.mask.ptr;
    p.rs_mask = mstride(int(full.size()) - 2);
    p.cs_mask = mstride(int(full.size()) - 1);
    p.off_mask = a.off_m.data();
  }
  p.causal = causal;
  if (scale.is_none()) {
    p.scale = 1.0 / std::sqrt(double(E));
  } else {
    p.scale = scale.cast<double>();
  }
  return a;
}

std::vector<index_t> with_tail(std::vector<index_t> s, std::initializer_list<index_t> tail) {
  for (index_t t : tail) s.push_back(t);
  return s;
}

py::object py_sdpa(py::handle q, py::handle k, py::handle v, py::handle mask, bool causal,
                   py::handle scale, bool gqa, bool return_lse, bool oracle) {
  AttnPlan a = plan_attention(q, k, v, mask, causal, scale, gqa);
  const AttnParams& p = a.p;
  Tensor out = empty(p.dtype, with_tail(a.out_batch, {p.L, p.Ev}));
  Tensor lse = empty(p.dtype, with_tail(a.out_batch, {p.L}));
  {
    py::gil_scoped_release nogil;
    if (oracle) ref::attention_fwd(p, out.ptr, lse.ptr);
    else attention_fwd(current_isa(), p, out.ptr, lse.ptr);
  }
  if (return_lse) return py::make_tuple(out.arr, lse.arr);
  return out.arr;
}

void make_groups(const std::vector<index_t>& flat, index_t n, std::vector<index_t>& start,
                 std::vector<index_t>& items) {
  start.assign(size_t(n + 1), 0);
  for (index_t f : flat) ++start[size_t(f + 1)];
  for (index_t g = 0; g < n; ++g) start[size_t(g + 1)] += start[size_t(g)];
  items.resize(flat.size());
  std::vector<index_t> pos(start.begin(), start.end() - 1);
  for (size_t b = 0; b < flat.size(); ++b) items[size_t(pos[size_t(flat[b])]++)] = index_t(b);
}

py::tuple py_sdpa_bwd(py::handle go, py::handle q, py::handle k, py::handle v, py::handle outo,
                      py::handle lseo, py::handle mask, bool causal, py::handle scale, bool gqa) {
  AttnPlan a = plan_attention(q, k, v, mask, causal, scale, gqa);
  const AttnParams& p = a.p;
  Tensor g = as_float(go, "grad_out");
  Tensor out = as_float(outo, "out");
  Tensor lse = as_float(lseo, "lse");
  check_same_dtype(a.q, "q", g, "grad_out");
  check_same_dtype(a.q, "q", out, "out");
  check_same_dtype(a.q, "q", lse, "lse");
  const std::vector<index_t> os = with_tail(a.out_batch, {p.L, p.Ev});
  const std::vector<index_t> ls = with_tail(a.out_batch, {p.L});
  if (g.shape != os)
    throw ValueError("scaled_dot_product_attention_backward: grad_out " + shape_str(g) +
                     " must have the output's shape " + shape_str(os));
  if (out.shape != os)
    throw ValueError("scaled_dot_product_attention_backward: out " + shape_str(out) +
                     " must have the output's shape " + shape_str(os));
  if (lse.shape != ls)
    throw ValueError("scaled_dot_product_attention_backward: lse " + shape_str(lse) +
                     " must have shape " + shape_str(ls));
  g = contiguous(g);
  out = contiguous(out);
  lse = contiguous(lse);
  std::vector<index_t> qs, qi, ks, ki;
  make_groups(a.qflat, a.NQ, qs, qi);
  make_groups(a.kvflat, a.NKV, ks, ki);
  const AttnGroups qg{a.NQ, qs.data(), qi.data()}, kvg{a.NKV, ks.data(), ki.data()};
  Tensor dq = empty(p.dtype, a.q.shape);
  Tensor dk = empty(p.dtype, a.k.shape);
  Tensor dv = empty(p.dtype, a.v.shape);
  {
    py::gil_scoped_release nogil;
    attention_bwd(current_isa(), p, g.ptr, out.ptr, lse.ptr, qg, kvg, dq.ptr, dk.ptr, dv.ptr);
  }
  return py::make_tuple(dq.arr, dk.arr, dv.arr);
}

// ---- layer norm ---------------------------------------------------------------------

// Rows R and normalised size D of x for normalized_shape ns; checks the trailing dims.
void ln_dims(const Tensor& x, const std::vector<index_t>& ns, const char* op, index_t& R,
             index_t& D, std::vector<index_t>& lead) {
  const int k = int(ns.size());
  bool ok = k >= 1 && k <= x.ndim();
  for (int i = 0; ok && i < k; ++i)
    if (x.shape[size_t(x.ndim() - k + i)] != ns[size_t(i)]) ok = false;
  if (!ok)
    throw ValueError(std::string(op) + ": x " + shape_str(x) + " must end with normalized_shape " +
                     shape_str(ns));
  lead.assign(x.shape.begin(), x.shape.end() - k);
  R = 1;
  for (index_t s : lead) R *= s;
  D = 1;
  for (index_t s : ns) D *= s;
}

bool affine_param(py::handle h, const char* name, const Tensor& x, const std::vector<index_t>& ns,
                  const char* op, Tensor& t) {
  if (h.is_none()) return false;
  t = as_float(h, name);
  check_same_dtype(x, "x", t, name);
  if (t.shape != ns)
    throw ValueError(std::string(op) + ": " + name + " " + shape_str(t) +
                     " must have normalized_shape " + shape_str(ns));
  t = contiguous(t);
  return true;
}

py::object py_layer_norm(py::handle xo, const std::vector<index_t>& ns, py::handle wo,
                         py::handle bo, double eps, bool return_stats, bool oracle) {
  Tensor x = as_float(xo, "x");
  index_t R, D;
  std::vector<index_t> lead;
  ln_dims(x, ns, "layer_norm", R, D, lead);
  Tensor w, b;
  const bool hw = affine_param(wo, "weight", x, ns, "layer_norm", w);
  const bool hb = affine_param(bo, "bias", x, ns, "layer_norm", b);
  x = contiguous(x);
  Tensor y = empty(x.dtype, x.shape), mean = empty(x.dtype, lead), rstd = empty(x.dtype, lead);
  {
    py::gil_scoped_release nogil;
    if (x.dtype == DType::f32) {
      auto f = oracle ? ref::layer_norm_fwd<float> : nullptr;
      if (f) f(y.data<float>(), mean.data<float>(), rstd.data<float>(), x.data<float>(),
               hw ? w.data<float>() : nullptr, hb ? b.data<float>() : nullptr, R, D, float(eps));
      else layer_norm_fwd<float>(current_isa(), y.data<float>(), mean.data<float>(), rstd.data<float>(),
                                 x.data<float>(), hw ? w.data<float>() : nullptr,
                                 hb ? b.data<float>() : nullptr, R, D, float(eps));
    } else {
      auto f = oracle ? ref::layer_norm_fwd<double> : nullptr;
      if (f) f(y.data<double>(), mean.data<double>(), rstd.data<double>(), x.data<double>(),
               hw ? w.data<double>() : nullptr, hb ? b.data<double>() : nullptr, R, D, eps);
      else layer_norm_fwd<double>(current_isa(), y.data<double>(), mean.data<double>(),
                                  rstd.data<double>(), x.data<double>(),
                                  hw ? w.data<double>() : nullptr, hb ? b.data<double>() : nullptr,
                                  R, D, eps);
    }
  }
  if (return_stats) return py::make_tuple(y.arr, mean.arr, rstd.arr);
  return y.arr;
}

py::tuple py_layer_norm_bwd(py::handle go, py::handle xo, const std::vector<index_t>& ns,
                            py::handle meano, py::handle rstdo, py::handle wo, py::handle bo) {
  const char* op = "layer_norm_backward";
  Tensor x = as_float(xo, "x");
  Tensor g = as_float(go, "grad_out");
  check_same_dtype(x, "x", g, "grad_out");
  if (g.shape != x.shape)
    throw ValueError(std::string(op) + ": grad_out " + shape_str(g) + " must have x's shape " +
                     shape_str(x));
  index_t R, D;
  std::vector<index_t> lead;
  ln_dims(x, ns, op, R, D, lead);
  Tensor mean = as_float(meano, "mean"), rstd = as_float(rstdo, "rstd");
  check_same_dtype(x, "x", mean, "mean");
  check_same_dtype(x, "x", rstd, "rstd");
  if (mean.shape != lead || rstd.shape != lead)
    throw ValueError(std::string(op) + ": mean " + shape_str(mean) + " and rstd " +
                     shape_str(rstd) + " must have shape " + shape_str(lead));
  Tensor w, b;
  const bool hw = affine_param(wo, "weight", x, ns, op, w);
  const bool hb = affine_param(bo, "bias", x, ns, op, b);
  x = contiguous(x);
  g = contiguous(g);
  mean = contiguous(mean);
  rstd = contiguous(rstd);
  Tensor dx = empty(x.dtype, x.shape);
  Tensor dw = hw ? empty(x.dtype, ns) : Tensor(), db = hb ? empty(x.dtype, ns) : Tensor();
  {
    py::gil_scoped_release nogil;
    if (x.dtype == DType::f32)
      layer_norm_bwd<float>(current_isa(), dx.data<float>(), hw ? dw.data<float>() : nullptr,
                            hb ? db.data<float>() : nullptr, g.data<float>(), x.data<float>(),
                            mean.data<float>(), rstd.data<float>(), hw ? w.data<float>() : nullptr, R, D);
    else
      layer_norm_bwd<double>(current_isa(), dx.data<double>(), hw ? dw.data<double>() : nullptr,
                             hb ? db.data<double>() : nullptr, g.data<double>(), x.data<double>(),
                             mean.data<double>(), rstd.data<double>(),
                             hw ? w.data<double>() : nullptr, R, D);
  }
  return py::make_tuple(dx.arr, hw ? py::object(dw.arr) : py::none(),
                        hb ? py::object(db.arr) : py::none());
}

// ---- embedding --------------------------------------------------------------------------

void check_indices(const Tensor& idx, index_t V, const char* op) {
  const int32_t* i32 = idx.arr.itemsize() == 4 ? idx.data<int32_t>() : nullptr;
  const int64_t* i64 = i32 ? nullptr : idx.data<int64_t>();
  index_t bad;
  {
    py::gil_scoped_release nogil;
    bad = embedding_check(i32, i64, idx.numel(), V);
  }
  if (bad >= 0) throw embedding_index_error(op, i32 ? i32[bad] : i64[bad], bad, V);
}

py::object py_embedding(py::handle io, py::handle wo) {
  Tensor idx = contiguous(as_index(io, "indices"));
  Tensor w = as_float(wo, "weight");
  check_rank(w, "weight", {2});
  w = contiguous(w);
  const index_t V = w.size(0), D = w.size(1);
  check_indices(idx, V, "embedding");
  std::vector<index_t> os = idx.shape;
  os.push_back(D);
  Tensor out = empty(w.dtype, os);
  const int32_t* i32 = idx.arr.itemsize() == 4 ? idx.data<int32_t>() : nullptr;
  const int64_t* i64 = i32 ? nullptr : idx.data<int64_t>();
  {
    py::gil_scoped_release nogil;
    if (w.dtype == DType::f32) embedding_fwd<float>(out.data<float>(), w.data<float>(), i32, i64, idx.numel(), D);
    else embedding_fwd<double>(out.data<double>(), w.data<double>(), i32, i64, idx.numel(), D);
  }
  return out.arr;
}

py::object py_embedding_bwd(py::handle go, py::handle io, index_t V) {
  Tensor idx = contiguous(as_index(io, "indices"));
  Tensor g = as_float(go, "grad_out");
  check_embedding_backward(V, g.shape, idx.shape);
  g = contiguous(g);
  const index_t D = g.size(-1);
  check_indices(idx, V, "embedding_backward");
  Tensor dw = empty(g.dtype, {V, D});
  const int32_t* i32 = idx.arr.itemsize() == 4 ? idx.data<int32_t>() : nullptr;
  const int64_t* i64 = i32 ? nullptr : idx.data<int64_t>();
  {
    py::gil_scoped_release nogil;
    if (g.dtype == DType::f32) embedding_bwd<float>(dw.data<float>(), g.data<float>(), i32, i64, idx.numel(), V, D);
    else embedding_bwd<double>(dw.data<double>(), g.data<double>(), i32, i64, idx.numel(), V, D);
  }
  return dw.arr;
}

// ---- dropout ----------------------------------------------------------------------------

py::tuple py_dropout(py::handle xo, double p, uint64_t seed) {
  check_dropout_p(p);
  Tensor x = contiguous(as_float(xo, "x"));
  Tensor y = empty(x.dtype, x.shape);
  py::array_t<bool> mask(std::vector<py::ssize_t>(x.shape.begin(), x.shape.end()));
  uint8_t* mp = reinterpret_cast<uint8_t*>(mask.mutable_data());
  {
    py::gil_scoped_release nogil;
    if (x.dtype == DType::f32) dropout_fwd<float>(y.data<float>(), mp, x.data<float>(), x.numel(), p, seed);
    else dropout_fwd<double>(y.data<double>(), mp, x.data<double>(), x.numel(), p, seed);
  }
  return py::make_tuple(y.arr, mask);
}

}  // namespace

void bind_attn(py::module_& m) {
  m.def("scaled_dot_product_attention",
        [](py::handle q, py::handle k, py::handle v, py::handle mask, bool causal,
           py::handle scale, bool gqa, bool return_lse) {
          return py_sdpa(q, k, v, mask, causal, scale, gqa, return_lse, false);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("attn_mask"), py::arg("is_causal"),
        py::arg("scale"), py::arg("enable_gqa"), py::arg("return_lse"));
  // Internal: the reference kernel (the oracle in tests); always returns (out, lse).
  m.def("scaled_dot_product_attention_ref",
        [](py::handle q, py::handle k, py::handle v, py::handle mask, bool causal,
           py::handle scale, bool gqa) {
          return py_sdpa(q, k, v, mask, causal, scale, gqa, true, true);
        });
  m.def("scaled_dot_product_attention_backward", &py_sdpa_bwd, py::arg("grad_out"), py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("attn_mask"),
        py::arg("is_causal"), py::arg("scale"), py::arg("enable_gqa"));

  m.def("layer_norm",
        [](py::handle x, const std::vector<index_t>& ns, py::handle w, py::handle b, double eps,
           bool return_stats) { return py_layer_norm(x, ns, w, b, eps, return_stats, false); },
        py::arg("x"), py::arg("normalized_shape"), py::arg("weight"), py::arg("bias"),
        py::arg("eps"), py::arg("return_stats"));
  // Internal: the reference kernel (the oracle in tests); returns (y, mean, rstd).
  m.def("layer_norm_ref",
        [](py::handle x, const std::vector<index_t>& ns, py::handle w, py::handle b, double eps) {
          return py_layer_norm(x, ns, w, b, eps, true, true);
        });
  m.def("layer_norm_backward", &py_layer_norm_bwd, py::arg("grad_out"), py::arg("x"),
        py::arg("normalized_shape"), py::arg("mean"), py::arg("rstd"), py::arg("weight"),
        py::arg("bias"));
  m.def("embedding", &py_embedding, py::arg("indices"), py::arg("weight"));
  m.def("embedding_backward", &py_embedding_bwd, py::arg("grad_out"), py::arg("indices"),
        py::arg("num_embeddings"));
  m.def("dropout", &py_dropout, py::arg("x"), py::arg("p"), py::arg("seed"));
}

}  // namespace nnk::bind
