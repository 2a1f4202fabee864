// The project's exception types. Bindings map them to Python exceptions:
// ValueError -> ValueError, TypeError -> TypeError, IndexError -> IndexError,
// anything else derived from std::exception -> RuntimeError (std::bad_alloc -> MemoryError).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace nnk {

struct ValueError : std::runtime_error { using std::runtime_error::runtime_error; };
struct TypeError : std::runtime_error { using std::runtime_error::runtime_error; };
struct IndexError : std::runtime_error { using std::runtime_error::runtime_error; };

// a * b for non-negative sizes; throws ValueError naming `what` on int64 overflow.
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
    throw ValueError(std::string(what) + ": size overflows int64");
  return r;
}

}  // namespace nnk
