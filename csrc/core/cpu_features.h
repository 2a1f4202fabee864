// CPU feature detection (once, at first use) and the kernel-set (ISA) choice.
//
// x86-64: avx512 (F+DQ+BW+VL, OS-enabled) > avx2 (AVX2+FMA) > generic.
// aarch64: generic (NEON kernels not written yet; the generic code is auto-vectorised).
#pragma once
#include <string>
#include <vector>

namespace nnk {

enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2, neon = 3 };

const char* isa_name(Isa isa);
// Every kernel set this CPU can run, best first.
const std::vector<Isa>& supported_isas();
// The kernel set in use (default: supported_isas()[0]).
Isa current_isa();
// Select a kernel set by name; false if the name is not in supported_isas().
bool set_isa(const std::string& name);

// Flush-to-zero / denormals-are-zero inside the CPU kernels (applied per parallel region).
bool flush_denormal_supported();
void set_flush_denormal(bool on);
bool flush_denormal_enabled();

// Size of the last-level cache in bytes: the largest data cache sysfs lists for cpu0 (Linux),
// else sysconf's L3 size, else 32 MiB. Detected once.
long long last_level_cache_bytes();
// Tests: pretend the cache has `bytes` (<= 0: back to the detected size).
void set_last_level_cache_bytes(long long bytes);
// Whether a memory-bound call that touches `bytes` in all (inputs and output) writes its
// output by non-temporal stores (layer_norm): when it outgrows the last-level cache, the
// output would not stay there anyway, and streaming it skips reading each line before
// writing it. (Measured no gain for softmax_backward or the activation backwards.)
inline bool stream_output(double bytes) { return bytes > double(last_level_cache_bytes()); }

}  // namespace nnk
