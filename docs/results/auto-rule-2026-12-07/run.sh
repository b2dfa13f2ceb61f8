#!/usr/bin/env bash
# Auto by the fixed rule (the default) against Auto by the start-up probe
# (RINGFUSE_TUNING=probe), alternating, same binary:
#   bash run.sh NP ROUNDS BINARY OUTDIR
set -euo pipefail
np=$1 rounds=$2 bin=$3 out=$4
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
for i in $(seq 0 $((rounds - 1))); do
    for tag in rule probe; do
        t=off; [[ $tag == probe ]] && t=probe
        RINGFUSE_TUNING=$t mpirun --oversubscribe --bind-to none -x RINGFUSE_TUNING -np "$np" "$bin" \
            -b 8 -e 8M -f 4 -c native -a ring,doubling,tree,hd,auto -n 40 --json "$out/$tag-np$np-$i.json" >"$out/$tag-np$np-$i.txt"
    done
done
