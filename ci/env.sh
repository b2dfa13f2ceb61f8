# Sourced by the ci/ scripts: how mpirun is called here.
# As root Open MPI refuses to start without these; beyond 2 ranks on a
# 2-core machine it needs --oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Shared memory only (no network probing) unless a caller sets otherwise.
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}"
MPIRUN=(mpirun --oversubscribe --bind-to none)
# NVRTC 13 from ci/setup.sh's wheel, for the CUDA kernel compile check.
NVRTC_LIB=$(echo "$(pwd)"/.venv/lib/python3*/site-packages/nvidia/cu13/lib)
export NVRTC_LIB
