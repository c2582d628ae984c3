#!/usr/bin/env bash
# The per-frame cost figures of issue 10 in one table: callgrind instructions/frame (in-memory
# ports, 64-byte frames, one thread, batch 32) for L2, routed, NAT established, VXLAN
# encap/decap and a flow-table EMC hit, each from small tables to 1M entries. See
# benches/callgrind.sh for the method (two runs, N and 2N frames; the difference / N).
#
#   benches/engine_cost.sh                 # builds the benches (cargo bench --no-run), ~6 min
#   BINDIR=/tmp/base benches/engine_cost.sh  # measure binaries kept in BINDIR (NAME-* files)
#   benches/engine_cost.sh --save DIR      # copy the built bench binaries to DIR first
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "engine_cost.sh: valgrind not installed"; exit 0; }
save=""
if [ "${1:-}" = "--save" ]; then save=${2:?--save DIR}; fi
bin_of() { # bench name -> executable
  if [ -n "${BINDIR:-}" ]; then ls "$BINDIR/$1"-* | head -1; return; fi
  cargo bench --bench "$1" --no-run --message-format=json 2>/dev/null | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="'"$1"'" and m.get("executable"): print(m["executable"])' | tail -1
}
declare -A BIN
for b in l2_forward l3_forward vxlan flows; do
  BIN[$b]=$(bin_of "$b" || true)
  if [ -z "${BIN[$b]}" ] || [ ! -x "${BIN[$b]}" ]; then
    echo "engine_cost.sh: no $b bench binary (the build failed? try: cargo bench --bench $b --no-run)" >&2
    exit 1
  fi
  if [ -n "$save" ]; then mkdir -p "$save"; cp "${BIN[$b]}" "$save/"; fi
done
row() { # label bench args...
  local label=$1 bench=$2; shift 2
  BIN=${BIN[$bench]} benches/callgrind.sh "$bench" "$@" | tail -n +3 \
    | sed "s|^\| |\| $label \| |"
}
echo "| case | bench arguments | instructions/frame |"
echo "|---|---|---:|"
row "L2, 10 MACs" l2_forward "--macs 10"
row "L2, 1k MACs" l2_forward "--macs 1000"
row "L2, 1M MACs" l2_forward "--macs 1000000"
row "routed, 2 routes" l3_forward "--routes 2"
row "routed, 1M routes" l3_forward "--routes 1000000"
row "NAT established, 1k conns" l3_forward "--nat --conns 1000"
row "NAT established, 1M conns" l3_forward "--nat --conns 1000000"
# (--flows: benches from session 17 on; an older saved binary ignores it, so gets a note.)
for f in 8 64; do
  if grep -q -- "--flows: 1 to" "${BIN[l3_forward]}"; then
    row "NAT established, $f conns interleaved" l3_forward "--nat --conns 1000 --flows $f"
  else
    echo "| NAT established, $f conns interleaved | --nat --conns 1000 --flows $f | (bench without --flows) |"
  fi
done
row "vxlan bench: plain L2" vxlan "--mode l2"
row "VXLAN encap" vxlan "--mode encap"
row "VXLAN decap" vxlan "--mode decap"
row "VXLAN decap, underlay with partial csums (as AF_XDP)" vxlan "--mode decap-partial"
row "flows bench: plain (stage off)" flows "--plain"
row "flow EMC hit, 1 flow" flows "--flows 1 --masks 1"
row "flow EMC hit, 100k flows/20 masks" flows "--flows 100000 --masks 20"
row "flow EMC hit, 100k flows/20 masks, 8 keys interleaved" flows "--flows 100000 --masks 20 --keys 8"
