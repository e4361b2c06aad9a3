#!/usr/bin/env bash
# `make bench`: the kernel-measured per-packet cost of xdplane's load
# balancer at 1, 10k, 100k and 1M services and of its network policy at 10,
# 10k and 100k rules, against trivial programs measured in the same run;
# the time per TCP connection through policy with 10 and 10k rules,
# with xdplane, iptables and iptables-legacy side by side, against no
# filtering; and what a bandwidth limit adds to a packet (HTB
# classification, EDT stamping, the packet-rate policer). Printed as Markdown tables (docs/benchmarks.md explains the
# method). Needs root. Takes a few minutes on 2 cores; about 3 GiB of
# memory.
#
# Usage: bench.sh [--short]
#   --short   what CI runs: smaller sizes, one packet or connection per
#             case, once; it proves the benchmarks still work, in a few
#             seconds, and its figures mean nothing.
#
# Environment (all optional):
#   BENCH_COUNT      times each case runs; the tables show medians (default 3; --short 1)
#   BENCH_TIME       packets per case, as -benchtime (default 100000x; --short 1x)
#   BENCH_CONN_TIME  connections per connection case, as -benchtime (default 20000x; --short 1x)
#   BENCH_SHORT      1: the same as --short
#   BENCH_OUT        file for the raw `go test -bench` output (default: a temp file)
set -euo pipefail
cd "$(dirname "$0")/../.."

for arg in "$@"; do
	case $arg in
	--short) BENCH_SHORT=1 ;;
	*)
		echo "usage: $0 [--short]" >&2
		exit 2
		;;
	esac
done
if [[ ${BENCH_SHORT:-0} == 1 ]]; then
	: "${BENCH_COUNT:=1}" "${BENCH_TIME:=1x}" "${BENCH_CONN_TIME:=1x}"
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "bench: needs root (BPF_PROG_TEST_RUN, bpffs mounts, namespaces); run: sudo make bench" >&2
	exit 1
fi

count=${BENCH_COUNT:-3}
benchtime=${BENCH_TIME:-100000x}
conntime=${BENCH_CONN_TIME:-20000x}
short=()
[[ ${BENCH_SHORT:-0} == 1 ]] && short=(-short)
out=${BENCH_OUT:-$(mktemp -t xdplane-bench.XXXXXX)}
: >"$out"
part=$(mktemp -t xdplane-bench-part.XXXXXX)
trap 'rm -f "$part"' EXIT
echo "raw output: $out"

# bench PATTERN BENCHTIME PACKAGE: one `go test -bench`, its output added
# to $out; the script stops if it fails.
bench() {
	echo "go test -run '^\$' -bench '$1' -benchtime=$2 -count=$count ${short[*]} $3"
	go test -run '^$' -bench "$1" -benchtime="$2" -count="$count" "${short[@]}" \
		-timeout 60m "$3" | tee "$part" | grep --line-buffered -E '^(Benchmark|FAIL|---|ok|PASS|panic|xdplane\.bench-seed:)|_test\.go' || true
	cat "$part" >>"$out"
	if ! grep -q '^ok' "$part"; then
		echo "bench: go test failed; see $out" >&2
		exit 1
	fi
}

bench '^BenchmarkPacket$' "$benchtime" ./lb/
bench '^BenchmarkPolicyPacket$' "$benchtime" ./policy/
bench '^BenchmarkConnPolicy$' "$conntime" ./policy/
bench '^BenchmarkShaping$' "$benchtime" ./bandwidth/
echo
go run ./internal/benchtable <"$out"
echo
echo "$(date -u +%Y-%m-%d), $(uname -sr), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
