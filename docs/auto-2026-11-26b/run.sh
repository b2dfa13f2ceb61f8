#!/bin/bash
# usage: xp.sh NP TAG ENV...  -> /tmp/xp/TAG-N.json
cd /work/main; source ci/env.sh
np=$1; tag=$2; shift 2
mkdir -p /tmp/xp
i=$(ls /tmp/xp/$tag-np$np-*.json 2>/dev/null | wc -l)
env "$@" "${MPIRUN[@]}" -np $np target/release/ringfuse-perf -b 8 -e 8M -f 4 -c native -a ring,doubling,tree,hd,auto -n 40 --json /tmp/xp/$tag-np$np-$i.json > /tmp/xp/$tag-np$np-$i.txt 2>&1
