#!/bin/bash
# interleaved: state probe, then ringfuse-perf per wire-store mode
cd /work/main; source ci/env.sh
end=$((SECONDS+${1:-300}))
args=${ARGS:-"-b 1M -e 16M -f 16 -c native,fp16 -n 20 -w 3 --check false"}
while [ $SECONDS -lt $end ]; do
  for mode in ${MODES:-cached auto streaming}; do
    r=$(/tmp/spell/rtt)
    out=$(RINGFUSE_WIRE_STORES=$mode "${MPIRUN[@]}" -np 2 -x RINGFUSE_WIRE_STORES target/release/ringfuse-perf $args 2>&1 | grep -E '^ +[0-9]+ ')
    r2=$(/tmp/spell/rtt)
    echo "$out" | awk -v m=$mode -v r=$r -v r2=$r2 '{print m, r, r2, $1, $3, $5, $(NF-1), $NF}'
  done
  sleep $((RANDOM % 8))
done
