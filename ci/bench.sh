#!/usr/bin/env bash
# The main job: set up, build in release, and run a ringfuse-perf sweep
# (8 B to 128 MiB, f32 sum, codecs native/fp16/bf16, MPI_Allreduce side by
# side) under `mpirun -np 2`. Prints the table; writes the plot and JSON to
# target/bench/. Extra arguments go to ringfuse-perf (e.g. -e 16M).
# It runs over the default carrier, shared memory (both ranks are on this
# host); RINGFUSE_TRANSPORT=mpi ci/bench.sh runs it over MPI point-to-point.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
source ci/env.sh
cargo build --release --bin ringfuse-perf -q
mkdir -p target/bench
carrier=()
[[ -n ${RINGFUSE_TRANSPORT:-} ]] && carrier=(-x RINGFUSE_TRANSPORT)
"${MPIRUN[@]}" "${carrier[@]}" -np "${NP:-2}" target/release/ringfuse-perf -b 8 -e 256M -f 4 -n 10 -w 3 \
    --plot target/bench/busbw.svg --json target/bench/allreduce.json "$@"
echo "plot: target/bench/busbw.svg  rows: target/bench/allreduce.json"
