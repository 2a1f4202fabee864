#!/usr/bin/env bash
# One-shot GPU check (issue 7): on a machine with an NVIDIA GPU, CUDA (nvcc) and torch with
# CUDA, build nnkernels with the CUDA part, run tests/test_cuda*.py and a short benchmark
# against torch, and print a summary table. At most GPU_CHECK_SECONDS (default 540 s: under the
# device tool's 600 s per command) in all: each stage's limit below, cut to what is left.
# Stages in order of worth: build, tests, benchmark, examples.
#   usage: bench/gpu_check.sh [output dir]      (default: $OUT, else bench/out/gpu)
# Needs only pip packages already installed (torch, numpy, pytest, and for the build either
# scikit-build-core + pybind11, or cmake + ninja + pybind11); nothing is downloaded.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${1:-${OUT:-$root/bench/out/gpu}}
mkdir -p "$out"
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$out/summary.txt"; }
deadline=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-540} ))
# limit CAP: CAP seconds, or what is left before the deadline if less (at least 1)
limit() { local left=$(( deadline - $(date +%s) )); [ "$left" -lt "$1" ] && echo $(( left > 1 ? left : 1 )) || echo "$1"; }
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

log "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%MZ)"
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1) \
  2>&1 | tee -a "$out/summary.txt"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" \
  2>&1 | tee -a "$out/summary.txt"

# ---- build (<= 300 s) ----
t0=$(date +%s)
build_rc=1
if python -c "import scikit_build_core, pybind11" 2>/dev/null; then
  log "building: pip install --no-build-isolation . (NNKERNELS_CUDA=ON)"
  NNKERNELS_CUDA=ON timeout "$(limit 300)" python -m pip install --no-build-isolation --no-deps -v . \
    > "$out/build.log" 2>&1
  build_rc=$?
  export PYTHONPATH=  # the installed package
fi
if [ $build_rc -ne 0 ]; then
  log "pip build unavailable or failed (rc=$build_rc); building with cmake: tools/dev_build.sh"
  NNK_CMAKE_ARGS="-DNNKERNELS_CUDA=ON" timeout "$(limit 300)" tools/dev_build.sh "$root/build/gpu" \
    >> "$out/build.log" 2>&1
  build_rc=$?
  export PYTHONPATH="$root/python"
fi
log "build rc=$build_rc in $(( $(date +%s) - t0 )) s (log: build.log)"
if [ $build_rc -ne 0 ]; then tail -40 "$out/build.log"; exit 1; fi
(cd /tmp && python -c "import nnkernels; print('nnkernels config:', nnkernels.config())") 2>&1 | tee -a "$out/summary.txt"

# ---- tests (<= 180 s) ----
t0=$(date +%s)
timeout "$(limit 180)" python -m pytest tests/test_cuda.py tests/test_cuda_embed.py tests/test_cuda_pool.py tests/test_cuda_nn.py tests/test_cuda_fuzz.py -q -p no:cacheprovider -ra --junitxml="$out/test_cuda.xml" \
  > "$out/test_cuda.log" 2>&1
test_rc=$?
log "tests/test_cuda*.py rc=$test_rc in $(( $(date +%s) - t0 )) s: $(tail -1 "$out/test_cuda.log")"
grep -E "^(FAILED|ERROR)" "$out/test_cuda.log" | head -40 | tee -a "$out/summary.txt"

# ---- benchmark (<= 150 s; every row is printed as it is measured) ----
t0=$(date +%s)
timeout "$(limit 150)" python bench/gpu_bench.py --json "$out/gpu_bench.json" > "$out/gpu_bench.log" 2>&1
bench_rc=$?
log "bench rc=$bench_rc in $(( $(date +%s) - t0 )) s"

# ---- examples trained on the GPU through nnkernels.nn (<= 30 s each; need scikit-learn) ----
t0=$(date +%s)
timeout "$(limit 30)" python examples/mlp.py --device cuda --epochs 40 --out "$out" > "$out/mlp_cuda.log" 2>&1
log "examples/mlp.py --device cuda rc=$? in $(( $(date +%s) - t0 )) s: $(tail -1 "$out/mlp_cuda.log")"
for ex in rnn transformer; do  # 10 epochs each: the host reaches 96.0% / 97.6% there
  t0=$(date +%s)
  timeout "$(limit 30)" python examples/$ex.py --device cuda --epochs 10 --out "$out" > "$out/${ex}_cuda.log" 2>&1
  log "examples/$ex.py --device cuda --epochs 10 rc=$? in $(( $(date +%s) - t0 )) s: $(tail -1 "$out/${ex}_cuda.log")"
done

echo
echo "==================== GPU check summary ===================="
cat "$out/summary.txt"
echo
sed -n '/^| case/,$p' "$out/gpu_bench.log"
[ $bench_rc -ne 0 ] && tail -20 "$out/gpu_bench.log"
echo "(full logs in $out)"
exit $(( test_rc != 0 || bench_rc != 0 ))
