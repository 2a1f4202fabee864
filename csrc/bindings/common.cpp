#include "bindings/common.h"

#include "bindings/cuda_array.h"
#include "core/mempool.h"

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>

namespace nnk::bind {

index_t Tensor::numel() const {
  index_t n = 1;
  for (index_t s : shape) n *= s;
  return n;
}

bool Tensor::is_contiguous() const {
  index_t expect = 1;
  for (int d = ndim() - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != expect) return numel() == 0;
    expect *= shape[d];
  }
  return true;
}

std::string shape_str(const std::vector<index_t>& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  if (s.size() == 1) os << ",";
  os << ")";
  return os.str();
}

// A CUDA array reaching a host binding: without CUDA support a RuntimeError saying so; with
// it, the call's first argument was a host array (or the op has no CUDA kernel), so host and
// device inputs are mixed: ValueError. DLPack producers count when __dlpack_device__ names a
// CUDA device (kDLCUDA = 2, kDLCUDAManaged = 13).
static void reject_cuda(py::handle obj, const char* name) {
  const int ic = is_cuda_attr(obj);  // torch tensors: a fast C-level property
  if (ic == 0) return;
  // __dlpack_device__ first: cheap for host tensors (torch CPU), whose
  // __cuda_array_interface__ property raises.
  int type = 0;
  if (py::hasattr(obj, "__dlpack_device__")) {
    try {
      py::tuple dev = obj.attr("__dlpack_device__")();
      type = dev[0].cast<int>();
    } catch (py::error_already_set&) {
    } catch (py::cast_error&) {
    }
  }
  const bool cuda = type != 0 ? (type == 2 || type == 13) : py::hasattr(obj, "__cuda_array_interface__");
  if (!cuda) return;
#if defined(NNK_WITH_CUDA)
  throw ValueError(std::string(name) +
                   ": is a CUDA array while this call runs on the host (its first array argument "
                   "is a host array, or the op has no CUDA kernel); mixing host and device inputs "
                   "in one call is not supported");
#else
  throw std::runtime_error(std::string(name) +
                           ": is a CUDA array, but this build of nnkernels has no CUDA support");
#endif
}

static Tensor wrap(py::array arr) {
  Tensor t;
  const index_t item = arr.itemsize();
  bool aligned = true;
  for (py::ssize_t d = 0; d < arr.ndim(); ++d)
    if (arr.strides(d) % item != 0) aligned = false;
  if (!aligned) arr = py::array::ensure(arr, py::array::c_style);
  t.ptr = const_cast<void*>(arr.data());
  const py::ssize_t nd = arr.ndim();
  const py::ssize_t* sh = arr.shape();
  const py::ssize_t* st = arr.strides();
  t.shape.assign(sh, sh + nd);  // one allocation each (the call overhead is mostly these)
  t.strides.resize(size_t(nd));
  for (py::ssize_t d = 0; d < nd; ++d) t.strides[size_t(d)] = st[d] / item;
  t.arr = std::move(arr);
  return t;
}

static py::array to_array(py::handle obj, const char* name) {
  if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);
  reject_cuda(obj, name);
  py::array arr = py::array::ensure(obj);
  if (!arr) {
    PyErr_Clear();
    throw TypeError(std::string(name) + ": expected an array, got " +
                    std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  return arr;
}

// Byte order '=' / '|' is native; '<' or '>' is native when it names this machine's order.
static bool native(const py::dtype& dt) {
  const char c = dt.byteorder();
  if (c == '=' || c == '|') return true;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return c == '<';
#else
  return c == '>';
#endif
}

Tensor as_float(py::handle obj, const char* name) {
  py::array arr = to_array(obj, name);
  Tensor t;
  const py::dtype dt = arr.dtype();
  DType d;
  if (dt.kind() == 'f' && dt.itemsize() == 4) d = DType::f32;
  else if (dt.kind() == 'f' && dt.itemsize() == 8) d = DType::f64;
  else
    throw TypeError(std::string(name) + ": expected float32 or float64, got " +
                    std::string(py::str(dt)));
  if (!native(dt)) arr = py::array::ensure(arr.attr("astype")(dt.attr("newbyteorder")("=")));
  t = wrap(arr);
  t.dtype = d;
  return t;
}

Tensor as_index(py::handle obj, const char* name) {
  py::array arr = to_array(obj, name);
  const py::dtype dt = arr.dtype();
  if (!(dt.kind() == 'i' && (dt.itemsize() == 4 || dt.itemsize() == 8)))
    throw TypeError(std::string(name) + ": expected int32 or int64 indices, got " +
                    std::string(py::str(dt)));
  if (!native(dt)) arr = py::array::ensure(arr.attr("astype")(dt.attr("newbyteorder")("=")));
  Tensor t = wrap(arr);
  t.dtype = DType::f64;  // unused for index arrays; itemsize tells int32 / int64
  return t;
}

Tensor contiguous(const Tensor& t) {
  if (t.is_contiguous()) return t;
  Tensor c = wrap(py::array::ensure(t.arr, py::array::c_style));
  c.dtype = t.dtype;
  return c;
}

void check_same_dtype(const Tensor& a, const char* an, const Tensor& b, const char* bn) {
  if (a.dtype != b.dtype)
    throw TypeError(std::string(bn) + ": dtype " + dtype_name(b.dtype) + " does not match " + an +
                    "'s dtype " + dtype_name(a.dtype));
}

void check_rank(const Tensor& t, const char* name, std::initializer_list<int> ranks) {
  check_rank(t.shape, name, ranks);
}

void check_rank(const std::vector<index_t>& shape, const char* name, std::initializer_list<int> ranks) {
  for (int r : ranks)
    if (int(shape.size()) == r) return;
  std::ostringstream os;
  os << name << ": expected ";
  bool first = true;
  for (int r : ranks) { os << (first ? "" : " or ") << r << "-D"; first = false; }
  os << " input, got shape " << shape_str(shape);
  throw ValueError(os.str());
}

Tensor empty(DType dt, const std::vector<index_t>& shape) {
  index_t n = dtype_size(dt);
  for (index_t s : shape) {
    if (s < 0) throw ValueError("negative dimension in output shape " + shape_str(shape));
    n = checked_mul(n, s, "output");
  }
  std::vector<py::ssize_t> sh(shape.begin(), shape.end());
  const py::dtype pdt = dt == DType::f32 ? py::dtype::of<float>() : py::dtype::of<double>();
  py::array arr;
  if (size_t(n) >= kPoolMinBytes) {
    // Large outputs come from the caching pool; the capsule hands the block back when
    // the array (and every view of it) dies.
    void* mem = pool_alloc(size_t(n));
    py::capsule owner(mem, [](void* q) { pool_free(q); });
    arr = py::array(pdt, sh, {}, mem, owner);
  } else {
    arr = py::array(pdt, sh);
  }
  Tensor t = wrap(arr);
  t.dtype = dt;
  return t;
}

// Byte range [lo, hi) spanned by t (empty when numel == 0).
static void extent(const Tensor& t, intptr_t& lo, intptr_t& hi) {
  const index_t item = t.arr.itemsize();
  intptr_t base = reinterpret_cast<intptr_t>(t.ptr);
  lo = hi = base;
  if (t.numel() == 0) return;
  for (int d = 0; d < t.ndim(); ++d) {
    const intptr_t span = intptr_t((t.shape[d] - 1) * t.strides[d] * item);
    if (span < 0) lo += span; else hi += span;
  }
  hi += item;
}

Tensor output(py::handle out, DType dt, const std::vector<index_t>& shape,
              std::initializer_list<const Tensor*> inputs) {
  if (out.is_none()) return empty(dt, shape);
  if (!py::isinstance<py::array>(out))
    throw ValueError("out: expected a numpy array, got " +
                     std::string(py::str(py::type::of(out).attr("__name__"))));
  py::array arr = py::reinterpret_borrow<py::array>(out);
  const py::dtype want = dt == DType::f32 ? py::dtype::of<float>() : py::dtype::of<double>();
  if (!arr.dtype().equal(want))
    throw ValueError(std::string("out: expected dtype ") + dtype_name(dt) + ", got " +
                     std::string(py::str(arr.dtype())));
  Tensor t = wrap(arr);
  t.dtype = dt;
  if (t.shape != shape)
    throw ValueError("out: expected shape " + shape_str(shape) + ", got " + shape_str(t));
  if (!(arr.flags() & py::array::c_style)) throw ValueError("out: must be C-contiguous");
  if (!arr.writeable()) throw ValueError("out: is read-only");
  for (const Tensor* in : inputs) {
    if (in && in->arr && overlaps(t, *in))
      throw ValueError("out: overlaps an input; nnkernels does not compute in place");
  }
  return t;
}

bool overlaps(const Tensor& a, const Tensor& b) {
  intptr_t lo, hi, l2, h2;
  extent(a, lo, hi);
  extent(b, l2, h2);
  return lo < hi && l2 < h2 && lo < h2 && l2 < hi;
}

void register_errors(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const IndexError& e) {
      PyErr_SetString(PyExc_IndexError, e.what());
    }
  });
}

bool broadcast_strides(const std::vector<index_t>& shape, const std::vector<index_t>& strides,
                       const std::vector<index_t>& full, std::vector<index_t>& out) {
  const int mr = int(shape.size()), fr = int(full.size());
  if (mr > fr) return false;
  std::vector<index_t> st(size_t(fr), 0);
  for (int i = 0; i < mr; ++i) {
    const size_t o = size_t(mr - 1 - i), d = size_t(fr - 1 - i);
    if (shape[o] != full[d] && shape[o] != 1) return false;
    if (shape[o] != 1) st[d] = strides[o];
  }
  out = std::move(st);
  return true;
}

index_t pool_out_size(index_t n, index_t k, index_t s, index_t p, index_t d, bool ceil) {
  const index_t num = n + 2 * p - d * (k - 1) - 1 + (ceil ? s - 1 : 0);
  index_t o = (num >= 0 ? num / s : -((-num + s - 1) / s)) + 1;
  if (ceil && (o - 1) * s >= n + p) --o;  // the last window must start inside the input or left padding
  return o;
}

MatmulGeom matmul_geom(const std::vector<index_t>& a_shape, const std::vector<index_t>& a_strides,
                       const std::vector<index_t>& b_shape, const std::vector<index_t>& b_strides) {
  if (a_shape.empty() || b_shape.empty())
    throw ValueError("matmul: a " + shape_str(a_shape) + " and b " + shape_str(b_shape) +
                     ": both arguments need at least 1 dimension");
  const bool a_vec = a_shape.size() == 1, b_vec = b_shape.size() == 1;
  // Matrix views: a (..., M, K), b (..., K, N).
  std::vector<index_t> ash = a_shape, ast = a_strides, bsh = b_shape, bst = b_strides;
  if (a_vec) { ash.insert(ash.begin(), 1); ast.insert(ast.begin(), 0); }
  if (b_vec) { bsh.push_back(1); bst.push_back(0); }
  const int an = int(ash.size()), bn = int(bsh.size());
  MatmulGeom g;
  g.M = ash[an - 2]; g.K = ash[an - 1]; g.N = bsh[bn - 1];
  if (g.K != bsh[bn - 2])
    throw ValueError("matmul: a " + shape_str(a_shape) + " and b " + shape_str(b_shape) + " cannot be multiplied");
  g.rs_a = ast[an - 2]; g.cs_a = ast[an - 1];
  g.rs_b = bst[bn - 2]; g.cs_b = bst[bn - 1];
  const int bd = std::max(an, bn) - 2;
  g.batch.resize(bd); g.sa.resize(bd); g.sb.resize(bd);
  for (int d = 0; d < bd; ++d) {
    const int da = d - (bd - (an - 2)), db = d - (bd - (bn - 2));
    const index_t xa = da >= 0 ? ash[da] : 1, xb = db >= 0 ? bsh[db] : 1;
    if (xa != xb && xa != 1 && xb != 1)
      throw ValueError("matmul: batch dimensions of a " + shape_str(a_shape) + " and b " + shape_str(b_shape) +
                       " do not broadcast");
    g.batch[d] = (xa == 0 || xb == 0) ? 0 : std::max(xa, xb);
    g.sa[d] = (da >= 0 && xa != 1) ? ast[da] : 0;
    g.sb[d] = (db >= 0 && xb != 1) ? bst[db] : 0;
  }
  g.oshape = g.batch;
  if (!a_vec) g.oshape.push_back(g.M);
  if (!b_vec) g.oshape.push_back(g.N);
  return g;
}

namespace {
index_t right_aligned(const std::vector<index_t>& s, size_t nb, int d) {
  const int o = d - int(nb - s.size());
  return o < 0 ? index_t(1) : s[size_t(o)];
}
}  // namespace

index_t AttnBatch::q_size(int d) const { return right_aligned(qb, out.size(), d); }
index_t AttnBatch::k_size(int d) const { return right_aligned(kb, out.size(), d); }

AttnBatch attn_batch(const std::vector<index_t>& q, const std::vector<index_t>& k, const std::vector<index_t>& v,
                     bool gqa) {
  if (q.size() < 2 || k.size() < 2 || v.size() < 2)
    throw ValueError("scaled_dot_product_attention: q, k, v must be at least 2-D (..., L, E), got q " +
                     shape_str(q) + ", k " + shape_str(k) + ", v " + shape_str(v));
  AttnBatch a;
  a.L = q[q.size() - 2]; a.E = q.back(); a.S = k[k.size() - 2]; a.Ev = v.back();
  if (k.back() != a.E)
    throw ValueError("scaled_dot_product_attention: q " + shape_str(q) + " and k " + shape_str(k) +
                     " must have the same head dim E (last dim)");
  if (v[v.size() - 2] != a.S)
    throw ValueError("scaled_dot_product_attention: k " + shape_str(k) + " and v " + shape_str(v) +
                     " must have the same number of keys S (dim -2)");
  a.qb.assign(q.begin(), q.end() - 2);
  a.kb.assign(k.begin(), k.end() - 2);
  if (a.kb != std::vector<index_t>(v.begin(), v.end() - 2))
    throw ValueError("scaled_dot_product_attention: k " + shape_str(k) + " and v " + shape_str(v) +
                     " must have the same batch dims");
  const int nb = int(std::max(a.qb.size(), a.kb.size()));
  a.out.assign(size_t(nb), 1);
  a.group.assign(size_t(nb), 1);
  for (int d = 0; d < nb; ++d) {
    const index_t s1 = a.q_size(d), s2 = a.k_size(d);
    const bool head_dim = d == nb - 1 && !a.qb.empty() && !a.kb.empty();
    if (s1 == s2 || s2 == 1 || s1 == 1) {
      a.out[size_t(d)] = (s1 == 0 || s2 == 0) ? 0 : std::max(s1, s2);
    } else if (gqa && head_dim) {
      if (s2 == 0 || s1 % s2 != 0)
        throw ValueError("scaled_dot_product_attention: enable_gqa: q's heads " + std::to_string(s1) +
                         " (q " + shape_str(q) + ") must be a multiple of k's heads " +
                         std::to_string(s2) + " (k " + shape_str(k) + ")");
      a.out[size_t(d)] = s1;
      a.group[size_t(d)] = s1 / s2;
    } else {
      throw ValueError("scaled_dot_product_attention: batch dims of q " + shape_str(q) + " and k " +
                       shape_str(k) + " do not broadcast" +
                       (head_dim && !gqa ? " (different head counts need enable_gqa=True)" : ""));
    }
  }
  return a;
}

}  // namespace nnk::bind
