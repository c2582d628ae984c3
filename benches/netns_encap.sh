#!/usr/bin/env bash
# netns VXLAN encapsulation-overhead benchmark: the same two namespace "containers" c1 -> c2
# joined, in one run, by five paths:
#   1 kbr     kernel bridge, no encapsulation (c1, c2 veths on one bridge in host A's namespace)
#   2 kvx     kernel vxlan pair: host A and host B namespaces, each a bridge + vxlan id 42
#             (dstport 4789) over an underlay veth pair; c1 behind A, c2 behind B
#   3 uvs     uvs without encapsulation: c1, c2 on one uvs bridge (AF_XDP ports, or --port-type)
#   4 uvsvx   uvs VTEP pair: uvs A (root namespace) <-> uvs B (inside host B's namespace)
#   5 uvskvx  uvs VTEP (host A) <-> kernel vxlan VTEP (host B)
# and for each: iperf3 TCP c1 -> c2 Gbit/s, 64-byte UDP pps delivered at c2 (trafgen) and the
# share of sent, ping avg RTT and p50/p99/p99.9 (HDR histogram), CPU of the uvs processes. Then the overhead ratios
# (encapsulated / own non-encapsulated path) for the kernel and for uvs.
#
# Usage: sudo benches/netns_encap.sh [--quick] [--uvs PATH] [--only 1,2,3,4,5] [--duration S]
#                                    [--reps N] [--app-cpu CPUS] [--switch-cpu N] [--b-cpu N|any]
#                                    [--wait-idle S] [--nice N]
# Progress goes to stderr, the Markdown table to stdout. See docs/benchmarks.md.
set -euo pipefail

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --quick          1 repetition, 2 s traffic (CI smoke run)
  --uvs PATH       uvs binary (default: target/release/uvs of this repo, else `command -v uvs`)
  --only LIST      comma-separated subset of the paths, by number or name:
                   1|kbr, 2|kvx, 3|uvs, 4|uvsvx, 5|uvskvx (default: all)
  --duration S     seconds of traffic per TCP / pps test (default 5, quick 2)
  --reps N         repetitions per measurement, the median is reported (default 3, quick 1)
  --app-cpu CPUS   CPU list the traffic tools run on (trafgen, iperf3, ping) (default 0)
  --switch-cpu N   core of uvs A's worker (paths 3, 4, 5) (default 1)
  --b-cpu N|any    core of uvs B's worker (path 4) (default: the same core as uvs A, so the
                   pair has the CPU budget of the plain uvs row; `any` = unpinned)
  --wait-idle S    wait up to S seconds for the machine to be idle (<15% busy) before each
                   path (default 0: do not wait, only warn)
  --nice N         run everything at this nice value, e.g. -10 on a shared machine
  --port-type T    uvs port type on the veths: afxdp (default) or afpacket (AF_PACKET with
                   PACKET_VNET_HDR: TCP super-frames cross uvs whole)
EOF
}

# ---------------------------------------------------------------------------------------------
# Options
QUICK=0
ONLY="1,2,3,4,5"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." 2>/dev/null && pwd || echo /nonexistent)"
UVS=""
DUR=""
REPS=""
APP_CPU=0
SW_CPU=1
SW_CPU_GIVEN=0
B_CPU=""
WAIT_IDLE=0
NICE=0
PORT_TYPE=afxdp
need() { # OPTION [VALUE]: exit 2 naming the option when its value is missing
    [ $# -ge 2 ] && [ -n "$2" ] || { echo "netns_encap: $1 needs a value (see --help)" >&2; exit 2; }
}
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --uvs) need "$@"; UVS="$2"; shift ;;
    --only) need "$@"; ONLY="$2"; shift ;;
    --duration) need "$@"; DUR="$2"; shift ;;
    --reps) need "$@"; REPS="$2"; shift ;;
    --app-cpu) need "$@"; APP_CPU="$2"; shift ;;
    --switch-cpu) need "$@"; SW_CPU="$2"; SW_CPU_GIVEN=1; shift ;;
    --b-cpu) need "$@"; B_CPU="$2"; shift ;;
    --wait-idle) need "$@"; WAIT_IDLE="$2"; shift ;;
    --nice) need "$@"; NICE="$2"; shift ;;
    --port-type) need "$@"; PORT_TYPE="$2"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "netns_encap: unknown argument '$1' (see --help)" >&2; exit 2 ;;
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
bad() { echo "netns_encap: $*" >&2; exit 2; }
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
if [ -n "$B_CPU" ] && [ "$B_CPU" != any ]; then cpu_ok --b-cpu "$B_CPU"; fi
B_CPU="${B_CPU:-$SW_CPU}"

PATH_NAMES=(x kbr kvx uvs uvsvx uvskvx)
declare -A TITLE=(
    [kbr]="kernel bridge"
    [kvx]="kernel vxlan pair"
    [uvs]="uvs plain"
    [uvsvx]="uvs VTEP pair"
    [uvskvx]="uvs VTEP <-> kernel VTEP"
)
declare -A NUM=([kbr]=1 [kvx]=2 [uvs]=3 [uvsvx]=4 [uvskvx]=5)
SEL=""
for s in ${ONLY//,/ }; do
    case "$s" in
    1 | 2 | 3 | 4 | 5) s="${PATH_NAMES[$s]}" ;;
    kbr | kvx | uvs | uvsvx | uvskvx) ;;
    *) echo "netns_encap: unknown path '$s' in --only (1-5 or kbr,kvx,uvs,uvsvx,uvskvx)" >&2; exit 2 ;;
    esac
    case " $SEL " in *" $s "*) ;; *) SEL="$SEL $s" ;; esac
done
# Run in the canonical order whatever --only said.
PATHS=""
for s in kbr kvx uvs uvsvx uvskvx; do case " $SEL " in *" $s "*) PATHS="$PATHS $s" ;; esac; done

log() { echo "[netns_encap $(date +%T)] $*" >&2; }
want() { case " $PATHS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
drop_path() { PATHS="$(echo " $PATHS " | sed "s/ $1 / /")"; }
needs_uvs() { want uvs || want uvsvx || want uvskvx; }

# ---------------------------------------------------------------------------------------------
# Preconditions: root and tools (a missing one is a SKIP with exit 0, as CI may lack it).
if [ "$(id -u)" != 0 ]; then
    echo "netns_encap: SKIP: needs root (network namespaces, veth, vxlan, AF_XDP)" >&2
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
        echo "netns_encap: another benchmark is running ($(cat "$LOCK_FILE" 2>/dev/null || echo '?'); lock $LOCK_FILE):" \
            "two at once share the CPUs and both would report as if alone. Run this one when it has finished." >&2
        exit 1
    fi
    echo "netns_encap PID $$" >"$LOCK_FILE"
else
    echo "netns_encap: WARNING: no flock, so nothing stops a second benchmark from running at the same time" >&2
fi
for t in ip iperf3 trafgen ping python3 taskset timeout sysctl ss; do
    if ! command -v "$t" >/dev/null 2>&1; then
        echo "netns_encap: SKIP: required tool '$t' is not installed" >&2
        exit "${UVS_BENCH_SKIP_STATUS:-0}"
    fi
done
if ! ip link add "nechk$$" type vxlan id 1 dstport 4789 local 127.0.0.1 >/dev/null 2>&1; then
    log "SKIP kvx, uvskvx: the kernel cannot create vxlan devices (module vxlan missing?)"
    drop_path kvx; drop_path uvskvx
else
    ip link del "nechk$$" 2>/dev/null || true
fi
if needs_uvs; then
    if [ -z "$UVS" ]; then
        # Default: this repo's release binary (built if the repo is here and it is missing),
        # else whatever `uvs` is on PATH (the script may run from a copy in /tmp).
        if [ ! -x "$REPO/target/release/uvs" ] && [ -f "$REPO/Cargo.toml" ] &&
            command -v cargo >/dev/null 2>&1; then
            log "building uvs (cargo build --release in $REPO)"
            (cd "$REPO" && cargo build --release >&2) || true
        fi
        if [ -x "$REPO/target/release/uvs" ]; then
            UVS="$REPO/target/release/uvs"
        else
            UVS="$(command -v uvs || true)"
        fi
    fi
    if [ -z "$UVS" ] || [ ! -x "$UVS" ]; then
        log "SKIP uvs, uvsvx, uvskvx: uvs binary '${UVS:-}' not found (cargo build --release or --uvs PATH)"
        drop_path uvs; drop_path uvsvx; drop_path uvskvx
    else
        UVS="$(cd "$(dirname "$UVS")" && pwd)/$(basename "$UVS")"
    fi
fi
if [ -z "${PATHS// /}" ]; then
    echo "netns_encap: SKIP: nothing left to measure" >&2
    exit "${UVS_BENCH_SKIP_STATUS:-0}"
fi
NCPU=$(nproc)
if [ "$SW_CPU" -ge "$NCPU" ]; then
    log "only $NCPU CPUs: switch core $SW_CPU does not exist, using core $((NCPU - 1))"
    SW_CPU=$((NCPU - 1))
fi
if [ "$B_CPU" != any ] && [ "$B_CPU" -ge "$NCPU" ]; then
    log "only $NCPU CPUs: uvs B core $B_CPU does not exist, using core $((NCPU - 1))"
    B_CPU=$((NCPU - 1))
fi
if [ "$NICE" != 0 ]; then
    renice -n "$NICE" -p $$ >/dev/null # children (uvs, trafgen, iperf3, ping) inherit it
    # With autogroup scheduling (kernel.sched_autogroup_enabled=1) nice ranks threads only
    # inside one session: other sessions (builds) compete as equals unless the autogroup of
    # this session is reniced too (every process of this run is in it).
    if [ -e "/proc/$$/autogroup" ]; then echo "$NICE" >"/proc/$$/autogroup" 2>/dev/null || true; fi
fi

# ---------------------------------------------------------------------------------------------
# Names (unique per run: the PID; interface names <= 15 chars) and cleanup.
ID=$$
P="ne${ID}"                         # <= 9 chars (pid_max is at most 4194304)
C1="${P}c1" C2="${P}c2"             # container namespaces (persist over all paths)
HA="${P}ha" HB="${P}hb"             # host A / host B namespaces (made per path)
H1="${P}h1" H2="${P}h2"             # root-namespace veth ends of c1 / c2 (uvs paths)
UA="${P}ua"                         # root-namespace end of the underlay veth (uvs A's uplink)
ROOT_LINKS=("$H1" "$H2" "$UA")
# 198.18.0.0/15 (benchmarking range): overlay (container) subnet and underlay subnet.
N=$((ID % 250))
IP1="198.18.$N.1" IP2="198.18.$N.2"
U1="198.19.$N.1" U2="198.19.$N.2"
MAC1=02:00:c6:12:00:01 MAC2=02:00:c6:12:00:02
TMP="$(mktemp -d "/tmp/netns_encap.${ID}.XXXXXX")"
CLK_TCK=$(getconf CLK_TCK)

PIDS=()             # processes we started (killed by PID)
UVSA_PID="" UVSB_PID=""

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

del_ns() { # NS: kill what still runs in it (only our namespaces), delete it
    local pid
    ip netns list 2>/dev/null | grep -qw "^$1" || return 0
    for pid in $(ip netns pids "$1" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$1" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid l
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill_pid "$pid"; done
    for l in "${ROOT_LINKS[@]}"; do
        ip link show "$l" >/dev/null 2>&1 && ip link del "$l" 2>/dev/null || true
    done
    for ns in "$HA" "$HB" "$C1" "$C2"; do del_ns "$ns"; done
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
cnt() { nsx "$1" cat "/sys/class/net/eth0/statistics/$2"; } # NS COUNTER (of eth0)
now_ns() { date +%s%N; }
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # utime+stime
softirq_ticks() { awk '/^cpu /{print $8}' /proc/stat; }                          # all CPUs
busy_pct() { # busy % of all CPUs over 1 s
    local a b
    a=$(awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t, $5+$6}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t, $5+$6}' /proc/stat)
    python3 -c "import sys; t0,i0,t1,i1=map(int,sys.argv[1:]); print(round(100*(1-(i1-i0)/max(1,t1-t0))))" $a $b
}
median() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:] if x not in ("","nan")]; print(s.median(v) if v else "nan")' "$@"; }
fmt() { python3 -c 'import sys; f,v=sys.argv[1],sys.argv[2]; print("n/a" if v in ("nan","") else format(float(v), f))' "$@"; }
calc() { python3 -c "import math; nan=math.nan; print($1)"; }

wait_for() { # TIMEOUT_S CMD...: poll CMD until it succeeds or TIMEOUT_S seconds have passed
    local end=$((SECONDS + $1)); shift
    while [ "$SECONDS" -lt "$end" ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

new_ns() { # NS: a namespace with lo up and no IPv6 (no RS/MLD/DAD chatter in the counters)
    ip netns add "$1"
    nsx "$1" ip link set lo up
    nsx "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}
no_v6() { sysctl -qw "net.ipv6.conf.$1.disable_ipv6=1" 2>/dev/null || true; } # root-ns link

# A veth from namespace NS (or "" = root) named HOSTEND to container CNS as eth0.
# Sets the container side's MAC, address, MTU, up.
attach_container() { # NS HOSTEND CNS MAC IP MTU
    local ns="$1" h="$2" c="$3"
    if [ -n "$ns" ]; then
        ip -n "$ns" link add "$h" type veth peer name eth0 netns "$c"
        ip -n "$ns" link set "$h" up
    else
        ip link add "$h" type veth peer name eth0 netns "$c"
        no_v6 "$h"
        ip link set "$h" up
    fi
    nsx "$c" ip link set eth0 address "$4"
    nsx "$c" ip addr add "$5/24" dev eth0
    nsx "$c" ip link set eth0 mtu "$6"
    nsx "$c" ip link set eth0 up
}
detach_containers() { # remove c1's and c2's eth0 (and with it the peer end, wherever it is)
    nsx "$C1" ip link del eth0 2>/dev/null || true
    nsx "$C2" ip link del eth0 2>/dev/null || true
}

reachable() { nsx "$C1" timeout 2 ping -c 1 -W 1 -q "$IP2"; }

# Kernel VTEP in namespace NS: vxlan 42 on the underlay device DEV (addressed LOCAL) towards
# REMOTE, on a kernel bridge with the container veth end PORT.
kernel_vtep() { # NS DEV LOCAL REMOTE PORT
    local ns="$1"
    ip -n "$ns" addr add "$3/24" dev "$2"
    ip -n "$ns" link set "$2" up
    ip -n "$ns" link add vx42 type vxlan id 42 dstport 4789 local "$3" remote "$4" dev "$2"
    ip -n "$ns" link add kbr type bridge stp_state 0 mcast_snooping 0
    ip -n "$ns" link set vx42 master kbr
    ip -n "$ns" link set "$5" master kbr
    for d in vx42 kbr; do ip -n "$ns" link set "$d" up; done
}

# ---------------------------------------------------------------------------------------------
# uvs daemons: A in the root namespace, B inside host B's namespace.
uvsa() { timeout 20 "$UVS" ctl --socket "$TMP/a.sock" "$@"; }
uvsb() { timeout 20 ip netns exec "$HB" "$UVS" ctl --socket "$TMP/b.sock" "$@"; }
start_uvs_a() {
    rm -f "$TMP/a.sock"
    "$UVS" run --socket "$TMP/a.sock" --cores "$SW_CPU" >"$TMP/uvsa.log" 2>&1 &
    UVSA_PID=$!; PIDS+=("$UVSA_PID")
    if ! wait_for 10 uvsa version; then
        log "uvs A did not start:"; sed 's/^/    /' "$TMP/uvsa.log" >&2; return 1
    fi
}
start_uvs_b() {
    local cores=()
    [ "$B_CPU" = any ] || cores=(--cores "$B_CPU")
    rm -f "$TMP/b.sock"
    # `ip netns exec` execs uvs: $! is uvs's own PID.
    ip netns exec "$HB" "$UVS" run --socket "$TMP/b.sock" "${cores[@]}" >"$TMP/uvsb.log" 2>&1 &
    UVSB_PID=$!; PIDS+=("$UVSB_PID")
    if ! wait_for 10 uvsb version; then
        log "uvs B did not start:"; sed 's/^/    /' "$TMP/uvsb.log" >&2; return 1
    fi
}
# Counters of a daemon, summarised on one line: drops by reason and port errors.
uvs_stats_summary() { # a|b
    local out
    out=$("uvs$1" --json stats 2>/dev/null || true)
    [ -n "$out" ] || { echo "(stats unavailable)"; return; }
    echo "$out" >"$TMP/stats.$1.json"
    python3 - "$TMP/stats.$1.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
res = []
def walk(o, path):
    if isinstance(o, dict):
        for k, v in o.items():
            walk(v, path + [str(k)])
    elif isinstance(o, list):
        for i, v in enumerate(o):
            walk(v, path + [str(i)])
    elif isinstance(o, (int, float)) and not isinstance(o, bool) and o:
        p = ".".join(path)
        if any(w in p.lower() for w in ("drop", "err", "fail", "miss", "full", "empty", "invalid")):
            res.append(f"{p}={o}")
walk(d, [])
print(", ".join(res) if res else "no drops/errors")
EOF
}
uvs_ports_summary() { # a|b: per-port rx/tx packets, on one line
    "uvs$1" --json stats 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("; ".join(n + " rx " + str(p.get("rx_packets")) + " tx " + str(p.get("tx_packets")) for n, p in (d.get("ports") or {}).items()))' 2>/dev/null || echo "?"
}
stop_uvs() { # log each daemon's counters, then SIGTERM by PID
    if [ -n "$UVSB_PID" ]; then
        log "  uvs B ports: $(uvs_ports_summary b)"
        log "  uvs B drops/errors: $(uvs_stats_summary b)"
        cp "$TMP/stats.b.json" "$TMP/last_stats_b.json" 2>/dev/null || true
        kill_pid "$UVSB_PID"; wait "$UVSB_PID" 2>/dev/null || true
    fi
    if [ -n "$UVSA_PID" ]; then
        log "  uvs A ports: $(uvs_ports_summary a)"
        log "  uvs A drops/errors: $(uvs_stats_summary a)"
        kill_pid "$UVSA_PID"; wait "$UVSA_PID" 2>/dev/null || true
    fi
    UVSA_PID="" UVSB_PID=""
}

# ---------------------------------------------------------------------------------------------
# Measurements. Each sets globals (R_*).

# trafgen config: 60-byte frames (64 on the wire with the FCS), UDP c1 -> c2 port 9 (discard).
TG_CFG="$TMP/udp64.cfg"
cat >"$TG_CFG" <<EOF
{
  eth(da=$MAC2, sa=$MAC1),
  ipv4(saddr=$IP1, daddr=$IP2, ttl=64, df),
  udp(sp=40000, dp=9),
  fill(0x00, 18)
}
EOF

# CPU counters for the current path: the uvs processes, or (kernel) softirq time of all CPUs.
cpu_snap() { # prints "A B softirq"
    echo "$( [ -n "$UVSA_PID" ] && proc_ticks "$UVSA_PID" || echo 0) $( [ -n "$UVSB_PID" ] && proc_ticks "$UVSB_PID" || echo 0) $(softirq_ticks)"
}
cpu_pct() { # "A0 B0 S0" "A1 B1 S1" SECONDS: sets R_CA R_CB R_CS (% of one core)
    local a0 b0 s0 a1 b1 s1
    read -r a0 b0 s0 <<<"$1"; read -r a1 b1 s1 <<<"$2"
    R_CA=$(calc "100*($a1-$a0)/$CLK_TCK/$3"); R_CB=$(calc "100*($b1-$b0)/$CLK_TCK/$3")
    R_CS=$(calc "100*($s1-$s0)/$CLK_TCK/$3")
    [ -n "$UVSA_PID" ] || R_CA=nan
    [ -n "$UVSB_PID" ] || R_CB=nan
}
cpu_str() { # human-readable R_C*
    local s=""
    [ "$R_CA" = nan ] || s="uvs A $(fmt .0f "$R_CA")%"
    [ "$R_CB" = nan ] || s="$s, uvs B $(fmt .0f "$R_CB")%"
    echo "${s:+$s, }softirq $(fmt .0f "$R_CS")%"
}

# Drop counters along the path, for the stderr line: veth rx_dropped where uvs's XDP redirect
# fails (root-namespace ends and host B's underlay end) and c2's own rx_dropped.
# path_drops prints one "DEV=N" word per device; drops_delta turns two such snapshots into the
# non-zero differences ("none" if nothing was dropped). Devices are NS:DEV or DEV (root ns).
DROP_DEVS=()
path_drops() {
    local d v
    for d in "${DROP_DEVS[@]}"; do
        case "$d" in
        *:*) v=$(nsx "${d%%:*}" cat "/sys/class/net/${d#*:}/statistics/rx_dropped" 2>/dev/null || echo 0) ;;
        *) v=$(cat "/sys/class/net/$d/statistics/rx_dropped" 2>/dev/null || echo 0) ;;
        esac
        printf '%s=%s ' "${d//$P/}" "$v"
    done
}
drops_delta() { # "BEFORE" "AFTER"
    python3 -c '
import sys
a = dict(w.split("=") for w in sys.argv[1].split())
b = dict(w.split("=") for w in sys.argv[2].split())
d = [f"{k} {int(b[k]) - int(a.get(k, 0))}" for k in b if int(b[k]) - int(a.get(k, 0))]
print(", ".join(d) if d else "none")' "$1" "$2"
}

pps_once() { # sets R_PPS R_PCT R_CA R_CB R_CS
    local s0 d0 r0 c0 t0 s1 d1 r1 c1 t1 sent rcv el x0 x1
    s0=$(cnt "$C1" tx_packets); d0=$(cnt "$C1" tx_dropped); r0=$(cnt "$C2" rx_packets)
    x0=$(path_drops); c0=$(cpu_snap); t0=$(now_ns)
    # trafgen stops on SIGINT; -k bounds it if it does not.
    nsx "$C1" timeout -s INT -k 3 "$DUR" taskset -c "$APP_CPU" \
        trafgen -o eth0 -i "$TG_CFG" -P 1 -Q --no-sock-mem -C >"$TMP/trafgen.out" 2>&1 || true
    t1=$(now_ns); c1=$(cpu_snap)
    sleep 0.5 # let queued frames drain before reading the receiver
    s1=$(cnt "$C1" tx_packets); d1=$(cnt "$C1" tx_dropped); r1=$(cnt "$C2" rx_packets)
    x1=$(path_drops)
    sent=$(((s1 - s0) + (d1 - d0))); rcv=$((r1 - r0))
    el=$(calc "($t1-$t0)/1e9")
    R_PPS=$(calc "$rcv/$el")
    R_PCT=$(calc "100*$rcv/max(1,$sent)")
    cpu_pct "$c0" "$c1" "$el"
    log "  pps: sent $sent (c1 tx_dropped $((d1 - d0))) delivered $rcv in $(fmt .2f "$el")s =" \
        "$(fmt .0f "$R_PPS") pps, $(fmt .1f "$R_PCT")%; rx_dropped on the path: $(drops_delta "$x0" "$x1"); cpu: $(cpu_str)"
    if [ "$sent" -eq 0 ]; then
        log "  trafgen sent nothing:"; sed 's/^/    /' "$TMP/trafgen.out" >&2
    fi
}

tcp_once() { # sets R_TCP (Gbit/s or nan), R_RETR, R_TA R_TB (uvs CPU % during the test)
    local port=$((5201 + RANDOM % 1000)) spid c0 c1 t0 t1 x0 x1
    nsx "$C2" timeout $((DUR + 20)) taskset -c "$APP_CPU" iperf3 -s -1 -B "$IP2" -p "$port" \
        >"$TMP/iperf3s.out" 2>&1 &
    spid=$!
    PIDS+=("$spid")
    wait_for 5 nsx "$C2" sh -c "ss -ltn | grep -q ':$port '" || true
    x0=$(path_drops); c0=$(cpu_snap); t0=$(now_ns)
    if nsx "$C1" timeout $((DUR + 15)) taskset -c "$APP_CPU" iperf3 -c "$IP2" -p "$port" \
        -t "$DUR" -J --connect-timeout 3000 >"$TMP/iperf3.json" 2>"$TMP/iperf3.err"; then
        R_TCP=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["end"]["sum_received"]["bits_per_second"]/1e9)' "$TMP/iperf3.json" 2>/dev/null || echo nan)
        R_RETR=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["end"]["sum_sent"].get("retransmits","?"))' "$TMP/iperf3.json" 2>/dev/null || echo "?")
    else
        R_TCP=nan R_RETR="?"
        log "  iperf3 failed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error",""))' "$TMP/iperf3.json" 2>/dev/null || true) $(head -c 300 "$TMP/iperf3.err")"
    fi
    t1=$(now_ns); c1=$(cpu_snap); x1=$(path_drops)
    cpu_pct "$c0" "$c1" "$(calc "($t1-$t0)/1e9")"
    R_TA=$R_CA R_TB=$R_CB R_TS=$R_CS
    kill_pid "$spid"
    wait "$spid" 2>/dev/null || true
    log "  tcp: $(fmt .2f "$R_TCP") Gbit/s, $R_RETR retransmits; rx_dropped on the path: $(drops_delta "$x0" "$x1"); cpu: $(cpu_str)"
}

PCT_WITHHELD=0 # set when a repetition had too few replies for p99 or p99.9
ping_once() { # sets R_RTT (avg) and R_P50/R_P99/R_P999 (HDR histogram percentiles), ms or nan
    local out pct
    out=$(nsx "$C1" timeout 30 taskset -c "$APP_CPU" ping -c "$PING_N" -i 0.01 "$IP2" 2>&1 || true)
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

declare -A RES_P50 RES_P99 RES_P999 RES_PPS RES_PCT RES_TCP RES_RTT RES_CPUP RES_CPUT RES_NOTE RES_BG RES_REPS RES_DROPS
measure() { # NAME: REPS x (TCP, pps, ping); store medians and the repetitions
    local name="$1" i tag mark pps=() pct=() tcp=() rtt=() p50=() p99=() p999=() cpup=() cput=() reps=""
    local tcp_ok=() pps_ok=()
    tag="[${NUM[$name]}/5] ${TITLE[$name]}"
    for i in $(seq "$REPS"); do
        log "$tag: TCP run $i/$REPS ..."
        tcp_once; tcp+=("$R_TCP")
        cput+=("$(uvs_cpu_sum "$R_TA" "$R_TB" "$R_TS")")
        log "$tag: 64B UDP pps run $i/$REPS ..."
        pps_once; pps+=("$R_PPS"); pct+=("$R_PCT")
        cpup+=("$(uvs_cpu_sum "$R_CA" "$R_CB" "$R_CS")")
        log "$tag: ping run $i/$REPS ..."
        ping_once; rtt+=("$R_RTT"); p50+=("$R_P50"); p99+=("$R_P99"); p999+=("$R_P999")
        # A uvs worker that is not near 100% of its core while it drops frames did not get the
        # core (other processes; see "Noise" in docs/benchmarks.md): mark the repetition.
        mark=""
        if [ "$R_CA" != nan ] && [ "$(calc "int(${cpup[-1]} < 80 and $R_PCT < 99)")" = 1 ]; then
            mark=" (*)"; ANY_DISTURBED=1
        else # the verdict uses these only
            tcp_ok+=("${tcp[-1]}"); pps_ok+=("$R_PPS")
        fi
        reps="$reps | $(fmt .2f "$R_TCP") / $(fmt .0f "$(calc "$R_PPS/1000")")k / $(fmt .0f "$R_PCT")% / $(fmt .3f "$R_RTT") / $(fmt .0f "${cpup[-1]}")$mark"
    done
    RES_TCP[$name]=$(median "${tcp[@]}")
    RES_PPS[$name]=$(median "${pps[@]}")
    RES_PCT[$name]=$(median "${pct[@]}")
    RES_RTT[$name]=$(median "${rtt[@]}")
    RES_P50[$name]=$(median "${p50[@]}")
    RES_P99[$name]=$(median "${p99[@]}")
    RES_P999[$name]=$(median "${p999[@]}")
    RES_CPUP[$name]=$(median "${cpup[@]}")
    RES_CPUT[$name]=$(median "${cput[@]}")
    RES_REPS[$name]="$reps"
    RES_TCP_OK[$name]=$(median "${tcp_ok[@]}")
    RES_PPS_OK[$name]=$(median "${pps_ok[@]}")
    RES_NOK[$name]=${#pps_ok[@]}
}
declare -A RES_TCP_OK RES_PPS_OK RES_NOK
ANY_DISTURBED=0
# The CPU figure of a row: the sum of the uvs processes, or softirq for kernel-only rows.
uvs_cpu_sum() { # A B S
    if [ "$1" = nan ] && [ "$2" = nan ]; then echo "$3"; else calc "sum(x for x in ($1, $2) if x==x)"; fi
}

check_idle() { # NAME: wait (bounded) for an idle machine; record the background load
    local name="$1" b waited=0
    b=$(busy_pct)
    while [ "$b" -gt 15 ] && [ "$waited" -lt "$WAIT_IDLE" ]; do
        log "[${NUM[$name]}/5] machine ${b}% busy before the run; waiting for idle ($waited/${WAIT_IDLE}s)"
        sleep 4; waited=$((waited + 5))
        b=$(busy_pct)
    done
    if [ "$b" -gt 15 ]; then
        log "[${NUM[$name]}/5] WARNING: machine ${b}% busy (other processes) before this path: figures are disturbed"
    fi
    RES_BG[$name]=$b
}

# A path whose setup fails (a uvs that does not start or take its configuration, c1 that cannot
# reach c2) is not measured: it is reported as FAILED with the reason, left out of every ratio
# and verdict, and the run exits 1 at the end. The uvs logs are copied out of $TMP (which the
# EXIT trap deletes) to /tmp/netns_encap.<PID>.<path>.logs/, whose path is printed.
declare -A RES_FAIL=()
path_failed() { # NAME REASON
    local name="$1" reason="$2" keep f logs=()
    for f in "$TMP/uvsa.log" "$TMP/uvsb.log"; do [ ! -s "$f" ] || logs+=("$f"); done
    if [ ${#logs[@]} -gt 0 ]; then
        keep="/tmp/netns_encap.${ID}.${name}.logs"
        mkdir -p "$keep"
        cp "${logs[@]}" "$keep/" 2>/dev/null || true
        reason="$reason (logs kept in $keep)"
    fi
    RES_FAIL[$name]="$reason"
    log "[${NUM[$name]}/5] FAILED: $reason"
}
connect_check() { # NAME: wait for c1 -> c2; false (and the path FAILED) if it never works
    if wait_for 15 reachable; then return 0; fi
    path_failed "$1" "c1 cannot reach c2 ($IP2)"
    return 1
}

# ---------------------------------------------------------------------------------------------
# Paths: set up, measure, tear down. c1, c2 persist; host namespaces are made per path.

run_kbr() {
    new_ns "$HA"
    attach_container "$HA" a1 "$C1" "$MAC1" "$IP1" 1500
    attach_container "$HA" a2 "$C2" "$MAC2" "$IP2" 1500
    ip -n "$HA" link add kbr type bridge stp_state 0 mcast_snooping 0
    ip -n "$HA" link set a1 master kbr
    ip -n "$HA" link set a2 master kbr
    ip -n "$HA" link set kbr up
    RES_NOTE[kbr]="bridge in host A's namespace; MTU 1500; CPU = softirq of all CPUs"
    DROP_DEVS=("$HA:a1" "$HA:a2")
    connect_check kbr && measure kbr
    detach_containers; del_ns "$HA"
}

run_kvx() {
    new_ns "$HA"; new_ns "$HB"
    ip -n "$HA" link add ul type veth peer name ul netns "$HB"
    attach_container "$HA" a1 "$C1" "$MAC1" "$IP1" 1450
    attach_container "$HB" b2 "$C2" "$MAC2" "$IP2" 1450
    kernel_vtep "$HA" ul "$U1" "$U2" a1
    kernel_vtep "$HB" ul "$U2" "$U1" b2
    RES_NOTE[kvx]="vxlan id 42 dstport 4789 on a veth underlay ($U1 <-> $U2); container MTU 1450; CPU = softirq of all CPUs"
    DROP_DEVS=("$HA:a1" "$HA:ul" "$HB:ul" "$HB:b2")
    connect_check kvx && measure kvx
    detach_containers; del_ns "$HA"; del_ns "$HB"
}

run_uvs() {
    attach_container "" "$H1" "$C1" "$MAC1" "$IP1" 1500
    attach_container "" "$H2" "$C2" "$MAC2" "$IP2" 1500
    rm -f "$TMP/uvsa.log" "$TMP/uvsb.log"
    if ! start_uvs_a; then path_failed uvs "uvs did not start"; stop_uvs; detach_containers; return 0; fi
    local ok=1
    uvsa add-br br0 >&2 || ok=0
    uvsa add-port br0 "$H1" type=$PORT_TYPE >&2 || ok=0
    uvsa add-port br0 "$H2" type=$PORT_TYPE >&2 || ok=0
    RES_NOTE[uvs]="one bridge, $PORT_TYPE ports; worker on core $SW_CPU; MTU 1500"
    DROP_DEVS=("$H1" "$H2")
    if [ "$ok" = 1 ]; then
        connect_check uvs && measure uvs
    else
        path_failed uvs "uvs ctl failed (see the log above)"
    fi
    RES_DROPS[uvs]="A: $(uvs_stats_summary a)"
    stop_uvs
    detach_containers
}

# uvs A in the root namespace: underlay bridge ul (gateway U1 = the VTEP) on the veth UA whose
# other end is `ul` in host B's namespace; br0 with c1's veth and the VXLAN port.
uvs_host_a() {
    local ok=1
    ip link add "$UA" type veth peer name ul netns "$HB"
    no_v6 "$UA"
    ip link set "$UA" up
    attach_container "" "$H1" "$C1" "$MAC1" "$IP1" 1450
    start_uvs_a || return 1
    uvsa add-br ul "gateway=$U1/24" >&2 || ok=0
    uvsa add-port ul "$UA" type=$PORT_TYPE >&2 || ok=0
    uvsa add-br br0 >&2 || ok=0
    uvsa add-port br0 "$H1" type=$PORT_TYPE >&2 || ok=0
    uvsa add-port br0 vx0 type=vxlan vni=42 "local_ip=$U1" "remote_ip=$U2" >&2 || ok=0
    [ "$ok" = 1 ]
}
teardown_uvs_vtep() {
    stop_uvs
    detach_containers
    ip link del "$UA" 2>/dev/null || true
    del_ns "$HB"
}

run_uvsvx() {
    local ok=1
    rm -f "$TMP/uvsa.log" "$TMP/uvsb.log"
    new_ns "$HB"
    uvs_host_a || ok=0
    if [ "$ok" = 1 ]; then
        attach_container "$HB" b2 "$C2" "$MAC2" "$IP2" 1450
        ip -n "$HB" link set ul up
        start_uvs_b || ok=0
    fi
    if [ "$ok" = 1 ]; then
        uvsb add-br ul "gateway=$U2/24" >&2 || ok=0
        uvsb add-port ul ul type=$PORT_TYPE >&2 || ok=0
        uvsb add-br br0 >&2 || ok=0
        uvsb add-port br0 b2 type=$PORT_TYPE >&2 || ok=0
        uvsb add-port br0 vx0 type=vxlan vni=42 "local_ip=$U2" "remote_ip=$U1" >&2 || ok=0
    fi
    RES_NOTE[uvsvx]="uvs A (root ns, core $SW_CPU) <-> uvs B (host B ns, core $B_CPU); VNI 42 over a veth underlay; container MTU 1450; CPU = uvs A + uvs B"
    DROP_DEVS=("$H1" "$UA" "$HB:ul" "$HB:b2")
    if [ "$ok" = 1 ]; then
        connect_check uvsvx && measure uvsvx
    else
        path_failed uvsvx "setup failed (see the log above)"
    fi
    RES_DROPS[uvsvx]="A: $(uvs_stats_summary a); B: $(uvs_stats_summary b)"
    teardown_uvs_vtep
}

run_uvskvx() {
    local ok=1
    rm -f "$TMP/uvsa.log" "$TMP/uvsb.log"
    new_ns "$HB"
    uvs_host_a || ok=0
    if [ "$ok" = 1 ]; then
        attach_container "$HB" b2 "$C2" "$MAC2" "$IP2" 1450
        kernel_vtep "$HB" ul "$U2" "$U1" b2
    fi
    RES_NOTE[uvskvx]="uvs A (root ns, core $SW_CPU) <-> kernel vxlan 42 + bridge in host B's ns; container MTU 1450; CPU = uvs A"
    DROP_DEVS=("$H1" "$UA" "$HB:ul" "$HB:b2")
    if [ "$ok" = 1 ]; then
        connect_check uvskvx && measure uvskvx
    else
        path_failed uvskvx "setup failed (see the log above)"
    fi
    RES_DROPS[uvskvx]="A: $(uvs_stats_summary a)"
    teardown_uvs_vtep
}

# ---------------------------------------------------------------------------------------------
log "paths:$PATHS; $REPS repetition(s), ${DUR}s traffic; tools on CPU $APP_CPU, uvs A on core $SW_CPU, uvs B on core $B_CPU; kernel $(uname -r); names ${P}*"
UVS_INFO=""
if needs_uvs; then
    UVS_INFO="$UVS (built $(date -u -r "$UVS" +%Y-%m-%dT%H:%MZ)); $("$UVS" --version 2>/dev/null || echo '?')"
    cp "$UVS" "$TMP/uvs" # one binary for the whole run, even if target/ is rebuilt meanwhile
    UVS="$TMP/uvs"
fi
new_ns "$C1"; new_ns "$C2"
# UDP sink in c2: a bound socket that never reads (see netns_l2.sh: without it, c2's kernel
# spends ~40% of the delivering CPU on ICMP port-unreachable route lookups).
nsx "$C2" timeout 7200 python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.bind(("0.0.0.0", 9))
time.sleep(7200)' &
PIDS+=("$!")
for s in $PATHS; do
    check_idle "$s"
    log "[${NUM[$s]}/5] ${TITLE[$s]}: setting up"
    "run_$s"
done

# ---------------------------------------------------------------------------------------------
# Report
ratio_v() { # A B: A/B as a float or nan
    python3 -c 'import sys,math; a,b=(float(x) if x not in ("","nan") else math.nan for x in sys.argv[1:3]); print(math.nan if math.isnan(a) or math.isnan(b) or b==0 else a/b)' "${1:-nan}" "${2:-nan}"
}
rfmt() { fmt .2f "$1" | sed 's/$/x/; s/n\/ax/n\/a/'; }

# How the uvs daemons of this run poll: the environment reaches them (`UVS_BUSY_POLL=1 uvs bench
# ...` measures busy-polling), so the header says which, or a saved table could not tell.
uvs_poll_mode() {
    case "${UVS_BUSY_POLL:-}" in
        1 | true | yes | on) echo "busy-poll (UVS_BUSY_POLL)" ;;
        *) echo "sleeps after ${UVS_POLL_LINGER_US:-20000} us without traffic$([ -n "${UVS_POLL_LINGER_US:-}" ] && echo ' (UVS_POLL_LINGER_US)')" ;;
    esac
}
echo "netns VXLAN encapsulation benchmark, $(date -u +%Y-%m-%dT%H:%MZ), kernel $(uname -r), $NCPU CPUs;" \
    "median of $REPS x ${DUR}s; tools on CPU $APP_CPU, uvs A on core $SW_CPU, uvs B on core $B_CPU; nice $NICE"
[ -z "$UVS_INFO" ] || echo "uvs ($PORT_TYPE ports): $UVS_INFO; $(uvs_poll_mode)"
echo
# Said under the table when a repetition had too few replies for a percentile (n/a there).
pct_note() {
    [ "$PCT_WITHHELD" = 1 ] || return 0
    echo "Ping percentiles: p99 is given from 100 replies a repetition, p99.9 from 1000; with fewer" \
        "(this run sent $PING_N pings a repetition$([ "$QUICK" = 1 ] && echo ', --quick')) they are n/a, not the largest samples."
}
pct3() { echo "$(fmt .3f "${RES_P50[$1]:-nan}") / $(fmt .3f "${RES_P99[$1]:-nan}") / $(fmt .3f "${RES_P999[$1]:-nan}")"; }
echo "| # | path | TCP Gbit/s | 64B pps delivered | delivered/sent | ping avg ms | ping p50 / p99 / p99.9 ms | CPU % (pps) | CPU % (TCP) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for s in $PATHS; do
    if [ -n "${RES_FAIL[$s]:-}" ]; then
        echo "| ${NUM[$s]} | ${TITLE[$s]} | FAILED | | | | | | |"
        continue
    fi
    if [ -z "${RES_PPS[$s]:-}" ]; then
        echo "| ${NUM[$s]} | ${TITLE[$s]} | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"
        continue
    fi
    suf=""; case "$s" in kbr | kvx) suf=" (softirq)" ;; esac
    echo "| ${NUM[$s]} | ${TITLE[$s]} | $(fmt .2f "${RES_TCP[$s]}") | $(fmt ,.0f "${RES_PPS[$s]}") |" \
        "$(fmt .1f "${RES_PCT[$s]}")% | $(fmt .3f "${RES_RTT[$s]}") | $(pct3 "$s") | $(fmt .0f "${RES_CPUP[$s]}")$suf | $(fmt .0f "${RES_CPUT[$s]}")$suf |"
done
echo
for s in $PATHS; do
    if [ -n "${RES_FAIL[$s]:-}" ]; then
        echo "- ${NUM[$s]} ${TITLE[$s]}: FAILED, not measured: ${RES_FAIL[$s]}"
        continue
    fi
    echo "- ${NUM[$s]} ${TITLE[$s]}: ${RES_NOTE[$s]:-}; machine ${RES_BG[$s]:-?}% busy just before${RES_DROPS[$s]:+; uvs counters: ${RES_DROPS[$s]}}"
done
echo
if [ "$PCT_WITHHELD" = 1 ]; then pct_note; echo; fi
echo "Repetitions (TCP Gbit/s / pps / delivered / ping ms / CPU % during pps):"
echo
echo "| path | $(for i in $(seq "$REPS"); do printf 'rep %s | ' "$i"; done)"
echo "|---|$(for i in $(seq "$REPS"); do printf -- '---|'; done)"
for s in $PATHS; do
    [ -n "${RES_REPS[$s]:-}" ] && echo "| ${TITLE[$s]}${RES_REPS[$s]} |"
done
echo
if [ "$ANY_DISTURBED" = 1 ]; then
    echo "(*) the uvs processes used under 80% of a core in total while frames were lost: they did not get their core (other processes on it); a disturbed repetition."
    echo
fi
echo "Overhead ratios (encapsulated / the same switch without encapsulation; 1.00x = no loss):"
echo
echo "| ratio | TCP | 64B pps |"
echo "|---|---:|---:|"
declare -A RT RP
pair() { # KEY NUMERATOR DENOMINATOR
    RT[$1]=$(ratio_v "${RES_TCP[$2]:-}" "${RES_TCP[$3]:-}")
    RP[$1]=$(ratio_v "${RES_PPS[$2]:-}" "${RES_PPS[$3]:-}")
}
pair k kvx kbr; pair u uvsvx uvs; pair x uvskvx uvs
echo "| kernel vxlan / kernel bridge | $(rfmt "${RT[k]}") | $(rfmt "${RP[k]}") |"
echo "| uvs VTEP pair / uvs plain | $(rfmt "${RT[u]}") | $(rfmt "${RP[u]}") |"
echo "| uvs<->kernel / uvs plain | $(rfmt "${RT[x]}") | $(rfmt "${RP[x]}") |"
echo
# The verdict compares medians of the undisturbed repetitions only (no (*)): a uvs row that
# did not get its core says nothing about encapsulation. A path all of whose repetitions
# were disturbed gives no verdict.
verdict() { # LABEL KIND(TCP|PPS) ENCAP_PATH PLAIN_PATH: uvs ENCAP/PLAIN against kvx/kbr
    local l="$1" k="$2" e="$3" p="$4" q u kr dropped="" s
    for q in "$e" "$p" kvx kbr; do
        if ! want "$q" || [ -n "${RES_FAIL[$q]:-}" ] || [ -z "${RES_PPS[$q]:-}" ]; then
            echo "- $l: n/a (a path is missing or FAILED)"; return
        fi
    done
    for q in "$e" "$p"; do
        if [ "${RES_NOK[$q]}" = 0 ]; then
            echo "- $l: no verdict: all repetitions of ${TITLE[$q]} disturbed (*)"; return
        fi
        [ "${RES_NOK[$q]}" = "$REPS" ] || dropped="$dropped ${TITLE[$q]}: ${RES_NOK[$q]} of $REPS;"
    done
    if [ "$k" = TCP ]; then
        u=$(ratio_v "${RES_TCP_OK[$e]}" "${RES_TCP_OK[$p]}"); kr=$(ratio_v "${RES_TCP[kvx]}" "${RES_TCP[kbr]}")
    else
        u=$(ratio_v "${RES_PPS_OK[$e]}" "${RES_PPS_OK[$p]}"); kr=$(ratio_v "${RES_PPS[kvx]}" "${RES_PPS[kbr]}")
    fi
    s=$(python3 -c '
import sys, math
l, u, k = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
if math.isnan(u) or math.isnan(k):
    print(f"- {l}: n/a (no figure)")
else:
    v = "HOLDS" if u > k else "NOT met"
    print(f"- {l}: uvs keeps {u:.2f}x of its own plain path, the kernel {k:.2f}x: target {v}")
' "$l" "$u" "$kr")
    echo "$s${dropped:+ (undisturbed repetitions only:${dropped%;})}"
}
echo "Target: the uvs overlay loses less, relative to uvs without encapsulation, than the kernel's vxlan relative to the kernel bridge:"
echo
verdict "TCP, uvs VTEP pair" TCP uvsvx uvs
verdict "pps, uvs VTEP pair" PPS uvsvx uvs
verdict "TCP, uvs<->kernel" TCP uvskvx uvs
verdict "pps, uvs<->kernel" PPS uvskvx uvs
if [ ${#RES_FAIL[@]} -gt 0 ]; then
    echo
    echo "FAILED (not measured, left out of the ratios):$(for s in $PATHS; do [ -z "${RES_FAIL[$s]:-}" ] || printf ' %s %s;' "${NUM[$s]}" "${TITLE[$s]}"; done) see the notes above"
    log "FAILED paths:$(for s in $PATHS; do [ -z "${RES_FAIL[$s]:-}" ] || printf ' %s (%s);' "${NUM[$s]}" "${RES_FAIL[$s]}"; done)"
    exit 1
fi
