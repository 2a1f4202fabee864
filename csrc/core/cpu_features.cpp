#include "core/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <string>
#if defined(__linux__)
#include <unistd.h>
#endif

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

namespace {
std::atomic<long long> g_llc_override{0};
}  // namespace

void set_last_level_cache_bytes(long long bytes) { g_llc_override.store(bytes > 0 ? bytes : 0); }

long long last_level_cache_bytes() {
  const long long o = g_llc_override.load(std::memory_order_relaxed);
  if (o > 0) return o;
  static const long long bytes = [] {
    long long best = 0;
    int best_level = 0;
#if defined(__linux__)
    // sysfs first: it describes the cache this CPU sees (sysconf may report a whole host's
    // L3 inside a VM, 384 MiB on a 2-vCPU slice of a 32 MiB complex).
    for (int i = 0; i < 8; ++i) {
      const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
      std::ifstream lf(dir + "level"), sf(dir + "size"), tf(dir + "type");
      int level = 0;
      std::string size, type;
      if (!(lf >> level) || !(sf >> size)) continue;
      tf >> type;
      if (type == "Instruction" || size.empty()) continue;
      long long v = std::atoll(size.c_str());
      const char unit = size.back();
      if (unit == 'K') v <<= 10;
      else if (unit == 'M') v <<= 20;
      if (v > 0 && level > best_level) {
        best = v;
        best_level = level;
      }
    }
#if defined(_SC_LEVEL3_CACHE_SIZE)
    if (best <= 0) best = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
#endif
    return best > 0 ? best : 32ll << 20;
  }();
  return bytes;
}

}  // namespace nnk
