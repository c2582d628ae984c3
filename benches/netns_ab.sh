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
# by file name, so copy them to distinct names). The name `ovs` instead of a binary takes turns
# with Open vSwitch's userspace datapath (afxdp ports, native/copy mode, PMD on --cores): its pps
# is what c2's eth0 received, its CPU the whole ovs-vswitchd's. Results to stdout.
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
for b in "$@"; do [ "$b" = ovs ] || [ -x "$b" ] || { echo "not an executable: $b" >&2; exit 2; }; done
LAT="" # a uvs binary for `uvs latency` (percentiles of ping's output)
for b in "$@"; do [ "$b" = ovs ] || { LAT=$b; break; }; done
[ -n "$LAT" ] || { echo "give at least one uvs binary besides ovs" >&2; exit 2; }
OVS_SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
for b in "$@"; do
    if [ "$b" = ovs ]; then
        for t in ovsdb-tool ovsdb-server ovs-vswitchd ovs-vsctl ovs-appctl; do
            command -v "$t" >/dev/null || { echo "ovs turn: '$t' is not installed (scripts/setup.sh --bench)" >&2; exit 2; }
        done
        [ -r "$OVS_SCHEMA" ] || { echo "ovs turn: $OVS_SCHEMA not found" >&2; exit 2; }
    fi
done
OVS_NETDEV_BEFORE=0
ip link show ovs-netdev >/dev/null 2>&1 && OVS_NETDEV_BEFORE=1
HAVE_PERF=1; perf stat -e syscalls:sys_enter_sendto -- true >/dev/null 2>&1 || HAVE_PERF=0
HAVE_TG=1; command -v trafgen >/dev/null || { HAVE_TG=0; echo "no trafgen: pings only (scripts/setup.sh --bench)" >&2; }

TMP=$(mktemp -d)
C1="ab1$$" C2="ab2$$" H1="abh1$$" H2="abh2$$"
PID="" PERF="" OVSDB_PID=""
stop_pid() { # PID: TERM, then KILL after 3 s
    local i
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
    kill "$1" 2>/dev/null || true
    for i in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
OVSDIR="$TMP/ovs"
ovs_vsctl() { ovs-vsctl --db="unix:$OVSDIR/run/db.sock" --timeout=30 "$@"; }
start_ovs() { # sets PID (ovs-vswitchd) and OVSDB_PID; a netdev bridge with both veths as afxdp ports
    rm -rf "$OVSDIR"; mkdir -p "$OVSDIR/run" "$OVSDIR/db" "$OVSDIR/log" "$OVSDIR/etc"
    export OVS_RUNDIR="$OVSDIR/run" OVS_DBDIR="$OVSDIR/db" OVS_LOGDIR="$OVSDIR/log" OVS_SYSCONFDIR="$OVSDIR/etc"
    ovsdb-tool create "$OVSDIR/db/conf.db" "$OVS_SCHEMA"
    ovsdb-server "$OVSDIR/db/conf.db" --remote="punix:$OVSDIR/run/db.sock" \
        --unixctl="$OVSDIR/run/ovsdb-server.ctl" --log-file="$OVSDIR/log/ovsdb-server.log" --no-chdir >/dev/null 2>&1 &
    OVSDB_PID=$!
    for _ in $(seq 100); do [ -S "$OVSDIR/run/db.sock" ] && break; sleep 0.1; done
    ovs_vsctl --no-wait init
    local mask=0 c
    for c in ${CORES//,/ }; do mask=$((mask | (1 << c))); done
    ovs_vsctl --no-wait set Open_vSwitch . "other_config:pmd-cpu-mask=$(printf '0x%x' "$mask")"
    ovs-vswitchd "unix:$OVSDIR/run/db.sock" --unixctl="$OVSDIR/run/ovs-vswitchd.ctl" \
        --log-file="$OVSDIR/log/ovs-vswitchd.log" --no-chdir >/dev/null 2>&1 &
    PID=$!
    for _ in $(seq 100); do [ -S "$OVSDIR/run/ovs-vswitchd.ctl" ] && break; sleep 0.1; done
    ovs_vsctl add-br abovs -- set bridge abovs datapath_type=netdev
    local h
    for h in "$H1" "$H2"; do
        ovs_vsctl add-port abovs "$h" -- set interface "$h" type=afxdp options:xdp-mode=native
        [ "$(ovs_vsctl get interface "$h" error)" = "[]" ] || { echo "ovs: afxdp port $h failed" >&2; return 1; }
    done
}
stop_ovs() {
    timeout 10 ovs-appctl -t "$OVSDIR/run/ovs-vswitchd.ctl" exit --cleanup >/dev/null 2>&1 || true
    stop_pid "$PID"; PID=""
    timeout 10 ovs-appctl -t "$OVSDIR/run/ovsdb-server.ctl" exit >/dev/null 2>&1 || true
    stop_pid "$OVSDB_PID"; OVSDB_PID=""
    # OVS leaves its XDP program on the veths; the next turn attaches its own.
    local h
    for h in "$H1" "$H2"; do ip link set dev "$h" xdp off 2>/dev/null || true; done
}
cleanup() {
    if [ -n "$OVSDB_PID" ]; then stop_ovs; fi
    stop_pid "$PID"
    if [ "$OVS_NETDEV_BEFORE" = 0 ] && ip link show ovs-netdev >/dev/null 2>&1; then ip link del ovs-netdev 2>/dev/null || true; fi
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
    if [ "$1" = ovs ]; then # what c2 received; no busy figures; the daemon's CPU time
        local rx ticks hz
        rx=$(ip netns exec "$C2" cat /sys/class/net/eth0/statistics/rx_packets)
        ticks=$(awk '{print $14 + $15}' "/proc/$PID/stat"); hz=$(getconf CLK_TCK)
        echo "$rx 0 0 $((ticks * 1000000000 / hz)) 0"
        return
    fi
    "$1" ctl --socket "$TMP/s.sock" --json stats | python3 -c '
import json, sys
v = json.load(sys.stdin)
ws = v.get("workers") or [v["worker"]]
print(*(sum(w.get(k, 0) for w in ws) for k in ("rx_packets", "busy_iterations", "busy_ns", "cpu_ns", "wall_ns")))'
}

for r in $(seq "$ROUNDS"); do
    for b in "$@"; do
        if [ "$b" = ovs ]; then
            start_ovs
        else
            rm -f "$TMP/s.sock"
            "$b" run --socket "$TMP/s.sock" --cores "$CORES" >"$TMP/uvs.log" 2>&1 &
            PID=$!
            for _ in $(seq 50); do "$b" ctl --socket "$TMP/s.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
            "$b" ctl --socket "$TMP/s.sock" add-br br0 >/dev/null
            "$b" ctl --socket "$TMP/s.sock" add-port br0 "$H1" type=afxdp >/dev/null
            "$b" ctl --socket "$TMP/s.sock" add-port br0 "$H2" type=afxdp >/dev/null
        fi
        for _ in $(seq 50); do ip netns exec "$C1" ping -c 1 -W 0.2 -q 10.79.0.2 >/dev/null 2>&1 && break; done
        ip netns exec "$C1" ping -c 50 -i 0.01 -q 10.79.0.2 >/dev/null # learn, and reach the linger
        out=$(ip netns exec "$C1" taskset -c 0 ping -c "$PINGS" -i 0.01 10.79.0.2)
        read -r p50 p99 _ <<<"$(echo "$out" | "$LAT" latency 2>/dev/null || echo "nan nan")"
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
fpp = f"{rx / busy:.1f} frames/busy pass, " if busy else ""
print(f"{rx / el:.0f} pps, {fpp}{fwd}, cpu {100 * cpu / 1e9 / el:.0f}%{kicks}")' "$a" "$z" "$t0" "$t1" "${kicks:-}")"
        fi
        echo "$(basename "$b") round $r: $line" | tee -a "$TMP/results"
        if [ "$b" = ovs ]; then stop_ovs; else stop_pid "$PID"; PID=""; fi
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
