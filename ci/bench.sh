#!/usr/bin/env bash
# The main job: set up, build in release, and allreduce a 64 MiB f32
# gradient buffer over 2 MPI ranks with every wire codec, printing what it
# did (time, bandwidth, wire bytes, error, bitwise identity).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
source ci/env.sh
cargo build --release --examples -q
"${MPIRUN[@]}" -np "${NP:-2}" target/release/examples/allreduce "$@"
