#!/bin/bash
# usage: run.sh NP TAG BIN [ENV...] -> /tmp/xp/TAG-npNP-i.{json,txt}
cd /work/main; source ci/env.sh
np=$1; tag=$2; bin=$3; shift 3
i=$(ls /tmp/xp/$tag-np$np-*.json 2>/dev/null | wc -l)
env "$@" "${MPIRUN[@]}" -np $np $bin -b 8 -e 8M -f 4 -c native -a ring,doubling,tree,hd,auto -n 40 --json /tmp/xp/$tag-np$np-$i.json > /tmp/xp/$tag-np$np-$i.txt 2>&1
