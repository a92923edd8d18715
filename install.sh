#!/usr/bin/env bash
# Installs what bpfnetlog needs on Debian/Ubuntu, into a virtual environment at .venv.
#   ./install.sh          runtime: Python packages, clang + libbpf, compiled BPF objects
#   ./install.sh --test   also the tools the tests drive (tshark, tcpdump, nginx, dnsmasq, dig, ...)
set -euo pipefail
cd "$(dirname "$0")"

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

pkgs=(python3 python3-venv python3-dev gcc clang llvm libbpf-dev libbpf1 libpcap0.8 iproute2 ethtool)
if [ "$want_test" = 1 ]; then
  pkgs+=(tshark tcpdump nginx-light dnsmasq-base bind9-dnsutils nftables curl nghttp2-client bpftool)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
spec="."
[ "$want_test" = 1 ] && spec=".[test]"
.venv/bin/pip install -q --disable-pip-version-check -e "$spec"
# bytecode of our own modules (pip compiles only site-packages): 0.35 s less start-up per command,
# also where PYTHONDONTWRITEBYTECODE keeps Python from caching it
.venv/bin/python -m compileall -q bpfnetlog

if [ -x bpf/build.sh ]; then
  bpf/build.sh
fi
# the numba kernels compiled ahead of time (no numba import per command: ~0.6 s), then run once
.venv/bin/python -m bpfnetlog.aot
.venv/bin/python -m bpfnetlog.warmup examples/sample.pcapng
echo "bpfnetlog installed: .venv/bin/bpfnetlog"
