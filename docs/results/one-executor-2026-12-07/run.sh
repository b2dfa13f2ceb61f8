#!/usr/bin/env bash
# Host buffers before and after the one executor, side by side: 12 pairs,
# the order inside each pair alternating, at 2 and 3 ranks (shared memory).
# BEFORE and AFTER are release builds of ringfuse-perf from the two commits.
set -euo pipefail
source "$(dirname "$0")/../../../ci/env.sh"
: "${BEFORE:?release ringfuse-perf of the commit before}" "${AFTER:?release ringfuse-perf of the one executor}"
for r in $(seq 1 12); do
    if ((r % 2)); then order="before after"; else order="after before"; fi
    for np in 3 2; do
        for v in $order; do
            bin=BEFORE; [ $v = after ] && bin=AFTER
            "${MPIRUN[@]}" -np $np "${!bin}" -b 32K -e 16M -f 8 -c native,fp16 -a ring,hd -n 30 -w 5 \
                --json $v-np$np-r$r.json >/dev/null
        done
    done
done
