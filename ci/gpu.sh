#!/usr/bin/env bash
# The checks that need a CUDA GPU (CUDA 13 driver), and the figures
# docs/results/gpu-h100.md records:
# - every kernel on the device against its host build, bit for bit (the
#   unit tests hold the host build to the host path);
# - in-process ranks on one GPU (cuda::DeviceRanks) against the CPU
#   backend, bit for bit: 4 ranks f32 over FP16 at 1, 1000, 10007 and
#   1 << 24 elements, and every pair and algorithm on 2, 3 and 5 ranks;
# - the host-staged carrier (Communicator::allreduce_device) over threads,
#   bit for bit against the CPU backend;
# - ringfuse-gpu-perf: each fused kernel against a device-to-device copy
#   and the unfused launches, and the in-process allreduce's bus bandwidth,
#   each size checked against the CPU backend again;
# - where mpirun exists: ringfuse-perf --device cuda on 4 MPI processes.
#
#   ci/gpu.sh [--json FILE]          build, then run (needs the crates)
#   ci/gpu.sh --build                build only, into target/gpu/ (carry that
#                                    folder to an offline GPU machine)
#   ci/gpu.sh --run [--json FILE]    run what --build left in target/gpu/
#
# Built without MPI (GPU machines need not have it), and with the kernels'
# PTX for sm_90 compiled here into target/gpu/cache when NVRTC is at hand
# (.venv, from ci/setup.sh), so the GPU machine loads it from there.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=all json=
while (($#)); do
    case $1 in
        --build | --run) mode=$1 ;;
        --json) json=$2; shift ;;
        *) echo "ci/gpu.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
export RINGFUSE_CACHE_DIR=$PWD/target/gpu/cache
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib .venv/lib/python3*/site-packages/nvidia/cu13/lib; do
    [[ -e $d/libnvrtc.so.13 ]] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

if [[ $mode != --run ]]; then
    flags=(--release --no-default-features --features cuda)
    out=$(cargo test "${flags[@]}" --test cuda --no-run 2>&1) || { echo "$out"; exit 1; }
    bin=$(echo "$out" | sed -n 's/.*Executable tests\/cuda.rs (\(.*\))/\1/p' | tail -1)
    cargo build -q "${flags[@]}" --bin ringfuse-gpu-perf
    # ringfuse-perf with MPI, for `--device cuda` under mpirun where the GPU
    # machine has Open MPI (libmpi.so.40).
    cargo build -q --release --features cuda --bin ringfuse-perf
    rm -rf target/gpu/cache && mkdir -p target/gpu
    # Without debug info: what travels to a GPU machine is size-limited.
    objcopy --strip-debug "$bin" target/gpu/cuda-tests
    objcopy --strip-debug target/release/ringfuse-gpu-perf target/gpu/ringfuse-gpu-perf
    objcopy --strip-debug target/release/ringfuse-perf target/gpu/ringfuse-perf
    git rev-parse --short HEAD >target/gpu/commit 2>/dev/null || echo unknown >target/gpu/commit
    git diff --quiet HEAD 2>/dev/null || sed -i 's/$/+changes/' target/gpu/commit
    target/gpu/ringfuse-gpu-perf --prepare-ptx sm_90 || echo "ci/gpu.sh: no PTX cached; the GPU machine compiles it with its NVRTC"
    echo "ci/gpu.sh: built target/gpu/ (commit $(cat target/gpu/commit))"
    [[ $mode == --build ]] && exit 0
fi

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "ci/gpu.sh: nvidia-smi not found"
# --include-ignored: here the GPU tests must run, and fail if they cannot.
# The NVRTC compile tests run in CI (ci/test.sh); skipped here for time.
target/gpu/cuda-tests --include-ignored --test-threads 1 --skip nvrtc --skip compiles_with_nvrtc 2>&1 | tee target/gpu/log.txt
grep -q "^test result: ok. 5 passed" target/gpu/log.txt || { echo "ci/gpu.sh: FAILED (tests)"; exit 1; }
target/gpu/ringfuse-gpu-perf --commit "$(cat target/gpu/commit)" --date "$(date -u +%F)" ${json:+--json "$json"} \
    | tee target/gpu/perf.txt || { echo "ci/gpu.sh: FAILED (ringfuse-gpu-perf)"; exit 1; }
# The host-staged carrier over MPI: 4 processes on the GPU(s), each
# size checked against the f64 reference and the codec bound, beside
# MPI_Allreduce on host memory.
if command -v mpirun >/dev/null; then
    mpirun --version | head -1
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe --bind-to none -np 4 \
        target/gpu/ringfuse-perf --device cuda -b 4K -e 256M -f 16 -w 2 -n 8 -a ring \
        ${json:+--json "${json%.json}-mpi.json"} | tee target/gpu/perf-mpi.txt ||
        { echo "ci/gpu.sh: FAILED (ringfuse-perf --device cuda under mpirun)"; exit 1; }
else
    echo "ci/gpu.sh: no mpirun here: the host-staged carrier over MPI was not run (over threads it was, above)"
fi
echo "ci/gpu.sh: all GPU checks passed on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
