#!/usr/bin/env bash
# The fault matrix under mpirun: every fault against every collective,
# 4 processes, rank 1 spoiling its second message (or exiting there). Each cell exits
# non-zero if a rule in tests/common/faults.rs is broken. Prints the table.
# Usage: ci/faults.sh [--short]   (--short: 5 faults x 6 collectives)
# It runs over the default carrier (shared memory, one host);
# RINGFUSE_TRANSPORT=mpi in the environment runs it over MPI instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/env.sh
cargo build --release --example faults -q
export RINGFUSE_TIMEOUT_MS="${RINGFUSE_TIMEOUT_MS:-1000}" RINGFUSE_FLIGHT_ON_ERROR=0
carrier=()
[[ -n ${RINGFUSE_TRANSPORT:-} ]] && carrier=(-x RINGFUSE_TRANSPORT)
faults=(delay=250ms delay=2500ms drop duplicate truncate corrupt corrupt-header kill exit)
[[ "${1:-}" == "--short" ]] && faults=(delay=250ms drop corrupt kill exit)
colls=(allreduce/ring allreduce/doubling reduce_scatter allgather broadcast barrier)
err=$(mktemp)
FAULTS_DIR=$(mktemp -d)
export FAULTS_DIR
trap 'rm -rf "$err" "$FAULTS_DIR"' EXIT
echo "| fault | collective | outcome per rank (time to return) |"
echo "|---|---|---|"
for f in "${faults[@]}"; do
    # `exit` ends rank 1's process mid-call. mpirun would then kill the
    # whole job at once; told not to, it lets the survivors find out alone.
    extra=("${carrier[@]}")
    [[ $f == exit ]] && extra+=(--mca orte_abort_on_non_zero_status 0)
    for c in "${colls[@]}"; do
        rc=0
        rm -f "$FAULTS_DIR"/*
        out=$(RINGFUSE_FAULT="$f@1:1" timeout 60 "${MPIRUN[@]}" "${extra[@]}" -x RINGFUSE_FAULT -x RINGFUSE_TIMEOUT_MS \
            -x RINGFUSE_FLIGHT_ON_ERROR -x FAULTS_DIR -np 4 target/release/examples/faults "$c" 2>"$err") || rc=$?
        # With `exit`, mpirun's own status sometimes reports the departed
        # rank: there rank 0's verdict, printed as the row, is what counts.
        if ((rc == 124)) || { ((rc != 0)) && [[ $f != exit ]]; } || grep -q BROKEN <<<"$out" || ! grep -q '^|' <<<"$out"; then
            echo "$out"; cat "$err"
            echo "fault matrix: $f x $c broke a rule, hung or printed no row (status $rc)"
            exit 1
        fi
        grep '^|' <<<"$out"
    done
done
echo "fault matrix under mpirun: every cell within the rules"

# Misuse rather than faults: the last of 3 ranks calls something else.
echo "| mismatch | outcome per rank |"
echo "|---|---|"
cargo build --release --example mismatch -q
for kind in count dtype slice collective; do
    extra=("${carrier[@]}")
    # Open MPI 4.1.4's single-copy path crashes on a truncated receive.
    [[ $kind == slice ]] && extra+=(--mca btl_vader_single_copy_mechanism none)
    rc=0
    out=$(timeout 60 "${MPIRUN[@]}" "${extra[@]}" -x RINGFUSE_FLIGHT_ON_ERROR -np 3 \
        target/release/examples/mismatch "$kind" 2>"$err") || rc=$?
    # A slice size is not part of a call's fingerprint: that mismatch shows
    # as MPI's truncation error or as our length check naming the sizes.
    if ((rc != 0)) || ! grep -qE "but rank|TRUNCATE|expected [0-9]+ bytes .* got [0-9]+ bytes" <<<"$out"; then
        echo "$out"; cat "$err"
        echo "mismatch $kind: a rank did not fail in time, or none named both calls (status $rc)"
        exit 1
    fi
    echo "| $kind | $(sort <<<"$out" | sed 's/^rank [0-9]*: //' | cut -c1-160 | paste -sd'|' | sed 's/|/<br>/g') |"
done
echo "mismatches under mpirun: every rank failed in time"
# Start-up has a deadline too: the last rank starts 3 s late, the others'
# mpi.world() must fail at their 1 s deadline naming start-up.
rc=0
started=$(date +%s%N)
out=$(RINGFUSE_TIMEOUT_MS=1000 timeout 60 "${MPIRUN[@]}" "${carrier[@]}" -x RINGFUSE_TIMEOUT_MS -np 3 \
    target/release/examples/mismatch late-start 2>"$err") || rc=$?
took_ms=$((($(date +%s%N) - started) / 1000000))
if ((rc == 0)) || ! grep -q "start-up: not every one of 3 ranks started making a communicator within 1s" <<<"$out" || ((took_ms > 20000)); then
    echo "$out"; cat "$err"
    echo "late start: no start-up error within the deadline (status $rc, ${took_ms} ms)"
    exit 1
fi
echo "late start under mpirun: $(grep -c 'start-up' <<<"$out") ranks failed start-up at the deadline, $(head -1 <<<"$out" | sed 's/.*(after/(after/')"
