#!/usr/bin/env bash
# The flight recorder on a real hang under mpirun: rank 2 of 4 is 4 s late
# to a collective; 1.5 s in, SIGUSR1 to mpirun (which passes it on) makes
# every rank dump its record into a directory, and ringfuse-trace must name
# rank 2 from those dumps.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/env.sh
cargo build --release --example straggler --bin ringfuse-trace -q
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# No `timeout` wrapper: it would take the SIGUSR1 itself and die of it.
RINGFUSE_FLIGHT_DIR="$dir" "${MPIRUN[@]}" -x RINGFUSE_FLIGHT_DIR -np 4 \
    target/release/examples/straggler 2 5 4 &
job=$!
(sleep 60 && kill "$job" 2>/dev/null) &
watchdog=$!
sleep 1.5
kill -USR1 "$job"
wait "$job"
kill "$watchdog" 2>/dev/null || true
report=$(target/release/ringfuse-trace "$dir")
echo "$report"
grep -q "^verdict: rank 2 fell behind" <<<"$report" || { echo "ringfuse-trace did not name rank 2"; exit 1; }
echo "ringfuse-trace named the straggler"
