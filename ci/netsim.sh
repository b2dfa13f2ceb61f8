#!/usr/bin/env bash
# Simulated cluster: N hosts as network namespaces, each linked to one
# bridge (the "switch") by a veth pair shaped with tc (rate both ways, delay
# on the host's egress), plus a launcher namespace from which mpirun starts
# one ringfuse-perf rank per host over Open MPI's TCP transport. An rsh
# agent enters the target namespace instead of ssh-ing to a machine.
#
#   ci/netsim.sh [--hosts N] [--rate 1gbit] [--delay 100us] [--burst 256kb]
#                [--deadline 1200] [--yield 1] [--program PATH] [--recover]
#                [--cut RANK@SECONDS] [-- ringfuse-perf args...]
#
# --program runs PATH (built beforehand) on every host instead of
# ringfuse-perf, the arguments after -- going to it; --recover launches
# with mpirun --enable-recovery, so that a rank that dies does not end
# the others (ci/lost_rank.sh). --cut takes rank RANK's host off the
# switch SECONDS after launch, as a host that fails as a whole would
# vanish: nothing it sent after that arrives, not even a closed
# connection.
#
# --burst is the token bucket of the tbf shaper used where the kernel has
# no netem: after an idle moment that many bytes pass at memory speed
# before the rate holds (`ringfuse-perf --simulate --link-burst` models it).
#
# --yield 1 (default) runs every rank with Open MPI's mpi_yield_when_idle:
# a rank that finds nothing to do gives its core away. The "hosts" are
# processes sharing this machine's cores with the kernel's network work
# (veth, bridge, tc run in softirq context), which Open MPI cannot see, so
# it would otherwise busy-poll as if each host had its own CPUs. Without it
# a blocking MPI_Send/MPI_Recv ping-pong of 8 bytes between two namespaces
# took 8 ms here (two scheduler ticks) instead of 65 us, and MPI_Allreduce
# took 2.4-7 ms at 8 B-256 KiB. Open MPI sets the same flag itself when it
# knows processes outnumber cores. --yield 0 restores plain busy-polling.
#
# --deadline bounds the whole mpirun in seconds: Open MPI waits for ever
# for a daemon that died before reporting, so the script must not.
#
# Addresses come from 198.18.0.0/24 (RFC 2544's benchmarking range); no
# traffic leaves the namespaces this script creates, and it removes them
# on exit, failure or Ctrl-C. Needs root (ip netns, tc).
set -euo pipefail
cd "$(dirname "$0")/.."

HOSTS=4 RATE=1gbit DELAY=100us BURST=256kb DEADLINE=1200 YIELD=1 PROGRAM= RECOVER=() CUT=
while (($#)); do
    case $1 in
        --hosts) HOSTS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --delay) DELAY=$2; shift 2 ;;
        --burst) BURST=$2; shift 2 ;;
        --deadline) DEADLINE=$2; shift 2 ;;
        --yield) YIELD=$2; shift 2 ;;
        --program) PROGRAM=$(realpath "$2"); shift 2 ;;
        --recover) RECOVER=(--enable-recovery); shift ;;
        --cut) CUT=$2; shift 2 ;;
        --) shift; break ;;
        -h | --help) sed -n 2,40p "$0"; exit 0 ;;
        *) echo "netsim: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $YIELD == 0 || $YIELD == 1 ]] || { echo "netsim: --yield must be 0 or 1" >&2; exit 2; }
((HOSTS >= 1 && HOSTS <= 64)) || { echo "netsim: --hosts must be 1..64" >&2; exit 2; }
PERF_ARGS=("$@")

bash ci/setup.sh >/dev/null
source ci/env.sh
build_release
# Where cargo put it: CARGO_TARGET_DIR when set (relative to here), else
# target/.
PERF=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/ringfuse-perf
[[ -n $PROGRAM ]] && PERF=$PROGRAM

P="rfs$$"                 # unique prefix: parallel runs do not collide
BR="${P}br"
WORK=$(mktemp -d)
cleanup() {
    set +e
    # Daemons of a killed job outlive mpirun; they live in our namespaces.
    for ((i = 0; i <= HOSTS; i++)); do
        ip netns pids "${P}h$i" 2>/dev/null | xargs -r kill -9 2>/dev/null
        ip netns del "${P}h$i" 2>/dev/null
    done
    ip netns del "${P}probe" 2>/dev/null
    ip link del "$BR" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# netem adds delay; some kernels (this project's CI VMs among them) lack
# it. Rate is then shaped with tbf and the delay is reported as not applied.
if ip netns add "${P}probe" && ip netns exec "${P}probe" tc qdisc add dev lo root netem delay 1us 2>/dev/null; then
    NETEM=1
else
    NETEM=0
    echo "netsim: WARNING: this kernel has no netem qdisc: links are rate-limited (tbf) but --delay $DELAY is NOT applied" >&2
fi
ip netns del "${P}probe" 2>/dev/null || true

ip link add "$BR" type bridge
ip link set "$BR" up
# Host 0 is the launcher (unshaped); hosts 1..N run one rank each.
for ((i = 0; i <= HOSTS; i++)); do
    ns="${P}h$i"
    ip netns add "$ns"
    ip link add "${P}v$i" type veth peer name "${P}p$i"
    ip link set "${P}v$i" netns "$ns"
    ip -n "$ns" link set "${P}v$i" name eth0
    ip -n "$ns" addr add "198.18.0.$((i + 1))/24" dev eth0
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
    ip link set "${P}p$i" master "$BR"
    ip link set "${P}p$i" up
    if ((i > 0)); then
        # Host -> switch: rate and delay. Switch -> host: rate.
        if ((NETEM)); then
            ip netns exec "$ns" tc qdisc add dev eth0 root netem delay "$DELAY" rate "$RATE" limit 100000
            tc qdisc add dev "${P}p$i" root netem rate "$RATE" limit 100000
        else
            ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$RATE" burst "$BURST" latency 100ms
            tc qdisc add dev "${P}p$i" root tbf rate "$RATE" burst "$BURST" latency 100ms
        fi
    fi
done

# Open MPI calls the agent as `agent HOST COMMAND...`, like ssh. Each
# host gets its own TMPDIR, as a real machine has its own /tmp: the
# namespaces share one filesystem and one hostname, so their daemons would
# otherwise build (and tear down) the same Open MPI session directory
# /tmp/ompi.HOST.UID at once, and a daemon whose mkdir loses that race
# dies before it reports to mpirun, which then waits for it for ever
# (seen about 1 launch in 20).
cat > "$WORK/agent" <<AGENT
#!/bin/sh
host=\$1; shift
i=\$(( \${host##*.} - 1 ))
exec ip netns exec "${P}h\$i" env TMPDIR="$WORK/tmp\$i" sh -c "\$*"
AGENT
chmod +x "$WORK/agent"

hosts=""
for ((i = 1; i <= HOSTS; i++)); do hosts+="${hosts:+,}198.18.0.$((i + 1)):1"; done
echo "netsim: $HOSTS hosts, $RATE links, delay $( ((NETEM)) && echo "$DELAY" || echo "not applied (no netem)"), mpi_yield_when_idle $YIELD; ranks on $hosts"

source ci/env.sh
export OMPI_MCA_btl=tcp,self
for ((i = 0; i <= HOSTS; i++)); do mkdir -p "$WORK/tmp$i"; done
# Every RINGFUSE_* variable set here reaches the ranks (RINGFUSE_TUNING,
# RINGFUSE_ALGO, RINGFUSE_TIMEOUT_MS, ...); passing an unset one makes
# mpirun warn on every run.
forward=()
for v in $(compgen -e | grep '^RINGFUSE_' || true); do forward+=(-x "$v"); done
if [[ -n $CUT ]]; then
    # Rank r runs on host r + 1 (host 0 is the launcher).
    (sleep "${CUT#*@}" && ip link set "${P}p$((${CUT%@*} + 1))" down && echo "netsim: rank ${CUT%@*}'s host cut off" >&2) &
fi
rc=0
timeout -k 10 "$DEADLINE" ip netns exec "${P}h0" env HOME="$WORK" TMPDIR="$WORK/tmp0" \
    mpirun --allow-run-as-root --oversubscribe "${RECOVER[@]}" -np "$HOSTS" --host "$hosts" \
    --mca plm_rsh_agent "$WORK/agent" --mca plm_rsh_no_tree_spawn 1 \
    --mca btl tcp,self --mca mpi_yield_when_idle "$YIELD" --mca btl_tcp_if_include 198.18.0.0/24 --mca oob_tcp_if_include 198.18.0.0/24 \
    "${forward[@]}" \
    "$PERF" "${PERF_ARGS[@]}" || rc=$?
if ((rc == 124 || rc == 137)); then
    echo "netsim: mpirun did not finish within --deadline ${DEADLINE}s; killed (ranks time out on their own, so this is a launch that never completed)" >&2
fi
exit $rc
