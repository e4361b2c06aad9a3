package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
)

// Command-line mistakes and missing state are refused before anything
// touches the kernel, so none of these needs root.
func TestCLI(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("services:\n  - {name: web, frontend: 10.96.0.10:80}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("services:\n  - {name: web, frontend: 10.96.0.10:80, backends: [{address: 10.0.1.2}]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	denying := filepath.Join(dir, "prefilter.yaml")
	if err := os.WriteFile(denying, []byte("prefilter: [203.0.113.66]\nservices:\n  - {name: web, frontend: 10.96.0.10:80}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pins := filepath.Join(dir, "pins")

	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string // a part of it
		stderr   string // a part of it
		mustNot  string // a path that must not exist afterwards
		noStdout bool
	}{
		{name: "no command", args: nil, code: exitUsage, stderr: "Usage:"},
		{name: "unknown command", args: []string{"start"}, code: exitUsage, stderr: `unknown command "start"`},
		{name: "help", args: []string{"help"}, code: exitOK, stdout: "xdplane-lb run --config FILE"},
		{name: "run -h", args: []string{"run", "-h"}, code: exitOK, stderr: "-interface"},
		{name: "run without config", args: []string{"run", "--interface", "lo"}, code: exitUsage, stderr: "--config is required"},
		{name: "run without interface", args: []string{"run", "--config", good}, code: exitUsage, stderr: "at least one --interface is required"},
		{name: "run with a bad hook", args: []string{"run", "--config", good, "--interface", "lo", "--hook", "xdpp"}, code: exitUsage, stderr: `--hook "xdpp": want tc or xdp`},
		{name: "run with an empty interface", args: []string{"run", "--config", good, "--interface", "lo,"}, code: exitUsage, stderr: "empty value"},
		{name: "run with a stray argument", args: []string{"run", "--config", good, "--interface", "lo", "extra"}, code: exitUsage, stderr: `unexpected argument "extra"`},
		{
			name: "run with an invalid config", args: []string{"run", "--config", bad, "--interface", "lo", "--bpffs", pins},
			code: exitError, stderr: bad + `:2: services[0] "web": backends[0].address "10.0.1.2": missing port`, mustNot: pins,
		},
		{
			// At tc the prefilter would drop nothing: refused, rather than
			// let its writer believe the sources are kept out.
			name: "run with a prefilter at tc", args: []string{"run", "--config", denying, "--interface", "lo", "--bpffs", pins},
			code: exitError, stderr: denying + ":1: prefilter: the prefilter drops at XDP only, and --hook is tc: run with --hook xdp", mustNot: pins,
		},
		{
			name: "run with a missing config", args: []string{"run", "--config", filepath.Join(dir, "absent.yaml"), "--interface", "lo", "--bpffs", pins},
			code: exitError, stderr: "no such file", mustNot: pins,
		},
		{
			name: "run with a device as config", args: []string{"run", "--config", "/dev/zero", "--interface", "lo", "--bpffs", pins},
			code: exitError, stderr: "/dev/zero: not a regular file but a character device", mustNot: pins,
		},
		{
			name: "run with a config over --max-config-bytes", args: []string{"run", "--config", good, "--interface", "lo", "--bpffs", pins, "--max-config-bytes", "10"},
			code: exitError, stderr: good + ": 51 bytes, more than the limit of 10 (--max-config-bytes)", mustNot: pins,
		},
		{
			name: "status with a config over --max-config-bytes", args: []string{"status", "--config", good, "--bpffs", pins, "--max-config-bytes", "10"},
			code: exitError, stderr: good + ": 51 bytes, more than the limit of 10 (--max-config-bytes)", mustNot: pins,
		},
		{
			name: "run with --max-config-bytes in MiB", args: []string{"run", "--config", good, "--interface", "nosuchif0", "--bpffs", pins, "--max-config-bytes", "1MiB"},
			code: exitError, stderr: `interface "nosuchif0"`, mustNot: pins,
		},
		{
			name: "run with a bad --max-config-bytes", args: []string{"run", "--config", good, "--interface", "lo", "--max-config-bytes", "16MB"},
			code: exitUsage, stderr: "want a size in bytes, such as 16777216 or 16MiB",
		},
		{
			name: "run on a missing interface", args: []string{"run", "--config", good, "--interface", "nosuchif0", "--bpffs", pins},
			code: exitError, stderr: `interface "nosuchif0"`, mustNot: pins,
		},
		{
			name: "status with nothing pinned", args: []string{"status", "--bpffs", pins},
			code: exitError, stderr: "no load balancer is pinned in " + pins, noStdout: true,
		},
		{
			name: "status with a bad config", args: []string{"status", "--bpffs", pins, "--config", bad},
			code: exitError, stderr: "missing port",
		},
		{name: "cleanup with nothing there", args: []string{"cleanup", "--bpffs", pins}, code: exitOK, stdout: "Nothing to remove"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := realMain(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, &stdout, &stderr)
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout %q does not contain %q", &stdout, tt.stdout)
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q does not contain %q", &stderr, tt.stderr)
			}
			if tt.noStdout && stdout.Len() > 0 {
				t.Errorf("stdout %q, want nothing", &stdout)
			}
			if tt.mustNot != "" {
				if _, err := os.Stat(tt.mustNot); err == nil {
					t.Errorf("%s exists after a refused command", tt.mustNot)
				}
			}
		})
	}
}

// The status tables line up and show what a reader needs: names, types,
// policies and source ranges when the configuration is known, algorithm
// and affinity from the datapath, backend states and locality, empty
// services, interfaces that are gone.
func TestPrintStatus(t *testing.T) {
	web := lb.Frontend{Address: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: lb.TCP}
	empty := lb.Frontend{Address: netip.MustParseAddrPort("10.96.0.11:80"), Protocol: lb.TCP}
	shop := lb.Frontend{Address: netip.MustParseAddrPort("198.51.100.20:443"), Protocol: lb.TCP}
	services := []lb.ServiceStatus{
		{Frontend: web, ID: 1, Backends: []lb.BackendStatus{
			{Backend: lb.Backend{Address: netip.MustParseAddrPort("10.0.1.2:8080"), Weight: 1}, ID: 1, Packets: 12, Bytes: 900},
			{Backend: lb.Backend{Address: netip.MustParseAddrPort("10.0.2.2:8080"), Weight: 20, State: lb.Maintenance, Local: true},
				ID: 2, Packets: 3456789, Bytes: 1 << 32},
		}},
		{Frontend: empty, ID: 2},
		{Frontend: shop, ID: 3, Algorithm: lb.Maglev, MaglevTableSize: 16381, SessionAffinity: lb.DefaultSessionAffinity,
			Backends: []lb.BackendStatus{
				{Backend: lb.Backend{Address: netip.MustParseAddrPort("10.0.3.2:8443"), Weight: 1, State: lb.Terminating}, ID: 3},
			}},
	}
	known := map[lb.Frontend]NamedService{
		web: plain("web", lb.Service{Frontend: web}),
		shop: {Name: "shop", Port: "https", Type: TypeLoadBalancer, Service: lb.Service{Frontend: shop, TrafficPolicy: lb.Local,
			SourceRanges: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("10.1.2.3/8")}}},
	}
	atts := attachStatus{own: []datapath.Attachment{
		{Ifindex: 2, Interface: "eth0", Point: datapath.PointXDP, Mode: datapath.ModeXDPNative, ProgramID: 7},
		{Ifindex: 9, Point: datapath.PointTCIngress, Mode: datapath.ModeTCX, ProgramID: 8},
	}}
	pf := prefilterStatus{
		prefixes:   []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("203.0.113.66/32"), netip.MustParsePrefix("2001:db8:bad::/48")},
		drops:      datapath.Counter{Packets: 7, Bytes: 518},
		eventsLost: 1,
	}
	var out bytes.Buffer
	err := printStatus(&out, "/sys/fs/bpf/xdplane", services, known,
		datapath.Counters{ForwardNew: datapath.Counter{Packets: 5, Bytes: 300}, SourceDenied: datapath.Counter{Packets: 2, Bytes: 120}}, pf, atts)
	if err != nil {
		t.Fatal(err)
	}
	want := `Datapath pinned in /sys/fs/bpf/xdplane

INTERFACE              POINT       MODE        PROGRAM
eth0                   xdp         xdp-native  7
(ifindex 9, not here)  tc-ingress  tcx         8

SERVICE                NAME        TYPE          ALGORITHM      AFFINITY  POLICY   SOURCES
10.96.0.10:80/tcp      web         -             random         none      cluster  all
10.96.0.11:80/tcp      -           ?             random         none      ?        ?
198.51.100.20:443/tcp  shop:https  LoadBalancer  maglev(16381)  3h0m0s    local    203.0.113.0/24,10.0.0.0/8
?: not a service of the configuration given

SERVICE                BACKEND        WEIGHT  STATE        LOCAL  PACKETS  BYTES
10.96.0.10:80/tcp      10.0.1.2:8080  1       active       no     12       900
                       10.0.2.2:8080  20      maintenance  yes    3456789  4294967296
10.96.0.11:80/tcp      (none)         -       -            -      -        -
198.51.100.20:443/tcp  10.0.3.2:8443  1       terminating  no     0        0

Prefilter: 3 source prefixes, whose packets XDP drops before load balancing:
  192.0.2.0/24
  203.0.113.66/32
  2001:db8:bad::/48

COUNTER                      PACKETS  BYTES
forwarded, new flow          5        300
forwarded, established       0        0
replies translated           0        0
passed, not for a service    0        0
rejected, no backend         0        0
dropped, prefilter           7        518
dropped, source not allowed  2        120
dropped, conntrack full      0        0
passed, malformed            0        0
passed, fragment             0        0
drop events lost             1        -
`
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", &out, want)
	}

	// Without a configuration: what only the configuration knows is "?".
	out.Reset()
	if err := printStatus(&out, "/x", services[:1], nil, datapath.Counters{}, prefilterStatus{}, attachStatus{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"10.96.0.10:80/tcp  -     ?     random     none      ?       ?\n",
		"?: pass --config FILE to show names, types, policies and source ranges\n",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("status without a configuration %q does not say %q", &out, s)
		}
	}

	out.Reset()
	if err := printStatus(&out, "/x", nil, nil, datapath.Counters{}, prefilterStatus{}, attachStatus{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Attached to no interface.", "No services.", "Prefilter: empty."} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("empty status %q does not say %q", &out, s)
		}
	}

	// Another datapath's programs are shown apart from this one's.
	out.Reset()
	two := attachStatus{own: atts.own[:1], foreign: []datapath.Attachment{
		{Ifindex: 2, Interface: "eth0", Point: datapath.PointTCIngress, Mode: datapath.ModeTCX, ProgramID: 11},
		{Ifindex: 3, Interface: "eth1", Point: datapath.PointTCEgress, Mode: datapath.ModeTCLegacy, ProgramID: 12},
	}}
	if err := printStatus(&out, "/x", nil, nil, datapath.Counters{}, prefilterStatus{}, two); err != nil {
		t.Fatal(err)
	}
	wantForeign := "NOT THIS DATAPATH'S: 2 xdplane programs of another datapath (another bpffs, or pins lost); " +
		"xdplane-lb run detaches them from the interfaces it runs on:\n" +
		"INTERFACE  POINT       MODE       PROGRAM\n" +
		"eth0       tc-ingress  tcx        11\n" +
		"eth1       tc-egress   tc-legacy  12\n\n"
	if !strings.Contains(out.String(), wantForeign) {
		t.Errorf("status with another datapath's programs:\n%s\nwant it to contain:\n%s", &out, wantForeign)
	}
	if strings.Count(out.String(), "INTERFACE") != 2 {
		t.Errorf("status does not show the foreign programs in a table of their own:\n%s", &out)
	}

	// A long prefilter is cut short; one that nothing consults says so.
	var long prefilterStatus
	for i := range maxPrefixesShown + 3 {
		long.prefixes = append(long.prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32))
	}
	out.Reset()
	if err := printStatus(&out, "/x", nil, nil, datapath.Counters{}, long, attachStatus{own: atts.own[1:]}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		fmt.Sprintf("Prefilter: %d source prefixes,", maxPrefixesShown+3),
		fmt.Sprintf("  192.0.2.%d/32\n  and 3 more\n", maxPrefixesShown-1),
		"(attached at XDP on no interface: the prefilter drops nothing)",
	} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("status %q does not say %q", &out, s)
		}
	}
}
