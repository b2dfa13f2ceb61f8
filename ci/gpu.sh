#!/usr/bin/env bash
# The checks that need a CUDA GPU (CUDA 13 driver): every kernel on the
# device against its host build, bit for bit, which the unit tests hold
# to the host path. Also the NVRTC compile check, with the machine's own
# NVRTC when it has a toolkit.
#
#   ci/gpu.sh           build, then run (needs the crates: network or a warm cargo cache)
#   ci/gpu.sh --build   build only, into target/gpu/ (carry that folder to an offline GPU machine)
#   ci/gpu.sh --run     run what --build left in target/gpu/
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}

if [[ $mode != --run ]]; then
    out=$(cargo test --features cuda --release --test cuda --no-run 2>&1) || { echo "$out"; exit 1; }
    bin=$(echo "$out" | sed -n 's/.*Executable tests\/cuda.rs (\(.*\))/\1/p' | tail -1)
    mkdir -p target/gpu
    cp "$bin" target/gpu/cuda-tests
    echo "ci/gpu.sh: built target/gpu/cuda-tests"
    [[ $mode == --build ]] && exit 0
fi

# NVRTC: the toolkit's, else the wheel ci/setup.sh installs.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib .venv/lib/python3*/site-packages/nvidia/cu13/lib; do
    [[ -e $d/libnvrtc.so.13 ]] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "ci/gpu.sh: nvidia-smi not found"
# --include-ignored: here the GPU tests must run, and fail if they cannot.
target/gpu/cuda-tests --include-ignored --test-threads 1 2>&1 | tee target/gpu/log.txt
grep -q "^test result: ok. 4 passed" target/gpu/log.txt || { echo "ci/gpu.sh: FAILED"; exit 1; }
echo "ci/gpu.sh: all GPU checks passed on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
