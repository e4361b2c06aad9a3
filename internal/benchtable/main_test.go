package main

import (
	"strings"
	"testing"
)

const sample = `goos: linux
BenchmarkPacket/services=1/install-2 	  100000	       8.0 svc-maps-MiB	640.0 conntrack-MiB	        17.17 rss-MiB	         0.2109 sync-ms	    210.9 sync-us/svc
BenchmarkPacket/services=1/xdp/trivial-2         	  100000	       727.5 ns/op	        40.00 ns/pkt	        40.00 p50-ns	        52.00 p99-ns
BenchmarkPacket/services=1/xdp/new-2             	  100000	      1455 ns/op	       720.0 ns/pkt	       538.0 p50-ns	      7410 p99-ns
    bench_test.go:123: BenchmarkPacket is not a result line
BenchmarkPacket/services=1000000/install-2 	  100000	       328.4 svc-maps-MiB	640.0 conntrack-MiB	      1352 rss-MiB	     19209 sync-ms	     19.21 sync-us/svc
BenchmarkPacket/services=1/xdp/trivial-2         	  100000	       727.5 ns/op	        50.00 ns/pkt	        40.00 p50-ns	        52.00 p99-ns
BenchmarkPacket/services=1/xdp/new-2             	  100000	      1455 ns/op	       700.0 ns/pkt	       538.0 p50-ns	      7410 p99-ns
BenchmarkPacket/services=1/xdp/trivial         	  100000	       727.5 ns/op	        45.00 ns/pkt	        40.00 p50-ns	        52.00 p99-ns
PASS
`

func TestTable(t *testing.T) {
	r, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if r.runs != 3 {
		t.Errorf("runs = %d, want 3", r.runs)
	}
	if v, _ := r.get("BenchmarkPacket/services=1/xdp/trivial", "ns/pkt"); v != 45 {
		t.Errorf("median of 40, 50, 45 = %v, want 45", v)
	}
	if v, _ := r.get("BenchmarkPacket/services=1/xdp/new", "ns/pkt"); v != 710 {
		t.Errorf("median of 720, 700 = %v, want 710", v)
	}
	var out strings.Builder
	write(&out, r)
	for _, want := range []string{
		"median of 3 runs",
		"| xdp new     |        1 |  710.0 |    538 |   7410 |     15.78 |",
		"| 1,000,000 | 19.2 s |     19.2 µs |      328 MiB |   640 MiB |    1352 MiB |",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[string]string{"1": "1", "1000": "1,000", "10000": "10,000", "1000000": "1,000,000", "x": "x"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%q) = %q, want %q", in, got, want)
		}
	}
}
