#!/bin/bash
# A/B of a port mapping with two workers: iperf3 -P8 into a published port through each
# binary (BASE, NEW) with --cores 0,1, twice alternated, then NEW with one worker. Root; makes
# namespaces zzD-*, removes them. Usage: BASE=/path/uvs NEW=/path/uvs benches/netns_dnat_workers.sh
set -u
: "${BASE:?BASE=path of the baseline uvs}" "${NEW:?NEW=path of the uvs to compare}"
D=/tmp/zzD; mkdir -p $D
mk() { ip link add $1 numrxqueues 2 numtxqueues 2 type veth peer name eth0 numrxqueues 2 numtxqueues 2 netns $2; ip link set $1 up; }
for n in zzD-c2 zzD-o; do ip netns add $n; done
mk zzD-v2 zzD-c2; mk zzD-vo zzD-o
ip netns exec zzD-c2 sh -c 'ip link set lo up; ip link set eth0 up; ip addr add 10.77.0.2/24 dev eth0; ip route add default via 10.77.0.254'
ip netns exec zzD-o sh -c 'ip link set lo up; ip link set eth0 up; ip addr add 10.78.0.2/24 dev eth0'
run() { # bin cores
  rm -f $D/s.sock
  $1 run --socket $D/s.sock --cores $2 --mgmt-dir none --dns-upstream none > $D/log 2>&1 & P=$!
  sleep 1.5; U="$1 ctl --socket $D/s.sock"
  $U add-br br0 gateway=10.77.0.254/24 >/dev/null; $U add-br ext gateway=10.78.0.1/24 >/dev/null
  $U add-port br0 zzD-v2 type=afxdp >/dev/null; $U add-port ext zzD-vo type=afxdp >/dev/null
  $U nat-add masquerade src=10.77.0.0/24 out=ext >/dev/null; $U nat-add dnat in=ext proto=tcp port=8080 to=10.77.0.2:5201 >/dev/null
  sleep 1
  ip netns exec zzD-c2 timeout 30 iperf3 -s -1 -p 5201 >/dev/null 2>&1 & S=$!; sleep 0.5
  ip netns exec zzD-o ping -c1 -W1 10.78.0.1 >/dev/null
  r=$(ip netns exec zzD-o timeout 20 iperf3 -c 10.78.0.1 -p 8080 -P 8 -t 5 2>&1 | grep SUM | tail -2 | tr -s ' ' | cut -d' ' -f6,7,8,9 | tr '\n' ' ')
  ho=$($U --json stats 2>/dev/null | python3 -c '
import sys,json
v=json.load(sys.stdin); v=v.get("data",v)
print(" ".join("w%s:out=%s,dropped=%s"%(i,w.get("handed_out"),w.get("handoff_dropped")) for i,w in enumerate(v.get("workers",[]))))' 2>/dev/null)
  echo "$(basename $1) cores=$2: $r | $ho"
  kill $P; wait $P 2>/dev/null; kill $S 2>/dev/null; wait $S 2>/dev/null; sleep 1
}
for round in 1 2; do
  run "$BASE" 0,1; run "$NEW" 0,1
done
run "$NEW" 0
ip netns del zzD-c2; ip netns del zzD-o; ip link del zzD-v2 2>/dev/null; ip link del zzD-vo 2>/dev/null
