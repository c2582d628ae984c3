#!/usr/bin/env bash
# netns L2 benchmark: the same two namespace "containers" c1 -> c2 joined by, in one run,
#   kernel     Linux bridge (veth host ends enslaved to a `bridge` device)
#   ovs        Open vSwitch userspace datapath (datapath_type=netdev) with afxdp ports on the veths
#   uvs-afxdp  uvs with afxdp ports on the veths (worker pinned to core 1)
#   uvs-afpacket uvs with afpacket ports (AF_PACKET + PACKET_VNET_HDR) on the veths
#   uvs-tap    uvs with TAP ports (uvs creates the TAPs; they are moved into c1/c2 as eth0)
# and for each: 64-byte UDP pps delivered (trafgen in c1, counted in c2), delivered/sent, iperf3
# TCP Gbit/s with the switch's CPU during it (and CPU % per Gbit/s), ping avg RTT and p50/p99/p99.9 (1000 pings at 10 ms, HDR histogram via `uvs latency`), the switch's CPU use during the pps test, during the pings and idle (3 s with no traffic). Median of 3 repetitions.
# During the pps test also: the userspace switches' forwarding time (OVS processing cycles, uvs
# busy_ns) and per delivered frame, uvs's frames per busy loop pass, and (with perf) the sendto
# calls on the switch's core per delivered frame (AF_XDP copy-mode transmit doorbells).
#
# Usage: sudo benches/netns_l2.sh [--quick] [--only kernel,ovs,uvs-afxdp,uvs-afpacket,uvs-tap]
#                                 [--uvs PATH] [--duration S] [--reps N] [--app-cpu CPUS]
#                                 [--switch-cpu N] [--wait-idle S] [--nice N] [--ovs-xdp-mode M]
#                                 [--uvs-xdp-mode M] [--switch-share PCT] [--sink stack|drop]
#                                 [--gen trafgen|xdp]
# Progress goes to stderr, the Markdown table to stdout. See docs/benchmarks.md.
set -euo pipefail

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --quick          1 repetition, 2 s traffic (CI smoke run)
  --only LIST      comma-separated subset of: kernel,ovs,uvs-afxdp,uvs-afpacket,uvs-tap
                   (default: all)
  --uvs PATH       uvs binary (default: target/release/uvs of this repo; built if missing)
  --duration S     seconds of traffic per pps/TCP test (default 5, quick 2)
  --reps N         repetitions per measurement, the median is reported (default 3, quick 1)
  --app-cpu CPUS   CPU list the traffic tools run on (trafgen, iperf3, ping) (default 0)
  --switch-cpu N   core for the uvs worker and the OVS PMD thread (default 1)
  --wait-idle S    wait up to S seconds for the machine to be idle (<15% busy) before each
                   switch (default 0: do not wait, only warn)
  --ovs-xdp-mode M OVS afxdp options:xdp-mode to try first (native, generic, best-effort;
                   default native = driver mode with copy; falls back to generic)
  --uvs-xdp-mode M uvs afxdp ports' xdp_mode (auto, native, generic; default auto = native on
                   veth)
  --switch-share PCT  during the pps test, share the switch's core with a CPU-bound process
                   weighted (nice) so the switch gets about PCT% of it (default 100: no sharing).
                   Below ~50 the switch, not the one trafgen core, is the bottleneck, so the pps
                   delivered compare the switches' capacities (each at the same CPU share).
  --sink MODE      what c2 does with the pps test's UDP frames: stack (default: its IP/UDP stack,
                   which veth runs on the sender's core, i.e. the switch's) or drop (an nftables
                   netdev ingress rule drops and counts them before the stack)
  --gen G          the pps test's generator: trafgen (default: PF_PACKET from c1's stack, ~0.5
                   Mpps on one core here, so it, not the switch, sets the figure) or xdp (`uvs
                   bench gen`: XDP live frames redirected out of c1's eth0, no skb or syscall a
                   frame, ~1.5-2.7 Mpps: the switch becomes the bottleneck at full CPU; the
                   host ends get GRO on, which a veth needs to take XDP frames when its peer
                   has no XDP program: kernel bridge, afpacket). Sent = frames offered.
  --nice N         run everything (switches and traffic tools) at this nice value, e.g. -10 on a
                   machine shared with builds (default 0: unchanged)
EOF
}

# ---------------------------------------------------------------------------------------------
# Options
QUICK=0
ONLY="kernel,ovs,uvs-afxdp,uvs-afpacket,uvs-tap"
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
OVS_XDP_MODE=native
UVS_XDP_MODE=auto
SHARE=100
SINK=stack
GEN=trafgen
need() { # OPTION [VALUE]: exit 2 naming the option when its value is missing
    [ $# -ge 2 ] && [ -n "$2" ] || { echo "netns_l2: $1 needs a value (see --help)" >&2; exit 2; }
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
    --ovs-xdp-mode) need "$@"; OVS_XDP_MODE="$2"; shift ;;
    --uvs-xdp-mode) need "$@"; UVS_XDP_MODE="$2"; shift ;;
    --switch-share) need "$@"; SHARE="$2"; shift ;;
    --sink) need "$@"; SINK="$2"; shift ;;
    --gen) need "$@"; GEN="$2"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "netns_l2: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    DUR="${DUR:-2}"; REPS="${REPS:-1}"; PING_N=200; IDLE_S=1
else
    DUR="${DUR:-5}"; REPS="${REPS:-3}"; PING_N=1000; IDLE_S=3
fi
# Every numeric option is checked here: `timeout 0` would mean "no timeout", a CPU that does not
# exist makes taskset fail, and a bad count gives rows of nonsense with exit 0.
NCPU=$(nproc)
bad() { echo "netns_l2: $*" >&2; exit 2; }
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
posint --reps "$REPS"
[[ "$WAIT_IDLE" =~ ^[0-9]+$ ]] || bad "--wait-idle must be a number of seconds (0 or more), not '$WAIT_IDLE'"
[[ "$NICE" =~ ^-?[0-9]+$ ]] && [ "$NICE" -ge -20 ] && [ "$NICE" -le 19 ] ||
    bad "--nice must be an integer from -20 to 19, not '$NICE'"
cpulist_ok --app-cpu "$APP_CPU"
# The default core 1 falls back to the last CPU on a 1-CPU machine (below); a given one must exist.
if [ "$SW_CPU_GIVEN" = 1 ]; then cpu_ok --switch-cpu "$SW_CPU"; fi
case "$SHARE" in
[1-9] | [1-9][0-9] | 100) ;;
*) echo "netns_l2: --switch-share must be a percentage 1..100, not '$SHARE'" >&2; exit 2 ;;
esac
case "$SINK" in
stack | drop) ;;
*) echo "netns_l2: --sink must be stack or drop, not '$SINK'" >&2; exit 2 ;;
esac
case "$GEN" in
trafgen | xdp) ;;
*) echo "netns_l2: --gen must be trafgen or xdp, not '$GEN'" >&2; exit 2 ;;
esac
ALL_SWITCHES="kernel ovs uvs-afxdp uvs-afpacket uvs-tap"
SWITCHES=""
for s in ${ONLY//,/ }; do
    case " $ALL_SWITCHES " in
    *" $s "*) SWITCHES="$SWITCHES $s" ;;
    *) echo "netns_l2: unknown switch '$s' in --only (known: ${ALL_SWITCHES// /,})" >&2; exit 2 ;;
    esac
done

log() { echo "[netns_l2 $(date +%T)] $*" >&2; }
want() { case " $SWITCHES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
drop_switch() { SWITCHES="$(echo " $SWITCHES " | sed "s/ $1 / /")"; }
# A switch asked for that cannot run here (its tools missing) is left out of the run, and said
# in the result table on stdout too, not only in the log (a user reading the table saw no OVS
# row and no reason).
declare -A RES_SKIP=()
SKIPPED=""
skip_switch() { # NAME REASON
    log "SKIP $1: $2"
    drop_switch "$1"
    RES_SKIP[$1]="$2"
    SKIPPED="$SKIPPED $1"
}

# ---------------------------------------------------------------------------------------------
# Preconditions: root and tools. A missing tool is not a failure (CI may lack it): say which and
# exit 0. A missing OVS only drops the OVS row.
if [ "$(id -u)" != 0 ]; then
    echo "netns_l2: SKIP: needs root (network namespaces, veth, AF_XDP, TAP)" >&2
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
        echo "netns_l2: another benchmark is running ($(cat "$LOCK_FILE" 2>/dev/null || echo '?'); lock $LOCK_FILE):" \
            "two at once share the CPUs and both would report as if alone. Run this one when it has finished." >&2
        exit 1
    fi
    echo "netns_l2 PID $$" >"$LOCK_FILE"
else
    echo "netns_l2: WARNING: no flock, so nothing stops a second benchmark from running at the same time" >&2
fi
NEED="ip iperf3 trafgen ethtool ping python3 taskset timeout sysctl"
if [ "$SINK" = drop ]; then NEED="$NEED nft"; fi
if [ "$SHARE" != 100 ]; then NEED="$NEED nice"; fi
for t in $NEED; do
    if ! command -v "$t" >/dev/null 2>&1; then
        echo "netns_l2: SKIP: required tool '$t' is not installed" >&2
        exit "${UVS_BENCH_SKIP_STATUS:-0}"
    fi
done
# perf (optional): counts the transmit doorbells on the switch's core during the pps test.
HAVE_PERF=1
perf stat -e syscalls:sys_enter_sendto -- true >/dev/null 2>&1 || HAVE_PERF=0
OVS_SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
if want ovs; then
    for t in ovsdb-tool ovsdb-server ovs-vswitchd ovs-vsctl ovs-appctl; do
        if ! command -v "$t" >/dev/null 2>&1; then
            skip_switch ovs "tool '$t' is not installed (bash scripts/setup.sh --bench installs OVS)"
            break
        fi
    done
    if want ovs && [ ! -r "$OVS_SCHEMA" ]; then
        skip_switch ovs "$OVS_SCHEMA not found (OVS's schema: is openvswitch-common installed?)"
    fi
fi
if want uvs-afxdp || want uvs-afpacket || want uvs-tap; then
    if [ ! -x "$UVS" ] && [ "$UVS_GIVEN" = 0 ] && command -v cargo >/dev/null 2>&1; then
        log "building uvs (cargo build --release)"
        (cd "$REPO" && cargo build --release >&2)
    fi
    if [ ! -x "$UVS" ]; then
        for s in uvs-afxdp uvs-afpacket uvs-tap; do
            if want "$s"; then skip_switch "$s" "uvs binary '$UVS' not found (cargo build --release)"; fi
        done
    fi
fi
if [ -z "${SWITCHES// /}" ]; then
    echo "netns_l2: SKIP: nothing left to measure" >&2
    exit "${UVS_BENCH_SKIP_STATUS:-0}"
fi
NCPU=$(nproc)
if want uvs-afxdp || want uvs-afpacket || want uvs-tap; then
    # Run one binary for the whole run, even if target/ is rebuilt meanwhile (shared checkouts).
    # Run as `uvs bench l2` the script is a copy outside any checkout: no repo to name then.
    if rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null); then
      git -C "$REPO" diff --quiet HEAD 2>/dev/null || rev="$rev + uncommitted changes"
    else
      rev="unknown (script run from the binary)"
    fi
    UVS_INFO="$UVS (built $(date -u -r "$UVS" +%Y-%m-%dT%H:%MZ)), repo at $rev"
fi
if [ "$NICE" != 0 ]; then
    renice -n "$NICE" -p $$ >/dev/null # children (switches, trafgen, iperf3, ping) inherit it
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
P="nb${ID}"                       # e.g. nb123456 (<= 10 chars)
C1="${P}c1" C2="${P}c2"           # namespaces
H1="${P}h1" H2="${P}h2"           # veth host ends (the ns ends are eth0)
KBR="${P}kb"                      # kernel bridge
OBR="${P}ob"                      # OVS bridge
# OVS's netdev datapath leaves a TAP device "ovs-netdev" behind; remove it at exit unless it was
# there before this run.
OVS_NETDEV_BEFORE=0
ip link show ovs-netdev >/dev/null 2>&1 && OVS_NETDEV_BEFORE=1
T1="${P}t1" T2="${P}t2"           # uvs TAP ports
# 198.18.0.0/15 (benchmarking range). Not 192.0.2.0/24: this machine's own eth0 is 192.0.2.2/24, and
# the root namespace would answer ARP for it through a kernel bridge device.
NET="198.18.$((ID % 250))"
IP1="$NET.1" IP2="$NET.2"
MAC1=02:00:c0:00:02:01 MAC2=02:00:c0:00:02:02
TMP="$(mktemp -d "/tmp/netns_l2.${ID}.XXXXXX")"
CLK_TCK=$(getconf CLK_TCK)

PIDS=()        # processes we started (killed by PID)
OVSDB_PID="" OVSVS_PID="" UVS_PID=""

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

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    stop_ovs 2>/dev/null || true
    for pid in "${PIDS[@]}"; do kill_pid "$pid"; done
    for l in "$H1" "$H2" "$KBR" "$OBR" "$T1" "$T2"; do
        ip link show "$l" >/dev/null 2>&1 && ip link del "$l" 2>/dev/null || true
    done
    if [ "$OVS_NETDEV_BEFORE" = 0 ] && ip link show ovs-netdev >/dev/null 2>&1; then
        ip link del ovs-netdev 2>/dev/null || true
    fi
    for ns in "$C1" "$C2"; do
        ip netns pids "$ns" 2>/dev/null | while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
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
# A process's CPU time in ns: the sum of its threads' time on a CPU (schedstat, exact). Not
# utime+stime: they count 10 ms clock ticks, scaled, and read up to 102% of a core over the
# 1 s idle window of --quick for a switch that busy-polls it (OVS's PMD).
proc_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{t += $1} END {printf "%.0f\n", t}'; }
softirq_ns() { awk -v hz="$CLK_TCK" '/^cpu /{printf "%.0f\n", $8 * 1e9 / hz}' /proc/stat; } # all CPUs
busy_pct() { # busy % of all CPUs over 1 s
    local a b
    a=$(awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t, $5+$6}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t, $5+$6}' /proc/stat)
    python3 -c "import sys; t0,i0,t1,i1=map(int,sys.argv[1:]); print(round(100*(1-(i1-i0)/max(1,t1-t0))))" $a $b
}
median() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:] if x not in ("","nan")]; print(s.median(v) if v else "nan")' "$@"; }
fmt() { python3 -c 'import sys; f,v=sys.argv[1],sys.argv[2]; print("n/a" if v=="nan" else format(float(v), f))' "$@"; }

wait_for() { # TIMEOUT_S CMD...: poll CMD until it succeeds or TIMEOUT_S seconds have passed
    local end=$((SECONDS + $1)); shift
    while [ "$SECONDS" -lt "$end" ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

make_namespaces() {
    local ns
    for ns in "$C1" "$C2"; do
        ip netns add "$ns"
        nsx "$ns" ip link set lo up
        nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
}

# Configure eth0 in a namespace (MAC, address, up).
config_eth0() { # NS MAC IP
    nsx "$1" ip link set eth0 address "$2"
    nsx "$1" ip addr add "$3/24" dev eth0
    nsx "$1" ip link set eth0 up
}

# A veth pair per container: host end $H1/$H2, container end eth0. Kernel default queue count.
make_veths() {
    ip link add "$H1" type veth peer name eth0 netns "$C1"
    ip link add "$H2" type veth peer name eth0 netns "$C2"
    for h in "$H1" "$H2"; do
        sysctl -qw "net.ipv6.conf.$h.disable_ipv6=1" || true
        ip link set "$h" up
    done
    # --gen xdp: a veth takes XDP frames (ndo_xdp_xmit) only while its peer runs NAPI: with an
    # XDP program (the AF_XDP switches) or with GRO on (the kernel bridge).
    if [ "$GEN" = xdp ]; then ethtool -K "$H1" gro on >/dev/null; fi
    config_eth0 "$C1" "$MAC1" "$IP1"
    config_eth0 "$C2" "$MAC2" "$IP2"
    log "veth queues: $H1 rx=$(ls -d /sys/class/net/$H1/queues/rx-* | wc -l) tx=$(ls -d /sys/class/net/$H1/queues/tx-* | wc -l)"
}
del_veths() {
    ip link del "$H1" 2>/dev/null || true
    ip link del "$H2" 2>/dev/null || true
}

reachable() { nsx "$C1" timeout 2 ping -c 1 -W 1 -q "$IP2"; }

# ---------------------------------------------------------------------------------------------
# Measurements. Each sets a global result.

# trafgen config: 60-byte frames (64 on the wire with the FCS), UDP c1 -> c2 port 9 (discard).
TG_CFG="$TMP/udp64.cfg"
# The same frame in hex for --gen xdp (IPv4 header checksum computed, UDP checksum 0).
GEN_FRAME=$(python3 - "$MAC2" "$MAC1" "$IP1" "$IP2" <<'PY'
import socket, struct, sys
da, sa, src, dst = sys.argv[1:5]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + 18, 0, 0x4000, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
c = sum(struct.unpack("!10H", ip)); c = (c & 0xFFFF) + (c >> 16); c = (c & 0xFFFF) + (c >> 16)
ip = ip[:10] + struct.pack("!H", ~c & 0xFFFF) + ip[12:]
udp = struct.pack("!HHHH", 40000, 9, 8 + 18, 0) + bytes(18)
mac = lambda m: bytes.fromhex(m.replace(":", ""))
print((mac(da) + mac(sa) + b"\x08\x00" + ip + udp).hex())
PY
)
cat >"$TG_CFG" <<EOF
{
  eth(da=$MAC2, sa=$MAC1),
  ipv4(saddr=$IP1, daddr=$IP2, ttl=64, df),
  udp(sp=40000, dp=9),
  fill(0x00, 18)
}
EOF

# CPU counter of the switch, ns: a PID's threads' CPU time, or (kernel) the softirq time of all CPUs.
# Read inside the clock stamps (t0 before it, t1 after it): the window holds all time counted.
switch_ns() { if [ -n "$CPU_PID" ]; then proc_ns "$CPU_PID"; else softirq_ns; fi; }
# The switch's forwarding time (BUSY_KIND ovs: the PMD's processing cycles since
# `pmd-stats-clear`; uvs: the workers' `busy_ns`, time in loop passes that moved frames), as a
# % of the window between busy_mark (before the traffic) and busy_read (as it ends, before the
# drain). It was divided by the traffic's time alone while it counted until after the 0.5 s
# drain (and OVS's from the clear): 101-102% for a switch busy all through (found trying
# `uvs bench` as a new user). Now each end's clock is read beside its counter, outside it, so
# the window holds every counted nanosecond and one worker cannot read over 100%.
BUSY_KIND=""
busy_mark() {
    case "$BUSY_KIND" in
    ovs) timeout 10 ovs-appctl -t "$OVSDIR/run/ovs-vswitchd.ctl" dpif-netdev/pmd-stats-clear >/dev/null 2>&1 || true ;;
    uvs) local j
        BUSY_T0=$(now_ns); j=$(uvs_ctl --json stats)
        LOOP0=$(uvs_loop <<<"$j") ;;
    esac
}
# Every uvs worker's "busy_ns rx_packets busy_iterations" from one `stats --json` on stdin,
# summed (busy_ns nan from a uvs without it, before session 24).
uvs_loop() {
    python3 -c 'import json,sys; v=json.load(sys.stdin); ws=v.get("workers",[v.get("worker",{})]); print(sum(w["busy_ns"] for w in ws) if all("busy_ns" in w for w in ws) else "nan", *(sum(w.get(k,0) for w in ws) for k in ("rx_packets","busy_iterations")))'
}
busy_read() { # sets R_BUSY (the switch's busy % of one core since busy_mark) and, for uvs,
    # R_FPP (frames received per busy loop pass); nan where unknown
    R_BUSY=nan R_FPP=nan
    case "$BUSY_KIND" in
    ovs) # The PMD's own share of its cycles since the clear: its window is exact.
        R_BUSY=$(timeout 10 ovs-appctl -t "$OVSDIR/run/ovs-vswitchd.ctl" dpif-netdev/pmd-stats-show 2>/dev/null |
            sed -n 's/.*processing cycles: [0-9]* (\([0-9.]*\)%).*/\1/p' | head -1 | grep . || echo nan) ;;
    uvs) local j t
        j=$(uvs_ctl --json stats); t=$(now_ns)
        read -r R_BUSY R_FPP <<<"$(python3 -c '
import sys
a, z = sys.argv[1].split(), sys.argv[2].split()
busy = (float(z[0]) - float(a[0])) / float(sys.argv[3])
rx, passes = (int(y) - int(x) for x, y in zip(a[1:], z[1:]))
print(100 * busy, rx / passes if passes else "nan")' "$LOOP0" "$(uvs_loop <<<"$j")" "$((t - BUSY_T0))")" ;;
    esac
}

# --switch-share: a CPU-bound competitor pinned to the switch's core, at the nice value whose
# CFS weight leaves the switch about SHARE% of the core (1024 / (1024 + its weight)). Its own
# time on the CPU is measured (schedstat, exact), so the log shows the share it left the switch
# (the switch's own CPU column counts all of its threads, on any core).
HOG_PID="" HOG_NICE=0
SHARE_TOL=20 # %, relative: how far two switches' measured shares may differ for a ratio
if [ "$SHARE" != 100 ]; then
    HOG_NICE=$(python3 -c '
import sys
# sched_prio_to_weight (kernel/sched/core.c), nice -20 .. 19
w = [88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100,
     4904, 3906, 3121, 2501, 1991, 1586, 1277, 1024, 820, 655, 526, 423, 335, 272, 215, 172,
     137, 110, 87, 70, 56, 45, 36, 29, 23, 18, 15]
want = float(sys.argv[1]) / 100
print(min(range(-20, 20), key=lambda n: abs(1024 / (1024 + w[n + 20]) - want)))' "$SHARE")
fi
hog_ns() { awk '{print $1}' "/proc/$HOG_PID/schedstat"; } # its time on a CPU, ns (exact, not ticks)
hog_start() {
    [ "$SHARE" != 100 ] || return 0
    taskset -c "$SW_CPU" nice -n "$HOG_NICE" bash -c 'while :; do :; done' &
    HOG_PID=$!
    PIDS+=("$HOG_PID")
    HOG_T0=$(hog_ns); HOG_N0=$(now_ns)
}
hog_stop() { # sets R_SHARE: the % of the switch's core the competitor left
    R_SHARE=nan
    [ -n "$HOG_PID" ] || return 0
    R_SHARE=$(python3 -c "print(100 - 100*($(hog_ns) - $HOG_T0)/($(now_ns) - $HOG_N0))")
    kill_pid "$HOG_PID"
    wait "$HOG_PID" 2>/dev/null || true
    HOG_PID=""
}
# --sink drop: c2 drops the pps test's frames (UDP to port 9) at netdev ingress, before its IP
# stack; the rule's counter is logged next to the interface's rx_packets.
sink_setup() {
    [ "$SINK" = drop ] || return 0
    nsx "$C2" nft delete table netdev uvsbench_sink 2>/dev/null || true
    nsx "$C2" nft -f - <<'NFT'
table netdev uvsbench_sink {
  chain in { type filter hook ingress device "eth0" priority 0; policy accept; udp dport 9 counter drop; }
}
NFT
}
sink_count() {
    [ "$SINK" = drop ] || return 0
    nsx "$C2" nft list chain netdev uvsbench_sink in 2>/dev/null | sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | head -1
}

# One pps run: sets R_PPS R_PCT R_CPU and logs where packets were lost.
pps_once() {
    local s0 d0 r0 c0 t0 s1 d1 r1 c1 t1 sent rcv el hd0 hd1 k0 k1
    s0=$(cnt "$C1" tx_packets); d0=$(cnt "$C1" tx_dropped); r0=$(cnt "$C2" rx_packets)
    hd0=$(host_rx_dropped); k0=$(sink_count)
    hog_start
    busy_mark
    local perf_pid=""
    rm -f "$TMP/perf.csv"
    if [ "$HAVE_PERF" = 1 ]; then # transmit doorbells (sendto) on the switch's core meanwhile
        perf stat -x, -o "$TMP/perf.csv" -C "$SW_CPU" -e syscalls:sys_enter_sendto \
            -- sleep "$DUR" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    t0=$(now_ns); c0=$(switch_ns)
    if [ "$GEN" = xdp ]; then
        nsx "$C1" timeout -k 3 $((${DUR%.*} + 5)) taskset -c "$APP_CPU" "$UVS" bench gen --dev eth0 \
            --frame "$GEN_FRAME" --seconds "$DUR" >"$TMP/trafgen.out" 2>&1 || true
    else
        # trafgen stops on SIGINT (prints its own count); -k bounds it if it does not.
        nsx "$C1" timeout -s INT -k 3 "$DUR" taskset -c "$APP_CPU" \
            trafgen -o eth0 -i "$TG_CFG" -P 1 -Q --no-sock-mem -C >"$TMP/trafgen.out" 2>&1 || true
    fi
    c1=$(switch_ns); t1=$(now_ns)
    busy_read # as the traffic ends: the drain below is not traffic time
    if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; fi
    sleep 0.5 # let queued frames drain before reading the receiver
    s1=$(cnt "$C1" tx_packets); d1=$(cnt "$C1" tx_dropped); r1=$(cnt "$C2" rx_packets)
    hd1=$(host_rx_dropped); k1=$(sink_count)
    sent=$(((s1 - s0) + (d1 - d0))); rcv=$((r1 - r0))
    if [ "$GEN" = xdp ]; then # what the generator offered (a full peer ring drops silently)
        sent=$(sed -n 's/^offered \([0-9]*\) frames.*/\1/p' "$TMP/trafgen.out"); sent=${sent:-0}
    fi
    el=$(python3 -c "print(($t1-$t0)/1e9)")
    R_PPS=$(python3 -c "print($rcv/$el)")
    R_PCT=$(python3 -c "print(100*$rcv/max(1,$sent))")
    R_CPU=$(python3 -c "print(100*($c1-$c0)/1e9/$el)")
    hog_stop
    local kicks
    kicks=$(awk -F, '/sendto/ {print $1}' "$TMP/perf.csv" 2>/dev/null || true)
    # Per delivered frame: nothing delivered gives no figure (n/a), not sendto calls / 1.
    R_KICKS=$(python3 -c "import sys; k=sys.argv[1]; print(int(k)/$rcv if k.isdigit() and $rcv > 0 else 'nan')" "${kicks:-}")
    log "  pps: sent $sent (c1 tx_dropped $((d1 - d0))) delivered $rcv in ${el}s =" \
        "$(fmt .0f "$R_PPS") pps, $(fmt .1f "$R_PCT")%, switch cpu $(fmt .0f "$R_CPU")% (forwarding $(fmt .1f "$R_BUSY")%, $(fmt .1f "$R_FPP") frames a busy pass)${hd0:+, host-veth rx_dropped $((hd1 - hd0))}, sendto on core $SW_CPU ${kicks:-n/a}${k0:+, sink dropped $((k1 - k0))}$( [ "$R_SHARE" = nan ] || echo ", switch's share of core $SW_CPU $(fmt .0f "$R_SHARE")%")"
    if [ "$sent" -eq 0 ]; then
        log "  the generator ($GEN) sent nothing:"; sed 's/^/    /' "$TMP/trafgen.out" >&2
    fi
}
host_rx_dropped() { # drops on the veth host ends (XDP redirect failures show up here)
    if ip link show "$H1" >/dev/null 2>&1; then cat "/sys/class/net/$H1/statistics/rx_dropped"; fi
}

tcp_once() { # sets R_TCP (Gbit/s or nan) and R_TCPCPU (switch CPU % during it)
    local port=$((5201 + RANDOM % 1000)) spid c0 c1 t0 t1
    nsx "$C2" timeout $((DUR + 20)) taskset -c "$APP_CPU" iperf3 -s -1 -B "$IP2" -p "$port" \
        >"$TMP/iperf3s.out" 2>&1 &
    spid=$!
    PIDS+=("$spid")
    wait_for 5 nsx "$C2" sh -c "ss -ltn | grep -q ':$port '" || true
    t0=$(now_ns); c0=$(switch_ns)
    if nsx "$C1" timeout $((DUR + 15)) taskset -c "$APP_CPU" iperf3 -c "$IP2" -p "$port" \
        -t "$DUR" -J --connect-timeout 3000 >"$TMP/iperf3.json" 2>"$TMP/iperf3.err"; then
        R_TCP=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["end"]["sum_received"]["bits_per_second"]/1e9)' "$TMP/iperf3.json" 2>/dev/null || echo nan)
    else
        R_TCP=nan
        log "  iperf3 failed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error",""))' "$TMP/iperf3.json" 2>/dev/null || true) $(head -c 300 "$TMP/iperf3.err")"
    fi
    c1=$(switch_ns); t1=$(now_ns)
    R_TCPCPU=$(python3 -c "print(100*($c1-$c0)/1e9/(($t1-$t0)/1e9))")
    kill_pid "$spid"
    wait "$spid" 2>/dev/null || true
    log "  tcp: $(fmt .2f "$R_TCP") Gbit/s, switch cpu $(fmt .0f "$R_TCPCPU")%"
}

PCT_WITHHELD=0 # set when a repetition had too few replies for p99 or p99.9
ping_once() { # sets R_RTT (avg), R_P50/R_P99/R_P999 (HDR histogram percentiles), ms or nan,
    # R_PINGCPU (the switch's CPU % during the pings) and R_IDLECPU (its CPU % over IDLE_S
    # seconds with no traffic, a second after them)
    local out pct c0 t0 c1 t1
    t0=$(now_ns); c0=$(switch_ns)
    out=$(nsx "$C1" timeout 30 taskset -c "$APP_CPU" ping -c "$PING_N" -i 0.01 "$IP2" 2>&1 || true)
    c1=$(switch_ns); t1=$(now_ns)
    R_PINGCPU=$(python3 -c "print(100*($c1-$c0)/1e9/(($t1-$t0)/1e9))")
    sleep 1 # past the switch's post-traffic polling (uvs: --poll-linger-us)
    t0=$(now_ns); c0=$(switch_ns)
    sleep "$IDLE_S"
    c1=$(switch_ns); t1=$(now_ns)
    R_IDLECPU=$(python3 -c "print(100*($c1-$c0)/1e9/(($t1-$t0)/1e9))")
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
    log "  ping: avg $R_RTT ms, p50/p99/p99.9 $R_P50/$R_P99/$R_P999 ms from $R_PN replies of $PING_N ($(echo "$out" | grep -o '[0-9]*% packet loss' || echo '?')), switch cpu $(fmt .0f "$R_PINGCPU")%; idle ${IDLE_S}s: switch cpu $(fmt .1f "$R_IDLECPU")%"
}

declare -A RES_P50 RES_P99 RES_P999 RES_PPS RES_PCT RES_TCP RES_RTT RES_CPU RES_NOTE RES_BG RES_TCPCPU
declare -A RES_PINGCPU RES_IDLECPU RES_BUSY RES_KICKS RES_FPP RES_SHARE RES_SPREAD
# The spread of a row's repetitions: "min-max (N%)" of the values, N = (max-min)/median, with
# NOISY when N > 25 (two runs of that row would not agree); one repetition has no spread.
spread() { # FORMAT VALUE...
    python3 -c '
import sys, statistics as st
f, v = sys.argv[1], [float(x) for x in sys.argv[2:] if x not in ("", "nan")]
if len(v) < 2:
    print("n/a (%d rep.)" % len(v))
else:
    m, lo, hi = st.median(v), min(v), max(v)
    d = 100 * (hi - lo) / m if m else float("nan")
    print(f"{format(lo, f)}-{format(hi, f)} ({d:.0f}%)" + (" NOISY" if not d <= 25 else ""))' "$@"
}
measure() { # NAME: run REPS x (pps, tcp, ping, idle) and store medians
    local name="$1" i pps=() pct=() cpu=() tcp=() tcpcpu=() rtt=() p50=() p99=() p999=()
    local pingcpu=() idlecpu=() busy=() kicks=() fpp=() share=()
    sink_setup
    for i in $(seq "$REPS"); do
        log "[$name] repetition $i/$REPS"
        pps_once; pps+=("$R_PPS"); pct+=("$R_PCT"); cpu+=("$R_CPU"); busy+=("$R_BUSY")
        kicks+=("$R_KICKS"); fpp+=("$R_FPP"); share+=("$R_SHARE")
        tcp_once; tcp+=("$R_TCP"); tcpcpu+=("$R_TCPCPU")
        ping_once; rtt+=("$R_RTT"); p50+=("$R_P50"); p99+=("$R_P99"); p999+=("$R_P999")
        pingcpu+=("$R_PINGCPU"); idlecpu+=("$R_IDLECPU")
    done
    RES_PPS[$name]=$(median "${pps[@]}")
    RES_PCT[$name]=$(median "${pct[@]}")
    RES_CPU[$name]=$(median "${cpu[@]}")
    RES_BUSY[$name]=$(median "${busy[@]}")
    RES_KICKS[$name]=$(median "${kicks[@]}")
    RES_FPP[$name]=$(median "${fpp[@]}")
    RES_SHARE[$name]=$(median "${share[@]}")
    RES_TCP[$name]=$(median "${tcp[@]}")
    RES_TCPCPU[$name]=$(median "${tcpcpu[@]}")
    RES_RTT[$name]=$(median "${rtt[@]}")
    RES_P50[$name]=$(median "${p50[@]}")
    RES_P99[$name]=$(median "${p99[@]}")
    RES_P999[$name]=$(median "${p999[@]}")
    RES_PINGCPU[$name]=$(median "${pingcpu[@]}")
    RES_IDLECPU[$name]=$(median "${idlecpu[@]}")
    RES_SPREAD[$name]="| $name | $(fmt ,.0f "${RES_PPS[$name]}") | $(spread ,.0f "${pps[@]}") | $(fmt .2f "${RES_TCP[$name]}") | $(spread .2f "${tcp[@]}") | $(fmt .0f "${RES_CPU[$name]}") | $(spread .0f "${cpu[@]}") |"
}

check_idle() { # NAME: wait (bounded) for an idle machine; record the background load
    local name="$1" b waited=0
    b=$(busy_pct)
    while [ "$b" -gt 15 ] && [ "$waited" -lt "$WAIT_IDLE" ]; do
        log "[$name] machine ${b}% busy before the run; waiting for idle ($waited/${WAIT_IDLE}s)"
        sleep 4; waited=$((waited + 5))
        b=$(busy_pct)
    done
    if [ "$b" -gt 15 ]; then
        log "[$name] WARNING: machine ${b}% busy (other processes) before this switch's run: figures are disturbed"
    fi
    RES_BG[$name]=$b
}

# A row whose setup fails (a daemon that does not start, a port that cannot be added, c1 that
# cannot reach c2) is not measured: it is reported as FAILED with the reason, left out of every
# ratio, and the run exits 1 at the end. Its logs are copied out of $TMP (which the EXIT trap
# deletes) to /tmp/netns_l2.<PID>.<row>.logs/, whose path is printed.
declare -A RES_FAIL=()
row_failed() { # NAME REASON [LOG...]
    local name="$1" reason="$2" keep
    shift 2
    if [ $# -gt 0 ]; then
        keep="/tmp/netns_l2.${ID}.${name}.logs"
        mkdir -p "$keep"
        cp -r "$@" "$keep/" 2>/dev/null || true
        reason="$reason (logs kept in $keep)"
    fi
    RES_FAIL[$name]="$reason"
    log "[$name] FAILED: $reason"
}
# Wait for c1 -> c2 through the row's switch; a row that never gets there FAILS.
reach_or_fail() { # NAME TIMEOUT_S [LOG...]
    local name="$1" t="$2"
    shift 2
    wait_for "$t" reachable && return 0
    row_failed "$name" "c1 cannot reach c2 through the switch" "$@"
    return 1
}

# ---------------------------------------------------------------------------------------------
# Switches: setup, measure, teardown.

run_kernel() {
    make_veths
    ip link add "$KBR" type bridge stp_state 0 mcast_snooping 0
    ip link set "$KBR" up
    ip link set "$H1" master "$KBR"
    ip link set "$H2" master "$KBR"
    if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
        log "[kernel] note: br_netfilter is loaded (bridge-nf-call-iptables=$(cat /proc/sys/net/bridge/bridge-nf-call-iptables))"
    fi
    CPU_PID="" BUSY_KIND=""
    RES_NOTE[kernel]="CPU: softirq time of all CPUs (the bridge runs in softirq on the sender CPU)"
    if reach_or_fail kernel 10; then measure kernel; fi
    ip link del "$KBR"
    del_veths
}

OVSDIR="$TMP/ovs"
ovs_vsctl() { ovs-vsctl --db="unix:$OVSDIR/run/db.sock" --timeout=30 "$@"; }
start_ovs() {
    mkdir -p "$OVSDIR/run" "$OVSDIR/db" "$OVSDIR/log" "$OVSDIR/etc"
    export OVS_RUNDIR="$OVSDIR/run" OVS_DBDIR="$OVSDIR/db" OVS_LOGDIR="$OVSDIR/log" OVS_SYSCONFDIR="$OVSDIR/etc"
    ovsdb-tool create "$OVSDIR/db/conf.db" "$OVS_SCHEMA"
    ovsdb-server "$OVSDIR/db/conf.db" --remote="punix:$OVSDIR/run/db.sock" \
        --unixctl="$OVSDIR/run/ovsdb-server.ctl" --pidfile="$OVSDIR/run/ovsdb-server.pid" \
        --log-file="$OVSDIR/log/ovsdb-server.log" --no-chdir >/dev/null 2>&1 &
    OVSDB_PID=$!; PIDS+=("$OVSDB_PID")
    wait_for 10 test -S "$OVSDIR/run/db.sock" || { log "[ovs] ovsdb-server did not start"; return 1; }
    ovs_vsctl --no-wait init
    ovs_vsctl --no-wait set Open_vSwitch . "other_config:pmd-cpu-mask=$(printf '0x%x' $((1 << SW_CPU)))"
    ovs-vswitchd "unix:$OVSDIR/run/db.sock" --unixctl="$OVSDIR/run/ovs-vswitchd.ctl" \
        --pidfile="$OVSDIR/run/ovs-vswitchd.pid" --log-file="$OVSDIR/log/ovs-vswitchd.log" \
        --no-chdir >/dev/null 2>&1 &
    OVSVS_PID=$!; PIDS+=("$OVSVS_PID")
    wait_for 10 test -S "$OVSDIR/run/ovs-vswitchd.ctl" || { log "[ovs] ovs-vswitchd did not start"; return 1; }
}
stop_ovs() {
    [ -n "$OVSVS_PID" ] || return 0
    if kill -0 "$OVSVS_PID" 2>/dev/null; then
        timeout 10 ovs-appctl -t "$OVSDIR/run/ovs-vswitchd.ctl" exit --cleanup >/dev/null 2>&1 || true
        kill_pid "$OVSVS_PID"
    fi
    if [ -n "$OVSDB_PID" ] && kill -0 "$OVSDB_PID" 2>/dev/null; then
        timeout 10 ovs-appctl -t "$OVSDIR/run/ovsdb-server.ctl" exit >/dev/null 2>&1 || true
        kill_pid "$OVSDB_PID"
    fi
    OVSVS_PID="" OVSDB_PID=""
}
ovs_add_afxdp() { # PORT: add an afxdp port, native (copy) mode first, generic if that fails
    local port="$1" mode err
    for mode in $(echo "$OVS_XDP_MODE generic" | tr " " "\n" | awk '!seen[$0]++'); do # OVS 3.1 names: native = driver mode, copy
        ovs_vsctl add-port "$OBR" "$port" -- set interface "$port" type=afxdp "options:xdp-mode=$mode" || true
        sleep 0.5
        err=$(ovs_vsctl get interface "$port" error 2>/dev/null || echo '"?"')
        if [ "$err" = "[]" ] && [ "$(ovs_vsctl get interface "$port" ofport)" != "-1" ]; then
            log "[ovs] $port: afxdp xdp-mode=$mode"
            OVS_MODE=$mode
            return 0
        fi
        log "[ovs] $port: xdp-mode=$mode failed: $err; ovs-vswitchd.log says:"
        grep -i "$port" "$OVSDIR/log/ovs-vswitchd.log" | grep -iv "info" | tail -n 4 | sed 's/^/    /' >&2 || true
        ovs_vsctl --if-exists del-port "$OBR" "$port" || true
    done
    return 1
}
run_ovs() {
    make_veths
    if ! start_ovs; then
        row_failed ovs "OVS did not start" "$OVSDIR/log"; stop_ovs; del_veths; return 0
    fi
    ovs_vsctl add-br "$OBR" -- set bridge "$OBR" datapath_type=netdev
    if ! ovs_add_afxdp "$H1" || ! ovs_add_afxdp "$H2"; then
        log "[ovs] could not add afxdp ports; tail of ovs-vswitchd.log:"
        tail -n 20 "$OVSDIR/log/ovs-vswitchd.log" >&2 || true
        row_failed ovs "OVS could not add its afxdp ports" "$OVSDIR/log"; stop_ovs; del_veths; return 0
    fi
    # OVS's userspace datapath forwards CHECKSUM_PARTIAL frames from the veths unchanged and the
    # receiver drops them (ARCHITECTURE.md section 7): turn TX checksum offload off, OVS only.
    nsx "$C1" ethtool -K eth0 tx off >/dev/null
    nsx "$C2" ethtool -K eth0 tx off >/dev/null
    log "[ovs] 'ethtool -K eth0 tx off' in c1 and c2 (needed for TCP through OVS AF_XDP)"
    CPU_PID=$OVSVS_PID BUSY_KIND=ovs
    RES_NOTE[ovs]="afxdp xdp-mode=$OVS_MODE, PMD on core $SW_CPU; eth0 tx checksum offload OFF in c1, c2"
    if ! reach_or_fail ovs 15 "$OVSDIR/log"; then stop_ovs; del_veths; return 0; fi
    measure ovs
    log "[ovs] pmd stats (since the last pps test's pmd-stats-clear):"; timeout 10 ovs-appctl -t "$OVSDIR/run/ovs-vswitchd.ctl" dpif-netdev/pmd-stats-show 2>/dev/null | sed 's/^/    /' | head -20 >&2 || true
    stop_ovs
    del_veths
}

uvs_ctl() { "$UVS" ctl --socket "$TMP/uvs.sock" "$@"; }
start_uvs() {
    "$UVS" run --socket "$TMP/uvs.sock" --cores "$SW_CPU" >"$TMP/uvs.log" 2>&1 &
    UVS_PID=$!; PIDS+=("$UVS_PID")
    if ! wait_for 10 uvs_ctl version; then
        log "uvs did not start:"; sed 's/^/    /' "$TMP/uvs.log" >&2; return 1
    fi
    uvs_ctl add-br br0 >/dev/null
}
stop_uvs() {
    if [ -n "$UVS_PID" ]; then
        log "uvs stats: $(uvs_ctl stats 2>&1 | tr '\n' ';' | head -c 1500)"
        kill_pid "$UVS_PID"; wait "$UVS_PID" 2>/dev/null || true
    fi
    UVS_PID=""
}
run_uvs_afxdp() {
    make_veths
    if ! start_uvs; then row_failed uvs-afxdp "uvs did not start" "$TMP/uvs.log"; stop_uvs; del_veths; return 0; fi
    local ok=1
    uvs_ctl add-port br0 "$H1" type=afxdp "xdp_mode=$UVS_XDP_MODE" >&2 || ok=0
    uvs_ctl add-port br0 "$H2" type=afxdp "xdp_mode=$UVS_XDP_MODE" >&2 || ok=0
    if [ "$ok" = 0 ]; then
        row_failed uvs-afxdp "add-port type=afxdp failed" "$TMP/uvs.log"; stop_uvs; del_veths; return 0
    fi
    CPU_PID=$UVS_PID BUSY_KIND=uvs
    RES_NOTE[uvs-afxdp]="xdp_mode=$UVS_XDP_MODE, worker on core $SW_CPU; default offloads in c1, c2"
    if reach_or_fail uvs-afxdp 10 "$TMP/uvs.log"; then measure uvs-afxdp; fi
    stop_uvs
    del_veths
}
run_uvs_afpacket() {
    make_veths
    if ! start_uvs; then row_failed uvs-afpacket "uvs did not start" "$TMP/uvs.log"; stop_uvs; del_veths; return 0; fi
    local ok=1
    uvs_ctl add-port br0 "$H1" type=afpacket >&2 || ok=0
    uvs_ctl add-port br0 "$H2" type=afpacket >&2 || ok=0
    if [ "$ok" = 0 ]; then
        row_failed uvs-afpacket "add-port type=afpacket failed" "$TMP/uvs.log"; stop_uvs; del_veths; return 0
    fi
    CPU_PID=$UVS_PID BUSY_KIND=uvs
    RES_NOTE[uvs-afpacket]="worker on core $SW_CPU; default offloads in c1, c2"
    if reach_or_fail uvs-afpacket 10 "$TMP/uvs.log"; then measure uvs-afpacket; fi
    stop_uvs
    del_veths
}
run_uvs_tap() {
    if ! start_uvs; then row_failed uvs-tap "uvs did not start" "$TMP/uvs.log"; stop_uvs; return 0; fi
    local ok=1
    uvs_ctl add-port br0 "$T1" type=tap >&2 || ok=0
    uvs_ctl add-port br0 "$T2" type=tap >&2 || ok=0
    if [ "$ok" = 0 ]; then row_failed uvs-tap "add-port type=tap failed" "$TMP/uvs.log"; stop_uvs; return 0; fi
    ip link set "$T1" netns "$C1"
    ip link set "$T2" netns "$C2"
    nsx "$C1" ip link set "$T1" name eth0
    nsx "$C2" ip link set "$T2" name eth0
    config_eth0 "$C1" "$MAC1" "$IP1"
    config_eth0 "$C2" "$MAC2" "$IP2"
    CPU_PID=$UVS_PID BUSY_KIND=uvs
    RES_NOTE[uvs-tap]="worker on core $SW_CPU; TAP moved into c1, c2 as eth0"
    if reach_or_fail uvs-tap 10 "$TMP/uvs.log"; then measure uvs-tap; fi
    stop_uvs # closing the fds removes the TAPs
    nsx "$C1" ip link del eth0 2>/dev/null || true
    nsx "$C2" ip link del eth0 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
log "switches:$SWITCHES; $REPS repetition(s), ${DUR}s traffic; traffic tools on CPU $APP_CPU, switch on core $SW_CPU; kernel $(uname -r)"
if want uvs-afxdp || want uvs-afpacket || want uvs-tap; then
    cp "$UVS" "$TMP/uvs" # one binary for the whole run, even if target/ is rebuilt meanwhile
    UVS="$TMP/uvs"
fi
make_namespaces
# The UDP sink in c2: a bound socket that never reads. Without it every 64-byte packet to a closed
# port makes c2's kernel look up a route for an ICMP port-unreachable (rate-limited after the
# lookup), which measured as ~40% of the delivering CPU: that is c2's cost, not the switch's.
# With it, packets queue until the (small) receive buffer is full and are then dropped cheaply
# (UDP RcvbufErrors); rx_packets of c2's eth0 counts them all the same.
nsx "$C2" timeout 7200 python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.bind(("0.0.0.0", 9))
time.sleep(7200)' &
PIDS+=("$!")
for s in $SWITCHES; do
    check_idle "$s"
    log "[$s] setting up"
    case "$s" in
    kernel) run_kernel ;;
    ovs) run_ovs ;;
    uvs-afxdp) run_uvs_afxdp ;;
    uvs-afpacket) run_uvs_afpacket ;;
    uvs-tap) run_uvs_tap ;;
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
echo "netns L2 benchmark, $(date -u +%Y-%m-%dT%H:%MZ), kernel $(uname -r), $NCPU CPUs;" \
    "median of $REPS x ${DUR}s; traffic tools on CPU $APP_CPU, uvs worker / OVS PMD on core $SW_CPU; nice $NICE"
if [ "$SHARE" != 100 ]; then
    echo "pps test: the switch's core shared with a CPU-bound process at nice $HOG_NICE (switch's share" \
        "asked $SHARE%, measured:$(for s in $SWITCHES; do printf ' %s %s%%;' "$s" "$(fmt .0f "${RES_SHARE[$s]:-nan}")"; done)" \
        "the kernel bridge forwards in softirq on CPU $APP_CPU, which is not shared);" \
        "a ratio of two switches is given only when their measured shares differ by at most $SHARE_TOL% (relative)"
fi
if [ "$SINK" = drop ]; then
    echo "pps test: c2 drops the UDP frames at netdev ingress (nftables), before its IP stack"
fi
if want uvs-afxdp || want uvs-afpacket || want uvs-tap; then
    echo "uvs: $UVS_INFO; $(uvs_poll_mode)"
fi
echo "pps test: generator $GEN"
echo
# Said under the table when a repetition had too few replies for a percentile (n/a there).
pct_note() {
    [ "$PCT_WITHHELD" = 1 ] || return 0
    echo "Ping percentiles: p99 is given from 100 replies a repetition, p99.9 from 1000; with fewer" \
        "(this run sent $PING_N pings a repetition$([ "$QUICK" = 1 ] && echo ', --quick')) they are n/a, not the largest samples."
}
pct3() { echo "$(fmt .3f "${RES_P50[$1]:-nan}") / $(fmt .3f "${RES_P99[$1]:-nan}") / $(fmt .3f "${RES_P999[$1]:-nan}")"; }
echo "| switch | 64B pps delivered | delivered/sent | TCP Gbit/s | TCP switch CPU % (per Gbit/s) | ping avg ms | ping p50 / p99 / p99.9 ms | switch CPU % (pps) | forwarding % (pps) | switch CPU % (ping) | switch CPU % (idle) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for s in $SWITCHES; do
    if [ -n "${RES_FAIL[$s]:-}" ]; then
        echo "| $s | FAILED | | | | | | | | | |"
        continue
    fi
    if [ -z "${RES_PPS[$s]:-}" ]; then
        echo "| $s | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"
        continue
    fi
    cpu="$(fmt .0f "${RES_CPU[$s]}")"
    if [ "$s" = kernel ]; then cpu="$cpu (softirq)"; fi
    tcpcpu="$(fmt .0f "${RES_TCPCPU[$s]:-nan}") ($(python3 -c 'import sys,math; c,g=float(sys.argv[1]),float(sys.argv[2]); print("n/a" if math.isnan(c) or math.isnan(g) or g==0 else f"{c/g:.1f}")' "${RES_TCPCPU[$s]:-nan}" "${RES_TCP[$s]:-nan}"))"
    echo "| $s | $(fmt ,.0f "${RES_PPS[$s]}") | $(fmt .1f "${RES_PCT[$s]}")% | $(fmt .2f "${RES_TCP[$s]}") | $tcpcpu | $(fmt .3f "${RES_RTT[$s]}") | $(pct3 "$s") | $cpu | $(fmt .1f "${RES_BUSY[$s]:-nan}") | $(fmt .0f "${RES_PINGCPU[$s]:-nan}") | $(fmt .1f "${RES_IDLECPU[$s]:-nan}") |"
done
for s in $SKIPPED; do echo "| $s | SKIPPED | | | | | | | | | |"; done
echo
for s in $SWITCHES; do
    if [ -n "${RES_FAIL[$s]:-}" ]; then
        echo "- $s: FAILED, not measured: ${RES_FAIL[$s]}"
        continue
    fi
    echo "- $s: ${RES_NOTE[$s]:-}; machine ${RES_BG[$s]:-?}% busy just before"
done
for s in $SKIPPED; do echo "- $s: SKIPPED, not measured: ${RES_SKIP[$s]}"; done
echo
if [ "$PCT_WITHHELD" = 1 ]; then pct_note; echo; fi
if [ "$REPS" -gt 1 ]; then
    echo "Spread of the $REPS repetitions (the table gives each column's median, taken on its own):" \
        "min-max and (max-min)/median; NOISY = over 25%: a second run could differ as much."
    echo
    echo "| switch | pps median | pps min-max | TCP median | TCP min-max | CPU % (pps) median | CPU % min-max |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for s in $SWITCHES; do [ -z "${RES_SPREAD[$s]:-}" ] || echo "${RES_SPREAD[$s]}"; done
    noisy=$(for s in $SWITCHES; do case "${RES_SPREAD[$s]:-}" in *NOISY*) printf ' %s' "$s" ;; esac; done)
    if [ -n "$noisy" ]; then
        echo
        echo "NOISY rows:$noisy: their repetitions differ by more than 25%; ratios with them are not reproducible."
    fi
    echo
fi
# Ratios use measured rows only: a FAILED row is left out.
ok_row() { want "$1" && [ -z "${RES_FAIL[$1]:-}" ]; }
# A userspace switch that lost frames in the pps test while it ran under 85% of its core was
# starved by other work on the machine (it polls whenever frames wait): a ratio with its row
# measures that work, not the switch (found trying `uvs bench` as a new user: OVS at 53% of
# its core, 73% delivered, printed as "uvs-afxdp / ovs: pps 2.44x"). Not with
# --switch-share, which shares the core on purpose.
starved() {
    [ "$SHARE" = 100 ] && [ "$1" != kernel ] && ok_row "$1" &&
        python3 -c 'import sys,math; c,p=(float(x) if x not in ("","nan") else math.nan for x in sys.argv[1:3]); sys.exit(0 if c < 85 and p < 99 else 1)' "${RES_CPU[$1]:-nan}" "${RES_PCT[$1]:-nan}"
}
STARVED=$(for s in $SWITCHES; do if starved "$s"; then printf ' %s' "$s"; fi; done)
if [ -n "$STARVED" ]; then
    echo "STARVED rows:$STARVED: each lost frames in the pps test while it ran under 85% of its" \
        "core (other work on the machine took the rest): their ratios are withheld below, as they" \
        "would measure that work, not the switches. Run again with --nice -19 --wait-idle 120 (and --reps 3)."
    echo
fi
# --switch-share: two userspace switches' pps compare their capacities only at the same CPU
# share. The share each got is measured (the competitor's exact time on the core): a ratio is
# given when the two differ by at most SHARE_TOL% of the larger (found trying `uvs bench` as a
# new user: a ratio printed from shares of 25% and 12%). The kernel bridge forwards on CPU
# $APP_CPU, outside the shared core: its share is not compared.
shares_match() { # A B
    [ "$SHARE" != 100 ] && [ "$1" != kernel ] && [ "$2" != kernel ] || return 0
    python3 -c 'import sys,math; a,b,t=(float(x) if x not in ("","nan") else math.nan for x in sys.argv[1:4]); sys.exit(0 if abs(a-b) <= t/100*max(a,b) else 1)' \
        "${RES_SHARE[$1]:-nan}" "${RES_SHARE[$2]:-nan}" "$SHARE_TOL"
}
# A ratio line for rows A and B: LINE, or (either row STARVED) why it is withheld, with the
# starved row's CPU and delivered share (the VXLAN bench withholds its verdict the same way).
ratio_line() { # A B LINE
    local q why=""
    for q in "$1" "$2"; do
        case " $STARVED " in
        *" $q "*) why="$why${why:+; }$q STARVED (at $(fmt .0f "${RES_CPU[$q]:-nan}")% of its core, $(fmt .1f "${RES_PCT[$q]:-nan}")% delivered)" ;;
        esac
    done
    if [ -n "$why" ]; then
        echo "- $1 / $2: ratios withheld: $why; a ratio would measure the machine's other work, not the switches"
    elif ! shares_match "$1" "$2"; then
        echo "- $1 / $2: ratios withheld: the measured shares of core $SW_CPU differ, $1 $(fmt .0f "${RES_SHARE[$1]:-nan}")%" \
            "and $2 $(fmt .0f "${RES_SHARE[$2]:-nan}")% (asked $SHARE%; tolerance $SHARE_TOL% relative): a ratio would compare different CPU shares"
    else
        echo "$3"
    fi
}
if ok_row uvs-afpacket && ok_row ovs; then
    ratio_line uvs-afpacket ovs "- uvs-afpacket / ovs: pps $(ratio "${RES_PPS[uvs-afpacket]:-}" "${RES_PPS[ovs]:-}"), TCP $(ratio "${RES_TCP[uvs-afpacket]:-}" "${RES_TCP[ovs]:-}")"
fi
if ok_row uvs-afxdp && ok_row ovs; then
    ratio_line uvs-afxdp ovs "- uvs-afxdp / ovs: pps $(ratio "${RES_PPS[uvs-afxdp]:-}" "${RES_PPS[ovs]:-}"), TCP $(ratio "${RES_TCP[uvs-afxdp]:-}" "${RES_TCP[ovs]:-}"), CPU $(ratio "${RES_CPU[uvs-afxdp]:-}" "${RES_CPU[ovs]:-}")
- forwarding time per delivered frame, uvs-afxdp / ovs: $(python3 -c 'import sys,math; b1,p1,b2,p2=(float(x) if x not in ("","nan") else math.nan for x in sys.argv[1:5]); r=(b1/p1)/(b2/p2) if p1 and p2 and b2 else math.nan; print("n/a" if math.isnan(r) else f"{r:.2f}x ({1e7*b1/p1:.0f} ns vs {1e7*b2/p2:.0f} ns)")' "${RES_BUSY[uvs-afxdp]:-nan}" "${RES_PPS[uvs-afxdp]:-nan}" "${RES_BUSY[ovs]:-nan}" "${RES_PPS[ovs]:-nan}")"
fi
if ok_row uvs-afxdp; then
    echo "- uvs-afxdp frames received per busy loop pass (pps test): $(fmt .1f "${RES_FPP[uvs-afxdp]:-nan}")"
fi
kicks=$(for s in $SWITCHES; do ok_row "$s" || continue; printf ' %s %s;' "$s" "$(fmt .2f "${RES_KICKS[$s]:-nan}")"; done)
if [ "$HAVE_PERF" = 1 ] && [ -n "$kicks" ]; then
    # Doorbells: each AF_XDP copy-mode transmit needs a sendto (see docs/design.md).
    echo "- sendto calls on core $SW_CPU per delivered frame (pps test):$kicks"
fi
for u in uvs-afxdp uvs-afpacket uvs-tap; do
    if ok_row "$u" && ok_row kernel; then
        ratio_line "$u" kernel "- $u / kernel: pps $(ratio "${RES_PPS[$u]:-}" "${RES_PPS[kernel]:-}"), TCP $(ratio "${RES_TCP[$u]:-}" "${RES_TCP[kernel]:-}")"
    fi
done
if [ ${#RES_FAIL[@]} -gt 0 ]; then
    echo
    echo "FAILED (not measured, left out of the ratios):$(for s in $SWITCHES; do [ -z "${RES_FAIL[$s]:-}" ] || printf ' %s;' "$s"; done) see the notes above"
    log "FAILED rows:$(for s in $SWITCHES; do [ -z "${RES_FAIL[$s]:-}" ] || printf ' %s (%s);' "$s" "${RES_FAIL[$s]}"; done)"
    exit 1
fi
