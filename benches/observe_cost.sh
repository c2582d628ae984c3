#!/usr/bin/env bash
# What watching costs: iperf3 TCP c1 -> c2 through uvs (AF_XDP ports) with nothing watched, with
# `uvs ctl capture` on c1's port (both directions, snaplen 128, written to /dev/null), and with
# a mirror of c1's port to a third namespace; then the same three through the kernel bridge with
# nothing, tcpdump on c1's veth, and no mirror (n/a). Needs root, iperf3, tcpdump or tshark.
#
# Usage: sudo benches/observe_cost.sh [--uvs PATH] [--secs N]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
UVS="$REPO/target/release/uvs"
SECS=3
while [ $# -gt 0 ]; do
    case "$1" in
    --uvs) UVS="$2"; shift ;;
    --secs) SECS="$2"; shift ;;
    *) echo "usage: $0 [--uvs PATH] [--secs N]" >&2; exit 2 ;;
    esac
    shift
done
P="oc$$"
SOCK="/tmp/uvs-$P.sock"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for n in 1 2 3; do ip netns del "${P}n$n" 2>/dev/null || true; ip link del "${P}p$n" 2>/dev/null || true; done
    ip link del "${P}br" 2>/dev/null || true
}
trap cleanup EXIT
for n in 1 2 3; do
    ip netns add "${P}n$n"
    ip link add "${P}p$n" numrxqueues 1 type veth peer name eth0 netns "${P}n$n"
    ip link set "${P}p$n" up
    ip -n "${P}n$n" addr add "10.233.0.$n/24" dev eth0
    ip -n "${P}n$n" link set eth0 up
done
tcp() { # prints Gbit/s of one iperf3 run c1 -> c2
    ip netns exec "${P}n2" iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
    local s=$!
    sleep 0.3
    ip netns exec "${P}n1" timeout 30 iperf3 -J -c 10.233.0.2 -p 5299 -t "$SECS" 2>/dev/null |
        python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))' || echo nan
    kill "$s" 2>/dev/null || true
    wait "$s" 2>/dev/null || true
}
"$UVS" run --socket "$SOCK" --cores 1 2>/dev/null &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
ctl() { "$UVS" ctl --socket "$SOCK" "$@"; }
ctl add-br br0
for n in 1 2 3; do ctl add-port br0 "${P}p$n" type=afxdp >/dev/null; done
ip netns exec "${P}n1" ping -c 2 -i 0.2 10.233.0.2 >/dev/null
u_plain=$(tcp)
ctl capture --snaplen 128 "${P}p1" - >/dev/null 2>&1 &
cap=$!
PIDS+=($cap)
sleep 0.5
u_cap=$(tcp)
kill "$cap" 2>/dev/null || true
wait "$cap" 2>/dev/null || true
ctl add-mirror br0 m0 "select=${P}p1" "output=${P}p3"
u_mir=$(tcp)
ctl del-mirror br0 m0
# The kernel bridge, same veths.
kill "${PIDS[0]}"
wait "${PIDS[0]}" 2>/dev/null || true
ip link add "${P}br" type bridge
ip link set "${P}br" up
for n in 1 2 3; do ip link set "${P}p$n" master "${P}br"; done
ip netns exec "${P}n1" ping -c 2 -i 0.2 10.233.0.2 >/dev/null
k_plain=$(tcp)
if command -v tcpdump >/dev/null; then
    tcpdump -i "${P}p1" -s 128 -w /dev/null 2>/dev/null &
else
    tshark -i "${P}p1" -s 128 -w /dev/null -q 2>/dev/null &
fi
dump=$!
PIDS+=($dump)
sleep 1
k_cap=$(tcp)
kill "$dump" 2>/dev/null || true
echo "| path | nothing watched | capture on c1's port | mirror of c1's port |"
echo "|---|---:|---:|---:|"
echo "| uvs (AF_XDP), TCP Gbit/s | $u_plain | $u_cap (uvs ctl capture) | $u_mir |"
echo "| kernel bridge, TCP Gbit/s | $k_plain | $k_cap (tcpdump on the veth) | n/a |"
