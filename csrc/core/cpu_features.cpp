#include "core/cpu_features.h"

#include <atomic>

namespace nnk {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    case Isa::neon: return "neon";
    default: return "generic";
  }
}

static std::vector<Isa> detect() {
  std::vector<Isa> v;
#if defined(NNK_X86)
  __builtin_cpu_init();
  // __builtin_cpu_supports consults cpuid and XCR0, so a feature the OS has not
  // enabled (ZMM state not saved) is reported as absent.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    v.push_back(Isa::avx512);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    v.push_back(Isa::avx2);
#endif
  v.push_back(Isa::generic);
  return v;
}

const std::vector<Isa>& supported_isas() {
  static const std::vector<Isa> isas = detect();
  return isas;
}

static std::atomic<int> g_isa{-1};

Isa current_isa() {
  int v = g_isa.load(std::memory_order_relaxed);
  if (v < 0) return supported_isas()[0];
  return static_cast<Isa>(v);
}

bool set_isa(const std::string& name) {
  for (Isa isa : supported_isas()) {
    if (name == isa_name(isa)) {
      g_isa.store(static_cast<int>(isa), std::memory_order_relaxed);
      return true;
    }
  }
  return false;
}

static std::atomic<bool> g_ftz{false};

bool flush_denormal_supported() {
#if defined(NNK_X86) || defined(NNK_ARM64)
  return true;
#else
  return false;
#endif
}
void set_flush_denormal(bool on) { g_ftz.store(on && flush_denormal_supported()); }
bool flush_denormal_enabled() { return g_ftz.load(std::memory_order_relaxed); }

}  // namespace nnk
