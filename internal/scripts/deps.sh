#!/usr/bin/env bash
# Installs the Debian packages xdplane's build, tests and demo use, and only
# those that are missing. Needs root for apt-get.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in clang llvm libbpf-dev linux-libc-dev iproute2 iptables nftables ethtool; do
	have_pkg "$pkg" || need+=("$pkg")
done
if ((${#need[@]} == 0)); then
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "missing packages: ${need[*]}; run as root (or install them) first" >&2
	exit 1
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
