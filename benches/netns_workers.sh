#!/usr/bin/env bash
# One uvs worker vs two (`--cores 0` vs `--cores 0,1`) next to the kernel bridge, in one run:
# two namespaces on veths with two queues each, `type=afpacket` ports (a fanout group per
# netdev with two workers), TCP with 8 parallel connections (iperf3 -P 8), median of --reps
# runs of --duration seconds. Prints Gbit/s, the ratio to the kernel bridge and to one worker,
# and the CPU uvs used (cores, from /proc/PID/stat). Root; everything it makes is removed
# (namespaces, links, processes by PID).
#
#   benches/netns_workers.sh [--reps 3] [--duration 5] [--type afpacket|afxdp]
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=3 DUR=5 TYPE=afpacket
while [ $# -gt 0 ]; do
  case $1 in
    --reps) REPS=$2; shift 2 ;;
    --duration) DUR=$2; shift 2 ;;
    --type) TYPE=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "netns_workers.sh: needs root"; exit 0; }
command -v iperf3 >/dev/null || { echo "netns_workers.sh: iperf3 not installed"; exit 0; }
if [ -z "${UVS:-}" ]; then cargo build --release --quiet; UVS=target/release/uvs; fi
P=nw$$
TMP=$(mktemp -d)
UPID=""
cleanup() {
  [ -n "$UPID" ] && kill "$UPID" 2>/dev/null && wait "$UPID" 2>/dev/null || true
  for n in a b; do ip netns del "$P$n" 2>/dev/null || true; done
  for l in "${P}a" "${P}b" "${P}br"; do ip link del "$l" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
veths() {
  for n in a b; do
    ip netns add "$P$n"
    ip link add "$P$n" numtxqueues 2 numrxqueues 2 type veth peer name eth0 \
      numtxqueues 2 numrxqueues 2 netns "$P$n"
    ip -n "$P$n" addr add "10.66.0.$([ $n = a ] && echo 1 || echo 2)/24" dev eth0
    ip -n "$P$n" link set eth0 up
    ip -n "$P$n" link set lo up
    ip link set "$P$n" up
  done
}
unveths() { for n in a b; do ip netns del "$P$n" 2>/dev/null || true; ip link del "$P$n" 2>/dev/null || true; done; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
tcp() { # -> Gbit/s
  ip netns exec "${P}b" iperf3 -s -1 -D -p 5201 -I "$TMP/iperf.pid" >/dev/null
  for _ in $(seq 50); do ip netns exec "${P}b" ss -Hltn | grep -q ':5201 ' && break; sleep 0.1; done
  ip netns exec "${P}a" timeout $((DUR + 20)) iperf3 -J -c 10.66.0.2 -P 8 -t "$DUR" >"$TMP/out.json" || true
  [ -f "$TMP/iperf.pid" ] && kill "$(tr -d '\0' <"$TMP/iperf.pid")" 2>/dev/null || true
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$TMP/out.json" 2>/dev/null || echo 0
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A GB CPU
run_kernel() {
  veths
  ip link add "${P}br" type bridge && ip link set "${P}br" up
  for n in a b; do ip link set "$P$n" master "${P}br"; done
  ip netns exec "${P}a" ping -c 2 -W 1 10.66.0.2 >/dev/null
  GB[kernel]=$(for _ in $(seq "$REPS"); do tcp; done | median); CPU[kernel]=softirq
  ip link del "${P}br"; unveths
}
run_uvs() { # label cores
  veths
  "$UVS" run --socket "$TMP/uvs.sock" --cores "$2" --dns-upstream off >"$TMP/uvs.log" 2>&1 &
  UPID=$!
  for _ in $(seq 100); do [ -S "$TMP/uvs.sock" ] && break; sleep 0.05; done
  "$UVS" ctl --socket "$TMP/uvs.sock" add-br br0 >/dev/null
  for n in a b; do "$UVS" ctl --socket "$TMP/uvs.sock" add-port br0 "$P$n" "type=$TYPE" >/dev/null; done
  ip netns exec "${P}a" ping -c 2 -W 1 10.66.0.2 >/dev/null
  local t0 c0 t1 c1 hz
  hz=$(getconf CLK_TCK); t0=$(date +%s.%N); c0=$(cpu_ticks "$UPID")
  GB[$1]=$(for _ in $(seq "$REPS"); do tcp; done | median)
  t1=$(date +%s.%N); c1=$(cpu_ticks "$UPID")
  CPU[$1]=$(python3 -c "print('%.2f' % (($c1-$c0)/$hz/($t1-$t0)))")
  "$UVS" ctl --socket "$TMP/uvs.sock" stats | grep '^worker' >"$TMP/$1.workers" || true
  kill "$UPID"; wait "$UPID" 2>/dev/null || true; UPID=""
  rm -f "$TMP/uvs.sock"; unveths
}
run_kernel
run_uvs "uvs 1 worker" 0
run_uvs "uvs 2 workers" 0,1
echo "two namespaces, veths with 2 queues, $TYPE ports, iperf3 -P 8, median of $REPS x ${DUR}s"
echo "| switch | TCP Gbit/s | vs kernel | vs 1 worker | uvs CPU (cores) |"
echo "|---|---:|---:|---:|---:|"
k=${GB[kernel]}; one=${GB["uvs 1 worker"]}
for m in kernel "uvs 1 worker" "uvs 2 workers"; do
  python3 -c "import sys; g,k,o=map(float,sys.argv[1:4]); print('| %s | %.2f | %.2fx | %s | %s |' % (sys.argv[4], g, g/k if k else 0, ('%.2fx' % (g/o)) if o and sys.argv[4]!='kernel' else '-', sys.argv[5]))" "${GB[$m]}" "$k" "$one" "$m" "${CPU[$m]}"
done
for f in "$TMP"/*.workers; do [ -f "$f" ] && { echo "$(basename "$f" .workers):"; sed 's/^/  /' "$f"; }; done
