#!/usr/bin/env bash
# A rank killed with SIGKILL mid-training: the survivors must name it,
# shrink and finish every step, bitwise identical (train_mlp checks the
# weights and the step count itself and exits non-zero otherwise). Over
# shared memory (one host), over the MPI carrier on one host, and over
# MPI between simulated hosts (ci/netsim.sh). `--enable-recovery` keeps
# mpirun from ending the job when a rank dies.
# Usage: ci/lost_rank.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/env.sh
build_release
# A deadline far beyond the 2 s target: a survivor that only timed out
# would print no "is lost" line.
export RINGFUSE_TIMEOUT_MS=60000 RINGFUSE_FLIGHT_ON_ERROR=0
TRAIN=target/release/examples/train_mlp

# Checks one run's output ($1) and status ($2): $3 ranks, rank $4 killed.
check() {
    local out=$1 rc=$2 np=$3 kill=$4 survivors named finished
    survivors=$((np - 1))
    named=$(grep -c "rank $kill is lost (its .*exited).*(lost \[$kill\])" <<<"$out" || true)
    finished=$(grep -c "one of $survivors ranks at the end" <<<"$out" || true)
    if ((rc != 0 || named != survivors || finished != survivors)); then
        echo "$out"
        echo "lost rank: status $rc; $named of $survivors survivors named rank $kill and shrank, $finished finished"
        exit 1
    fi
    grep -E "failed after|at the end" <<<"$out" | sed -E 's/ \(rank [0-9]+: allreduce.*\); shrunk/; shrunk/' | sort
}

# carrier, ranks, rank killed, epoch it dies at
for run in "shm 4 2 5" "shm 3 0 2" "mpi 4 1 5"; do
    read -r carrier np kill epoch <<<"$run"
    echo "== $carrier carrier: mpirun --enable-recovery -np $np train_mlp --epochs 10 --kill-rank $kill --kill-at-epoch $epoch"
    rc=0
    out=$(RINGFUSE_TRANSPORT=$carrier timeout 300 "${MPIRUN[@]}" --enable-recovery -x RINGFUSE_TRANSPORT \
        -x RINGFUSE_TIMEOUT_MS -x RINGFUSE_FLIGHT_ON_ERROR -np "$np" \
        $TRAIN --epochs 10 --kill-rank "$kill" --kill-at-epoch "$epoch" 2>&1) || rc=$?
    check "$out" "$rc" "$np" "$kill"
done
echo "== 3 simulated hosts (ci/netsim.sh, MPI over TCP): train_mlp --epochs 4 --kill-rank 1 --kill-at-epoch 2"
rc=0
out=$(bash ci/netsim.sh --hosts 3 --deadline 240 --recover --program $TRAIN -- \
    --epochs 4 --kill-rank 1 --kill-at-epoch 2 2>&1) || rc=$?
check "$out" "$rc" 3 1
echo "lost rank: the survivors named it, shrank and finished every step, bitwise identical"
