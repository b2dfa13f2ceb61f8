#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine with only the Rust toolchain
# lacks: Open MPI (runtime and headers, for rsmpi), libclang (rsmpi's
# bindgen), iproute2 (ip/tc for ci/netsim.sh), g++, NVRTC 13 (the CUDA
# kernels' checks) and NCCL (its loading check; no GPU or CUDA toolkit needed). Idempotent: does
# nothing when everything is already there.
set -euo pipefail

need=()
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
command -v mpicc >/dev/null 2>&1 || need+=(libopenmpi-dev)
# libclang.so itself: libclang-cpp*.so (which some images carry) is not
# what bindgen loads.
ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# ip and tc, for ci/netsim.sh's simulated hosts.
command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1 || need+=(iproute2)
# g++ builds the CUDA kernels' host twin (feature cuda); python3 with venv
# holds NVIDIA's NVRTC wheel for the kernel compile check.
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)

if ((${#need[@]})); then
    echo "ci/setup.sh: installing ${need[*]}"
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "ci/setup.sh: $(mpirun --version 2>&1 | head -1)"

# CUDA 13's NVRTC from NVIDIA's wheel, in .venv: enough to compile the
# kernels exactly as the library does at run time (they include no CUDA
# header, so the runtime wheel with the headers is not needed).
NVRTC_WHEEL=nvidia-cuda-nvrtc==13.0.88
if [[ ! -f .venv/.nvrtc-13.0.88 ]]; then
    echo "ci/setup.sh: installing $NVRTC_WHEEL into .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "$NVRTC_WHEEL"
    touch .venv/.nvrtc-13.0.88
fi
# NCCL from NVIDIA's CUDA 13 wheel (206 MB), to check that the library
# loads it at run time (no GPU needed). cudarc looks for libnccl.so, which
# the wheel lacks beside its libnccl.so.2: the link supplies it.
NCCL_WHEEL=nvidia-nccl-cu13==2.32.6
if [[ ! -f .venv/.nccl-2.32.6 ]]; then
    echo "ci/setup.sh: installing $NCCL_WHEEL into .venv"
    [[ -d .venv ]] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "$NCCL_WHEEL"
    ln -sf libnccl.so.2 "$(echo .venv/lib/python3*/site-packages/nvidia/nccl/lib)/libnccl.so"
    touch .venv/.nccl-2.32.6
fi
