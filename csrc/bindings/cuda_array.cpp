#include "bindings/cuda_array.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#if defined(NNK_WITH_CUDA)
#include "cuda/api.h"
#endif

namespace nnk::bind {

namespace {

[[noreturn]] void no_cuda() {
  throw std::runtime_error("nnkernels was built without CUDA support");
}

index_t prod(const std::vector<index_t>& s) {
  index_t n = 1;
  for (index_t v : s) n *= v;
  return n;
}

bool contiguous_strides(const std::vector<index_t>& shape, const std::vector<index_t>& strides) {
  index_t expect = 1;
  for (int d = int(shape.size()) - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != expect) return prod(shape) == 0;
    expect *= shape[d];
  }
  return true;
}

std::vector<index_t> c_strides(const std::vector<index_t>& shape) {
  std::vector<index_t> st(shape.size());
  index_t s = 1;
  for (int d = int(shape.size()) - 1; d >= 0; --d) {
    st[d] = s;
    s *= shape[d];
  }
  return st;
}

std::string type_name(py::handle obj) {
  return std::string(py::str(py::type::of(obj).attr("__name__")));
}

[[noreturn]] void mixed(const char* name) {
  throw ValueError(std::string(name) +
                   ": is a host array while other inputs are CUDA arrays; mixing host and "
                   "device inputs in one call is not supported (use nnkernels.cuda.asarray)");
}

// Element strides from byte strides; ValueError unless each is a multiple of the item size.
std::vector<index_t> elem_strides(const std::vector<index_t>& bytes, index_t item, const char* name) {
  std::vector<index_t> st;
  for (index_t b : bytes) {
    if (b % item != 0)
      throw ValueError(std::string(name) + ": strides " + shape_str(bytes) +
                       " (bytes) are not multiples of the item size " + std::to_string(item));
    st.push_back(b / item);
  }
  return st;
}

// What an argument may hold: floats (most), class indices, or an attention mask (bool or float).
enum class Want { floating, index, mask };

// ---- __cuda_array_interface__ ----
DevTensor from_cai(py::handle obj, const char* name, Want want) {
  const bool index = want == Want::index;
  py::object iface = obj.attr("__cuda_array_interface__");
  if (!py::isinstance<py::dict>(iface))
    throw ValueError(std::string(name) + ": __cuda_array_interface__ is not a dict");
  py::dict d = py::reinterpret_borrow<py::dict>(iface);
  for (const char* key : {"shape", "typestr", "data"})
    if (!d.contains(key))
      throw ValueError(std::string(name) + ": __cuda_array_interface__ has no '" + key + "'");
  DevTensor t;
  t.owner = py::reinterpret_borrow<py::object>(obj);
  // typestr first: a wrong dtype is a TypeError naming the argument, as on the CPU.
  py::object ts = d["typestr"];
  const std::string typestr = py::isinstance<py::str>(ts) ? ts.cast<std::string>() : std::string("?");
  const bool le = typestr.size() == 3 && (typestr[0] == '<' || typestr[0] == '=' || typestr[0] == '|');
  if (index) {
    if (le && typestr.substr(1) == "i4") t.index_bits = 32;
    else if (le && typestr.substr(1) == "i8") t.index_bits = 64;
    else
      throw TypeError(std::string(name) + ": expected int32 or int64 indices, got typestr '" + typestr + "'");
  } else if (le && typestr.substr(1) == "f4") t.dtype = DType::f32;
  else if (le && typestr.substr(1) == "f8") t.dtype = DType::f64;
  else if (want == Want::mask && typestr == "|b1") t.boolean = true;
  else
    throw TypeError(std::string(name) + (want == Want::mask ? ": expected a bool, float32 or float64 mask"
                                                             : ": expected float32 or float64") +
                    ", got typestr '" + typestr + "'");
  const index_t item = t.item_size();
  py::object shp = d["shape"];
  if (!py::isinstance<py::tuple>(shp) && !py::isinstance<py::list>(shp))
    throw ValueError(std::string(name) + ": __cuda_array_interface__ shape is not a tuple");
  for (py::handle s : shp) {
    const index_t v = s.cast<index_t>();
    if (v < 0) throw ValueError(std::string(name) + ": negative dimension in shape");
    t.shape.push_back(v);
  }
  if (t.shape.size() > 8) throw ValueError(std::string(name) + ": more than 8 dimensions");
  py::object data = d["data"];
  if (!py::isinstance<py::tuple>(data) || py::len(data) != 2)
    throw ValueError(std::string(name) + ": __cuda_array_interface__ data must be (pointer, read_only)");
  py::tuple dt = py::reinterpret_borrow<py::tuple>(data);
  t.ptr = reinterpret_cast<void*>(dt[0].cast<uintptr_t>());
  t.readonly = dt[1].cast<bool>();
  if (d.contains("mask") && !d["mask"].is_none())
    throw ValueError(std::string(name) + ": masked CUDA arrays are not supported");
  if (d.contains("strides") && !d["strides"].is_none()) {
    std::vector<index_t> bs;
    for (py::handle s : d["strides"]) bs.push_back(s.cast<index_t>());
    if (bs.size() != t.shape.size())
      throw ValueError(std::string(name) + ": strides " + shape_str(bs) + " do not match shape " +
                       shape_str(t.shape));
    t.strides = elem_strides(bs, item, name);
  } else {
    t.strides = c_strides(t.shape);
  }
  if (d.contains("stream") && !d["stream"].is_none()) {
    const uintptr_t s = d["stream"].cast<uintptr_t>();
    if (s == 0)
      throw ValueError(std::string(name) + ": __cuda_array_interface__ stream 0 is disallowed by the protocol");
    t.stream = s;
  }
  if (t.ptr == nullptr && prod(t.shape) != 0)
    throw ValueError(std::string(name) + ": null data pointer");
  return t;
}

// ---- DLPack import ----
template <typename M>
void delete_managed(PyObject* cap, const char* used_name) {
  void* p = PyCapsule_GetPointer(cap, used_name);
  if (!p) { PyErr_Clear(); return; }
  M* m = static_cast<M*>(p);
  if (m->deleter) m->deleter(m);
}

DevTensor from_dltensor(const DLTensor& dl, const char* name, Want want) {
  if (dl.device.device_type != kDLCUDA && dl.device.device_type != kDLCUDAManaged)
    mixed(name);
  DevTensor t;
  const bool index = want == Want::index;
  const uint8_t code = index ? uint8_t(kDLInt) : uint8_t(kDLFloat);
  const bool wide = dl.dtype.lanes == 1 && (dl.dtype.bits == 32 || dl.dtype.bits == 64);
  if (want == Want::mask && dl.dtype.code == kDLBool && dl.dtype.bits == 8 && dl.dtype.lanes == 1)
    t.boolean = true;
  else if (dl.dtype.code != code || !wide)
    throw TypeError(std::string(name) +
                    (index ? ": expected int32 or int64 indices"
                           : want == Want::mask ? ": expected a bool, float32 or float64 mask" : ": expected float32 or float64") +
                    ", got DLPack dtype (code " + std::to_string(dl.dtype.code) + ", bits " +
                    std::to_string(dl.dtype.bits) + ", lanes " + std::to_string(dl.dtype.lanes) + ")");
  else if (index) t.index_bits = dl.dtype.bits;
  else t.dtype = dl.dtype.bits == 32 ? DType::f32 : DType::f64;
  if (dl.ndim < 0 || dl.ndim > 8) throw ValueError(std::string(name) + ": more than 8 dimensions");
  for (int i = 0; i < dl.ndim; ++i) {
    if (dl.shape[i] < 0) throw ValueError(std::string(name) + ": negative dimension in shape");
    t.shape.push_back(dl.shape[i]);
  }
  if (dl.strides) t.strides.assign(dl.strides, dl.strides + dl.ndim);
  else t.strides = c_strides(t.shape);
  if (dl.byte_offset % uint64_t(t.item_size()) != 0)
    throw ValueError(std::string(name) + ": DLPack byte_offset is not a multiple of the item size");
  t.ptr = static_cast<char*>(dl.data) + dl.byte_offset;
  t.device = dl.device.device_id;
  return t;
}

DevTensor from_capsule(py::object cap, const char* name, Want want) {
  PyObject* c = cap.ptr();
  if (PyCapsule_IsValid(c, "dltensor_versioned")) {
    auto* m = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(c, "dltensor_versioned"));
    if (m->version.major > 1)
      throw ValueError(std::string(name) + ": unsupported DLPack major version " +
                       std::to_string(m->version.major));
    DevTensor t = from_dltensor(m->dl_tensor, name, want);  // throws before we claim the capsule
    t.readonly = (m->flags & kDLFlagReadOnly) != 0;
    PyCapsule_SetName(c, "used_dltensor_versioned");
    t.owner = py::reinterpret_steal<py::object>(PyCapsule_New(m, "nnk_dltensor_versioned", [](PyObject* o) {
      delete_managed<DLManagedTensorVersioned>(o, "nnk_dltensor_versioned");
    }));
    if (!t.owner) throw py::error_already_set();
    return t;
  }
  if (PyCapsule_IsValid(c, "dltensor")) {
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(c, "dltensor"));
    DevTensor t = from_dltensor(m->dl_tensor, name, want);
    PyCapsule_SetName(c, "used_dltensor");
    t.owner = py::reinterpret_steal<py::object>(PyCapsule_New(m, "nnk_dltensor", [](PyObject* o) {
      delete_managed<DLManagedTensor>(o, "nnk_dltensor");
    }));
    if (!t.owner) throw py::error_already_set();
    return t;
  }
  throw ValueError(std::string(name) + ": __dlpack__ did not return a DLPack capsule");
}

// (device_type, device_id) from __dlpack_device__, or (0, 0) when obj has none / it fails.
std::pair<int, int> dlpack_device(py::handle obj) {
  if (!py::hasattr(obj, "__dlpack_device__")) return {0, 0};
  try {
    py::tuple t = obj.attr("__dlpack_device__")();
    return {t[0].cast<int>(), t[1].cast<int>()};
  } catch (py::error_already_set&) {
    return {0, 0};
  } catch (py::cast_error&) {
    return {0, 0};
  }
}

bool is_cuda_type(int t) { return t == kDLCUDA || t == kDLCUDAManaged; }

}  // namespace

index_t DeviceArray::numel() const { return prod(shape); }
index_t DevTensor::numel() const { return prod(shape); }
bool DevTensor::is_contiguous() const { return contiguous_strides(shape, strides); }

DeviceBuffer::~DeviceBuffer() {
#if defined(NNK_WITH_CUDA)
  if (owned) nnk::cuda::device_free(ptr);
#endif
}

int is_cuda_attr(py::handle obj) {
  PyObject* v = PyObject_GetAttrString(obj.ptr(), "is_cuda");
  if (!v) {
    PyErr_Clear();
    return -1;
  }
  const int r = v == Py_True ? 1 : v == Py_False ? 0 : -1;
  Py_DECREF(v);
  return r;
}

bool is_device_like(py::handle obj) {
  if (py::isinstance<py::array>(obj)) return false;
  if (py::isinstance<DeviceArray>(obj)) return true;
  // torch tensors answer through a C-level bool property, much faster than the protocols.
  const int ic = is_cuda_attr(obj);
  if (ic >= 0) return ic == 1;
  // __dlpack_device__ first: for host tensors (torch CPU) it answers quickly, while their
  // __cuda_array_interface__ property raises (costly). Objects without DLPack: the CAI.
  if (py::hasattr(obj, "__dlpack_device__")) {
    const int type = dlpack_device(obj).first;
    if (type != 0) return is_cuda_type(type);
  }
  return py::hasattr(obj, "__cuda_array_interface__");
}

namespace {
// The element type's numpy name.
std::string elem_name(const DeviceArray& a) {
  return a.index_bits ? (a.index_bits == 32 ? "int32" : "int64") : a.boolean ? "bool" : dtype_name(a.dtype);
}

DevTensor parse_device(py::handle obj, const char* name, Want want) {
  if (py::isinstance<py::array>(obj)) mixed(name);
  if (py::isinstance<DeviceArray>(obj)) {
    const DeviceArray& a = obj.cast<const DeviceArray&>();
    const bool ok = want == Want::index ? a.index_bits != 0
                  : want == Want::mask ? a.index_bits == 0
                  : (a.index_bits == 0 && !a.boolean);
    if (!ok)
      throw TypeError(std::string(name) +
                      (want == Want::index ? ": expected int32 or int64 indices"
                       : want == Want::mask ? ": expected a bool, float32 or float64 mask"
                                            : ": expected float32 or float64") +
                      ", got a DeviceArray of " + elem_name(a));
    DevTensor t;
    t.owner = py::reinterpret_borrow<py::object>(obj);
    t.ptr = a.ptr;
    t.dtype = a.dtype;
    t.index_bits = a.index_bits;
    t.boolean = a.boolean;
    t.shape = a.shape;
    t.strides = a.strides;
    t.device = a.device;
    t.readonly = a.readonly;
    return t;
  }
  if (py::hasattr(obj, "__cuda_array_interface__")) return from_cai(obj, name, want);
  const auto dev = dlpack_device(obj);
  if (is_cuda_type(dev.first) && py::hasattr(obj, "__dlpack__")) {
    // stream=1: we queue our work on the legacy default stream.
    py::object cap = obj.attr("__dlpack__")(py::arg("stream") = 1);
    return from_capsule(cap, name, want);
  }
  mixed(name);
}
}  // namespace

DevTensor as_device(py::handle obj, const char* name) { return parse_device(obj, name, Want::floating); }
DevTensor as_device_index(py::handle obj, const char* name) { return parse_device(obj, name, Want::index); }
DevTensor as_device_mask(py::handle obj, const char* name) { return parse_device(obj, name, Want::mask); }

void require_cuda() {
#if defined(NNK_WITH_CUDA)
  if (nnk::cuda::device_count() == 0)
    throw std::runtime_error("no usable CUDA device (no GPU or no CUDA driver on this machine)");
#else
  no_cuda();
#endif
}

namespace {

// Elements of a new DeviceArray (see DeviceArray).
struct Elem {
  DType dtype = DType::f32;
  int index_bits = 0;
  bool boolean = false;
};

py::object make_device_array(Elem e, const std::vector<index_t>& shape, DevTensor& view) {
  DeviceArray a;
  a.dtype = e.dtype;
  a.index_bits = e.index_bits;
  a.boolean = e.boolean;
  index_t bytes = a.item_size();
  for (index_t s : shape) {
    if (s < 0) throw ValueError("negative dimension in output shape " + shape_str(shape));
    bytes = checked_mul(bytes, s, "output");
  }
#if defined(NNK_WITH_CUDA)
  require_cuda();
  a.buf = std::make_shared<DeviceBuffer>();
  a.buf->ptr = nnk::cuda::device_malloc(size_t(bytes));
  a.buf->owned = true;
  a.ptr = a.buf->ptr;
  a.shape = shape;
  a.strides = c_strides(shape);
  a.device = nnk::cuda::current_device();
  view.ptr = a.ptr;
  view.dtype = a.dtype;
  view.index_bits = a.index_bits;
  view.boolean = a.boolean;
  view.shape = a.shape;
  view.strides = a.strides;
  view.device = a.device;
  py::object o = py::cast(std::move(a));
  view.owner = o;
  return o;
#else
  (void)view;
  no_cuda();
#endif
}

// Byte range [lo, hi) spanned by t (empty when numel == 0).
void extent(const DevTensor& t, intptr_t& lo, intptr_t& hi) {
  const index_t item = t.item_size();
  lo = hi = reinterpret_cast<intptr_t>(t.ptr);
  if (t.numel() == 0) return;
  for (int d = 0; d < t.ndim(); ++d) {
    const intptr_t span = intptr_t((t.shape[d] - 1) * t.strides[d] * item);
    if (span < 0) lo += span; else hi += span;
  }
  hi += item;
}

}  // namespace

DevTensor dev_empty(DType dt, const std::vector<index_t>& shape) {
  DevTensor t;
  make_device_array(Elem{dt, 0, false}, shape, t);
  return t;
}

DevTensor dev_empty_index(const std::vector<index_t>& shape) {
  DevTensor t;
  make_device_array(Elem{DType::f32, 64, false}, shape, t);
  return t;
}

DevTensor dev_empty_bool(const std::vector<index_t>& shape) {
  DevTensor t;
  make_device_array(Elem{DType::f32, 0, true}, shape, t);
  return t;
}

DevTensor dev_contiguous(const DevTensor& t) {
  if (t.is_contiguous()) return t;
  DevTensor c;
  make_device_array(Elem{t.dtype, t.index_bits, t.boolean}, t.shape, c);
#if defined(NNK_WITH_CUDA)
  nnk::cuda::strided_copy_items(t.item_size(), c.ptr, t.ptr, t.ndim(), t.shape.data(), t.strides.data());
#endif
  return c;
}

DevTensor dev_output_check(py::handle out, DType dt, const std::vector<index_t>& shape,
                           std::initializer_list<const DevTensor*> inputs) {
  DevTensor t;
  if (out.is_none()) return t;  // ptr == nullptr: allocate after the checks
  if (!is_device_like(out))
    throw ValueError("out: expected a CUDA array (the inputs are CUDA arrays), got " + type_name(out));
  t = as_device(out, "out");
  if (t.dtype != dt)
    throw ValueError(std::string("out: expected dtype ") + dtype_name(dt) + ", got " + dtype_name(t.dtype));
  if (t.shape != shape)
    throw ValueError("out: expected shape " + shape_str(shape) + ", got " + shape_str(t.shape));
  if (!t.is_contiguous()) throw ValueError("out: must be C-contiguous");
  if (t.readonly) throw ValueError("out: is read-only");
  intptr_t lo, hi;
  extent(t, lo, hi);
  for (const DevTensor* in : inputs) {
    if (!in || !in->ptr) continue;
    intptr_t l2, h2;
    extent(*in, l2, h2);
    if (lo < hi && l2 < h2 && lo < h2 && l2 < hi)
      throw ValueError("out: overlaps an input; nnkernels does not compute in place");
  }
  return t;
}

void dev_prepare(std::initializer_list<const DevTensor*> inputs) {
  require_cuda();
#if defined(NNK_WITH_CUDA)
  const int cur = nnk::cuda::current_device();
  for (const DevTensor* t : inputs) {
    if (!t) continue;
    if (t->device >= 0 && t->device != cur)
      throw ValueError("CUDA array on device " + std::to_string(t->device) +
                       ", but nnkernels runs on the current device " + std::to_string(cur));
    if (t->stream > 1) nnk::cuda::wait_stream(t->stream);
  }
#else
  (void)inputs;
#endif
}

// ---- DeviceArray Python type ----
namespace {

struct ExportCtx {
  std::shared_ptr<DeviceBuffer> buf;
  std::vector<int64_t> shape, strides;
};

template <typename M>
void fill_dl(M* m, const DeviceArray& a, ExportCtx* ctx) {
  ctx->buf = a.buf;
  ctx->shape.assign(a.shape.begin(), a.shape.end());
  ctx->strides.assign(a.strides.begin(), a.strides.end());
  m->manager_ctx = ctx;
  DLTensor& t = m->dl_tensor;
  t.data = a.ptr;
  t.device = {kDLCUDA, a.device};
  t.ndim = int32_t(a.shape.size());
  t.dtype = a.index_bits ? DLDataType{kDLInt, uint8_t(a.index_bits), 1}
            : a.boolean  ? DLDataType{kDLBool, 8, 1}
                         : DLDataType{kDLFloat, uint8_t(a.dtype == DType::f32 ? 32 : 64), 1};
  t.shape = ctx->shape.data();
  t.strides = ctx->strides.data();
  t.byte_offset = 0;
}

// Deleters may run on any thread, without the GIL: ExportCtx holds no Python object.
void del_legacy(DLManagedTensor* m) {
  delete static_cast<ExportCtx*>(m->manager_ctx);
  delete m;
}
void del_versioned(DLManagedTensorVersioned* m) {
  delete static_cast<ExportCtx*>(m->manager_ctx);
  delete m;
}

py::object to_dlpack(const DeviceArray& a, py::handle stream, py::handle max_version,
                     py::handle dl_device, py::handle copy) {
  if (!dl_device.is_none()) {
    py::tuple dd = py::reinterpret_borrow<py::tuple>(dl_device);
    if (dd[0].cast<int>() != kDLCUDA || dd[1].cast<int>() != a.device)
      throw py::buffer_error("DeviceArray.__dlpack__: cannot export to another device");
  }
  if (!copy.is_none() && copy.cast<bool>())
    throw py::buffer_error("DeviceArray.__dlpack__: copy=True is not supported");
  if (!stream.is_none()) {
    const intptr_t s = stream.cast<intptr_t>();
    if (s == 0 || s < -1) throw ValueError("DeviceArray.__dlpack__: invalid stream " + std::to_string(s));
#if defined(NNK_WITH_CUDA)
    if (s > 1) nnk::cuda::stream_wait_default(uintptr_t(s));
#endif
  }
  bool versioned = false;
  if (!max_version.is_none()) {
    py::tuple mv = py::reinterpret_borrow<py::tuple>(max_version);
    versioned = mv[0].cast<int>() >= 1;
  }
  auto* ctx = new ExportCtx;
  if (versioned) {
    auto* m = new DLManagedTensorVersioned{};
    m->version = {1, 0};
    m->flags = a.readonly ? kDLFlagReadOnly : 0;
    m->deleter = del_versioned;
    fill_dl(m, a, ctx);
    PyObject* cap = PyCapsule_New(m, "dltensor_versioned", [](PyObject* o) {
      if (PyCapsule_IsValid(o, "dltensor_versioned")) {
        auto* mm = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(o, "dltensor_versioned"));
        mm->deleter(mm);
      }
    });
    if (!cap) { del_versioned(m); throw py::error_already_set(); }
    return py::reinterpret_steal<py::object>(cap);
  }
  auto* m = new DLManagedTensor{};
  m->deleter = del_legacy;
  fill_dl(m, a, ctx);
  PyObject* cap = PyCapsule_New(m, "dltensor", [](PyObject* o) {
    if (PyCapsule_IsValid(o, "dltensor")) {
      auto* mm = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(o, "dltensor"));
      mm->deleter(mm);
    }
  });
  if (!cap) { del_legacy(m); throw py::error_already_set(); }
  return py::reinterpret_steal<py::object>(cap);
}

py::tuple shape_tuple(const std::vector<index_t>& s) {
  py::tuple t(s.size());
  for (size_t i = 0; i < s.size(); ++i) t[i] = py::int_(s[i]);
  return t;
}

py::dtype np_dtype(const DeviceArray& a) { return py::dtype(elem_name(a)); }

// A device array's elements copied into a new C-contiguous host array (waits).
py::array to_host(const DevTensor& t) {
  const std::string name =
      t.index_bits ? (t.index_bits == 32 ? "int32" : "int64") : t.boolean ? "bool" : dtype_name(t.dtype);
  py::array h(py::dtype(name), std::vector<py::ssize_t>(t.shape.begin(), t.shape.end()));
#if defined(NNK_WITH_CUDA)
  const size_t bytes = size_t(t.numel() * t.item_size());
  const DevTensor c = t.is_contiguous() ? t : dev_contiguous(t);
  if (bytes) nnk::cuda::copy_d2h(h.mutable_data(), c.ptr, bytes);
#else
  no_cuda();
#endif
  return h;
}

// The __cuda_array_interface__ typestr of a's elements.
const char* typestr(const DeviceArray& a) {
  if (a.index_bits) return a.index_bits == 32 ? "<i4" : "<i8";
  if (a.boolean) return "|b1";
  return a.dtype == DType::f32 ? "<f4" : "<f8";
}

py::object asarray(py::handle obj) {
  if (py::isinstance<DeviceArray>(obj)) return py::reinterpret_borrow<py::object>(obj);
  if (is_device_like(obj))
    throw ValueError("nnkernels.cuda.asarray: already a CUDA array; pass it to the ops directly");
  // int32 / int64 (class targets, embedding ids) and bool (masks) arrays too, as the ops'
  // index and mask arguments take them; anything else must be float32 / float64.
  py::array a = py::array::ensure(obj);
  if (a && (a.dtype().kind() == 'b' ||
            (a.dtype().kind() == 'i' && (a.dtype().itemsize() == 4 || a.dtype().itemsize() == 8)))) {
    Elem e;
    if (a.dtype().kind() == 'b') e.boolean = true;
    else e.index_bits = int(a.dtype().itemsize()) * 8;
    py::array c = py::array::ensure(a.attr("astype")(a.dtype().attr("newbyteorder")("=")), py::array::c_style);
    std::vector<index_t> shape(c.shape(), c.shape() + c.ndim());
    DevTensor d;
    py::object res = make_device_array(e, shape, d);
#if defined(NNK_WITH_CUDA)
    nnk::cuda::copy_h2d(d.ptr, c.data(), size_t(c.nbytes()));
#endif
    return res;
  }
  Tensor h = contiguous(as_float(obj, "host_array"));
  DevTensor d;
  py::object res = make_device_array(Elem{h.dtype, 0, false}, h.shape, d);
#if defined(NNK_WITH_CUDA)
  nnk::cuda::copy_h2d(d.ptr, h.ptr, size_t(h.numel() * dtype_size(h.dtype)));
#endif
  return res;
}

// Strides of `shape` viewing the elements of (old, old_strides) in C order without a copy
// (numpy's no-copy reshape); false when no view exists.
bool view_strides(const std::vector<index_t>& old_shape, const std::vector<index_t>& old_strides,
                  const std::vector<index_t>& shape, std::vector<index_t>& strides) {
  index_t n = 1;
  for (index_t d : shape) n *= d;
  if (n == 0) {
    strides = c_strides(shape);
    return true;
  }
  std::vector<index_t> os, ost;  // the old dims without the size-1 ones
  for (size_t d = 0; d < old_shape.size(); ++d)
    if (old_shape[d] != 1) os.push_back(old_shape[d]), ost.push_back(old_strides[d]);
  strides.assign(shape.size(), 0);
  size_t oi = 0, ni = 0;
  const size_t on = os.size(), nn = shape.size();
  while (ni < nn && oi < on) {
    size_t oj = oi + 1, nj = ni + 1;
    index_t op = os[oi], np_ = shape[ni];
    while (op != np_) {
      if (np_ < op) np_ *= shape[nj++];
      else op *= os[oj++];
    }
    for (size_t k = oi; k + 1 < oj; ++k)
      if (ost[k] != os[k + 1] * ost[k + 1]) return false;  // the group is not one run in memory
    strides[nj - 1] = ost[oj - 1];
    for (size_t k = nj - 1; k > ni; --k) strides[k - 1] = strides[k] * shape[k];
    ni = nj;
    oi = oj;
  }
  for (; ni < nn; ++ni) strides[ni] = 1;  // trailing size-1 dims
  return true;
}

// A DevTensor view of a DeviceArray (no copy).
DevTensor view_of(const DeviceArray& a, py::handle owner) {
  DevTensor v;
  v.owner = py::reinterpret_borrow<py::object>(owner);
  v.ptr = a.ptr; v.dtype = a.dtype; v.index_bits = a.index_bits; v.boolean = a.boolean;
  v.shape = a.shape; v.strides = a.strides; v.device = a.device; v.readonly = a.readonly;
  return v;
}

// A new C-contiguous DeviceArray holding a's elements (always a copy).
py::object copy_array(const DeviceArray& a, py::handle self) {
  DevTensor c;
  py::object res = make_device_array(Elem{a.dtype, a.index_bits, a.boolean}, a.shape, c);
#if defined(NNK_WITH_CUDA)
  if (a.numel()) {
    DevTensor v = view_of(a, self);
    nnk::cuda::strided_copy_items(v.item_size(), c.ptr, v.ptr, v.ndim(), v.shape.data(), v.strides.data());
  }
#else
  (void)self;
#endif
  return res;
}

// numpy's basic indexing on a DeviceArray: ints, slices, None and one Ellipsis -> a view.
DeviceArray index_view(const DeviceArray& a, py::handle key) {
  py::tuple items = py::isinstance<py::tuple>(key) ? py::reinterpret_borrow<py::tuple>(key) : py::make_tuple(key);
  int consumed = 0, ell = -1;
  for (size_t i = 0; i < items.size(); ++i) {
    py::handle it = items[i];
    if (it.is(py::ellipsis())) {
      if (ell >= 0) throw IndexError("an index can only have a single ellipsis ('...')");
      ell = int(i);
    } else if (!it.is_none()) {
      ++consumed;
    }
  }
  if (consumed > int(a.shape.size()))
    throw IndexError("too many indices for a DeviceArray of " + std::to_string(a.shape.size()) + " dimensions");
  DeviceArray v = a;
  v.shape.clear();
  v.strides.clear();
  char* p = static_cast<char*>(a.ptr);
  const index_t item = a.item_size();
  size_t d = 0;
  auto rest = [&] {  // the dims an Ellipsis stands for
    const size_t n = a.shape.size() - size_t(consumed);
    for (size_t e = 0; e < n; ++e, ++d) v.shape.push_back(a.shape[d]), v.strides.push_back(a.strides[d]);
  };
  for (size_t i = 0; i < items.size(); ++i) {
    py::handle it = items[i];
    if (int(i) == ell) {
      rest();
    } else if (it.is_none()) {
      v.shape.push_back(1);
      v.strides.push_back(0);
    } else if (py::isinstance<py::slice>(it)) {
      size_t start, stop, step, len;
      if (!py::reinterpret_borrow<py::slice>(it).compute(size_t(a.shape[d]), &start, &stop, &step, &len))
        throw py::error_already_set();
      const index_t st = index_t(static_cast<py::ssize_t>(step));
      p += index_t(start) * a.strides[d] * item;
      v.shape.push_back(index_t(len));
      v.strides.push_back(a.strides[d] * st);
      ++d;
    } else if (py::isinstance<py::int_>(it) || py::hasattr(it, "__index__")) {
      index_t i0 = py::reinterpret_borrow<py::object>(it).attr("__index__")().cast<index_t>();
      const index_t n = a.shape[d];
      if (i0 < -n || i0 >= n)
        throw IndexError("index " + std::to_string(i0) + " is out of bounds for axis " + std::to_string(d) +
                         " with size " + std::to_string(n));
      if (i0 < 0) i0 += n;
      p += i0 * a.strides[d] * item;
      ++d;
    } else {
      throw IndexError("DeviceArray indices: ints, slices, None and '...' only (got " + type_name(it) + ")");
    }
  }
  if (ell < 0) rest();
  v.ptr = p;
  return v;
}

}  // namespace

void bind_cuda_array(py::module_& m) {
  py::class_<DeviceArray>(m, "DeviceArray",
                          "An array in CUDA device memory (float32 / float64; int64 indices and bool "
                          "masks from the ops that return them), returned by the ops "
                          "when given CUDA arrays. Exposes __cuda_array_interface__ (v3) and "
                          "DLPack, so torch.as_tensor / torch.from_dlpack / cupy.asarray wrap it "
                          "without a copy; .numpy() copies it to the host.")
      .def_property_readonly("shape", [](const DeviceArray& a) { return shape_tuple(a.shape); })
      .def_property_readonly("dtype", [](const DeviceArray& a) { return np_dtype(a); })
      .def_property_readonly("ndim", [](const DeviceArray& a) { return a.shape.size(); })
      .def_property_readonly("size", [](const DeviceArray& a) { return a.numel(); })
      .def_property_readonly("nbytes", [](const DeviceArray& a) { return a.numel() * a.item_size(); })
      .def_property_readonly("device", [](const DeviceArray& a) { return a.device; })
      .def_property_readonly("__cuda_array_interface__", [](const DeviceArray& a) {
        py::dict d;
        d["shape"] = shape_tuple(a.shape);
        d["typestr"] = typestr(a);
        d["data"] = py::make_tuple(py::int_(reinterpret_cast<uintptr_t>(a.ptr)), a.readonly);
        if (contiguous_strides(a.shape, a.strides)) {
          d["strides"] = py::none();
        } else {
          std::vector<index_t> bs;
          for (index_t s : a.strides) bs.push_back(s * a.item_size());
          d["strides"] = shape_tuple(bs);
        }
        d["version"] = 3;
        d["stream"] = 1;  // our kernels run on the legacy default stream
        return d;
      })
      .def("__dlpack__", &to_dlpack, py::kw_only(), py::arg("stream") = py::none(),
           py::arg("max_version") = py::none(), py::arg("dl_device") = py::none(),
           py::arg("copy") = py::none())
      .def("__dlpack_device__", [](const DeviceArray& a) { return py::make_tuple(kDLCUDA, a.device); })
      .def("reshape", [](py::object self, py::args args) -> py::object {
        // numpy's reshape: a view when the strides allow one, else a C-contiguous copy
        // reshaped. Sizes, or one tuple; one -1 inferred.
        const DeviceArray& a = self.cast<const DeviceArray&>();
        py::handle spec = args.size() == 1 && !py::isinstance<py::int_>(args[0]) ? args[0] : py::handle(args);
        std::vector<index_t> shape;
        int infer = -1;
        index_t known = 1;
        for (py::handle h : spec) {
          const index_t n = h.cast<index_t>();
          if (n == -1 && infer < 0) {
            infer = int(shape.size());
          } else if (n < 0) {
            throw ValueError("reshape: sizes must be >= 0 (one -1 at most), got " + std::to_string(n));
          } else {
            known *= n;
          }
          shape.push_back(n);
        }
        const index_t total = a.numel();
        if (infer >= 0) {
          if (known == 0 || total % known != 0)
            throw ValueError("reshape: cannot reshape " + shape_str(a.shape) + " into " + shape_str(shape));
          shape[size_t(infer)] = total / known;
        } else if (known != total) {
          throw ValueError("reshape: cannot reshape " + shape_str(a.shape) + " into " + shape_str(shape));
        }
        std::vector<index_t> strides;
        if (view_strides(a.shape, a.strides, shape, strides)) {
          DeviceArray v = a;
          v.shape = shape;
          v.strides = strides;
          return py::cast(v);
        }
        py::object c = copy_array(a, self);
        DeviceArray v = c.cast<const DeviceArray&>();
        v.shape = shape;
        v.strides = c_strides(shape);
        return py::cast(v);
      }, "A view with another shape when the strides allow (else a reshaped contiguous copy), as numpy.")
      .def("transpose", [](const DeviceArray& a, py::args args) {
        // A view with the axes permuted (numpy's transpose: no axes reverses them).
        const size_t nd = a.shape.size();
        std::vector<index_t> axes;
        py::handle spec = args.size() == 1 && !py::isinstance<py::int_>(args[0]) ? args[0] : py::handle(args);
        for (py::handle h : spec) axes.push_back(h.cast<index_t>());
        if (axes.empty())
          for (size_t d = 0; d < nd; ++d) axes.push_back(index_t(nd - 1 - d));
        if (axes.size() != nd) throw ValueError("transpose: axes don't match the array's " + std::to_string(nd) + " dims");
        std::vector<bool> seen(nd, false);
        DeviceArray v = a;
        for (size_t d = 0; d < nd; ++d) {
          index_t ax = axes[d] < 0 ? axes[d] + index_t(nd) : axes[d];
          if (ax < 0 || ax >= index_t(nd) || seen[size_t(ax)]) throw ValueError("transpose: axes must be a permutation");
          seen[size_t(ax)] = true;
          v.shape[d] = a.shape[size_t(ax)];
          v.strides[d] = a.strides[size_t(ax)];
        }
        return v;
      }, "A view with the axes permuted (none given: reversed), as numpy.")
      .def_property_readonly("T", [](const DeviceArray& a) {
        DeviceArray v = a;
        std::reverse(v.shape.begin(), v.shape.end());
        std::reverse(v.strides.begin(), v.strides.end());
        return v;
      })
      .def("__getitem__", &index_view, "Basic indexing (ints, slices, None, '...') -> a view.")
      .def("copy", [](py::object self) { return copy_array(self.cast<const DeviceArray&>(), self); },
           "A new C-contiguous device copy.")
      .def("__len__", [](const DeviceArray& a) {
        if (a.shape.empty()) throw py::type_error("len() of a 0-d DeviceArray");
        return a.shape[0];
      })
      .def("__array__", [](const DeviceArray&, py::args, py::kwargs) -> py::object {
        throw TypeError("DeviceArray lives in CUDA device memory; use .numpy() to copy it to the host");
      })
      .def("__repr__", [](const DeviceArray& a) {
        return "DeviceArray(shape=" + shape_str(a.shape) + ", dtype=" + elem_name(a) +
               ", device=cuda:" + std::to_string(a.device) + ")";
      })
      .def("numpy", [](const DeviceArray& a) {
        DevTensor v;
        v.ptr = a.ptr; v.dtype = a.dtype; v.index_bits = a.index_bits; v.boolean = a.boolean;
        v.shape = a.shape; v.strides = a.strides;
        return to_host(v);
      }, "Copy to a new host numpy array (waits for the kernels writing it).");

  m.def("cuda_asarray", &asarray);
  // The nn layers' np.stack for DeviceArrays: (n, *shape), C-contiguous.
  m.def("_cuda_stack", [](py::sequence arrays) {
    if (arrays.size() == 0) throw ValueError("_cuda_stack: need at least one array");
    std::vector<DevTensor> ts;
    for (py::handle h : arrays) ts.push_back(as_device(h, "arrays"));
    for (const DevTensor& t : ts)
      if (t.shape != ts[0].shape || t.dtype != ts[0].dtype)
        throw ValueError("_cuda_stack: arrays of one shape and dtype needed");
    std::vector<index_t> shape = ts[0].shape;
    shape.insert(shape.begin(), index_t(ts.size()));
    DevTensor out;
    py::object res = make_device_array(Elem{ts[0].dtype, 0, false}, shape, out);
#if defined(NNK_WITH_CUDA)
    const size_t bytes = size_t(ts[0].numel() * ts[0].item_size());
    for (size_t i = 0; i < ts.size(); ++i) {
      DevTensor c = dev_contiguous(ts[i]);
      if (bytes) nnk::cuda::copy_d2d(static_cast<char*>(out.ptr) + i * bytes, c.ptr, bytes);
    }
#endif
    return res;
  });
  // The nn layers' numpy.concatenate(arrays, axis=-1) for DeviceArrays of one dtype whose
  // shapes agree but in the last dim: one row-pitched copy per array into a new C-contiguous
  // (..., sum of the last dims).
  m.def("_cuda_cat_last", [](py::sequence arrays) {
    if (arrays.size() == 0) throw ValueError("_cuda_cat_last: need at least one array");
    std::vector<DevTensor> ts;
    for (py::handle h : arrays) ts.push_back(as_device(h, "arrays"));
    if (ts[0].ndim() == 0) throw ValueError("_cuda_cat_last: arrays need at least one dim");
    std::vector<index_t> shape = ts[0].shape;
    index_t total = 0;
    for (const DevTensor& t : ts) {
      if (t.ndim() != ts[0].ndim() || t.dtype != ts[0].dtype ||
          !std::equal(t.shape.begin(), t.shape.end() - 1, ts[0].shape.begin()))
        throw ValueError("_cuda_cat_last: arrays of one dtype, equal but in the last dim, needed");
      total += t.shape.back();
    }
    shape.back() = total;
    DevTensor out;
    py::object res = make_device_array(Elem{ts[0].dtype, 0, false}, shape, out);
#if defined(NNK_WITH_CUDA)
    const size_t item = size_t(ts[0].item_size());
    const size_t rows = size_t(total ? out.numel() / total : 0);
    size_t off = 0;
    for (const DevTensor& t : ts) {
      const DevTensor c = t.is_contiguous() ? t : dev_contiguous(t);
      const size_t w = size_t(t.shape.back()) * item;
      nnk::cuda::copy_d2d_rows(static_cast<char*>(out.ptr) + off, size_t(total) * item, c.ptr, std::max<size_t>(w, 1),
                               w, rows);
      off += w;
    }
#endif
    return res;
  });
  // The nn layers' host copy of a CUDA mask of any kind (bool / float32 / float64).
  m.def("_cuda_mask_to_host", [](py::handle obj) { return to_host(as_device_mask(obj, "mask")); });
  m.def("cuda_synchronize", [] {
#if defined(NNK_WITH_CUDA)
    require_cuda();
    nnk::cuda::synchronize();
#else
    no_cuda();
#endif
  });
  // Internal (tests): parse a CUDA array argument without touching the GPU.
  m.def("_cuda_parse", [](py::handle obj, const char* name, bool index, bool mask) {
    DevTensor t = index ? as_device_index(obj, name) : mask ? as_device_mask(obj, name) : as_device(obj, name);
    py::dict d;
    d["ptr"] = py::int_(reinterpret_cast<uintptr_t>(t.ptr));
    d["shape"] = shape_tuple(t.shape);
    d["strides"] = shape_tuple(t.strides);
    d["dtype"] = t.index_bits ? (t.index_bits == 32 ? "int32" : "int64") : t.boolean ? "bool" : dtype_name(t.dtype);
    d["device"] = t.device;
    d["stream"] = py::int_(t.stream);
    d["readonly"] = t.readonly;
    d["contiguous"] = t.is_contiguous();
    return d;
  }, py::arg("obj"), py::arg("name"), py::arg("index") = false, py::arg("mask") = false);
  m.def("_cuda_is_device", [](py::handle obj) { return is_device_like(obj); });
  // Internal (tests): a DeviceArray viewing memory it does not own (never dereferenced by
  // the tests on machines without a GPU).
  m.def("_cuda_view", [](uintptr_t ptr, std::vector<index_t> shape, const std::string& dtype,
                         int device, bool readonly) {
    DeviceArray a;
    a.buf = std::make_shared<DeviceBuffer>();
    a.buf->ptr = reinterpret_cast<void*>(ptr);
    a.ptr = a.buf->ptr;
    if (dtype == "float32") a.dtype = DType::f32;
    else if (dtype == "float64") a.dtype = DType::f64;
    else if (dtype == "int32") a.index_bits = 32;
    else if (dtype == "int64") a.index_bits = 64;
    else if (dtype == "bool") a.boolean = true;
    else throw ValueError("dtype: float32, float64, int32, int64 or bool");
    a.strides = c_strides(shape);
    a.shape = std::move(shape);
    a.device = device;
    a.readonly = readonly;
    return a;
  });
}

}  // namespace nnk::bind
