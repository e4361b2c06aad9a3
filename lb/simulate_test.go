package lb

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/kernel"
)

func TestSimulate(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	mag := svc("10.96.0.10:80/tcp", "10.0.1.2:8080", "10.0.2.2:8080", "10.0.3.2:8080")
	mag.Algorithm = Maglev
	empty := svc("10.96.0.11:80/tcp")
	ranged := svc("[fd00::10]:53/udp", "[fd00:1::2]:5353")
	ranged.SourceRanges = []netip.Prefix{netip.MustParsePrefix("fd00:9::/64")}
	if _, err := m.Sync([]Service{mag, empty, ranged}); err != nil {
		t.Fatal(err)
	}
	flow := func(src, dst string, p Protocol) Flow {
		return Flow{Source: netip.MustParseAddrPort(src), Destination: netip.MustParseAddrPort(dst), Protocol: p}
	}
	countCT := func() int {
		n := 0
		var k, v []byte
		it := kernel.Of(dp).Maps.Conntrack.Iterate()
		for it.Next(&k, &v) {
			n++
		}
		return n
	}

	// Maglev: the answer is the reference's, and asking leaves no state.
	n := mag.normalized()
	table := maglevTable(n.Backends, n.MaglevTableSize)
	for port := uint16(1000); port < 1100; port++ {
		f := flow("10.0.0.2:0", "10.96.0.10:80", TCP)
		f.Source = netip.AddrPortFrom(f.Source.Addr(), port)
		sim, err := Simulate(dp, f)
		if err != nil {
			t.Fatal(err)
		}
		want := n.Backends[table[flowHash(f.Source.Addr(), port, 80, TCP)%n.MaglevTableSize]].Address
		if sim.Outcome != Forwarded || sim.Backend != want || sim.Established {
			t.Fatalf("Simulate(%v) = %+v, want forwarded to %s", f, sim, want)
		}
	}
	if c := countCT(); c != 0 {
		t.Fatalf("simulating left %d conntrack entries", c)
	}

	// An established flow is reported as such, and keeps its state.
	f := flow("10.0.0.2:2000", "10.96.0.10:80", TCP)
	real, _ := Simulate(dp, f)
	frame, _ := simFrame(f.Source, f.Destination, TCP)
	out := make([]byte, len(frame)+64)
	if _, err := kernel.Of(dp).Programs.XdplaneXdp.Run(&ebpf.RunOptions{Data: frame, DataOut: out}); err != nil {
		t.Fatal(err)
	}
	sim, err := Simulate(dp, f)
	if err != nil || !sim.Established || sim.Backend != real.Backend {
		t.Fatalf("established flow: %+v, %v", sim, err)
	}
	if c := countCT(); c != 2 {
		t.Fatalf("the established flow's entries: %d, want 2", c)
	}

	for _, tc := range []struct {
		f    Flow
		want Outcome
	}{
		{flow("10.0.0.2:1000", "10.96.0.11:80", TCP), Rejected},
		{flow("10.0.0.2:1000", "10.96.0.12:80", TCP), Passed},
		{flow("10.0.0.2:1000", "10.96.0.10:80", UDP), Passed},
		{flow("[fd00:9::2]:1000", "[fd00::10]:53", UDP), Forwarded},
		{flow("[fd00:8::2]:1000", "[fd00::10]:53", UDP), Dropped},
	} {
		if sim, err := Simulate(dp, tc.f); err != nil || sim.Outcome != tc.want {
			t.Errorf("Simulate(%v) = %+v, %v; want %s", tc.f, sim, err, tc.want)
		}
	}
	if _, err := Simulate(dp, flow("10.0.0.2:1000", "[fd00::10]:53", UDP)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("mixed families: %v, want ErrInvalid", err)
	}
}
