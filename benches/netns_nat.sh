#!/usr/bin/env bash
# netns NAT benchmark: the same logical topology, container c -> router -> outside host o, with
# source NAT (masquerade) on the router, built twice in one run:
#   kernel  a router namespace r (two veth pairs, ip_forward=1, iptables MASQUERADE on the o side)
#   uvs     uvs with two routed bridges (br0 gateway 172.31.5.1/24, ext gateway 10.250.0.1/24),
#           afxdp ports on the veths' host ends, `nat-add masquerade src=172.31.5.0/24 out=ext`
# c is 172.31.5.2/24 (default route via 172.31.5.1); o is 10.250.0.2/24 with NO route back to
# 172.31.5.0/24, so only NAT lets replies return. For each: iperf3 TCP c -> o (1 stream, 4 streams),
# 64-byte UDP pps delivered at o (trafgen in c) and delivered/sent, ping avg RTT and p50/p99/p99.9 (HDR histogram), the router's CPU
# during the 1-stream TCP test. NAT is verified (o sees 10.250.0.1 as the peer; uvs ct-show).
#
# Usage: sudo benches/netns_nat.sh [--quick] [--only kernel,uvs] [--uvs PATH] [--duration S]
#                                  [--reps N] [--app-cpu CPUS] [--switch-cpu N] [--wait-idle S]
#                                  [--nice N]
# Progress goes to stderr, the Markdown table to stdout. See docs/benchmarks.md.
set -euo pipefail

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --quick          1 repetition, 2 s traffic (CI smoke run)
  --only LIST      comma-separated subset of: kernel,uvs (default: both)
  --uvs PATH       uvs binary (default: target/release/uvs of this repo; built if missing)
  --duration S     seconds of traffic per TCP / pps test (default 5, quick 2)
  --reps N         repetitions per measurement, the median is reported (default 3, quick 1)
  --app-cpu CPUS   CPU list the traffic tools run on (trafgen, iperf3, ping) (default 0)
  --switch-cpu N   core for the uvs worker (`uvs run --cores N`) (default 1)
  --wait-idle S    wait up to S seconds for the machine to be idle (<15% busy) before each
                   router (default 0: do not wait, only warn)
  --nice N         run everything (uvs and the traffic tools) at this nice value, e.g. -10 on a
                   machine shared with builds (default 0: unchanged)
  --port-type T    uvs port type on the veths: afxdp (default) or afpacket (AF_PACKET with
                   PACKET_VNET_HDR: TCP super-frames cross uvs whole)
EOF
}

# ---------------------------------------------------------------------------------------------
# Options
QUICK=0
ONLY="kernel,uvs"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UVS="$REPO/target/release/uvs"
UVS_GIVEN=0
DUR=""
REPS=""
APP_CPU=0
SW_CPU=1
SW_CPU_GIVEN=0
WAIT_IDLE=0
NICE=0
PORT_TYPE=afxdp
need() { # OPTION [VALUE]: exit 2 naming the option when its value is missing
    [ $# -ge 2 ] && [ -n "$2" ] || { echo "netns_nat: $1 needs a value (see --help)" >&2; exit 2; }
}
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --only) need "$@"; ONLY="$2"; shift ;;
    --uvs) need "$@"; UVS="$2"; UVS_GIVEN=1; shift ;;
    --duration) need "$@"; DUR="$2"; shift ;;
    --reps) need "$@"; REPS="$2"; shift ;;
    --app-cpu) need "$@"; APP_CPU="$2"; shift ;;
    --switch-cpu) need "$@"; SW_CPU="$2"; SW_CPU_GIVEN=1; shift ;;
    --wait-idle) need "$@"; WAIT_IDLE="$2"; shift ;;
    --nice) need "$@"; NICE="$2"; shift ;;
    --port-type) need "$@"; PORT_TYPE="$2"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "netns_nat: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    DUR="${DUR:-2}"; REPS="${REPS:-1}"; PING_N=200
else
    DUR="${DUR:-5}"; REPS="${REPS:-3}"; PING_N=1000
fi
# Every numeric option is checked here: `timeout 0` would mean "no timeout", a CPU that does not
# exist makes taskset fail, and a bad count gives rows of nonsense with exit 0.
NCPU=$(nproc)
bad() { echo "netns_nat: $*" >&2; exit 2; }
posint() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || bad "$1 must be a positive integer, not '$2'"; }
cpu_ok() { # OPTION N: an existing CPU
    [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -lt "$NCPU" ] ||
        bad "$1: '$2' is not a CPU of this machine (0-$((NCPU - 1)))"
}
cpulist_ok() { # OPTION LIST: taskset -c syntax (0,2-3) of existing CPUs
    local part lo hi
    [ -n "$2" ] || bad "$1 needs a CPU list"
    for part in ${2//,/ }; do
        if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
            lo=${BASH_REMATCH[1]} hi=${BASH_REMATCH[2]}
            cpu_ok "$1" "$lo"; cpu_ok "$1" "$hi"
        else
            cpu_ok "$1" "$part"
        fi
    done
}
posint --duration "$DUR"
case "$PORT_TYPE" in
    afxdp | afpacket) ;;
    *) bad "--port-type: '$PORT_TYPE' is not a port type for the veths (afxdp, afpacket)" ;;
esac
posint --reps "$REPS"
[[ "$WAIT_IDLE" =~ ^[0-9]+$ ]] || bad "--wait-idle must be a number of seconds (0 or more), not '$WAIT_IDLE'"
[[ "$NICE" =~ ^-?[0-9]+$ ]] && [ "$NICE" -ge -20 ] && [ "$NICE" -le 19 ] ||
    bad "--nice must be an integer from -20 to 19, not '$NICE'"
cpulist_ok --app-cpu "$APP_CPU"
# The default core 1 falls back to the last CPU on a 1-CPU machine (below); a given one must exist.
if [ "$SW_CPU_GIVEN" = 1 ]; then cpu_ok --switch-cpu "$SW_CPU"; fi
ALL_ROUTERS="kernel uvs"
ROUTERS=""
for s in ${ONLY//,/ }; do
    case " $ALL_ROUTERS " in
    *" $s "*) ROUTERS="$ROUTERS $s" ;;
    *) echo "netns_nat: unknown router '$s' in --only (known: kernel,uvs)" >&2; exit 2 ;;
    esac
done

log() { echo "[netns_nat $(date +%T)] $*" >&2; }
want() { case " $ROUTERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
drop_router() { ROUTERS="$(echo " $ROUTERS " | sed "s/ $1 / /")"; }

# ---------------------------------------------------------------------------------------------
# Preconditions: root and tools. A missing tool is not a failure (CI may lack it): say which and
# exit 0.
if [ "$(id -u)" != 0 ]; then
    echo "netns_nat: SKIP: needs root (network namespaces, veth, AF_XDP, iptables)" >&2
    exit "${UVS_BENCH_SKIP_STATUS:-0}"
fi
# One benchmark at a time: two runs at once share the CPUs and each would report as if it had
# been alone. The lock (flock on /run/uvs-bench.lock, shared by netns_l2, netns_encap and
# netns_nat) is held until this script and the processes it started have exited; the file
# names the holder.
LOCK_FILE=/run/uvs-bench.lock
[ -d /run ] && [ -w /run ] || LOCK_FILE=/tmp/uvs-bench.lock
if command -v flock >/dev/null 2>&1; then
    exec 9>>"$LOCK_FILE"
    if ! flock -n 9; then
        echo "netns_nat: another benchmark is running ($(cat "$LOCK_FILE" 2>/dev/null || echo '?'); lock $LOCK_FILE):" \
            "two at once share the CPUs and both would report as if alone. Run this one when it has finished." >&2
        exit 1
    fi
    echo "netns_nat PID $$" >"$LOCK_FILE"
else
    echo "netns_nat: WARNING: no flock, so nothing stops a second benchmark from running at the same time" >&2
fi
for t in ip iperf3 trafgen ping python3 ss ethtool taskset timeout sysctl getconf; do
    if ! command -v "$t" >/dev/null 2>&1; then
        echo "netns_nat: SKIP: required tool '$t' is not installed" >&2
        exit "${UVS_BENCH_SKIP_STATUS:-0}"
    fi
done
if want kernel && ! command -v iptables >/dev/null 2>&1; then
    log "SKIP kernel: iptables is not installed"
    drop_router kernel
fi
if want uvs; then
    if [ ! -x "$UVS" ] && [ "$UVS_GIVEN" = 0 ] && command -v cargo >/dev/null 2>&1; then
        log "building uvs (cargo build --release)"
        (cd "$REPO" && cargo build --release >&2)
    fi
    if [ ! -x "$UVS" ]; then
        log "SKIP uvs: uvs binary '$UVS' not found (cargo build --release)"
        drop_router uvs
    fi
fi
if [ -z "${ROUTERS// /}" ]; then
    echo "netns_nat: SKIP: nothing left to measure" >&2
    exit "${UVS_BENCH_SKIP_STATUS:-0}"
fi
NCPU=$(nproc)
if [ "$NICE" != 0 ]; then
    renice -n "$NICE" -p $$ >/dev/null # children (uvs, trafgen, iperf3, ping) inherit it
    # With autogroup scheduling (kernel.sched_autogroup_enabled=1) nice ranks threads only
    # inside one session: other sessions (builds) compete as equals unless the autogroup of
    # this session is reniced too (every process of this run is in it).
    if [ -e "/proc/$$/autogroup" ]; then echo "$NICE" >"/proc/$$/autogroup" 2>/dev/null || true; fi
fi
if [ "$SW_CPU" -ge "$NCPU" ]; then
    log "only $NCPU CPUs: switch core $SW_CPU does not exist, using core $((NCPU - 1))"
    SW_CPU=$((NCPU - 1))
fi

# ---------------------------------------------------------------------------------------------
# Names (unique per run: the PID; interface names <= 15 chars) and cleanup.
ID=$$
P="nn${ID}"                          # e.g. nn1234567 (<= 9 chars)
KC="${P}kc" KO="${P}ko" KR="${P}kr"  # kernel run: namespaces c, o, router r
UC="${P}uc" UO="${P}uo"              # uvs run: fresh namespaces c, o
RC="${P}rc" RO="${P}ro"              # kernel: veth ends in r (peers are eth0 in c / o)
HC="${P}hc" HO="${P}ho"              # uvs: veth host ends in the root namespace (afxdp ports)
C_IP=172.31.5.2 GW_C=172.31.5.1 C_NET=172.31.5.0/24
O_IP=10.250.0.2 GW_O=10.250.0.1
TMP="$(mktemp -d "/tmp/netns_nat.${ID}.XXXXXX")"
CLK_TCK=$(getconf CLK_TCK)
ALL_NS="$KC $KO $KR $UC $UO"

PIDS=()   # processes we started (killed by PID)
UVS_PID=""

kill_pid() { # PID: TERM, wait up to 3 s, then KILL
    local pid="$1" i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

del_ns() { # NS: kill every process left in it (by PID), then delete it
    local pid
    ip netns list 2>/dev/null | grep -q "^$1\b" || return 0
    for pid in $(ip netns pids "$1" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$1" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid ns l
    trap - EXIT INT TERM
    set +e
    for pid in "${PIDS[@]}"; do kill_pid "$pid"; done
    for l in "$HC" "$HO" "$RC" "$RO"; do
        ip link show "$l" >/dev/null 2>&1 && ip link del "$l" 2>/dev/null || true
    done
    for ns in $ALL_NS; do del_ns "$ns"; done
    rm -rf "$TMP"
    # Run as `uvs bench`, the script is a copy that goes with it (uvs may have died).
    [ -n "${UVS_BENCH_SCRIPT:-}" ] && [ "$UVS_BENCH_SCRIPT" = "$0" ] && rm -f "$0"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Helpers
nsx() { local ns="$1"; shift; ip netns exec "$ns" "$@"; }
cnt() { nsx "$1" cat "/sys/class/net/eth0/statistics/$2"; } # NS COUNTER
now_ns() { date +%s%N; }
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime+stime of a process
softirq_ticks() { awk '/^cpu /{print $8}' /proc/stat; }   # all CPUs
busy_pct() { # busy % of all CPUs over 1 s
    local a b
    a=$(awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t, $5+$6}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t, $5+$6}' /proc/stat)
    python3 -c "import sys; t0,i0,t1,i1=map(int,sys.argv[1:]); print(round(100*(1-(i1-i0)/max(1,t1-t0))))" $a $b
}
median() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:] if x not in ("","nan")]; print(s.median(v) if v else "nan")' "$@"; }
fmt() { python3 -c 'import sys; f,v=sys.argv[1],sys.argv[2]; print("n/a" if v in ("","nan") else format(float(v), f))' "$@"; }
pct_of_core() { python3 -c "print(100*($2-$1)/$CLK_TCK/$3)"; } # TICKS0 TICKS1 SECONDS

wait_for() { # TIMEOUT_S CMD...: poll CMD until it succeeds or TIMEOUT_S seconds have passed
    local end=$((SECONDS + $1)); shift
    while [ "$SECONDS" -lt "$end" ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

new_ns() { # NS
    ip netns add "$1"
    nsx "$1" ip link set lo up
    nsx "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}

# c and o: eth0 addresses; c's default route via its gateway; o has no route back to c's subnet.
config_c_o() { # C O
    nsx "$1" ip addr add "$C_IP/24" dev eth0
    nsx "$1" ip link set eth0 up
    nsx "$1" ip route add default via "$GW_C"
    nsx "$2" ip addr add "$O_IP/24" dev eth0
    nsx "$2" ip link set eth0 up
}

# The UDP sink in o: a bound socket that never reads (see netns_l2.sh: without it, each 64-byte
# packet to a closed port makes o send an ICMP port unreachable, here back through the NAT too).
start_sink() { # O
    ip netns exec "$1" timeout 3600 python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.bind(("0.0.0.0", 9))
time.sleep(3600)' &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
}

# ---------------------------------------------------------------------------------------------
# NAT verification: a one-shot TCP server in o prints the client address it sees.
verify_nat_once() { # C O: prints the address o saw as the client ("" if none)
    local port=$((7000 + RANDOM % 1000)) spid
    ip netns exec "$2" timeout 10 python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(8)
c, a = s.accept(); c.recv(16); print(a[0]); c.close()' "$O_IP" "$port" >"$TMP/peer.out" 2>/dev/null &
    spid=$!
    PIDS+=("$spid")
    wait_for 5 nsx "$2" sh -c "ss -ltnH | grep -q ':$port '" || true
    nsx "$1" timeout 5 python3 -c '
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=4); s.send(b"hello")' \
        "$O_IP" "$port" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    cat "$TMP/peer.out" 2>/dev/null | head -n 1
}

# ---------------------------------------------------------------------------------------------
# Measurements. Each sets global results; $NS_C / $NS_O are the current c and o namespaces.

# Router CPU: uvs process ticks (CPU_PID set) and the softirq ticks of all CPUs (always).
router_ticks() { if [ -n "$CPU_PID" ]; then proc_ticks "$CPU_PID"; else echo 0; fi; }

# Drops on the uvs ports' veth host ends, which uvs's own counters never see (ethtool -S):
#   ring  rx_queue_N_drops: the veth's XDP ptr_ring (256 frames) was full when the peer transmitted,
#         i.e. the veth NAPI poll (softirq, sender's CPU) that runs XDP fell behind
#   xdp   rx_queue_N_xdp_drops: XDP_REDIRECT to the AF_XDP socket failed (RX ring full or fill
#         ring empty: the uvs worker fell behind)
veth_drops() { # IF...: "IF=N ..." (nothing when not in the uvs run)
    local l
    [ -n "$UVS_PID" ] || return 0
    for l in "$@"; do
        (ethtool -S "$l" 2>/dev/null || true) | awk -F: -v l="$l" '
            /rx_queue_[0-9]+_drops:/ {r += $2} /_xdp_drops:/ {x += $2}
            END {printf "%s:ring=%d %s:xdp=%d ", l, r, l, x}' 
    done | tr -d '\n'
}
drops_delta() { # "A" "B": per-counter difference, e.g. "hc:ring +12 hc:xdp +0 ..."
    python3 -c 'import sys; a=dict(x.split("=") for x in sys.argv[1].split()); b=dict(x.split("=") for x in sys.argv[2].split()); print(" ".join(f"{k} +{int(v)-int(a.get(k,0))}" for k,v in b.items()))' "$1" "$2"
}

# uvs stats deltas (ports' rx/tx and drops, router, worker cpu): logged after each test.
uvs_stats_json() { if [ -n "$UVS_PID" ]; then uvs_ctl --json stats >"$1" 2>/dev/null || echo '{}' >"$1"; fi; }
uvs_stats_delta() { # A.json B.json LABEL
    [ -n "$UVS_PID" ] || return 0
    python3 - "$1" "$2" "$3" <<'EOF' >&2 || true
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
out = []
for name, p in b.get("ports", {}).items():
    q = a.get("ports", {}).get(name, {})
    d = lambda k: p.get(k, 0) - q.get(k, 0)
    s = f"{name} rx {d('rx_packets')} tx {d('tx_packets')}"
    drops = {k: v - q.get("drops", {}).get(k, 0) for k, v in p.get("drops", {}).items()}
    drops = {k: v for k, v in drops.items() if v}
    if drops:
        s += " DROPS " + " ".join(f"{k}={v}" for k, v in drops.items())
    out.append(s)
r0, r1 = a.get("router", {}), b.get("router", {})
out.append("routed %d" % (r1.get("routed", 0) - r0.get("routed", 0)))
w0, w1 = a.get("worker", {}), b.get("worker", {})
wall = max(1, w1.get("wall_ns", 0) - w0.get("wall_ns", 0))
out.append("worker cpu %.0f%%, %d iterations (%d busy), %d sleeps in poll" % (
    100 * (w1.get("cpu_ns", 0) - w0.get("cpu_ns", 0)) / wall,
    *(w1.get(k, 0) - w0.get(k, 0) for k in ("iterations", "busy_iterations", "sleeps"))))
print(f"[netns_nat]   uvs stats during {sys.argv[3]}: " + "; ".join(out))
EOF
}

# TCP c -> o with N parallel streams: sets R_TCP (Gbit/s), R_CPU (router % of one core),
# R_SIRQ (softirq % of one core, all CPUs) and R_PEERS (peer addresses o saw).
tcp_once() { # STREAMS
    local n="$1" port=$((5201 + RANDOM % 1000)) spid cpid c0 c1 s0 s1 t0 t1 el ok=1 v0 v1
    ip netns exec "$NS_O" timeout $((DUR + 25)) taskset -c "$APP_CPU" iperf3 -s -1 -B "$O_IP" -p "$port" \
        >"$TMP/iperf3s.out" 2>&1 &
    spid=$!
    PIDS+=("$spid")
    wait_for 5 nsx "$NS_O" sh -c "ss -ltnH | grep -q ':$port '" || true
    uvs_stats_json "$TMP/st0.json"; v0=$(veth_drops "$HC" "$HO")
    c0=$(router_ticks); s0=$(softirq_ticks); t0=$(now_ns)
    ip netns exec "$NS_C" timeout $((DUR + 15)) taskset -c "$APP_CPU" iperf3 -c "$O_IP" -p "$port" \
        -t "$DUR" -P "$n" -J --connect-timeout 3000 >"$TMP/iperf3.json" 2>"$TMP/iperf3.err" &
    cpid=$!
    PIDS+=("$cpid")
    # Mid-test: who does o think it is talking to? (NAT applied: 10.250.0.1, never 172.31.5.2)
    sleep "$(python3 -c "print(min(1.5, $DUR / 2))")"
    R_PEERS=$(nsx "$NS_O" ss -tnH state established "( sport = :$port )" 2>/dev/null |
        awk '{print $NF}' | sed 's/:[0-9]*$//' | sort | uniq -c | awk '{printf "%s%sx%s", sep, $1, $2; sep=","}' || true)
    if [ -n "$UVS_PID" ] && [ "$n" = 1 ]; then
        uvs_ctl ct-show >"$TMP/ct.out" 2>&1 || true
        if grep -q "$C_IP" "$TMP/ct.out" && grep -q "$GW_O" "$TMP/ct.out" && grep -q "dport=$port " "$TMP/ct.out"; then
            CT_SEEN=1
        fi
        log "  uvs ct-show mid-test: $(grep "dport=$port " "$TMP/ct.out" | head -n 2 | tr -s ' ' | tr '\n' ';')"
    fi
    wait "$cpid" 2>/dev/null || ok=0
    t1=$(now_ns); c1=$(router_ticks); s1=$(softirq_ticks)
    uvs_stats_json "$TMP/st1.json"; v1=$(veth_drops "$HC" "$HO")
    el=$(python3 -c "print(($t1-$t0)/1e9)")
    if [ "$ok" = 1 ]; then
        R_TCP=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["end"]["sum_received"]["bits_per_second"]/1e9)' "$TMP/iperf3.json" 2>/dev/null || echo nan)
        R_RETR=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["end"]["sum_sent"].get("retransmits","?"))' "$TMP/iperf3.json" 2>/dev/null || echo "?")
    else
        R_TCP=nan R_RETR="?"
        log "  iperf3 failed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error",""))' "$TMP/iperf3.json" 2>/dev/null || true) $(head -c 300 "$TMP/iperf3.err")"
    fi
    kill_pid "$spid"
    wait "$spid" 2>/dev/null || true
    R_SIRQ=$(pct_of_core "$s0" "$s1" "$el")
    if [ -n "$CPU_PID" ]; then R_CPU=$(pct_of_core "$c0" "$c1" "$el"); else R_CPU=$R_SIRQ; fi
    case "$R_PEERS" in
    *"$C_IP"*) NAT_BAD=1 ;;
    *"$GW_O"*) NAT_SEEN=1 ;;
    esac
    log "  tcp -P $n: $(fmt .2f "$R_TCP") Gbit/s, retransmits $R_RETR, router cpu $(fmt .0f "$R_CPU")%," \
        "softirq $(fmt .0f "$R_SIRQ")% (of one core, all CPUs); o's peers: ${R_PEERS:-none seen}"
    uvs_stats_delta "$TMP/st0.json" "$TMP/st1.json" "tcp -P $n"
    [ -z "$v1" ] || log "  veth host-end drops (ethtool -S) during tcp -P $n: $(drops_delta "$v0" "$v1")"
}

# 64-byte UDP c -> o port 9 through the NAT (trafgen in c): sets R_PPS (delivered at o) and R_PCT.
pps_once() {
    local s0 d0 r0 t0 s1 d1 r1 t1 sent rcv el c0 c1 v0 v1
    s0=$(cnt "$NS_C" tx_packets); d0=$(cnt "$NS_C" tx_dropped); r0=$(cnt "$NS_O" rx_packets)
    uvs_stats_json "$TMP/st0.json"; v0=$(veth_drops "$HC" "$HO")
    c0=$(router_ticks); t0=$(now_ns)
    # trafgen stops on SIGINT (prints its own count); -k bounds it if it does not.
    nsx "$NS_C" timeout -s INT -k 3 "$DUR" taskset -c "$APP_CPU" \
        trafgen -o eth0 -i "$TG_CFG" -P 1 -Q --no-sock-mem -C >"$TMP/trafgen.out" 2>&1 || true
    t1=$(now_ns); c1=$(router_ticks)
    sleep 0.5 # let queued frames drain before reading the receiver
    s1=$(cnt "$NS_C" tx_packets); d1=$(cnt "$NS_C" tx_dropped); r1=$(cnt "$NS_O" rx_packets)
    uvs_stats_json "$TMP/st1.json"; v1=$(veth_drops "$HC" "$HO")
    sent=$(((s1 - s0) + (d1 - d0))); rcv=$((r1 - r0))
    el=$(python3 -c "print(($t1-$t0)/1e9)")
    R_PPS=$(python3 -c "print($rcv/$el)")
    R_PCT=$(python3 -c "print(100*$rcv/max(1,$sent))")
    log "  udp 64B: sent $sent (c tx_dropped $((d1 - d0))) delivered at o $rcv in ${el}s =" \
        "$(fmt .0f "$R_PPS") pps, $(fmt .1f "$R_PCT")%${CPU_PID:+, uvs cpu $(pct_of_core "$c0" "$c1" "$el" | cut -d. -f1)%}"
    if [ "$sent" -eq 0 ]; then
        log "  trafgen sent nothing:"; sed 's/^/    /' "$TMP/trafgen.out" >&2
    fi
    uvs_stats_delta "$TMP/st0.json" "$TMP/st1.json" "udp 64B"
    [ -z "$v1" ] || log "  veth host-end drops (ethtool -S) during udp 64B: $(drops_delta "$v0" "$v1")"
}

PCT_WITHHELD=0 # set when a repetition had too few replies for p99 or p99.9
ping_once() { # sets R_RTT (avg) and R_P50/R_P99/R_P999 (HDR histogram percentiles), ms or nan
    local out pct
    out=$(nsx "$NS_C" timeout 30 taskset -c "$APP_CPU" ping -c "$PING_N" -i 0.01 "$O_IP" 2>&1 || true)
    R_RTT=$(echo "$out" | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
    R_RTT=${R_RTT:-nan}
    pct=""
    if [ -n "${UVS:-}" ] && [ -x "$UVS" ]; then pct=$(echo "$out" | "$UVS" latency 2>/dev/null || true); fi
    # `uvs latency` prints p50 p99 p99.9 max count. A percentile needs enough samples to
    # stand for anything: p99 at least 100 (one in a hundred), p99.9 at least 1000 (from 200,
    # --quick's count, it was only the largest sample): fewer, and it is withheld (nan).
    read -r R_P50 R_P99 R_P999 _ R_PN _ <<<"${pct:-nan nan nan nan 0}"
    [[ "${R_PN:-}" =~ ^[0-9]+$ ]] || R_PN=0
    if [ "$R_PN" -lt 1000 ]; then R_P999=nan; PCT_WITHHELD=1; fi
    if [ "$R_PN" -lt 100 ]; then R_P99=nan; fi
    log "  ping: avg $R_RTT ms, p50/p99/p99.9 $R_P50/$R_P99/$R_P999 ms from $R_PN replies of $PING_N ($(echo "$out" | grep -o '[0-9]*% packet loss' || echo '?'))"
}

# trafgen config for the current c: 60-byte frames (64 on the wire), UDP c:40000 -> o:9, sent to
# the gateway's MAC (resolved by a ping first).
make_tg_cfg() {
    local smac dmac
    smac=$(nsx "$NS_C" cat /sys/class/net/eth0/address)
    nsx "$NS_C" timeout 3 ping -c 1 -W 1 -q "$GW_C" >/dev/null 2>&1 || true
    dmac=$(nsx "$NS_C" ip neigh show "$GW_C" dev eth0 | awk '/lladdr/{print $3; exit}')
    if [ -z "$dmac" ]; then
        log "  could not resolve the gateway's MAC from c"; dmac=ff:ff:ff:ff:ff:ff
    fi
    TG_CFG="$TMP/udp64.cfg"
    cat >"$TG_CFG" <<EOF
{
  eth(da=$dmac, sa=$smac),
  ipv4(saddr=$C_IP, daddr=$O_IP, ttl=64, df),
  udp(sp=40000, dp=9),
  fill(0x00, 18)
}
EOF
}

declare -A RES_P50 RES_P99 RES_P999 RES_TCP RES_TCP4 RES_PPS RES_PCT RES_RTT RES_CPU RES_SIRQ RES_NOTE RES_BG RES_NAT
measure() { # NAME: REPS x (tcp 1 stream, tcp 4 streams, pps, ping), medians
    local name="$1" i tcp=() tcp4=() pps=() pct=() rtt=() p50=() p99=() p999=() cpu=() sirq=() peer
    NAT_SEEN=0 NAT_BAD=0 CT_SEEN=0
    peer=$(verify_nat_once "$NS_C" "$NS_O")
    log "[$name] NAT check: o's TCP server saw the client as '${peer:-nothing (no connection)}'"
    make_tg_cfg
    start_sink "$NS_O"
    for i in $(seq "$REPS"); do
        log "[$name] repetition $i/$REPS"
        tcp_once 1; tcp+=("$R_TCP"); cpu+=("$R_CPU"); sirq+=("$R_SIRQ")
        tcp_once 4; tcp4+=("$R_TCP")
        pps_once; pps+=("$R_PPS"); pct+=("$R_PCT")
        ping_once; rtt+=("$R_RTT"); p50+=("$R_P50"); p99+=("$R_P99"); p999+=("$R_P999")
    done
    kill_pid "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true
    RES_TCP[$name]=$(median "${tcp[@]}")
    RES_TCP4[$name]=$(median "${tcp4[@]}")
    RES_PPS[$name]=$(median "${pps[@]}")
    RES_PCT[$name]=$(median "${pct[@]}")
    RES_RTT[$name]=$(median "${rtt[@]}")
    RES_P50[$name]=$(median "${p50[@]}")
    RES_P99[$name]=$(median "${p99[@]}")
    RES_P999[$name]=$(median "${p999[@]}")
    RES_CPU[$name]=$(median "${cpu[@]}")
    RES_SIRQ[$name]=$(median "${sirq[@]}")
    local v="o saw"
    if [ "$peer" = "$GW_O" ]; then v="$v $GW_O (python server)"; else v="$v '${peer:-nothing}' (python server: NAT NOT VERIFIED)"; fi
    if [ "$NAT_BAD" = 1 ]; then v="$v; ss in o showed $C_IP: NAT NOT APPLIED";
    elif [ "$NAT_SEEN" = 1 ]; then v="$v; ss in o: iperf3 peers $GW_O"; fi
    RES_NAT[$name]="$v"
    if [ "$peer" = "$GW_O" ] && [ "$NAT_SEEN" = 1 ] && [ "$NAT_BAD" = 0 ]; then NAT_OK=yes; else NAT_OK=NO; fi
    RES_NATOK[$name]=$NAT_OK
}
declare -A RES_NATOK

check_idle() { # NAME: wait (bounded) for an idle machine; record the background load
    local name="$1" b waited=0
    b=$(busy_pct)
    while [ "$b" -gt 15 ] && [ "$waited" -lt "$WAIT_IDLE" ]; do
        log "[$name] machine ${b}% busy before the run; waiting for idle ($waited/${WAIT_IDLE}s)"
        sleep 4; waited=$((waited + 5))
        b=$(busy_pct)
    done
    if [ "$b" -gt 15 ]; then
        log "[$name] WARNING: machine ${b}% busy (other processes) before this router's run: figures are disturbed"
    fi
    RES_BG[$name]=$b
}

# A row whose setup fails (uvs that does not start or take its configuration, c that cannot
# reach o) is not measured: it is reported as FAILED with the reason, left out of the ratios,
# and the run exits 1 at the end. Its logs are copied out of $TMP (which the EXIT trap deletes)
# to /tmp/netns_nat.<PID>.<row>.logs/, whose path is printed.
declare -A RES_FAIL=()
row_failed() { # NAME REASON [LOG...]
    local name="$1" reason="$2" keep
    shift 2
    if [ $# -gt 0 ]; then
        keep="/tmp/netns_nat.${ID}.${name}.logs"
        mkdir -p "$keep"
        cp -r "$@" "$keep/" 2>/dev/null || true
        reason="$reason (logs kept in $keep)"
    fi
    RES_FAIL[$name]="$reason"
    log "[$name] FAILED: $reason"
}
reach_or_fail() { # NAME NS [LOG...]: wait for NS (c) -> o through the router; FAIL the row if never
    local name="$1" ns="$2"
    shift 2
    wait_for 10 nsx "$ns" timeout 2 ping -c 1 -W 1 -q "$O_IP" && return 0
    row_failed "$name" "c cannot reach o through the router" "$@"
    return 1
}

# ---------------------------------------------------------------------------------------------
# Routers: setup, measure, teardown.

run_kernel() {
    local ns
    for ns in "$KC" "$KO" "$KR"; do new_ns "$ns"; done
    ip link add "$RC" type veth peer name eth0 netns "$KC"
    ip link set "$RC" netns "$KR"
    ip link add "$RO" type veth peer name eth0 netns "$KO"
    ip link set "$RO" netns "$KR"
    nsx "$KR" ip addr add "$GW_C/24" dev "$RC"
    nsx "$KR" ip addr add "$GW_O/24" dev "$RO"
    nsx "$KR" ip link set "$RC" up
    nsx "$KR" ip link set "$RO" up
    nsx "$KR" sysctl -qw net.ipv4.ip_forward=1
    nsx "$KR" iptables -t nat -A POSTROUTING -s "$C_NET" -o "$RO" -j MASQUERADE
    config_c_o "$KC" "$KO"
    NS_C=$KC NS_O=$KO CPU_PID=""
    RES_NOTE[kernel]="router namespace, ip_forward + iptables MASQUERADE ($(iptables -V | awk '{print $2, $3}')); CPU = softirq time of all CPUs: forwarding and NAT run in the sender's softirq context, so it also includes the endpoints' own receive processing"
    if reach_or_fail kernel "$KC"; then measure kernel; fi
    log "[kernel] MASQUERADE rule counters: $(nsx "$KR" iptables -t nat -L POSTROUTING -v -n -x | awk '/MASQUERADE/{print $1 " pkts " $2 " bytes"}')"
    del_ns "$KC"; del_ns "$KO"; del_ns "$KR"
}

uvs_ctl() { "$UVS" ctl --socket "$TMP/uvs.sock" "$@"; }
run_uvs() {
    local ok=1 ns
    for ns in "$UC" "$UO"; do new_ns "$ns"; done
    ip link add "$HC" type veth peer name eth0 netns "$UC"
    ip link add "$HO" type veth peer name eth0 netns "$UO"
    for l in "$HC" "$HO"; do
        sysctl -qw "net.ipv6.conf.$l.disable_ipv6=1" || true
        ip link set "$l" up
    done
    config_c_o "$UC" "$UO"
    "$UVS" run --socket "$TMP/uvs.sock" --cores "$SW_CPU" >"$TMP/uvs.log" 2>&1 &
    UVS_PID=$!; PIDS+=("$UVS_PID")
    if ! wait_for 10 uvs_ctl version; then
        log "[uvs] did not start:"; sed 's/^/    /' "$TMP/uvs.log" >&2
        row_failed uvs "uvs did not start" "$TMP/uvs.log"; kill_pid "$UVS_PID"; UVS_PID=""; return 0
    fi
    uvs_ctl add-br br0 "gateway=$GW_C/24" >&2 || ok=0
    uvs_ctl add-br ext "gateway=$GW_O/24" >&2 || ok=0
    uvs_ctl add-port br0 "$HC" type=$PORT_TYPE >&2 || ok=0
    uvs_ctl add-port ext "$HO" type=$PORT_TYPE >&2 || ok=0
    uvs_ctl nat-add masquerade "src=$C_NET" out=ext >&2 || ok=0
    if [ "$ok" = 0 ]; then
        row_failed uvs "uvs configuration failed" "$TMP/uvs.log"; kill_pid "$UVS_PID"; UVS_PID=""; return 0
    fi
    NS_C=$UC NS_O=$UO CPU_PID=$UVS_PID
    RES_NOTE[uvs]="$PORT_TYPE ports, worker on core $SW_CPU; CPU = uvs process (utime+stime; the worker busy-polls while frames flow and sleeps in poll(2) after its linger (20 ms by default) without traffic)"
    if reach_or_fail uvs "$UC" "$TMP/uvs.log"; then
        measure uvs
        RES_NAT[uvs]="${RES_NAT[uvs]}; ct-show $([ "$CT_SEEN" = 1 ] && echo "listed $C_IP <-> $GW_O during the test" || echo "did NOT list the connection")"
        [ "$CT_SEEN" = 1 ] || RES_NATOK[uvs]=NO
    fi
    log "[uvs] stats at the end:"; uvs_ctl stats 2>&1 | sed 's/^/    /' >&2 || true
    log "[uvs] ct-show at the end: $(uvs_ctl ct-show 2>&1 | head -n 8 | tr -s ' ' | tr '\n' ';')"
    kill_pid "$UVS_PID"; wait "$UVS_PID" 2>/dev/null || true
    UVS_PID="" CPU_PID=""
    ip link del "$HC" 2>/dev/null || true
    ip link del "$HO" 2>/dev/null || true
    del_ns "$UC"; del_ns "$UO"
}

# ---------------------------------------------------------------------------------------------
log "routers:$ROUTERS; $REPS repetition(s), ${DUR}s traffic; traffic tools on CPU $APP_CPU, uvs worker on core $SW_CPU; kernel $(uname -r)"
for s in $ROUTERS; do
    check_idle "$s"
    log "[$s] setting up"
    case "$s" in
    kernel) run_kernel ;;
    uvs) run_uvs ;;
    esac
done

# ---------------------------------------------------------------------------------------------
# Report
# How the uvs daemons of this run poll: the environment reaches them (`UVS_BUSY_POLL=1 uvs bench
# ...` measures busy-polling), so the header says which, or a saved table could not tell.
uvs_poll_mode() {
    case "${UVS_BUSY_POLL:-}" in
        1 | true | yes | on) echo "busy-poll (UVS_BUSY_POLL)" ;;
        *) echo "sleeps after ${UVS_POLL_LINGER_US:-20000} us without traffic$([ -n "${UVS_POLL_LINGER_US:-}" ] && echo ' (UVS_POLL_LINGER_US)')" ;;
    esac
}
ratio() { # A B: A/B formatted, or n/a
    python3 -c 'import sys,math; a,b=(float(x) if x not in ("","nan") else math.nan for x in sys.argv[1:3]); print("n/a" if math.isnan(a) or math.isnan(b) or b==0 else f"{a/b:.2f}x")' "${1:-nan}" "${2:-nan}"
}
echo "netns NAT benchmark (c -> router with masquerade -> o), $(date -u +%Y-%m-%dT%H:%MZ), kernel $(uname -r), $NCPU CPUs;" \
    "median of $REPS x ${DUR}s; traffic tools on CPU $APP_CPU, uvs worker on core $SW_CPU; nice $NICE"
if want uvs; then
    # Run as `uvs bench nat` the script is a copy outside any checkout: no repo to name then.
    if rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
        git -C "$REPO" diff --quiet HEAD 2>/dev/null || rev="$rev + uncommitted changes"
    else
        rev="unknown (script run from the binary)"
    fi
    echo "uvs ($PORT_TYPE ports): $UVS (built $(date -u -r "$UVS" +%Y-%m-%dT%H:%MZ)), repo at $rev; $(uvs_poll_mode)"
fi
echo
# Said under the table when a repetition had too few replies for a percentile (n/a there).
pct_note() {
    [ "$PCT_WITHHELD" = 1 ] || return 0
    echo "Ping percentiles: p99 is given from 100 replies a repetition, p99.9 from 1000; with fewer" \
        "(this run sent $PING_N pings a repetition$([ "$QUICK" = 1 ] && echo ', --quick')) they are n/a, not the largest samples."
}
pct3() { echo "$(fmt .3f "${RES_P50[$1]:-nan}") / $(fmt .3f "${RES_P99[$1]:-nan}") / $(fmt .3f "${RES_P999[$1]:-nan}")"; }
echo "| router | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | 64B UDP pps delivered | delivered/sent | ping avg ms | ping p50 / p99 / p99.9 ms | router CPU % (TCP 1 stream) | softirq % (TCP 1 stream) | NAT verified |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for s in $ROUTERS; do
    if [ -n "${RES_FAIL[$s]:-}" ]; then
        echo "| $s | FAILED | | | | | | | | |"
        continue
    fi
    if [ -z "${RES_TCP[$s]:-}" ]; then
        echo "| $s | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"
        continue
    fi
    cpu="$(fmt .0f "${RES_CPU[$s]}")"
    if [ "$s" = kernel ]; then cpu="$cpu (softirq)"; else cpu="$cpu (process)"; fi
    echo "| $s | $(fmt .2f "${RES_TCP[$s]}") | $(fmt .2f "${RES_TCP4[$s]}") | $(fmt ,.0f "${RES_PPS[$s]}") | $(fmt .1f "${RES_PCT[$s]}")% | $(fmt .3f "${RES_RTT[$s]}") | $(pct3 "$s") | $cpu | $(fmt .0f "${RES_SIRQ[$s]}") | ${RES_NATOK[$s]:-?} |"
done
if want uvs && want kernel && [ -z "${RES_FAIL[uvs]:-}${RES_FAIL[kernel]:-}" ] && [ -n "${RES_TCP[uvs]:-}" ] && [ -n "${RES_TCP[kernel]:-}" ]; then
    echo "| uvs / kernel | $(ratio "${RES_TCP[uvs]}" "${RES_TCP[kernel]}") | $(ratio "${RES_TCP4[uvs]}" "${RES_TCP4[kernel]}") | $(ratio "${RES_PPS[uvs]}" "${RES_PPS[kernel]}") | | $(ratio "${RES_RTT[uvs]}" "${RES_RTT[kernel]}") | $(ratio "${RES_P99[uvs]}" "${RES_P99[kernel]}") (p99) | $(ratio "${RES_CPU[uvs]}" "${RES_CPU[kernel]}") | $(ratio "${RES_SIRQ[uvs]}" "${RES_SIRQ[kernel]}") | |"
fi
echo
echo "CPU columns are % of one core over the 1-stream TCP test; softirq is summed over all CPUs."
for s in $ROUTERS; do
    if [ -n "${RES_FAIL[$s]:-}" ]; then
        echo "- $s: FAILED, not measured: ${RES_FAIL[$s]}"
        continue
    fi
    echo "- $s: ${RES_NOTE[$s]:-}; NAT: ${RES_NAT[$s]:-not checked}; machine ${RES_BG[$s]:-?}% busy just before"
done
if [ "$PCT_WITHHELD" = 1 ]; then echo; pct_note; fi
if [ ${#RES_FAIL[@]} -gt 0 ]; then
    echo
    echo "FAILED (not measured, left out of the ratios):$(for s in $ROUTERS; do [ -z "${RES_FAIL[$s]:-}" ] || printf ' %s;' "$s"; done) see the notes above"
    log "FAILED rows:$(for s in $ROUTERS; do [ -z "${RES_FAIL[$s]:-}" ] || printf ' %s (%s);' "$s" "${RES_FAIL[$s]}"; done)"
    exit 1
fi
