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

const policySample = `goos: linux
pkg: github.com/xdplane/xdplane/policy
BenchmarkPolicyPacket/rules=10/install-2 	  100000	         0.1081 install-ms	        10.00 peer-entries	        10.00 port-entries	         0.0007725 rule-maps-MiB
BenchmarkPolicyPacket/rules=10/trivial-2 	  100000	      1085 ns/op	        40.00 ns/pkt	        38.00 p50-ns	        41.00 p99-ns
BenchmarkPolicyPacket/rules=10/no-endpoint-2         	  100000	       877.6 ns/op	        80.00 ns/pkt	        74.00 p50-ns	        93.00 p99-ns
BenchmarkPolicyPacket/rules=10/new-2                 	  100000	     12128 ns/op	      1000 ns/pkt	       769.0 p50-ns	      7032 p99-ns
BenchmarkPolicyPacket/rules=10/new-2                 	  100000	     12128 ns/op	      1200 ns/pkt	       769.0 p50-ns	      7032 p99-ns
BenchmarkPolicyPacket/rules=10/new-2                 	  100000	     12128 ns/op	       800 ns/pkt	       769.0 p50-ns	      7032 p99-ns
BenchmarkPolicyPacket/rules=10/established-2         	  100000	      1558 ns/op	       600.0 ns/pkt	       590.0 p50-ns	      1095 p99-ns
BenchmarkPolicyPacket/rules=100000/install-2         	  100000	       556.2 install-ms	    100000 peer-entries	     51924 port-entries	         6.212 rule-maps-MiB
BenchmarkPolicyPacket/rules=100000/trivial-2         	  100000	      1057 ns/op	        40.00 ns/pkt	        39.00 p50-ns	        43.00 p99-ns
BenchmarkPolicyPacket/rules=100000/no-endpoint-2     	  100000	      1650 ns/op	        80.00 ns/pkt	        75.00 p50-ns	        93.00 p99-ns
BenchmarkPolicyPacket/rules=100000/new-2             	  100000	      7260 ns/op	      3000 ns/pkt	      2698 p50-ns	     20120 p99-ns
BenchmarkPolicyPacket/rules=100000/established-2     	  100000	      1827 ns/op	       900.0 ns/pkt	       673.0 p50-ns	      1976 p99-ns
BenchmarkPolicyPacket/ratio/rules=100000:10-2        	  100000	         1.500 x-established	         3.000 x-new
BenchmarkPolicyPacket/ratio/rules=100000:10-2        	  100000	         1.500 x-established	         3.000 x-new
ok  	github.com/xdplane/xdplane/policy	11.056s
BenchmarkConnPolicy/none-2         	    5000	     20383 ns/op	     20000 ns/conn	     16231 p50-ns	     54889 p99-ns
BenchmarkConnPolicy/iptables/rules=10000-2      	    5000	    246542 ns/op	       140.4 install-ms	    240000 ns/conn	    238244 p50-ns	    371757 p99-ns
--- BENCH: BenchmarkConnPolicy/iptables/rules=10000-2
    connbench_test.go:116: iptables v1.8.9 (nf_tables)
BenchmarkConnPolicy/iptables-legacy/rules=10000-2         	    5000	    101707 ns/op	        66.33 install-ms	    100000 ns/conn	     90219 p50-ns	    218265 p99-ns
BenchmarkConnPolicy/xdplane/rules=10000-2         	    5000	    25000 ns/op	        12.50 install-ms	    25000 ns/conn	     22000 p50-ns	    60000 p99-ns
BenchmarkConnPolicy/xdplane/rules=10-2         	    5000	    24000 ns/op	        0.1 install-ms	    24000 ns/conn	     22000 p50-ns	    60000 p99-ns
ok  	github.com/xdplane/xdplane/policy	4.713s
`

func TestPolicyTables(t *testing.T) {
	r, err := parse(strings.NewReader(policySample))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := r.get("BenchmarkPolicyPacket/rules=10/new", "ns/pkt"); v != 1000 {
		t.Errorf("median of 1000, 1200, 800 = %v, want 1000", v)
	}
	var out strings.Builder
	write(&out, r)
	got := out.String()
	for _, want := range []string{
		"(BPF_PROG_TEST_RUN, one packet per run, median of 3 runs)",
		"| new         | 100,000 | 3000.0 |   2698 |  20120 |     75.00 |                  2920 |",
		"| no-endpoint |      10 |   80.0 |     74 |     93 |      2.00 |                     0 |",
		"| trivial     |      10 |   40.0 |     38 |     41 |      1.00 |                     - |",
		"ns/pkt at 100,000 rules over ns/pkt at 10 (medians, measured in the same run): new 3.00, established 1.50.",
		"| 100,000 |  556.2 ms |      100,000 |       51,924 |   6.2 MiB |",
		"|      10 |    0.1 ms |           10 |           10 |     1 KiB |",
		"| none            |        |    20.0 |   16.2 |   54.9 |   1.00 |        - |",
		"through a forwarding node (one run)",
		"| iptables        | 10,000 |   240.0 |  238.2 |  371.8 |  12.00 | 140.4 ms |",
		"| xdplane         | 10,000 |    25.0 |   22.0 |   60.0 |   1.25 |  12.5 ms |",
		"At 10,000 rules: xdplane 25.0 µs/conn, iptables 240.0 µs (xdplane ÷ iptables = 0.10), " +
			"iptables-legacy 100.0 µs (xdplane ÷ iptables-legacy = 0.25); none 20.0 µs.",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	// xdplane at 10 rules has no iptables case beside it: no line.
	if strings.Contains(got, "At 10 rules") {
		t.Errorf("output sets xdplane beside an iptables case that did not run:\n%s", got)
	}
	// Only the tables of the benchmarks in the input.
	if strings.Contains(got, "services") {
		t.Errorf("output has a load-balancer table, with no BenchmarkPacket in the input:\n%s", got)
	}
}

func TestOnlyLoadBalancer(t *testing.T) {
	r, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	write(&out, r)
	if strings.Contains(out.String(), "policy") {
		t.Errorf("output has a policy table, with no policy benchmark in the input:\n%s", out.String())
	}
}

func TestSize(t *testing.T) {
	for in, want := range map[float64]string{0.0007725: "1 KiB", 0.751: "769 KiB", 6.212: "6.2 MiB"} {
		if got := size(in); got != want {
			t.Errorf("size(%v) = %q, want %q", in, got, want)
		}
	}
}

const shapingSample = `
BenchmarkShaping/trivial-2         	  100000	      2268 ns/op	        80.00 ns/pkt	        80.00 p50-ns	       101.0 p99-ns
BenchmarkShaping/no-endpoint-2     	  100000	      2110 ns/op	       180.0 ns/pkt	       171.0 p50-ns	       211.0 p99-ns
BenchmarkShaping/endpoint-2        	  100000	      2438 ns/op	       380.0 ns/pkt	       351.0 p50-ns	       591.0 p99-ns
BenchmarkShaping/htb-2             	  100000	      2945 ns/op	       450.0 ns/pkt	       431.0 p50-ns	       731.0 p99-ns
`

func TestShapingTable(t *testing.T) {
	r, err := parse(strings.NewReader(shapingSample))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	write(&out, r)
	got := out.String()
	for _, want := range []string{
		"(BPF_PROG_TEST_RUN, one packet per run, one run)",
		"| trivial     |   80.0 |     80 |    101 |      1.00 |                  - |",
		"| no-endpoint |  180.0 |    171 |    211 |      2.25 |                  - |",
		"| endpoint    |  380.0 |    351 |    591 |      4.75 |                  0 |",
		"| htb         |  450.0 |    431 |    731 |      5.62 |                 70 |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "rules") || strings.Contains(got, "services") {
		t.Errorf("output has another benchmark's table:\n%s", got)
	}
}
