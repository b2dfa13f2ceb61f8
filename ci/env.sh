# Sourced by the ci/ scripts: how mpirun is called here.
# As root Open MPI refuses to start without these; beyond 2 ranks on a
# 2-core machine it needs --oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Shared memory only (no network probing) unless a caller sets otherwise.
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}"
MPIRUN=(mpirun --oversubscribe --bind-to none)
# Every example and tool in release, with the features ci/test.sh tests
# (candle and cuda, which build without CUDA). Every ci/ script builds
# through this one command: cargo unifies the features of shared
# dependencies over what one command builds, so a script that built only
# its own example compiled the library (and some dependencies) again, a
# minute or more each on a 2-core machine. Once built, it is a no-op.
build_release() {
    cargo build --release --workspace --examples --bins \
        --features ringfuse/candle,ringfuse/cuda,ringfuse-tools/cuda -q
}
# NVRTC 13 from ci/setup.sh's wheel, for the CUDA kernel compile check.
NVRTC_LIB=$(echo "$(pwd)"/.venv/lib/python3*/site-packages/nvidia/cu13/lib)
export NVRTC_LIB
# NCCL from ci/setup.sh's wheel, for the check that it loads.
NCCL_LIB=$(echo "$(pwd)"/.venv/lib/python3*/site-packages/nvidia/nccl/lib)
export NCCL_LIB
