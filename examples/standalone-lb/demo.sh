#!/usr/bin/env bash
# xdplane demo: a client, a load-balancer node and three HTTP backends, each
# in its own network namespace, joined by veth pairs:
#
#   client 10.0.0.2 -- 10.0.0.1 [node] 10.0.<i>.1 -- be<i> 10.0.<i>.2:8080   (i = 1..3)
#          10.0.0.3 (denied)
#
# xdplane-lb runs on the node and balances the frontend 10.96.0.10:80/tcp
# over the backends; the client sends HTTP requests to the frontend and
# counts who answered. The client's second address, 10.0.0.3, is in the
# configuration's prefilter: XDP drops its packets before load balancing,
# and the demo shows its requests going unanswered, the drop counter and
# the drops xdplane-lb logged. Everything the demo creates (namespaces,
# processes, the bpffs mount, the pins) is removed on exit, including on
# Ctrl-C.
#
# Usage (as root): bash examples/standalone-lb/demo.sh PATH/TO/xdplane-lb
# Environment: HOOK=xdp|tc (default xdp; the prefilter acts at XDP only,
# so HOOK=tc leaves it out), REQUESTS (default 300).
set -euo pipefail

die() { echo "demo: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 PATH/TO/xdplane-lb"
[[ -x $1 ]] || die "$1 is not an executable (build it with: make build)"
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, BPF); run it with sudo"
command -v go >/dev/null || die "needs go on PATH, to build the demo's HTTP helper"

lb_bin=$(realpath "$1")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
hook=${HOOK:-xdp}
requests=${REQUESTS:-300}
[[ $hook == tc || $hook == xdp ]] || die "HOOK=$hook: want tc or xdp"

prefix="xdpdemo-$$"
ns_client="$prefix-client"
ns_node="$prefix-node"
backends=(be1 be2 be3)
vip=10.96.0.10
denied=10.0.0.3

work=$(mktemp -d "/tmp/$prefix.XXXXXX")
bpffs="$work/bpffs"
pins="$bpffs/xdplane"
config="$work/lb.yaml"
lb_log="$work/xdplane-lb.log"
app="$work/demoapp"

namespaces=()
pids=()
lb_pid=

cleanup() {
	local status=$?
	trap '' INT TERM
	set +e
	echo "Cleaning up..."
	if [[ -n $lb_pid ]]; then
		kill -TERM "$lb_pid" 2>/dev/null
		wait "$lb_pid" 2>/dev/null
	fi
	if grep -qs " $bpffs " /proc/mounts; then
		if [[ -d $pins ]] && ip netns list | grep -qw "^$ns_node"; then
			ip netns exec "$ns_node" "$lb_bin" cleanup --bpffs "$pins" >/dev/null
		fi
		umount "$bpffs"
	fi
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null
	done
	for ns in "${namespaces[@]}"; do
		ip netns del "$ns" 2>/dev/null
	done
	rm -rf "$work"
	echo "Done: namespaces, processes, pins and bpffs removed."
	exit "$status"
}
trap cleanup EXIT
trap 'echo; echo "Interrupted."; exit 130' INT
trap 'exit 143' TERM

in_ns() { ip netns exec "$@"; }

add_ns() {
	namespaces+=("$1")
	ip netns add "$1"
	ip -n "$1" link set lo up
}

# link_ns NS_A IF_A ADDR_A NS_B IF_B ADDR_B: a veth pair between two
# namespaces, addressed and up.
link_ns() {
	ip -n "$1" link add "$2" type veth peer name "$5" netns "$4"
	ip -n "$1" addr add "$3" dev "$2"
	ip -n "$4" addr add "$6" dev "$5"
	ip -n "$1" link set "$2" up
	ip -n "$4" link set "$5" up
}

echo "xdplane demo: a client, a node running xdplane-lb ($hook) and ${#backends[@]} HTTP backends"
[[ $hook == xdp ]] || echo "  (HOOK=$hook: no prefilter, which acts at XDP only)"
echo "  building the demo's HTTP helper..."
(cd "$here" && go build -o "$app" ./demoapp)

be_list=$(IFS=,; echo "${backends[*]}")
echo "  creating namespaces $prefix-{client,node,$be_list}..."
add_ns "$ns_client"
add_ns "$ns_node"
in_ns "$ns_node" sysctl -qw net.ipv4.ip_forward=1
link_ns "$ns_client" eth0 10.0.0.2/24 "$ns_node" n-cli 10.0.0.1/24
ip -n "$ns_client" route add default via 10.0.0.1
# The address the prefilter denies; the client's first stays its default.
if [[ $hook == xdp ]]; then
	ip -n "$ns_client" addr add "$denied/24" dev eth0
fi
node_ifs=(n-cli)
i=0
for be in "${backends[@]}"; do
	i=$((i + 1))
	add_ns "$prefix-$be"
	link_ns "$prefix-$be" eth0 "10.0.$i.2/24" "$ns_node" "n-$be" "10.0.$i.1/24"
	ip -n "$prefix-$be" route add default via "10.0.$i.1"
	node_ifs+=("n-$be")
	# Straight to ip, not through a function: $! must be the server
	# itself (ip netns exec execs it), not a subshell.
	ip netns exec "$prefix-$be" "$app" serve --name "$be" --listen "10.0.$i.2:8080" &
	pids+=($!)
done

if [[ $hook == xdp ]]; then
	# XDP on a veth sees partial checksums unless the sender completes
	# them (see shared/DESIGN.md); a physical NIC needs no such step.
	ethtool_off() { in_ns "$1" ethtool -K "$2" tx off rx off >/dev/null; }
	ethtool_off "$ns_client" eth0
	for be in "${backends[@]}"; do ethtool_off "$prefix-$be" eth0; done
	for ifname in "${node_ifs[@]}"; do ethtool_off "$ns_node" "$ifname"; done
fi

{
	if [[ $hook == xdp ]]; then
		echo "prefilter: [$denied]"
	fi
	echo "services:"
	echo "  - name: web"
	echo "    frontend: $vip:80"
	echo "    protocol: tcp"
	echo "    backends:"
	i=0
	for be in "${backends[@]}"; do
		i=$((i + 1))
		echo "      - address: 10.0.$i.2:8080"
	done
} >"$config"

# `ip netns exec` hides /sys/fs/bpf: the pins go on a bpffs of our own,
# with mode 0700 (without a mode it is 1777, and any user could make
# the pin directory before root; xdplane-lb would refuse it).
mkdir -p "$bpffs"
mount -t bpf -o mode=0700 bpf "$bpffs"

if_args=()
for ifname in "${node_ifs[@]}"; do if_args+=(--interface "$ifname"); done
ip netns exec "$ns_node" "$lb_bin" run --config "$config" --hook "$hook" --bpffs "$pins" "${if_args[@]}" 2>"$lb_log" &
lb_pid=$!

for _ in $(seq 100); do
	grep -q 'msg=running' "$lb_log" && break
	kill -0 "$lb_pid" 2>/dev/null || { cat "$lb_log" >&2; die "xdplane-lb exited"; }
	sleep 0.1
done
grep -q 'msg=running' "$lb_log" || { cat "$lb_log" >&2; die "xdplane-lb did not start within 10s"; }
echo "  xdplane-lb is running on the node: $vip:80/tcp -> 10.0.{1,2,3}.2:8080"
if [[ $hook == xdp ]]; then
	echo "  its prefilter denies the client's second address, $denied"
fi

wait_urls=()
i=0
for be in "${backends[@]}"; do
	i=$((i + 1))
	wait_urls+=(--url "http://10.0.$i.2:8080/")
done
in_ns "$ns_client" "$app" wait "${wait_urls[@]}" --url "http://$vip/"

echo
echo "Sending $requests HTTP requests from the client to http://$vip/ (one connection each):"
load_ok=0
in_ns "$ns_client" "$app" load --url "http://$vip/" --requests "$requests" \
	--expect "$be_list" || load_ok=$?

denied_ok=0
if [[ $hook == xdp ]]; then
	echo
	echo "Sending 3 requests from the client's second address, $denied, which the prefilter denies:"
	in_ns "$ns_client" "$app" load --url "http://$vip/" --from "$denied" --requests 3 \
		--timeout 1s --dropped || denied_ok=$?
fi

echo
echo "xdplane-lb status (read from the pinned maps):"
status=$(in_ns "$ns_node" "$lb_bin" status --bpffs "$pins" --config "$config")
sed 's/^./  &/' <<<"$status"

if [[ $hook == xdp ]]; then
	echo
	echo "What xdplane-lb logged of the drops:"
	{ grep -m 3 'msg=dropped' "$lb_log" || echo "(none)"; } | sed 's/^time=[^ ]* //; s/^./  &/'
fi
echo

if [[ $load_ok -ne 0 ]]; then
	echo "xdplane-lb log:" >&2
	sed 's/^./  &/' "$lb_log" >&2
	die "not every backend answered, or a request failed"
fi
echo "Every backend answered."
if [[ $hook == xdp ]]; then
	drops=$(awk '/^dropped, prefilter/ {print $3}' <<<"$status")
	if [[ $denied_ok -ne 0 || ${drops:-0} -eq 0 ]]; then
		echo "xdplane-lb log:" >&2
		sed 's/^./  &/' "$lb_log" >&2
		die "the prefilter let $denied through, or counted no drop"
	fi
	echo "The prefilter dropped $drops packets from $denied: none of its requests was answered."
fi
