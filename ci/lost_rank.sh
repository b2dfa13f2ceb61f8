#!/usr/bin/env bash
# A rank killed with SIGKILL mid-training: the survivors must name it,
# shrink and finish every step, bitwise identical (train_mlp checks the
# weights and the step count itself and exits non-zero otherwise). Over
# shared memory, the default carrier on one host; `--enable-recovery`
# keeps mpirun from ending the job when a rank dies.
# Usage: ci/lost_rank.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/env.sh
cargo build --release --example train_mlp -q
# A deadline far beyond the 2 s target: a survivor that only timed out
# would print no "is lost" line.
export RINGFUSE_TIMEOUT_MS=60000 RINGFUSE_FLIGHT_ON_ERROR=0
# ranks, rank killed, epoch it dies at
for run in "4 2 10" "3 0 3"; do
    read -r np kill epoch <<<"$run"
    echo "== mpirun --enable-recovery -np $np train_mlp --epochs 20 --kill-rank $kill --kill-at-epoch $epoch"
    rc=0
    out=$(timeout 300 "${MPIRUN[@]}" --enable-recovery -x RINGFUSE_TIMEOUT_MS -x RINGFUSE_FLIGHT_ON_ERROR -np "$np" \
        target/release/examples/train_mlp --epochs 20 --kill-rank "$kill" --kill-at-epoch "$epoch" 2>&1) || rc=$?
    survivors=$((np - 1))
    named=$(grep -c "rank $kill is lost (its process [0-9]* exited).*(lost \[$kill\])" <<<"$out" || true)
    finished=$(grep -c "one of $survivors ranks at the end" <<<"$out" || true)
    if ((rc != 0 || named != survivors || finished != survivors)); then
        echo "$out"
        echo "lost rank: status $rc; $named of $survivors survivors named rank $kill and shrank, $finished finished"
        exit 1
    fi
    grep -E "failed after|at the end" <<<"$out" | sort
done
echo "lost rank: the survivors named it, shrank and finished every step, bitwise identical"
