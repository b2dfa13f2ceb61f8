#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine with only the Rust toolchain
# lacks: Open MPI (runtime and headers, for rsmpi), libclang (rsmpi's
# bindgen) and iproute2 (ip/tc for ci/netsim.sh). Idempotent: does nothing when everything is already there.
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

if ((${#need[@]})); then
    echo "ci/setup.sh: installing ${need[*]}"
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "ci/setup.sh: $(mpirun --version 2>&1 | head -1)"
