// nnkernels CUDA emulator: the subset of the CUDA runtime and device API our .cu files use,
// for running their kernels on the host (development only; see tools/cuda_emu/README.md).
// Each CUDA thread is a fiber; a block's threads run one at a time between barriers
// (__syncthreads, warp shuffles, __syncwarp, grid.sync()), in the order NNK_EMU_ORDER says
// (fwd, rev or rand), so a missing barrier shows up as a changed result. Device memory is
// host memory. Kernel launches (`k<<<g, b, smem, s>>>(args)`) are rewritten by rewrite.py
// into ::nnk_emu::launch calls.
#pragma once
#include <math.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define __constant__ static
#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) double2 { double x, y; };
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidPitchValue = 12,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
  cudaErrorCooperativeLaunchTooLarge = 720,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaDeviceAttr {
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrCooperativeLaunch = 95,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };
struct CUstream_st;
struct CUevent_st;
struct CUmemPool_st;
typedef CUstream_st* cudaStream_t;
typedef CUevent_st* cudaEvent_t;
typedef CUmemPool_st* cudaMemPool_t;
#define cudaStreamPerThread ((cudaStream_t)0x2)
#define cudaEventDisableTiming 0x02
struct cudaDeviceProp {
  char name[256];
  int multiProcessorCount;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  int major, minor;
};

namespace nnk_emu {

// ---- the running thread, block and launch (set by the scheduler) ----
struct ThreadState;
struct LaunchState {
  dim3 grid, block;
  size_t smem = 0;
};
struct Current {
  uint3 thread_idx, block_idx;
  const LaunchState* launch = nullptr;
  ThreadState* thread = nullptr;
  unsigned char* dyn_smem = nullptr;
};
extern thread_local Current cur;

// Barriers: the calling fiber yields until its peers arrive (see emu.cpp).
void syncthreads(const char* file, int line);
void syncwarp(unsigned mask);
void grid_sync();
// Warp data exchange: lane l's `v` is published, then lane l reads its source's value.
uint64_t warp_exchange(unsigned mask, uint64_t v, int src_lane);
int lane_id();
[[noreturn]] void fail(const char* what);

// ---- launches ----
struct Cfg {
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  Cfg(dim3 g, dim3 b, size_t s = 0, cudaStream_t st = nullptr) : grid(g), block(b), smem(s), stream(st) {}
};
void run_grid(const char* name, const char* file, int line, const Cfg& c, const void* func,
              const std::function<void()>& body, bool cooperative);

// `call` is a generic lambda calling the kernel (rewrite.py writes it), so template kernels
// launched without template arguments deduce them as under nvcc.
template <class F, class... A>
void launch(const char* name, const char* file, int line, const Cfg& c, F call, A&&... a) {
  std::tuple<std::decay_t<A>...> args(std::forward<A>(a)...);  // copied at launch, as CUDA does
  run_grid(name, file, line, c, nullptr, [&] { std::apply(call, args); }, false);
}

template <class... P, size_t... I>
void launch_packed(const char* file, int line, const Cfg& c, void (*k)(P...), void** args, bool coop,
                   std::index_sequence<I...>) {
  std::tuple<std::decay_t<P>...> t(*static_cast<std::decay_t<P>*>(args[I])...);
  run_grid("cudaLaunchCooperativeKernel", file, line, c, reinterpret_cast<const void*>(k),
           [&] { std::apply(k, t); }, coop);
}

size_t max_dyn_smem(const void* func);
void set_max_dyn_smem(const void* func, int bytes);
cudaError_t set_error(cudaError_t e);

template <class T> inline T shfl(unsigned mask, T v, int src) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type over 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  u = warp_exchange(mask, u, src);
  T r;
  std::memcpy(&r, &u, sizeof(T));
  return r;
}

}  // namespace nnk_emu

#define threadIdx (::nnk_emu::cur.thread_idx)
#define blockIdx (::nnk_emu::cur.block_idx)
#define blockDim (::nnk_emu::cur.launch->block)
#define gridDim (::nnk_emu::cur.launch->grid)
#define warpSize 32
#define __syncthreads() ::nnk_emu::syncthreads(__FILE__, __LINE__)

inline void __syncwarp(unsigned mask = 0xffffffffu) { ::nnk_emu::syncwarp(mask); }
template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int lane = ::nnk_emu::lane_id();
  return ::nnk_emu::shfl(mask, v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = ::nnk_emu::lane_id();
  int src = lane ^ lane_mask;
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return ::nnk_emu::shfl(mask, v, src);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
  const int lane = ::nnk_emu::lane_id();
  int src = lane + int(d);
  if ((src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return ::nnk_emu::shfl(mask, v, src);
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
  const int lane = ::nnk_emu::lane_id();
  int src = lane - int(d);
  if (src < 0 || (src & ~(width - 1)) != (lane & ~(width - 1))) src = lane;
  return ::nnk_emu::shfl(mask, v, src);
}

template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float v) { int i; std::memcpy(&i, &v, 4); return i; }
inline unsigned __float_as_uint(float v) { unsigned i; std::memcpy(&i, &v, 4); return i; }
inline float __uint_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
inline long long __double_as_longlong(double v) { long long i; std::memcpy(&i, &v, 8); return i; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <class T> inline T atomicAdd(T* p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}
template <class T> inline T atomicMin(T* p, T v) {
  T old = *p;
  if (v < old) *p = v;
  return old;
}
template <class T> inline T atomicMax(T* p, T v) {
  T old = *p;
  if (v > old) *p = v;
  return old;
}
template <class T> inline T atomicCAS(T* p, T cmp, T v) {
  T old = *p;
  if (old == cmp) *p = v;
  return old;
}
template <class T> inline T atomicExch(T* p, T v) {
  T old = *p;
  *p = v;
  return old;
}

// ---- runtime API ----
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDevice(int* d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d);
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int d);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr a, void* v);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t s);
cudaError_t cudaFreeAsync(void* p, cudaStream_t s);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, cudaStream_t s = nullptr);
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              cudaMemcpyKind k, cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* dst, int v, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int v, size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaStreamSynchronize(cudaStream_t s);

template <class F> cudaError_t cudaFuncSetAttribute(F* func, cudaFuncAttribute a, int v) {
  if (a == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    int optin = 0;
    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
    if (v < 0 || v > optin) return ::nnk_emu::set_error(cudaErrorInvalidValue);
    ::nnk_emu::set_max_dyn_smem(reinterpret_cast<const void*>(func), v);
  }
  return cudaSuccess;
}
cudaError_t nnk_emu_occupancy(int* n, const void* func, int threads, size_t smem);
template <class F>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, F* func, int threads, size_t smem) {
  return nnk_emu_occupancy(n, reinterpret_cast<const void*>(func), threads, smem);
}
template <class... P>
cudaError_t cudaLaunchCooperativeKernel(void (*func)(P...), dim3 grid, dim3 block, void** args, size_t smem = 0,
                                        cudaStream_t s = nullptr, const char* file = __builtin_FILE(),
                                        int line = __builtin_LINE()) {
  ::nnk_emu::launch_packed(file, line, ::nnk_emu::Cfg(grid, block, smem, s), func, args, true,
                           std::index_sequence_for<P...>{});
  return cudaSuccess;
}
template <class... P>
cudaError_t cudaLaunchCooperativeKernel(const void*, dim3, dim3, void**, size_t = 0, cudaStream_t = nullptr) {
  static_assert(sizeof...(P) < 0, "the emulator needs the typed cudaLaunchCooperativeKernel(kernel, ...)");
  return cudaErrorInvalidValue;
}
