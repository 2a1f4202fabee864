#!/usr/bin/env bash
# Compile every baseline kernel source for aarch64 (needs Debian's g++-aarch64-linux-gnu):
# catches x86-only code outside the per-ISA files. Bindings are not compiled (no aarch64 Python headers).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cxx=${CXX_AARCH64:-aarch64-linux-gnu-g++}
out=$(mktemp -d)
fail=0
while IFS= read -r f; do
  case "$f" in *_avx512.cpp|*_avx2.cpp|*/ukr_avx512_*|*/ukr_avx2_*) continue;; esac
  if ! "$cxx" -std=c++17 -O1 -DNNK_ARM64=1 -I"$root/csrc" -Wall -c "$f" -o "$out/$(basename "$f").o"; then
    echo "FAILED: $f"; fail=1
  fi
done < <(find "$root/csrc/core" "$root/csrc/cpu" -name '*.cpp')
rm -rf "$out"
[ $fail = 0 ] && echo "aarch64: all baseline kernel sources compile"
exit $fail
