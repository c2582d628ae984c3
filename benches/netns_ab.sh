#!/usr/bin/env bash
# Interleaved A/B of uvs binaries on one netns pair: c1 -> c2 through two AF_XDP ports, the
# binaries taking turns on the same veths, ROUNDS rounds. Each turn: PINGS pings 10 ms apart
# (p50 / p99 / avg), then trafgen for SECONDS (64-byte UDP, unthrottled) with the counters read
# around it: frames a second, frames per busy pass, forwarding % of the core (`busy_ns`, where
# the binary has it), ns of forwarding time per frame, CPU %, and (with perf) the transmit
# doorbells: `sendto` calls on the worker's core per forwarded frame. At the end, each binary's
# medians.
#
# Why interleaved: on this VM round trips and rates move by up to 2x between minutes (docs/
# design.md, "The switch's core in the netns path"); turns a few seconds apart see the same
# machine, so a difference that holds across rounds is the binaries'.
#
# Usage: benches/netns_ab.sh [--rounds N] [--pings N] [--seconds S] [--cores C] BIN_A BIN_B [...]
# (as root; traffic tools on CPU 0, the worker on --cores, default 1; binaries are told apart
# by file name, so copy them to distinct names). Results to stdout.
set -euo pipefail

ROUNDS=3 PINGS=300 SECS=4 CORES=1
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS="${2:?}"; shift ;;
    --pings) PINGS="${2:?}"; shift ;;
    --seconds) SECS="${2:?}"; shift ;;
    --cores) CORES="${2:?}"; shift ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
    shift
done
[ $# -ge 1 ] || { echo "give one or more uvs binaries (see --help)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "netns_ab: SKIP: needs root" >&2; exit 0; }
for b in "$@"; do [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }; done
HAVE_PERF=1; perf stat -e syscalls:sys_enter_sendto -- true >/dev/null 2>&1 || HAVE_PERF=0
HAVE_TG=1; command -v trafgen >/dev/null || { HAVE_TG=0; echo "no trafgen: pings only (scripts/setup.sh --bench)" >&2; }

TMP=$(mktemp -d)
C1="ab1$$" C2="ab2$$" H1="abh1$$" H2="abh2$$"
PID="" PERF=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    ip link del "$H1" 2>/dev/null || true
    ip link del "$H2" 2>/dev/null || true
    ip netns del "$C1" 2>/dev/null || true
    ip netns del "$C2" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

ip netns add "$C1"; ip netns add "$C2"
ip link add "$H1" type veth peer name eth0 netns "$C1"
ip link add "$H2" type veth peer name eth0 netns "$C2"
for h in "$H1" "$H2"; do sysctl -qw "net.ipv6.conf.$h.disable_ipv6=1"; ip link set "$h" up; done
for n in 1 2; do
    ns=$C1; [ $n = 2 ] && ns=$C2
    ip -n "$ns" link set eth0 address "02:00:00:ab:00:0$n"
    ip -n "$ns" addr add "10.79.0.$n/24" dev eth0
    ip -n "$ns" link set eth0 up; ip -n "$ns" link set lo up
done
cat >"$TMP/udp64.cfg" <<EOF
{ eth(da=02:00:00:ab:00:02, sa=02:00:00:ab:00:01), ipv4(saddr=10.79.0.1, daddr=10.79.0.2, ttl=64, df), udp(sp=40000, dp=9), fill(0x00, 18) }
EOF

worker() { # BIN: "rx busy_passes busy_ns cpu_ns wall_ns" of all workers summed
    "$1" ctl --socket "$TMP/s.sock" --json stats | python3 -c '
import json, sys
v = json.load(sys.stdin)
ws = v.get("workers") or [v["worker"]]
print(*(sum(w.get(k, 0) for w in ws) for k in ("rx_packets", "busy_iterations", "busy_ns", "cpu_ns", "wall_ns")))'
}

for r in $(seq "$ROUNDS"); do
    for b in "$@"; do
        rm -f "$TMP/s.sock"
        "$b" run --socket "$TMP/s.sock" --cores "$CORES" >"$TMP/uvs.log" 2>&1 &
        PID=$!
        for _ in $(seq 50); do "$b" ctl --socket "$TMP/s.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
        "$b" ctl --socket "$TMP/s.sock" add-br br0 >/dev/null
        "$b" ctl --socket "$TMP/s.sock" add-port br0 "$H1" type=afxdp >/dev/null
        "$b" ctl --socket "$TMP/s.sock" add-port br0 "$H2" type=afxdp >/dev/null
        ip netns exec "$C1" ping -c 50 -i 0.01 -q 10.79.0.2 >/dev/null # learn, and reach the linger
        out=$(ip netns exec "$C1" taskset -c 0 ping -c "$PINGS" -i 0.01 10.79.0.2)
        read -r p50 p99 _ <<<"$(echo "$out" | "$b" latency 2>/dev/null || echo "nan nan")"
        avg=$(echo "$out" | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
        line="ping p50 $p50 p99 $p99 avg ${avg:-nan} ms"
        if [ "$HAVE_TG" = 1 ]; then
            a=$(worker "$b"); t0=$(date +%s%N)
            rm -f "$TMP/perf.csv"
            if [ "$HAVE_PERF" = 1 ]; then # the doorbells on the worker's core(s), while trafgen runs
                perf stat -x, -o "$TMP/perf.csv" -C "$CORES" -e syscalls:sys_enter_sendto \
                    -- sleep "$SECS" >/dev/null 2>&1 &
                PERF=$!
            fi
            ip netns exec "$C1" timeout -s INT -k 3 "$SECS" taskset -c 0 \
                trafgen -o eth0 -i "$TMP/udp64.cfg" -P 1 -Q --no-sock-mem -C >/dev/null 2>&1 || true
            t1=$(date +%s%N); [ -n "$PERF" ] && wait "$PERF"; PERF=""; sleep 0.3; z=$(worker "$b")
            kicks=$(awk -F, '/sendto/ {print $1}' "$TMP/perf.csv" 2>/dev/null || true)
            line="$line | $(python3 -c '
import sys
a = list(map(int, sys.argv[1].split())); z = list(map(int, sys.argv[2].split()))
rx, busy, bns, cpu, wall = (y - x for x, y in zip(a, z))
el = (int(sys.argv[4]) - int(sys.argv[3])) / 1e9
fwd = f"{100 * bns / 1e9 / el:.1f}% forwarding, {bns / max(rx, 1):.0f} ns/frame" if bns else "no busy_ns"
k = sys.argv[5]
kicks = f", {int(k) / max(rx, 1):.2f} sendto/frame" if k.isdigit() else ""
print(f"{rx / el:.0f} pps, {rx / max(busy, 1):.1f} frames/busy pass, {fwd}, cpu {100 * cpu / 1e9 / el:.0f}%{kicks}")' "$a" "$z" "$t0" "$t1" "${kicks:-}")"
        fi
        echo "$(basename "$b") round $r: $line" | tee -a "$TMP/results"
        kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    done
done

echo
echo "medians over $ROUNDS rounds:"
for b in "$@"; do
    grep "^$(basename "$b") round" "$TMP/results" | python3 -c '
import re, statistics, sys
rows = sys.stdin.read().splitlines()
def med(pat):
    xs = [float(m.group(1)) for r in rows if (m := re.search(pat, r))]
    return statistics.median(xs) if xs else float("nan")
p50, avg = med(r"p50 ([0-9.]+)"), med(r"avg ([0-9.]+)")
pps, ns, fwd = med(r"([0-9]+) pps"), med(r"([0-9]+) ns/frame"), med(r"([0-9.]+)% forwarding")
cpu, kicks = med(r"cpu ([0-9]+)%"), med(r"([0-9.]+) sendto/frame")
print(f"  {sys.argv[1]}: ping p50 {p50:.3f} avg {avg:.3f} ms | {pps:.0f} pps, {ns:.0f} ns/frame, "
      f"{fwd:.1f}% forwarding, cpu {cpu:.0f}%, {kicks:.2f} sendto/frame")' "$(basename "$b")"
done
