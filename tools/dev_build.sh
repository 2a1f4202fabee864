#!/usr/bin/env bash
# Incremental developer build without pip: configures build/dev (or $1) with ninja, builds
# nnkernels._C and links it into python/nnkernels, so `PYTHONPATH=python python ...` works.
# Extra CMake flags: NNK_CMAKE_ARGS="-DNNKERNELS_CUDA=OFF".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bdir=${1:-$root/build/dev}
if [ ! -f "$bdir/build.ninja" ]; then
  cmake -S "$root" -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DSKBUILD_PROJECT_NAME=nnkernels -DSKBUILD_PROJECT_VERSION=0.1.0 \
    -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v python)" \
    ${NNK_CMAKE_ARGS:-} >/dev/null
fi
cmake --build "$bdir"
so=$(ls "$bdir"/_C*.so)
ln -sf "$so" "$root/python/nnkernels/$(basename "$so")"
