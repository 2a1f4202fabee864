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
#include "core/cpu_features.h"
#include "cpu/attention/attention.h"

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
  if (q.ndim() < 2 || k.ndim() < 2 || v.ndim() < 2)
    throw ValueError("scaled_dot_product_attention: q, k, v must be at least 2-D (..., L, E), got q " +
                     shape_str(q) + ", k " + shape_str(k) + ", v " + shape_str(v));
  if (q.size(-1) != k.size(-1))
    throw ValueError("scaled_dot_product_attention: q " + shape_str(q) + " and k " + shape_str(k) +
                     " must have the same head dim E (last dim)");
  if (k.size(-2) != v.size(-2))
    throw ValueError("scaled_dot_product_attention: k " + shape_str(k) + " and v " + shape_str(v) +
                     " must have the same number of keys S (dim -2)");
  const std::vector<index_t> qb(q.shape.begin(), q.shape.end() - 2);
  const std::vector<index_t> kb(k.shape.begin(), k.shape.end() - 2);
  const std::vector<index_t> vb(v.shape.begin(), v.shape.end() - 2);
  if (kb != vb)
    throw ValueError("scaled_dot_product_attention: k " + shape_str(k) + " and v " + shape_str(v) +
                     " must have the same batch dims");
  const int nb = int(std::max(qb.size(), kb.size()));
  // Right-aligned sizes (1 where a tensor has fewer dims).
  auto sz = [&](const std::vector<index_t>& s, int d) {
    const int o = d - (nb - int(s.size()));
    return o < 0 ? index_t(1) : s[size_t(o)];
  };
  auto st = [&](const Tensor& t, int d) {  // stride of batch dim d (right-aligned), 0 if absent
    const int o = d - (nb - (t.ndim() - 2));
    return o < 0 ? index_t(0) : t.strides[size_t(o)];
  };
  std::vector<index_t> group(size_t(nb), 1);  // query heads per kv head on the gqa dim
  a.out_batch.resize(size_t(nb));
  for (int d = 0; d < nb; ++d) {
    const index_t s1 = sz(qb, d), s2 = sz(kb, d);
    const bool head_dim = d == nb - 1 && !qb.empty() && !kb.empty();
    if (s1 == s2 || s2 == 1 || s1 == 1) {
      a.out_batch[size_t(d)] = std::max(s1, s2);
      if (s1 == 0 || s2 == 0) a.out_batch[size_t(d)] = 0;
    } else if (gqa && head_dim) {
      if (s1 % s2 != 0)
        throw ValueError("scaled_dot_product_attention: enable_gqa: q's heads " + std::to_string(s1) +
                         " (q " + shape_str(q) + ") must be a multiple of k's heads " +
                         std::to_string(s2) + " (k " + shape_str(k) + ")");
      a.out_batch[size_t(d)] = s1;
      group[size_t(d)] = s1 / s2;
    } else {
      throw ValueError("scaled_dot_product_attention: batch dims of q " + shape_str(q) + " and k " +
                       shape_str(k) + " do not broadcast" +
                       (head_dim && !gqa ? " (different head counts need enable_gqa=True)" : ""));
    }
  }
  const index_t L = q.size(-2), S = k.size(-2), E = q.size(-1), Ev = v.size(-1);

  // mask: broadcastable to (out_batch..., L, S)
  a.mask = as_mask(mask, q.dtype);
  std::vector<index_t> full = a.out_batch;
  full.push_back(L);
  full.push_back(S);
  if (a.mask.kind != AttnMask::none) {
    if (causal)
      throw ValueError("scaled_dot_product_attention: attn_mask " + shape_str(a.mask.shape) +
                       " cannot be combined with is_causal=True");
    const int mr = int(a.mask.shape.size()), fr = int(full.size());
    bool ok = mr <= fr;
    for (int i = 0; ok && i < mr; ++i) {
      const index_t ms = a.mask.shape[size_t(mr - 1 - i)], fs = full[size_t(fr - 1 - i)];
      if (ms != fs && ms != 1) ok = false;
    }
    if (!ok)
      throw ValueError("scaled_dot_product_attention: attn_mask " + shape_str(a.mask.shape) +
                       " does not broadcast to (batch..., L, S) = " + shape_str(full) +
                       " (q " + shape_str(q) + ", k " + shape_str(k) + ")");
  }
  auto mstride = [&](int d) {  // mask stride of full dim d (0 when absent or size 1)
    const int o = d - (int(full.size()) - int(a.mask.shape.size()));
    if (o < 0 || a.mask.shape[size_t(o)] == 1) return index_t(0);
    return a.mask.strides[size_t(o)];
  };

  index_t NB = 1;
  for (index_t s : a.out_batch) NB = checked_mul(NB, s, "scaled_dot_product_attention: batch");
  for (index_t s : qb) a.NQ *= s;
  for (index_t s : kb) a.NKV *= s;
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
      const index_t iq = sz(qb, d) == 1 ? 0 : i;
      const index_t ik = sz(kb, d) == 1 ? 0 : i / group[size_t(d)];
      oq += iq * st(q, d);
      ok_ += ik * st(k, d);
      ov += ik * st(v, d);
      om += i * mstride(d);
      fq = fq * sz(qb, d) + iq;
      fk = fk * sz(kb, d) + ik;
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
}

}  // namespace nnk::bind
