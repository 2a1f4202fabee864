// Device arrays at the Python boundary: our DeviceArray type (owning device memory, exposing
// __cuda_array_interface__ v3 and DLPack) and the parsing of foreign CUDA arrays
// (__cuda_array_interface__, __dlpack__ on a CUDA device) into DevTensor views.
// Parsing makes no CUDA call, so every argument check runs (and is tested) without a GPU;
// the CUDA calls come after all checks. Compiled in every build; without CUDA, creating
// device memory raises RuntimeError.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "bindings/common.h"

namespace nnk::bind {

// ---- DLPack ABI (dlpack.h v1.0, the parts we use) ----
struct DLDevice { int32_t device_type; int32_t device_id; };
struct DLDataType { uint8_t code; uint8_t bits; uint16_t lanes; };
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
struct DLPackVersion { uint32_t major; uint32_t minor; };
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned*);
  uint64_t flags;
  DLTensor dl_tensor;
};
constexpr int32_t kDLCPU = 1, kDLCUDA = 2, kDLCUDAManaged = 13;
constexpr uint8_t kDLInt = 0, kDLFloat = 2, kDLBool = 6;  // DLDataTypeCode
constexpr uint64_t kDLFlagReadOnly = 1;

// Device memory owned by DeviceArrays (shared by views and DLPack exports).
struct DeviceBuffer {
  void* ptr = nullptr;
  bool owned = false;  // false: a test view of memory we do not own
  ~DeviceBuffer();
};

// Elements: float32 / float64 (dtype), or, for the ops' index and mask outputs (max_pool2d's
// indices, dropout's mask), int32 / int64 (index_bits) or bool (boolean; one byte each).
struct DeviceArray {
  std::shared_ptr<DeviceBuffer> buf;
  void* ptr = nullptr;
  DType dtype = DType::f32;
  int index_bits = 0;
  bool boolean = false;
  std::vector<index_t> shape;
  std::vector<index_t> strides;  // elements
  int device = 0;
  bool readonly = false;
  index_t numel() const;
  index_t item_size() const { return index_bits ? index_bits / 8 : (boolean ? 1 : dtype_size(dtype)); }
};

// A CUDA array argument (ours or foreign), checked like the CPU path's Tensor.
struct DevTensor {
  py::object owner;  // keeps the memory alive
  void* ptr = nullptr;
  DType dtype = DType::f32;
  std::vector<index_t> shape;
  std::vector<index_t> strides;  // elements
  int device = -1;               // -1: not stated (__cuda_array_interface__)
  uintptr_t stream = 0;          // producer stream to wait for (0: none)
  bool readonly = false;
  int index_bits = 0;            // 0: a float array (dtype); 32 / 64: signed integer indices
  bool boolean = false;          // a bool array (one byte per element; dtype unused)
  int ndim() const { return int(shape.size()); }
  index_t numel() const;
  index_t item_size() const { return index_bits ? index_bits / 8 : (boolean ? 1 : dtype_size(dtype)); }
  bool is_contiguous() const;
  template <typename T> T* data() const { return static_cast<T*>(ptr); }
};

// Whether obj is a CUDA array (DeviceArray, __cuda_array_interface__, or __dlpack_device__
// naming a CUDA device). numpy arrays return false at once.
bool is_device_like(py::handle obj);
// obj.is_cuda when it is a bool (torch tensors): 1 / 0; -1 when absent or not a bool.
int is_cuda_attr(py::handle obj);
// The device view of obj; TypeError (dtype, naming `name`), ValueError (host array: mixing
// host and device inputs; bad strides or protocol fields). No CUDA call.
DevTensor as_device(py::handle obj, const char* name);
// The same for an array of class indices: int32 or int64 (TypeError otherwise); index_bits
// says which (dtype is unused).
DevTensor as_device_index(py::handle obj, const char* name);
// An attention mask: bool (boolean set) or float32 / float64 (TypeError otherwise).
DevTensor as_device_mask(py::handle obj, const char* name);

// An argument of a CUDA overload: pybind11 picks the overload only when the first argument
// is a CUDA array (see the type_caster below), so host calls go to the CPU binding.
struct DevArg { py::handle h; };

// ---- after the checks: CUDA calls (RuntimeError in a build without CUDA) ----
// A new C-contiguous DeviceArray (sizes checked for int64 overflow -> ValueError).
DevTensor dev_empty(DType dt, const std::vector<index_t>& shape);
// The same with int64 elements (index_bits = 64: max_pool2d's indices) or bool ones
// (boolean: dropout's mask).
DevTensor dev_empty_index(const std::vector<index_t>& shape);
DevTensor dev_empty_bool(const std::vector<index_t>& shape);
// t itself when C-contiguous, else a contiguous device copy.
DevTensor dev_contiguous(const DevTensor& t);
// out=: None -> dev_empty; otherwise a writeable C-contiguous CUDA array of the right dtype
// and shape overlapping none of `inputs` (ValueError). Checks only: no CUDA call.
DevTensor dev_output_check(py::handle out, DType dt, const std::vector<index_t>& shape,
                           std::initializer_list<const DevTensor*> inputs);
// Inputs on the current device (ValueError otherwise); stream 0 waits for their producers.
void dev_prepare(std::initializer_list<const DevTensor*> inputs);
// RuntimeError unless the CUDA part was built and a device is usable.
void require_cuda();

void bind_cuda_array(py::module_& m);

}  // namespace nnk::bind

namespace pybind11::detail {
template <> struct type_caster<nnk::bind::DevArg> {
  PYBIND11_TYPE_CASTER(nnk::bind::DevArg, const_name("CUDAArray"));
  bool load(handle src, bool) {
    if (!nnk::bind::is_device_like(src)) return false;
    value.h = src;
    return true;
  }
  static handle cast(const nnk::bind::DevArg& a, return_value_policy, handle) {
    return a.h.inc_ref();
  }
};
}  // namespace pybind11::detail
