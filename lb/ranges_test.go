package lb

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/kernel"
)

func TestRangeKeyRoundTrip(t *testing.T) {
	for _, s := range []string{"10.0.0.0/8", "10.1.2.3/32", "0.0.0.0/0", "fd00::/8", "::/0", "2001:db8::1/128"} {
		p := netip.MustParsePrefix(s)
		id, got := prefixOf(rangeKey(77, p))
		if id != 77 || got != p {
			t.Errorf("%s: read back service %d, prefix %s", s, id, got)
		}
	}
}

func TestValidateSourceRanges(t *testing.T) {
	s := svc("10.96.0.10:80/tcp", "10.0.1.2:8080")
	for _, p := range []netip.Prefix{{}, netip.MustParsePrefix("::ffff:10.0.0.0/104"), netip.MustParsePrefix("::/0")} {
		s.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), p}
		var ve *ValidationError
		if err := s.Validate(); !errors.As(err, &ve) || ve.Field != "sourceRanges[1]" {
			t.Errorf("range %v: %v, want an error on sourceRanges[1]", p, err)
		}
	}
	s.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8"), netip.MustParsePrefix("10.0.0.0/8")}
	if got := s.normalized().SourceRanges; fmt.Sprint(got) != "[10.0.0.0/8]" {
		t.Fatalf("normalized ranges %v, want one masked prefix", got)
	}
}

func TestSourceRangesDatapath(t *testing.T) {
	dp, dir := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	run := func(src, fe netip.AddrPort) (netip.AddrPort, bool) {
		frame := maglevFrame(t, TCP, src, fe)
		out := make([]byte, len(frame)+64)
		opts := ebpf.RunOptions{Data: frame, DataOut: out}
		ret, err := kernel.Of(dp).Programs.XdplaneXdp.Run(&opts)
		if err != nil {
			t.Fatal(err)
		}
		if ret == 1 {
			return netip.AddrPort{}, false
		}
		return maglevDst(t, opts.DataOut), true
	}
	v4 := svc("10.96.0.10:80/tcp", "10.0.1.2:8080")
	v4.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("192.168.7.0/24")}
	v6 := svc("[fd00::10]:80/tcp", "[fd00:1::2]:8080")
	v6.SourceRanges = []netip.Prefix{netip.MustParsePrefix("fd00:9::/64")}
	open := svc("10.96.0.11:80/tcp", "10.0.1.2:8080")
	if _, err := m.Sync([]Service{v4, v6, open}); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, dp)
	before, _ := dp.Counters()
	for _, tc := range []struct {
		src, fe string
		ok      bool
	}{
		{"10.0.0.2:1000", "10.96.0.10:80", true},
		{"192.168.7.9:1000", "10.96.0.10:80", true},
		{"10.0.1.2:1000", "10.96.0.10:80", false},
		{"10.1.0.2:1000", "10.96.0.10:80", false},
		{"[fd00:9::2]:1000", "[fd00::10]:80", true},
		{"[fd00:8::2]:1000", "[fd00::10]:80", false},
		{"10.1.0.2:1000", "10.96.0.11:80", true}, // no ranges: all
	} {
		if _, ok := run(netip.MustParseAddrPort(tc.src), netip.MustParseAddrPort(tc.fe)); ok != tc.ok {
			t.Errorf("%s to %s: admitted %v, want %v", tc.src, tc.fe, ok, tc.ok)
		}
	}
	after, _ := dp.Counters()
	if n := after.SourceDenied.Packets - before.SourceDenied.Packets; n != 3 {
		t.Fatalf("SourceDenied counted %d, want 3", n)
	}

	// Narrowing the ranges stops new flows, not established ones.
	established := netip.MustParseAddrPort("10.0.0.2:2000")
	if _, ok := run(established, v4.Frontend.Address); !ok {
		t.Fatal("flow not admitted")
	}
	v4.SourceRanges = []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}
	if err := m.Upsert(v4); err != nil {
		t.Fatal(err)
	}
	if _, ok := run(established, v4.Frontend.Address); !ok {
		t.Fatal("an established flow was cut when its source left the ranges")
	}
	if _, ok := run(netip.MustParseAddrPort("10.0.0.2:2001"), v4.Frontend.Address); ok {
		t.Fatal("a new flow from outside the narrowed ranges was admitted")
	}
	// No ranges at all: everyone.
	v4.SourceRanges = nil
	if err := m.Upsert(v4); err != nil {
		t.Fatal(err)
	}
	if _, ok := run(netip.MustParseAddrPort("172.16.0.1:1000"), v4.Frontend.Address); !ok {
		t.Fatal("clearing the ranges did not admit everyone")
	}
	checkConsistent(t, dp)

	// Recovered after a restart; deleted with the service.
	v4.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	if err := m.Upsert(v4); err != nil {
		t.Fatal(err)
	}
	m.Close()
	dp2, err := datapath.Open(datapath.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	m2 := newManager(t, dp2)
	if res, err := m2.Sync([]Service{v4, v6, open}); err != nil || len(res.Changed) != 0 {
		t.Fatalf("Sync after restart = %+v, %v; want no change", res, err)
	}
	if _, err := m2.Sync(nil); err != nil {
		t.Fatal(err)
	}
	var k, v []byte
	if kernel.Of(dp2).Maps.SourceRanges.Iterate().Next(&k, &v) {
		t.Fatal("source ranges left after every service went")
	}
}
