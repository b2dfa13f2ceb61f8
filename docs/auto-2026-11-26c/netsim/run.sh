#!/bin/bash
# usage: run.sh HOSTS TAG DIR  (DIR: the checkout whose ci/netsim.sh and build run)
h=$1; tag=$2; dir=$3
i=$(ls /tmp/ns/$tag-h$h-*.json 2>/dev/null | wc -l)
cd $dir && bash ci/netsim.sh --hosts $h -- -b 8 -e 16M -f 8 -c native -a ring,doubling,tree,hd,auto -n 10 --json /tmp/ns/$tag-h$h-$i.json > /tmp/ns/$tag-h$h-$i.txt 2>&1
