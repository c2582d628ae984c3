#!/usr/bin/env bash
# Install what uvs's demo, tests and benchmarks need on Debian (idempotent; needs root for apt).
#   scripts/setup.sh          # demo + tests: iproute2, ping, iperf3, python3, curl, tshark, openvswitch-switch, prometheus, tmux, etcd-server and etcd-client (multi-host overlay; etcdctl in its tests), protobuf-compiler (builds etcd-client), ethtool (e2e_offload reads offload flags),
#                             podman runc containernetworking-plugins busybox-static (the CNI plugin's podman test),
#                             and the Faucet controller in a venv (/opt/uvs/faucet-venv, from PyPI)
#   scripts/setup.sh --bench  # also trafgen (netsniff-ng), valgrind, iptables
set -euo pipefail
pkgs=(iproute2 iputils-ping iperf3 python3 procps curl tshark openvswitch-switch prometheus tmux etcd-server etcd-client protobuf-compiler ethtool
  podman runc containernetworking-plugins busybox-static)
[[ ${1:-} == --bench ]] && pkgs+=(netsniff-ng valgrind iptables)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing packages ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Faucet OpenFlow controller (tests/openflow_faucet.rs) in its own venv: faucet 1.10.12 with
# os-ken 3.1.0, which still ships osken-manager (faucet execs it; 4.x does not).
FAUCET_VENV=/opt/uvs/faucet-venv
if [[ ! -x $FAUCET_VENV/bin/faucet ]] || ! "$FAUCET_VENV/bin/pip" show faucet 2>/dev/null | grep -q '^Version: 1.10.12$'; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: faucet missing in $FAUCET_VENV; run as root to install it" >&2
    exit 1
  fi
  echo "setup: installing faucet into $FAUCET_VENV" >&2
  mkdir -p "$(dirname "$FAUCET_VENV")"
  python3 -m venv "$FAUCET_VENV"
  "$FAUCET_VENV/bin/pip" install -q faucet==1.10.12 os-ken==3.1.0
fi
if ! command -v cargo >/dev/null; then
  [[ -x $HOME/.cargo/bin/cargo ]] && export PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (rustup) first" >&2; exit 1; }
echo "setup: ok" >&2
