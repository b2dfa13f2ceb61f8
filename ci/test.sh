#!/usr/bin/env bash
# The whole test suite, as CI runs it: setup, format and lint checks, unit
# and in-process tests, rustdoc, then the examples under mpirun.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -q -- -D warnings
echo "== cargo doc (missing docs are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -q
echo "== unit, in-process and doc tests"
cargo test -q 2>&1 | tee target/test.log | grep -E "^test result|FAILED|panicked|^error" || true
# tee hides cargo's exit code: judge by the log.
if grep -qE "FAILED|^error" target/test.log || ! grep -q "^test result: ok" target/test.log; then
    echo "cargo test failed"; exit 1
fi
echo "== MPI tier"
bash ci/mpi_examples.sh
echo "ci/test.sh: all passed"
