#!/usr/bin/env bash
# The fault matrix under mpirun: every fault against every collective,
# 4 processes, rank 1 spoiling its second message (or exiting or being
# killed with SIGKILL there), its
# last message, and the broadcast root's second. Each cell exits non-zero
# if a rule in tests/common/faults.rs is broken. Prints the table.
# Usage: ci/faults.sh [--short]   (--short: 5 faults x 6 collectives, mid-call only)
# It runs over the default carrier (shared memory, one host);
# RINGFUSE_TRANSPORT=mpi in the environment runs it over MPI instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/env.sh
build_release
# Every wait's deadline; the delays are a quarter of it (harmless) and two
# and a half times it.
export RINGFUSE_TIMEOUT_MS="${RINGFUSE_TIMEOUT_MS:-500}" RINGFUSE_FLIGHT_ON_ERROR=0
t=$RINGFUSE_TIMEOUT_MS
carrier=()
[[ -n ${RINGFUSE_TRANSPORT:-} ]] && carrier=(-x RINGFUSE_TRANSPORT)
faults=(delay=$((t / 4))ms delay=$((t * 5 / 2))ms drop duplicate truncate corrupt corrupt-header kill exit sigkill)
spoils=(mid last)
[[ "${1:-}" == "--short" ]] && faults=(delay=$((t / 4))ms drop corrupt kill exit sigkill) spoils=(mid)
colls=(allreduce/ring allreduce/doubling reduce_scatter allgather broadcast barrier)
err=$(mktemp)
FAULTS_DIR=$(mktemp -d)
export FAULTS_DIR
trap 'rm -rf "$err" "$FAULTS_DIR"' EXIT
# One cell: fault $1, collective $2, spoiled message $3. Mid-call cells
# take the fault from RINGFUSE_FAULT, as a user would; the others inject
# it after a fault-free run that counts the messages.
cell() {
    local f=$1 c=$2 w=$3 rc=0 out
    # `exit` ends a process mid-call. mpirun would then kill the whole job
    # at once; told not to, it lets the survivors find out alone.
    local extra=("${carrier[@]}") env=()
    [[ $f == exit ]] && extra+=(--mca orte_abort_on_non_zero_status 0)
    # A rank killed by a signal ends the job unless mpirun may recover.
    [[ $f == sigkill ]] && extra+=(--enable-recovery)
    [[ $w == mid ]] && env=(RINGFUSE_FAULT="$f@1:1") extra+=(-x RINGFUSE_FAULT)
    rm -f "$FAULTS_DIR"/*
    out=$(env "${env[@]}" timeout 60 "${MPIRUN[@]}" "${extra[@]}" -x RINGFUSE_TIMEOUT_MS \
        -x RINGFUSE_FLIGHT_ON_ERROR -x FAULTS_DIR -np 4 target/release/examples/faults "$c" "$f" "$w" 2>"$err") || rc=$?
    # With `exit`, mpirun's own status sometimes reports the departed
    # rank: there rank 0's verdict, printed as the row, is what counts.
    if ((rc == 124)) || { ((rc != 0)) && [[ $f != exit && $f != sigkill ]]; } || grep -q BROKEN <<<"$out" || ! grep -q '^|' <<<"$out"; then
        echo "$out"; cat "$err"
        echo "fault matrix: $f x $c ($w) broke a rule, hung or printed no row (status $rc)"
        exit 1
    fi
    echo "$(grep '^|' <<<"$out") $w |"
}
echo "| fault | collective | outcome per rank (time to return) | message spoiled |"
echo "|---|---|---|---|"
for f in "${faults[@]}"; do
    for w in "${spoils[@]}"; do
        for c in "${colls[@]}"; do
            cell "$f" "$c" "$w"
        done
    done
    [[ "${1:-}" != "--short" ]] && cell "$f" broadcast root
done
echo "fault matrix under mpirun: every cell within the rules"

# Messages of an earlier call reaching a later one (tests/common/strays.rs):
# a duplicate is dropped by name, a late abort notice ends the next call.
rc=0
out=$(timeout 120 "${MPIRUN[@]}" "${carrier[@]}" -x RINGFUSE_FLIGHT_ON_ERROR -np 2 \
    target/release/examples/faults strays 2>"$err") || rc=$?
if ((rc != 0)) || grep -q BROKEN <<<"$out" || (($(grep -c '^rank' <<<"$out") != 4)); then
    echo "$out"; cat "$err"
    echo "strays under mpirun: a rule broke (status $rc)"
    exit 1
fi
sort <<<"$out"
echo "strays under mpirun: dropped by name, late notice seen at once"

# The receive path fuzzed (tests/common/forged.rs): any bytes in place of
# one message, 32 cases on fresh communicators, 3 processes.
rc=0
out=$(timeout 300 "${MPIRUN[@]}" "${carrier[@]}" -x RINGFUSE_FLIGHT_ON_ERROR -np 3 \
    target/release/examples/faults forged 32 2>"$err") || rc=$?
if ((rc != 0)) || grep -q BROKEN <<<"$out" || (($(grep -c '^case .*: ok$' <<<"$out") != 32)); then
    echo "$out"; cat "$err"
    echo "forged messages under mpirun: a rule broke or a case hung (status $rc)"
    exit 1
fi
echo "forged messages under mpirun: 32 cases, each an error in time, none Ok with a wrong result"

# Misuse rather than faults: the last of 3 ranks calls something else.
echo "| mismatch | outcome per rank |"
echo "|---|---|"
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
