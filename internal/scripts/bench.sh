#!/usr/bin/env bash
# `make bench`: the kernel-measured per-packet cost of xdplane's programs
# at 1, 10k and 1M services, against trivial programs measured in the same
# run, printed as Markdown tables (docs/benchmarks.md explains the method).
# Needs root. Takes a few minutes on 2 cores; about 1.5 GiB of memory.
#
# Usage: bench.sh [--short]
#   --short   what CI runs: 1 and 10k services, one packet per case, once;
#             it proves the benchmarks still work, in a few seconds, and its
#             figures mean nothing.
#
# Environment (all optional):
#   BENCH_COUNT   times each case runs; the tables show medians (default 3; --short 1)
#   BENCH_TIME    packets per case, as -benchtime (default 100000x; --short 1x)
#   BENCH_SHORT   1: the same as --short
#   BENCH_OUT     file for the raw `go test -bench` output (default: a temp file)
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
	: "${BENCH_COUNT:=1}" "${BENCH_TIME:=1x}"
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "bench: needs root (BPF_PROG_TEST_RUN, bpffs mounts); run: sudo make bench" >&2
	exit 1
fi

count=${BENCH_COUNT:-3}
benchtime=${BENCH_TIME:-100000x}
short=()
[[ ${BENCH_SHORT:-0} == 1 ]] && short=(-short)
out=${BENCH_OUT:-$(mktemp -t xdplane-bench.XXXXXX)}

echo "go test -run '^\$' -bench '^BenchmarkPacket\$' -benchtime=$benchtime -count=$count ${short[*]} ./lb/"
echo "raw output: $out"
go test -run '^$' -bench '^BenchmarkPacket$' -benchtime="$benchtime" -count="$count" "${short[@]}" \
	-timeout 60m ./lb/ | tee "$out" | grep --line-buffered -E '^(Benchmark|FAIL|---|ok|PASS|panic)|_test\.go' || true
if ! grep -q '^ok' "$out"; then
	echo "bench: go test failed; see $out" >&2
	exit 1
fi
echo
go run ./internal/benchtable <"$out"
echo
echo "$(date -u +%Y-%m-%d), $(uname -sr), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
