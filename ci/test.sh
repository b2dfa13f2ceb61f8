#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup, format and lint checks, unit
# and in-process tests, rustdoc, then the examples under mpirun.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
# Each step names the minutes since the start: CI keeps this script under 30.
# CI builds from a clean clone: incremental compilation's caches would only
# be written, never read, so it is off.
export CARGO_INCREMENTAL=0
step() { echo "== [$((SECONDS / 60))m$((SECONDS % 60))s] $*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
# Features candle (the candle integration) and cuda (the CUDA kernels,
# which build and test without CUDA) on for every step, so their code is
# linted and tested too and the library builds once per profile.
FEATURES=candle,cuda
step "cargo clippy"
cargo clippy --all-targets --features $FEATURES -q -- -D warnings
# The tools, tests, examples and benches see the library with feature
# unstable (its internal layers public); users see it without, so lint
# and document that build on its own too.
cargo clippy -p ringfuse --lib --features $FEATURES -q -- -D warnings
step "cargo doc of the library as users get it (missing docs and broken links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc -p ringfuse --no-deps --features $FEATURES -q
# cargo test with these arguments, its log in $1; tee hides cargo's exit
# code, so the log is judged.
run_tests() {
    local log=$1
    shift
    cargo test "$@" 2>&1 | tee "$log" | grep -E "^test result|FAILED|panicked|^error" || true
    if grep -qE "FAILED|^error" "$log" || ! grep -q "^test result: ok" "$log"; then
        echo "cargo test $* failed"; exit 1
    fi
}
step "the library's package: cargo publish --dry-run builds what it holds; under 1 MiB"
packages=${CARGO_TARGET_DIR:-target}/package
rm -rf "$packages"
# Its log shows only on failure: it warns once per test file, which the
# package leaves out by design.
cargo publish --dry-run -p ringfuse -q >target/publish.log 2>&1 || { cat target/publish.log; echo "cargo publish --dry-run failed"; exit 1; }
# Where cargo leaves the packed crate differs between versions.
crate=$(find "$packages" -name 'ringfuse-*.crate' | head -1)
[ -n "$crate" ] || { echo "cargo publish --dry-run left no ringfuse-*.crate under $packages"; exit 1; }
bytes=$(stat -c %s "$crate")
[ "$bytes" -lt $((1 << 20)) ] || { echo "$crate is $bytes bytes, over 1 MiB"; exit 1; }
echo "package: $crate, $((bytes >> 10)) KiB"
step "unit, in-process and doc tests"
run_tests target/test.log --features $FEATURES -q
step "unit tests again in release (the optimiser reorders float code: a NaN payload rule held in debug and broke in release once), and the 2^20-element sweeps the debug run ignores"
run_tests target/test-release.log --release --features $FEATURES -q --lib
# Only the large sweeps: the small ones ran in the debug step.
run_tests target/test-release-large.log --release --features $FEATURES -q --test allreduce_local -- _large
grep -q "^test result: ok. 4 passed" target/test-release-large.log || { cat target/test-release-large.log; echo "expected the 4 large sweeps to run"; exit 1; }
step "CUDA kernels compile with NVRTC 13 for sm_80 and sm_90 (no GPU needed)"
source ci/env.sh
LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    cargo test --features $FEATURES -q --test cuda -- --include-ignored nvrtc 2>&1 |
    tee target/nvrtc.log | grep -E "^test result|FAILED|panicked" || true
grep -q "^test result: ok. 2 passed" target/nvrtc.log || { cat target/nvrtc.log; echo "kernel compile check failed"; exit 1; }
step "NCCL loads at run time (the wheel's, no GPU needed) and names its version"
LD_LIBRARY_PATH="$NCCL_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" RINGFUSE_EXPECT_NCCL=1 \
    cargo test --features $FEATURES -q --lib cuda::nccl -- --nocapture >target/nccl.log 2>&1 || true
grep -q "^test result: ok. 2 passed" target/nccl.log || { cat target/nccl.log; echo "NCCL loading check failed"; exit 1; }
grep -oE "NCCL [0-9]+\.[0-9]+\.[0-9]+ loaded" target/nccl.log || { cat target/nccl.log; echo "NCCL loaded but printed no version"; exit 1; }
echo "GPU tests (the kernels on a device, bit for bit): not run here, no GPU; ci/gpu.sh runs them"
step "MPI tier"
bash ci/mpi_examples.sh
step "same bits run after run with default options (mpirun -np 3 and 4, 5 runs each)"
bash ci/same_bits.sh
step "fault matrix under mpirun (shared-memory carrier): every fault x every collective, mid-call, last message and broadcast root; strays; forged messages (about 6 min)"
bash ci/faults.sh
step "a rank killed mid-training (SIGKILL): the survivors name it, shrink and finish (shared memory, MPI, netsim hosts; mpirun --enable-recovery)"
bash ci/lost_rank.sh
step "flight recorder: SIGUSR1 dumps of a hung job, merged by ringfuse-trace"
bash ci/trace.sh
step "ringfuse-perf --check sweep under mpirun (correctness only; no timing is asserted)"
source ci/env.sh
build_release
# One host: the default carrier is shared memory; RINGFUSE_TRANSPORT=mpi
# forces MPI point-to-point. Both get the whole sweep.
for ask in auto mpi; do
    carrier=${ask/auto/shm}
    for np in 2 3 4; do
        # --check is on by default: any element outside the bound, or ranks
        # that differ, make ringfuse-perf (and so this script) fail.
        RINGFUSE_TRANSPORT=$ask timeout 300 "${MPIRUN[@]}" -x RINGFUSE_TRANSPORT -np $np target/release/ringfuse-perf \
            -b 4 -e 4M -f 16 -c native,fp16,bf16,int8 -a ring,doubling,tree,hd,auto -n 2 -w 1 2>&1 | tee target/sweep.log >/dev/null
        # The header names the carrier that ran: a shared-memory set-up that
        # fell back to MPI would test nothing new.
        grep -q "carrier $carrier" target/sweep.log || { cat target/sweep.log; echo "expected carrier $carrier"; exit 1; }
        for coll in reduce_scatter allgather broadcast; do
            RINGFUSE_TRANSPORT=$ask timeout 300 "${MPIRUN[@]}" -x RINGFUSE_TRANSPORT -np $np \
                target/release/ringfuse-perf --collective $coll -b 4 -e 1M -f 32 -n 2 -w 1 >/dev/null
        done
        RINGFUSE_TRANSPORT=$ask timeout 300 "${MPIRUN[@]}" -x RINGFUSE_TRANSPORT -np $np \
            target/release/ringfuse-perf -d bf16 -o max -b 4 -e 1M -f 64 -n 2 -w 1 >/dev/null
    done
    echo "carrier $carrier: every row within the codec bound and identical on all ranks (ringfuse-perf exits non-zero otherwise)"
done
# Over shared memory the messages' stores are timed and chosen per rank
# (src/cpu/wire_stores.rs); force streaming so its kernels run whatever
# the timing says.
for np in 2 3; do
    RINGFUSE_WIRE_STORES=streaming timeout 300 "${MPIRUN[@]}" -x RINGFUSE_WIRE_STORES -np $np target/release/ringfuse-perf \
        -b 4 -e 4M -f 16 -c native,fp16,bf16 -a ring,doubling,tree,hd -n 2 -w 1 >/dev/null
done
echo "shm with streamed messages: every row within the codec bound and identical on all ranks"
step "fault matrix over the MPI carrier, short form (the default, shm, ran above)"
RINGFUSE_TRANSPORT=mpi bash ci/faults.sh --short | tail -1
step "scale model (--simulate, 8 and 512 ranks)"
rows=$(target/release/ringfuse-perf --simulate --ranks 8,512 --ranks-per-host 8 -b 1K -e 1M -f 1024 \
    -c native,fp16 -a ring,tree,hd,doubling,hier,auto | grep -c '^ ')
[ "$rows" = 48 ] || { echo "--simulate: $rows rows, expected 48"; exit 1; }
echo "scale model: 48 rows predicted"
# H100 nodes against NCCL's cost model: every row carries NCCL's time.
rows=$(target/release/ringfuse-perf --simulate --gpu-cluster h100-8x400g --baseline nccl-model --ranks 8,64 \
    -b 1K -e 1G -f 1024 -c native,fp16 | grep -cE '^ .* (ring|tree|ring/ll|tree/ll)$')
[ "$rows" = 12 ] || { echo "--simulate --gpu-cluster: $rows rows with NCCL's model, expected 12"; exit 1; }
echo "scale model: 12 rows of H100 nodes beside NCCL's model"
step "simulated cluster (3 namespaces, TCP)"
if ip netns add rfprobe$$ 2>/dev/null; then
    ip netns del rfprobe$$
    RINGFUSE_TIMEOUT_MS=60000 timeout 300 bash ci/netsim.sh --hosts 3 -- -b 1K -e 1M -f 32 -n 2 -w 1 -c native \
        -a ring,tree,hd,doubling --json target/netsim3.json >/dev/null
    echo "netsim: passed"
    # The scale model on that run's rows: it must predict every one (how
    # well they agree is measured in the README, not asserted here).
    target/release/ringfuse-perf --simulate --compare target/netsim3.json --link-burst 256K --cpus 2 >target/compare.log
    tail -1 target/compare.log
    grep -q "^# within 25%: [0-9]* of 12 rows" target/compare.log || { echo "--simulate --compare failed"; exit 1; }
else
    echo "netsim: SKIPPED (cannot create network namespaces here; needs root)"
fi
echo "ci/test.sh: all passed in $((SECONDS / 60))m$((SECONDS % 60))s"
