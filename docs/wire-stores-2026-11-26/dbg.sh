cd /work/main; source ci/env.sh
for i in $(seq 1 40); do
  r=$(/tmp/spell/rtt)
  RINGFUSE_DEBUG_WIRE=1 "${MPIRUN[@]}" -np 2 -x RINGFUSE_DEBUG_WIRE target/release/ringfuse-perf -b 16M -e 16M -c native -n 10 -w 2 --check false > /tmp/spell/dbg_$i.log 2>&1
  r2=$(/tmp/spell/rtt)
  t=$(grep -E '^ +16777216' /tmp/spell/dbg_$i.log | awk '{print $5}')
  echo "$i $r $r2 $t"
  sleep $((RANDOM % 5))
done
