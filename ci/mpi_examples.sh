#!/usr/bin/env bash
# The MPI tier: every example under mpirun with 1, 2, 3 and 4 processes.
# Each example asserts its own results and exits non-zero on any wrong
# element, so a failure here fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/env.sh
# A hang must become an error quickly, not a stuck CI run.
export RINGFUSE_TIMEOUT_MS="${RINGFUSE_TIMEOUT_MS:-60000}"
build_release
for np in 1 2 3 4; do
    echo "== mpirun -np $np examples/collectives"
    timeout 600 "${MPIRUN[@]}" -x RINGFUSE_TIMEOUT_MS -np "$np" target/release/examples/collectives
    echo "== mpirun -np $np examples/allreduce (4M elements)"
    timeout 600 "${MPIRUN[@]}" -x RINGFUSE_TIMEOUT_MS -np "$np" target/release/examples/allreduce $((4 << 20))
done
for np in 2 4; do
    # Short training (5 epochs): asserts its codec targets and identical
    # weights on every rank; no timing.
    echo "== mpirun -np $np examples/train_mlp --epochs 5"
    timeout 600 "${MPIRUN[@]}" -x RINGFUSE_TIMEOUT_MS -np "$np" target/release/examples/train_mlp --epochs 5
done
for np in 1 3; do
    # The candle integration in a real candle loop: asserts identical
    # weights on every rank and that the model learned.
    echo "== mpirun -np $np examples/candle_mlp --epochs 5"
    timeout 600 "${MPIRUN[@]}" -x RINGFUSE_TIMEOUT_MS -np "$np" target/release/examples/candle_mlp --epochs 5
done
echo "== mpirun -np 2 examples/overlap (results checked; its timings are not asserted)"
timeout 600 "${MPIRUN[@]}" -x RINGFUSE_TIMEOUT_MS -np 2 target/release/examples/overlap --layers 4 --layer-mib 1 --steps 3
echo "== mpirun -np 4 examples/train_wide, narrow and short (every method's ranks end identical; the docs' table is the full run)"
timeout 600 "${MPIRUN[@]}" -x RINGFUSE_TIMEOUT_MS -np 4 target/release/examples/train_wide --epochs 1 --width 64
echo "== mpirun -np 4 examples/slow_links, small (every method's ranks checked identical; timings not asserted)"
timeout 600 "${MPIRUN[@]}" -x RINGFUSE_TIMEOUT_MS -np 4 target/release/examples/slow_links --width 256 --blocks 1 --steps 1
timeout 600 "${MPIRUN[@]}" -x RINGFUSE_TIMEOUT_MS -np 4 target/release/examples/slow_links --width 256 --blocks 1 --steps 1 --copied --only powersgd,top-k
# A setting that is not accepted fails start-up on every rank, naming the
# variable, the value and what is accepted: never a silent default.
for bad in RINGFUSE_TIMEOUT_MS=abc RINGFUSE_ALGO=xyz RINGFUSE_CHECKSUM=yes RINGFUSE_TUNING=prob RINGFUSE_FAULT=drop@x:1; do
    name=${bad%%=*}
    rc=0
    # Each rank's output to its own file: two ranks' lines on one stream
    # interleave mid-line (each write of a message is separate), which
    # once broke the match below though both ranks had named the value.
    outdir=$(mktemp -d)
    out=$(env "$bad" timeout 120 "${MPIRUN[@]}" -x "$name" --output-filename "$outdir" -np 2 target/release/examples/allreduce 1000 2>&1) || rc=$?
    out+=$'\n'$(cat "$outdir"/*/rank.*/stderr 2>/dev/null || true)
    n=$(cat "$outdir"/*/rank.*/stderr 2>/dev/null | grep -c "^rank [01]: $name=\"${bad#*=}\" is not accepted; expected" || true)
    rm -rf "$outdir"
    # mpirun may end one rank before it prints, once the other has failed.
    if [[ $rc -eq 0 || $n -lt 1 ]]; then
        echo "$bad: exit $rc, no rank named it:"; echo "$out"; exit 1
    fi
done
echo "bad RINGFUSE_* values: start-up fails, naming rank, variable, value and what is accepted"
echo "mpi examples: all runs passed"
