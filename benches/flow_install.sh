#!/usr/bin/env bash
# Flow install rate, in one run: the same file of 100k distinct flows (ovs-ofctl syntax, 4 masks)
# installed with
#   uvs   `uvs ctl --socket S add-flows br0 FILE` into a private `uvs run` daemon
#   ovs   `ovs-ofctl add-flows br0 FILE` into Open vSwitch's userspace datapath
#         (datapath_type=netdev; private ovsdb-server + ovs-vswitchd in a temp dir)
#   ovs-bundle  the same with `-O OpenFlow14 --bundle` (one atomic bundle; extra row)
# Wall clock of the command (it returns once every flow is in: uvs replies after the worker
# applied them, ovs-ofctl waits for the barrier reply), 3 repetitions with the flows deleted in
# between; counts verified with dump-flows after every repetition. Prints flows/s and uvs/OVS.
#
# Usage: sudo benches/flow_install.sh [--flows N] [--reps R] [--uvs PATH] [--keep-file F]
# Progress goes to stderr, the Markdown table to stdout. See docs/benchmarks.md.
set -euo pipefail

FLOWS=100000
REPS=3
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UVS=""
KEEP=""
while [ $# -gt 0 ]; do
    case "$1" in
    --flows) FLOWS="${2:?--flows needs a number}"; shift ;;
    --reps) REPS="${2:?--reps needs a number}"; shift ;;
    --uvs) UVS="${2:?--uvs needs a path}"; shift ;;
    --keep-file) KEEP="${2:?--keep-file needs a path}"; shift ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "flow_install: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "[flow_install $(date +%T)] $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "flow_install: SKIP: needs root (ovs-vswitchd's netdev datapath, private OVS daemons)" >&2
    exit 0
fi
for t in python3 ovsdb-tool ovsdb-server ovs-vswitchd ovs-vsctl ovs-ofctl ovs-appctl; do
    if ! command -v "$t" >/dev/null 2>&1; then
        echo "flow_install: SKIP: required tool '$t' is not installed (openvswitch-switch)" >&2
        exit 0
    fi
done
OVS_SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
if [ ! -r "$OVS_SCHEMA" ]; then
    echo "flow_install: SKIP: $OVS_SCHEMA not found" >&2
    exit 0
fi
if [ -z "$UVS" ]; then
    UVS="${CARGO_TARGET_DIR:-$REPO/target}/release/uvs"
    if [ ! -x "$UVS" ] && command -v cargo >/dev/null 2>&1; then
        log "building uvs (cargo build --release)"
        (cd "$REPO" && cargo build --release >&2)
    fi
fi
if [ ! -x "$UVS" ]; then
    echo "flow_install: SKIP: uvs binary '$UVS' not found (cargo build --release, or --uvs PATH)" >&2
    exit 0
fi

TMP="$(mktemp -d "/tmp/flow_install.$$.XXXXXX")"
OVSDIR="$TMP/ovs"
PIDS=()
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
stop_ovs() {
    if [ -n "$OVSVS_PID" ] && kill -0 "$OVSVS_PID" 2>/dev/null; then
        timeout 10 ovs-appctl -t "$OVSDIR/run/ovs-vswitchd.ctl" exit --cleanup >/dev/null 2>&1 || true
        kill_pid "$OVSVS_PID"
    fi
    if [ -n "$OVSDB_PID" ] && kill -0 "$OVSDB_PID" 2>/dev/null; then
        timeout 10 ovs-appctl -t "$OVSDIR/run/ovsdb-server.ctl" exit >/dev/null 2>&1 || true
        kill_pid "$OVSDB_PID"
    fi
    OVSVS_PID="" OVSDB_PID=""
}
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    stop_ovs 2>/dev/null || true
    for pid in "${PIDS[@]}"; do kill_pid "$pid"; done
    ip netns del "$OVS_NS" 2>/dev/null || true
    if [ -n "$KEEP" ] && [ -f "$TMP/flows.txt" ]; then cp "$TMP/flows.txt" "$KEEP"; fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # TIMEOUT_S CMD...
    local end=$((SECONDS + $1)); shift
    while [ "$SECONDS" -lt "$end" ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
now_ns() { date +%s%N; }
median() { python3 -c 'import sys,statistics as s; v=[float(x) for x in sys.argv[1:]]; print(s.median(v) if v else "nan")' "$@"; }

# ---------------------------------------------------------------------------------------------
# The flow file: FLOWS distinct flows, round-robin over 4 masks, all with priority 100..1099:
#   ip,nw_src=A/32        udp,nw_src=A/24,tp_dst=P     tcp,nw_dst=A/16,tp_dst=P
#   ip,nw_src=A/32,nw_dst=B/32 (A, B from 10/8 and 172.16/12; every match distinct)
FILE="$TMP/flows.txt"
python3 - "$FLOWS" >"$FILE" <<'EOF'
import sys
n = int(sys.argv[1])
def ip(a): return f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"
for j in range(n):
    m, k = j % 4, j // 4
    prio = 100 + j % 1000
    if m == 0:
        print(f"priority={prio},ip,nw_src={ip((10 << 24) | k)},actions=drop")
    elif m == 1:
        print(f"priority={prio},udp,nw_src={ip((10 << 24) | ((k % 65536) << 8))}/24,tp_dst={1 + k // 65536},actions=drop")
    elif m == 2:
        print(f"priority={prio},tcp,nw_dst={ip((172 << 24) | ((16 + k % 16) << 16))}/16,tp_dst={1 + k // 16},actions=drop")
    else:
        print(f"priority={prio},ip,nw_src={ip((10 << 24) | k)},nw_dst={ip((172 << 24) | (16 << 16) | k)},actions=drop")
EOF
DISTINCT=$(sort -u "$FILE" | wc -l)
[ "$DISTINCT" = "$FLOWS" ] || { log "flow file: $DISTINCT distinct lines, expected $FLOWS"; exit 1; }
log "flow file: $FLOWS flows, $(du -k "$FILE" | cut -f1) KiB, e.g. '$(sed -n 2p "$FILE")'"

# ---------------------------------------------------------------------------------------------
# uvs
declare -A RATE TIMES NOTE
UVS_COPY="$TMP/uvs"
cp "$UVS" "$UVS_COPY" # one binary for the whole run, even if target/ is rebuilt meanwhile
UVS_INFO="$UVS (built $(date -u -r "$UVS" +%Y-%m-%dT%H:%MZ)), repo at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
uvs_ctl() { "$UVS_COPY" ctl --socket "$TMP/uvs.sock" "$@"; }
uvs_count() { # flows on br0 (dump-flows --json)
    uvs_ctl --json dump-flows br0 | python3 -c 'import sys,json; print(len(json.load(sys.stdin)["flows"]))'
}
ovs_count() { # flows on br0 (dump-flows lines minus the header)
    ovs-ofctl dump-flows br0 | grep -c 'actions=' || true
}

run_uvs() {
    log "[uvs] starting $UVS_COPY run --socket $TMP/uvs.sock"
    "$UVS_COPY" run --socket "$TMP/uvs.sock" >"$TMP/uvs.log" 2>&1 &
    UVS_PID=$!; PIDS+=("$UVS_PID")
    if ! wait_for 10 uvs_ctl version; then
        log "[uvs] did not start:"; sed 's/^/    /' "$TMP/uvs.log" >&2; NOTE[uvs]="did not start"; return 0
    fi
    uvs_ctl add-br br0 >/dev/null
    uvs_ctl del-flows br0 >/dev/null
    local base t0 t1 n out times=() ok=1
    base=$(uvs_count)
    log "[uvs] flows before: $base"
    for r in $(seq "$REPS"); do
        t0=$(now_ns)
        if ! out=$(uvs_ctl add-flows br0 "$FILE" 2>&1); then
            log "[uvs] add-flows failed: $out"; NOTE[uvs]="add-flows failed: $out"; ok=0; break
        fi
        t1=$(now_ns)
        n=$(uvs_count)
        log "[uvs] rep $r: $(python3 -c "print(f'{($t1-$t0)/1e9:.3f}')") s; reply '$(echo "$out" | tr '\n' ' ')'; dump-flows: $n flows"
        if [ "$n" != "$((base + FLOWS))" ]; then
            log "[uvs] WRONG COUNT: $n, expected $((base + FLOWS))"; NOTE[uvs]="wrong count $n"; ok=0
        fi
        times+=("$(python3 -c "print(($t1-$t0)/1e9)")")
        t0=$(now_ns)
        uvs_ctl del-flows br0 >/dev/null
        t1=$(now_ns)
        n=$(uvs_count)
        log "[uvs] del-flows: $(python3 -c "print(f'{($t1-$t0)/1e9:.3f}')") s, $n flows left"
    done
    log "[uvs] daemon RSS $(awk '/VmHWM/ {print $2, $3}' "/proc/$UVS_PID/status") peak"
    kill_pid "$UVS_PID"; wait "$UVS_PID" 2>/dev/null || true; UVS_PID=""
    if [ "$ok" = 1 ]; then
        TIMES[uvs]="${times[*]}"
        RATE[uvs]=$(python3 -c "print($FLOWS/$(median "${times[@]}"))")
    fi
}

# ---------------------------------------------------------------------------------------------
# OVS
# ovs-vswitchd runs in a namespace of its own: its netdev datapath creates TAP devices
# (ovs-netdev, one per bridge) that outlive it; deleting the namespace removes them.
OVS_NS="fi$$ovs"
start_ovs() {
    ip netns add "$OVS_NS"
    mkdir -p "$OVSDIR/run" "$OVSDIR/db" "$OVSDIR/log" "$OVSDIR/etc"
    export OVS_RUNDIR="$OVSDIR/run" OVS_DBDIR="$OVSDIR/db" OVS_LOGDIR="$OVSDIR/log" OVS_SYSCONFDIR="$OVSDIR/etc"
    ovsdb-tool create "$OVSDIR/db/conf.db" "$OVS_SCHEMA"
    ovsdb-server "$OVSDIR/db/conf.db" --remote="punix:$OVSDIR/run/db.sock" \
        --unixctl="$OVSDIR/run/ovsdb-server.ctl" --pidfile="$OVSDIR/run/ovsdb-server.pid" \
        --log-file="$OVSDIR/log/ovsdb-server.log" --no-chdir >/dev/null 2>&1 &
    OVSDB_PID=$!; PIDS+=("$OVSDB_PID")
    wait_for 10 test -S "$OVSDIR/run/db.sock" || { log "[ovs] ovsdb-server did not start"; return 1; }
    ovs_vsctl --no-wait init
    ip netns exec "$OVS_NS" ovs-vswitchd "unix:$OVSDIR/run/db.sock" --unixctl="$OVSDIR/run/ovs-vswitchd.ctl" \
        --pidfile="$OVSDIR/run/ovs-vswitchd.pid" --log-file="$OVSDIR/log/ovs-vswitchd.log" \
        --no-chdir >/dev/null 2>&1 &
    OVSVS_PID=$!; PIDS+=("$OVSVS_PID")
    wait_for 10 test -S "$OVSDIR/run/ovs-vswitchd.ctl" || { log "[ovs] ovs-vswitchd did not start"; return 1; }
}
ovs_vsctl() { ovs-vsctl --db="unix:$OVSDIR/run/db.sock" --timeout=30 "$@"; }

ovs_measure() { # NAME OFCTL-OPTIONS...: REPS timed add-flows of FILE, del-flows in between
    local name="$1" base t0 t1 n times=() ok=1
    shift
    base=$(ovs_count)
    log "[$name] ovs-ofctl ${*:+$* }add-flows br0 FILE; flows before: $base"
    for r in $(seq "$REPS"); do
        t0=$(now_ns)
        if ! ovs-ofctl "$@" add-flows br0 "$FILE" >"$TMP/ofctl.out" 2>&1; then
            log "[$name] add-flows failed: $(head -c 500 "$TMP/ofctl.out")"; NOTE[$name]="add-flows failed"; ok=0; break
        fi
        t1=$(now_ns)
        n=$(ovs_count)
        log "[$name] rep $r: $(python3 -c "print(f'{($t1-$t0)/1e9:.3f}')") s; dump-flows: $n flows"
        if [ "$n" != "$((base + FLOWS))" ]; then
            log "[$name] WRONG COUNT: $n, expected $((base + FLOWS))"; NOTE[$name]="wrong count $n"; ok=0
        fi
        times+=("$(python3 -c "print(($t1-$t0)/1e9)")")
        t0=$(now_ns)
        ovs-ofctl del-flows br0
        t1=$(now_ns)
        log "[$name] del-flows: $(python3 -c "print(f'{($t1-$t0)/1e9:.3f}')") s, $(ovs_count) flows left"
    done
    if [ "$ok" = 1 ]; then
        TIMES[$name]="${times[*]}"
        RATE[$name]=$(python3 -c "print($FLOWS/$(median "${times[@]}"))")
    fi
}

run_ovs() {
    if ! start_ovs; then NOTE[ovs]="OVS did not start"; stop_ovs; return 0; fi
    OVS_VERSION=$(ovs-vswitchd --version | head -1)
    ovs_vsctl add-br br0 -- set bridge br0 datapath_type=netdev
    wait_for 10 test -S "$OVSDIR/run/br0.mgmt" || { log "[ovs] br0.mgmt did not appear"; NOTE[ovs]="no br0.mgmt"; stop_ovs; return 0; }
    ovs-ofctl del-flows br0
    log "[ovs] $OVS_VERSION"
    ovs_measure ovs
    # Also as one OpenFlow 1.4 bundle (an atomic transaction): OVS's other bulk path.
    ovs_measure ovs-bundle -O OpenFlow14 --bundle
    log "[ovs] ovs-vswitchd RSS $(awk '/VmHWM/ {print $2, $3}' "/proc/$OVSVS_PID/status") peak"
    stop_ovs
}

log "$FLOWS flows, $REPS repetitions; kernel $(uname -r), $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
run_uvs
run_ovs

# ---------------------------------------------------------------------------------------------
echo "Flow install, $(date -u +%Y-%m-%dT%H:%MZ), kernel $(uname -r), $(nproc) CPUs;" \
    "$FLOWS distinct flows (4 masks) from one file, median of $REPS, flows deleted in between"
echo "uvs: $UVS_INFO; OVS: ${OVS_VERSION:-?} (datapath_type=netdev)"
echo
echo "| switch | command | seconds per repetition | median flows/s |"
echo "|---|---|---|---:|"
for s in uvs ovs ovs-bundle; do
    case "$s" in
    uvs) cmd='`uvs ctl add-flows br0 FILE`' ;;
    ovs) cmd='`ovs-ofctl add-flows br0 FILE`' ;;
    ovs-bundle) cmd='`ovs-ofctl -O OpenFlow14 --bundle add-flows br0 FILE`' ;;
    esac
    if [ -z "${RATE[$s]:-}" ]; then
        echo "| $s | $cmd | n/a (${NOTE[$s]:-failed}) | n/a |"
        continue
    fi
    secs=$(python3 -c 'import sys; print(", ".join(f"{float(x):.3f}" for x in sys.argv[1:]))' ${TIMES[$s]})
    echo "| $s | $cmd | $secs | $(python3 -c "print(f'{${RATE[$s]}:,.0f}')") |"
done
echo
if [ -n "${RATE[uvs]:-}" ] && [ -n "${RATE[ovs]:-}" ]; then
    ratio=$(python3 -c "print(f'{${RATE[uvs]}/${RATE[ovs]}:.2f}')")
    verdict=$(python3 -c "print('met' if ${RATE[uvs]} >= 2*${RATE[ovs]} else 'NOT met')")
    echo "- uvs / OVS flows/s: ${ratio}x (target >= 2x: $verdict)"
fi
if [ -n "${RATE[uvs]:-}" ] && [ -n "${RATE[ovs-bundle]:-}" ]; then
    echo "- uvs / OVS --bundle flows/s: $(python3 -c "print(f'{${RATE[uvs]}/${RATE[ovs-bundle]}:.2f}')")x"
fi
