#!/usr/bin/env bash
# The numerical contract's "same bits run after run", with default options:
# the same job (examples/same_bits: f32 sums from 7 to 1M elements) runs
# several times at 3 and 4 ranks, and every run must print the same hashes.
# It also runs with each algorithm forced, and asserts that they differ
# from each other somewhere: otherwise equal hashes would prove nothing
# about which algorithm ran.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/env.sh
export RINGFUSE_TIMEOUT_MS="${RINGFUSE_TIMEOUT_MS:-60000}"
runs=${RUNS:-5}
build_release
# Forwards the RINGFUSE_* variables that are set (mpirun warns of unset ones).
run() {
    local fwd=()
    for v in $(compgen -e | grep '^RINGFUSE_' || true); do fwd+=(-x "$v"); done
    timeout 300 "${MPIRUN[@]}" "${fwd[@]}" -np "$1" target/release/examples/same_bits
}
for np in 3 4; do
    first=$(run $np)
    echo "np $np run 1: $first"
    for i in $(seq 2 "$runs"); do
        got=$(run $np)
        if [[ "$got" != "$first" ]]; then
            echo "np $np run $i gave other bits with default options:"
            echo "  $got"
            exit 1
        fi
    done
    echo "np $np: $runs runs, the same bits"
    # Each algorithm's own hashes must differ from another's somewhere, so
    # the check above can fail.
    ring=$(RINGFUSE_ALGO=ring run $np | sed 's/:[a-z]*:/:/g')
    doubling=$(RINGFUSE_ALGO=doubling run $np | sed 's/:[a-z]*:/:/g')
    if [[ "$ring" == "$doubling" ]]; then
        echo "np $np: the ring and recursive doubling gave the same bits at every size; these inputs cannot tell algorithms apart"
        exit 1
    fi
done
echo "same bits: every default run identical at 3 and 4 ranks"
