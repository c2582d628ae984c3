#!/usr/bin/env bash
# Forwarding stall under port churn (issue 10): two containers c1, c2 on bridge br0 ping each
# other every 2 ms through uvs while a client adds and deletes ports on the same bridge in a
# loop (AF_XDP and AF_PACKET ports on veths made beforehand, TAP ports uvs creates), as podman
# does through uvs-cni when containers come and go. Each uvs binary given runs two phases back
# to back on the same topology:
#   quiet  ping only
#   churn  ping while `uvs ctl add-port` / `del-port` cycle over the churn ports
# and reports ping loss, RTT p50 / p99 / max (ms) and the churn operations done. A worker that
# opens and closes ports itself stops forwarding for the duration of each BPF load, socket
# bind/close or TAP creation: that shows as a high max RTT and p99 (and loss once the veth and
# XSK rings overflow).
#
# Usage: sudo benches/port_churn.sh [--uvs PATH]... [--secs S] [--ports N] [--ping-type T]
#   --uvs PATH     binary to measure (repeatable; default target/release/uvs)
#   --secs S       seconds per phase (default 6)
#   --ports N      churn ports of each kind (default 3: N afxdp + N afpacket + N tap)
#   --ping-type T  port type of c1 and c2 (afxdp|afpacket|tap, default afxdp)
#   --interval S   seconds between pings (default 0.002; a slow ping lets the worker sleep)
# Progress goes to stderr, a Markdown table to stdout. See docs/benchmarks.md.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UVSES=()
SECS=6
NPORTS=3
PTYPE=afxdp
INTERVAL=0.002
while [ $# -gt 0 ]; do
    case "$1" in
    --uvs) UVSES+=("${2:?--uvs needs a path}"); shift ;;
    --secs) SECS="${2:?--secs needs a number}"; shift ;;
    --ports) NPORTS="${2:?--ports needs a number}"; shift ;;
    --ping-type) PTYPE="${2:?--ping-type needs a type}"; shift ;;
    --interval) INTERVAL="${2:?--interval needs seconds}"; shift ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "port_churn: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ ${#UVSES[@]} -gt 0 ] || UVSES=("${CARGO_TARGET_DIR:-$REPO/target}/release/uvs")

log() { echo "[port_churn $(date +%T)] $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "port_churn: SKIP: needs root (namespaces, AF_XDP, TAP)" >&2
    exit 0
fi
for u in "${UVSES[@]}"; do
    [ -x "$u" ] || { echo "port_churn: SKIP: uvs binary '$u' not found" >&2; exit 0; }
done

TAG="pc$(($$ % 10000))"
TMP="$(mktemp -d "/tmp/port_churn.$$.XXXXXX")"
NS=("${TAG}c1" "${TAG}c2")
LINKS=()
UVS_PID="" CHURN_PID=""

kill_pid() { # PID: TERM, wait up to 3 s, then KILL
    local pid="$1" i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    kill_pid "$CHURN_PID"
    kill_pid "$UVS_PID"
    for l in "${LINKS[@]}"; do ip link del "$l" 2>/dev/null || true; done
    for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# Topology: c1 and c2 on veths; churn veths left in the root namespace, up.
for i in 0 1; do
    ip netns add "${NS[$i]}"
    ip -n "${NS[$i]}" link set lo up
    ip link add "${TAG}h$i" type veth peer name eth0 netns "${NS[$i]}"
    LINKS+=("${TAG}h$i")
    ip link set "${TAG}h$i" up
    ip -n "${NS[$i]}" addr add "10.77.0.$((i + 1))/24" dev eth0
    ip -n "${NS[$i]}" link set eth0 up
done
CHURN=()
for k in $(seq "$NPORTS"); do
    for t in x p; do
        ip link add "${TAG}${t}$k" type veth peer name "${TAG}${t}${k}q"
        LINKS+=("${TAG}${t}$k")
        ip link set "${TAG}${t}$k" up
        ip link set "${TAG}${t}${k}q" up
    done
    CHURN+=("${TAG}x$k:afxdp" "${TAG}p$k:afpacket" "${TAG}t$k:tap")
done

# RTTs (ms, one a line) from ping output -> "p50 p99 max".
percentiles() {
    sort -n | awk '{a[NR]=$1} END {
        if (NR == 0) { print "- - -"; exit }
        i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
        i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
        printf "%.2f %.2f %.2f\n", a[i50], a[i99], a[NR] }'
}

# One phase: ping for SECS seconds (-i 0.002), optionally with churn. Prints a table row;
# the churn's per-operation times go to $TMP/ops.LABEL.
phase() { # LABEL PHASE
    local label="$1" ph="$2" ops=0 errs=0 count
    count=$(awk -v s="$SECS" -v i="$INTERVAL" 'BEGIN {print int(s / i)}')
    if [ "$ph" = churn ]; then
        (
            n=0 e=0
            while :; do
                for c in "${CHURN[@]}"; do
                    name="${c%%:*}" type="${c##*:}"
                    t0=$(date +%s%N)
                    "$UVS_COPY" ctl --socket "$TMP/uvs.sock" add-port br0 "$name" "type=$type" \
                        >/dev/null 2>>"$TMP/churn.err" || e=$((e + 1))
                    t1=$(date +%s%N)
                    "$UVS_COPY" ctl --socket "$TMP/uvs.sock" del-port "$name" \
                        >/dev/null 2>>"$TMP/churn.err" || e=$((e + 1))
                    t2=$(date +%s%N)
                    echo "$type add $(((t1 - t0) / 1000))" >>"$TMP/ops.$label"
                    echo "$type del $(((t2 - t1) / 1000))" >>"$TMP/ops.$label"
                    n=$((n + 2))
                    echo "$n $e" >"$TMP/churn.count"
                done
            done
        ) &
        CHURN_PID=$!
    fi
    ip netns exec "${NS[0]}" ping -n -i "$INTERVAL" -c "$count" -W 2 10.77.0.2 >"$TMP/ping.out" 2>&1 || true
    if [ -n "$CHURN_PID" ]; then
        kill_pid "$CHURN_PID"
        CHURN_PID=""
        read -r ops errs <"$TMP/churn.count" || true
    fi
    local sent recv
    sent=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' "$TMP/ping.out")
    recv=$(sed -n 's/.* \([0-9]*\) received.*/\1/p' "$TMP/ping.out")
    local pct slow
    pct=$(sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' "$TMP/ping.out" | percentiles)
    slow=$(sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' "$TMP/ping.out" | awk '$1 > 20 {n++} END {print n + 0}')
    echo "| $label | $ph | ${sent:-?} | $((${sent:-0} - ${recv:-0})) | ${pct// / | } | $slow | $ops | $errs |"
}

echo "| uvs | phase | pings | lost | p50 ms | p99 ms | max ms | > 20 ms | churn ops | op errors |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for u in "${UVSES[@]}"; do
    u="$(realpath "$u")"
    UVS_COPY="$TMP/uvs"
    cp "$u" "$UVS_COPY"
    rm -f "$TMP/uvs.sock" "$TMP/churn.err"
    log "starting $u"
    "$UVS_COPY" run --socket "$TMP/uvs.sock" >"$TMP/uvs.log" 2>&1 &
    UVS_PID=$!
    for _ in $(seq 100); do [ -S "$TMP/uvs.sock" ] && break; sleep 0.05; done
    ctl() { "$UVS_COPY" ctl --socket "$TMP/uvs.sock" "$@" >/dev/null; }
    ctl add-br br0
    ctl add-port br0 "${TAG}h0" "type=$PTYPE"
    ctl add-port br0 "${TAG}h1" "type=$PTYPE"
    # Warm up ARP and the FDB.
    ip netns exec "${NS[0]}" ping -n -c 3 -i 0.2 -W 2 10.77.0.2 >/dev/null || log "warm-up ping failed"
    label="$(basename "$(dirname "$(dirname "$(dirname "$u")")")")"
    log "[$label] load $(cut -d' ' -f1-3 /proc/loadavg)"
    phase "$label" quiet
    phase "$label" churn
    if [ -s "$TMP/churn.err" ]; then
        log "[$label] churn errors (first 3):"
        head -3 "$TMP/churn.err" | sed 's/^/    /' >&2
    fi
    kill_pid "$UVS_PID"
    UVS_PID=""
done
# What one operation costs its client during the churn (uvs ctl process included).
echo
echo "| uvs | op | count | mean ms | max ms |"
echo "|---|---|---|---|---|"
for f in "$TMP"/ops.*; do
    [ -e "$f" ] || continue
    awk -v l="${f##*/ops.}" '{k = $1 " " $2; n[k]++; s[k] += $3; if ($3 > m[k]) m[k] = $3}
        END {for (k in n) printf "| %s | %s | %d | %.1f | %.1f |\n", l, k, n[k], s[k] / n[k] / 1000, m[k] / 1000}' "$f" | sort
done
log "done (load $(cut -d' ' -f1-3 /proc/loadavg))"
