#!/usr/bin/env bash
# Instructions per frame of a bench binary's hot loop, counted by callgrind (repeatable on a
# noisy machine). Runs the bench twice (N and 2N frames) and divides the difference by N, so
# setup (mapping frames, filling the FDB) cancels out.
#
#   benches/callgrind.sh l2_forward "--macs 10" "--macs 1000" "--macs 1000000"
#   BIN=/path/to/saved/l2_forward-HASH benches/callgrind.sh l2_forward ...   # a kept binary
#     (e.g. a baseline copied out of target/release/deps before a change), measured as is
set -euo pipefail
bench=${1:?bench name}; shift
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind not installed (apt-get install valgrind)"; exit 0; }
cd "$(dirname "$0")/.."
bin=${BIN:-}
[ -n "$bin" ] || bin=$(cargo bench --bench "$bench" --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import sys,json
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="'"$bench"'" and m.get("executable"): print(m["executable"])' | tail -1)
N=${FRAMES:-200000}
count() { # args...: total Ir
  local out; out=$(mktemp)
  if ! valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" "$@" --quiet >/dev/null 2>&1; then
    echo "callgrind.sh: $bin $* --quiet failed:" >&2
    "$bin" "$@" --quiet >&2 || true
    rm -f "$out"; exit 1
  fi
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}'
  rm -f "$out"
}
echo "| $bench case | instructions/frame |"
echo "|---|---|"
for case in "$@"; do
  # shellcheck disable=SC2086
  a=$(count --frames "$N" $case); b=$(count --frames $((2 * N)) $case)
  echo "| $case | $(( (b - a) / N )) |"
done
