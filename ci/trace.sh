#!/usr/bin/env bash
# The flight recorder on a real hang under mpirun: rank 2 of 4 is 4 s late
# to a collective; once every rank says its SIGUSR1 handler is installed
# (RINGFUSE_FLIGHT_SIGNAL=1 asks for it), SIGUSR1 to mpirun (which passes
# it on) makes every rank dump its record into a directory, and
# ringfuse-trace must name rank 2 from those dumps.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/env.sh
build_release
dir=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$dir" "$log"' EXIT
# No `timeout` wrapper: it would take the SIGUSR1 itself and die of it.
RINGFUSE_FLIGHT_SIGNAL=1 RINGFUSE_FLIGHT_DIR="$dir" "${MPIRUN[@]}" -x RINGFUSE_FLIGHT_SIGNAL -x RINGFUSE_FLIGHT_DIR \
    -np 4 target/release/examples/straggler 2 5 4 2>"$log" &
job=$!
(sleep 60 && kill "$job" 2>/dev/null) &
watchdog=$!
# A signal before a rank's handler exists would kill that rank: wait (at
# most 3 s: rank 2 is 4 s late) until all four say theirs is installed.
for _ in $(seq 60); do
    [[ $(grep -c "SIGUSR1 flight-record handler installed" "$log" || true) -ge 4 ]] && break
    sleep 0.05
done
[[ $(grep -c "SIGUSR1 flight-record handler installed" "$log" || true) -ge 4 ]] ||
    { cat "$log"; echo "not every rank installed its SIGUSR1 handler within 3 s"; exit 1; }
# The three on time are then in (or entering) call 5, waiting for rank 2.
sleep 0.3
kill -USR1 "$job"
wait "$job"
kill "$watchdog" 2>/dev/null || true
report=$(target/release/ringfuse-trace "$dir")
echo "$report"
grep -q "^verdict: rank 2 fell behind" <<<"$report" || { echo "ringfuse-trace did not name rank 2"; exit 1; }
echo "ringfuse-trace named the straggler"
