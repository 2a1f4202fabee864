// The checking boundary shared by every bind_<family>.cpp: array conversion, dtype and
// shape checks with messages naming the argument, output allocation and `out=` rules.
// Kernels never see Python objects: bindings hand them raw pointers and element strides.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "core/errors.h"
#include "core/types.h"

namespace nnk::bind {

namespace py = pybind11;

// A strided view of a numpy array; `arr` keeps the memory alive.
struct Tensor {
  // Null until set (py::array's own default constructor would allocate a 0-size array:
  // ~0.1 us for every Tensor of every call).
  py::array arr = py::reinterpret_steal<py::array>(py::handle());
  DType dtype = DType::f32;
  void* ptr = nullptr;
  std::vector<index_t> shape;    // sizes
  std::vector<index_t> strides;  // element strides (may be negative or zero)
  int ndim() const { return int(shape.size()); }
  index_t numel() const;
  index_t size(int d) const { return shape[d < 0 ? d + ndim() : d]; }
  index_t stride(int d) const { return strides[d < 0 ? d + ndim() : d]; }
  bool is_contiguous() const;
  template <typename T> T* data() const { return static_cast<T*>(ptr); }
};

std::string shape_str(const std::vector<index_t>& s);
// Element strides of an array (shape, strides) broadcast to `full` (dims aligned at the end):
// one per dim of full, 0 where the array lacks the dim or has size 1. False (out untouched)
// when it does not broadcast.
bool broadcast_strides(const std::vector<index_t>& shape, const std::vector<index_t>& strides,
                       const std::vector<index_t>& full, std::vector<index_t>& out);
inline std::string shape_str(const Tensor& t) { return shape_str(t.shape); }

// matmul's operands read as torch does: a 1-D a is (1, K) and a 1-D b (K, 1) (that dim is
// dropped from the result); the batch dims broadcast. ValueError naming both shapes otherwise.
// Shared by the CPU and CUDA bindings.
struct MatmulGeom {
  index_t M = 0, K = 0, N = 0;
  index_t rs_a = 0, cs_a = 0, rs_b = 0, cs_b = 0;  // the matrices' element strides
  std::vector<index_t> batch;   // the broadcast batch shape
  std::vector<index_t> sa, sb;  // a's and b's element strides over it (0 where broadcast)
  std::vector<index_t> oshape;  // the result's shape
};
MatmulGeom matmul_geom(const std::vector<index_t>& a_shape, const std::vector<index_t>& a_strides,
                       const std::vector<index_t>& b_shape, const std::vector<index_t>& b_strides);

// Pooling's output size along one dim (torch's pooling_output_shape), shared by the CPU and
// CUDA bindings: n input, k kernel, s stride, p padding, d dilation.
index_t pool_out_size(index_t n, index_t k, index_t s, index_t p, index_t d, bool ceil);

// scaled_dot_product_attention's shapes, shared by the CPU and CUDA bindings: q (..., L, E),
// k (..., S, E), v (..., S, Ev); the batch dims broadcast as in torch.matmul, and with gqa the
// head dim (-3) of k and v may divide q's (query head h uses key/value head h / group).
// ValueError naming the shapes otherwise.
struct AttnBatch {
  index_t L = 0, S = 0, E = 0, Ev = 0;
  std::vector<index_t> qb, kb;   // q's and k's (= v's) batch dims
  std::vector<index_t> out;      // the broadcast batch shape
  std::vector<index_t> group;    // per dim of out: query heads per key/value head (1 but on the gqa dim)
  index_t q_size(int d) const;   // q's / k's size on dim d of out (1 where absent)
  index_t k_size(int d) const;
};
AttnBatch attn_batch(const std::vector<index_t>& q, const std::vector<index_t>& k, const std::vector<index_t>& v,
                     bool gqa);

// numpy.asarray(obj) without copying when possible; TypeError unless float32/float64.
Tensor as_float(py::handle obj, const char* name);
// int32 or int64 index arrays (class targets, embedding ids); TypeError otherwise.
Tensor as_index(py::handle obj, const char* name);
// C-contiguous version of t (the same memory when it already is).
Tensor contiguous(const Tensor& t);

// Raises TypeError unless b has a's dtype.
void check_same_dtype(const Tensor& a, const char* an, const Tensor& b, const char* bn);
// Raises ValueError unless t.ndim() is one of `ranks`.
void check_rank(const Tensor& t, const char* name, std::initializer_list<int> ranks);
// The same for an array of shape `shape` (the CUDA binding's arrays).
void check_rank(const std::vector<index_t>& shape, const char* name, std::initializer_list<int> ranks);

// A new C-contiguous array (sizes checked for int64 overflow -> ValueError; allocation
// failure -> MemoryError).
Tensor empty(DType dt, const std::vector<index_t>& shape);
// `out=`: None -> a new array; otherwise checks it is a writeable C-contiguous array of the
// right dtype and shape that overlaps none of `inputs` (ValueError / TypeError).
Tensor output(py::handle out, DType dt, const std::vector<index_t>& shape,
              std::initializer_list<const Tensor*> inputs);

// Whether the byte ranges spanned by a and b intersect (conservative for interleaved views;
// false when either is empty). The rule `output()` applies to `out=`.
bool overlaps(const Tensor& a, const Tensor& b);

// Python float for scalar results.
inline py::object to_py(const Tensor& t) { return t.arr; }

void register_errors(py::module_& m);

}  // namespace nnk::bind
