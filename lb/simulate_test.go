package lb

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
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
	for what, f := range map[string]Flow{
		"mixed families":                 flow("10.0.0.2:1000", "[fd00::10]:53", UDP),
		"no destination":                 {Source: netip.MustParseAddrPort("[fd00:8::2]:1000"), Protocol: UDP},
		"no source":                      {Destination: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: TCP},
		"a protocol it does not balance": {Source: netip.MustParseAddrPort("10.0.0.2:1000"), Destination: netip.MustParseAddrPort("10.96.0.10:80"), Protocol: 132},
		"v4-mapped and IPv4, one family": flow("[::ffff:10.0.0.2]:1000", "10.96.0.10:80", TCP),
	} {
		_, err := Simulate(dp, f)
		if what == "v4-mapped and IPv4, one family" {
			if err != nil {
				t.Errorf("%s: %v, want it taken as IPv4", what, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", what, err)
		}
	}
}

// simState reads every map the XDP program writes, and the service maps:
// keys in hex, values byte for byte (per-CPU ones in their Go form).
func simState(t *testing.T, dp *datapath.Datapath) map[string]map[string]string {
	t.Helper()
	m := kernel.Of(dp).Maps
	out := map[string]map[string]string{}
	for name, entries := range dump(t, dp) {
		out[name] = map[string]string{}
		for k, v := range entries {
			out[name][fmt.Sprintf("%x", k)] = v
		}
	}
	for name, mp := range map[string]*ebpf.Map{"conntrack": m.Conntrack, "affinity": m.Affinity} {
		out[name] = map[string]string{}
		var k, v []byte
		it := mp.Iterate()
		for it.Next(&k, &v) {
			out[name][fmt.Sprintf("%x", k)] = string(v)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	for name, mp := range map[string]*ebpf.Map{"stats": m.Stats, "backend_stats": m.BackendStats, "drop_stats": m.DropStats} {
		out[name] = map[string]string{}
		var k uint32
		var v []bpf.XdplaneCounter
		it := mp.Iterate()
		for it.Next(&k, &v) {
			out[name][fmt.Sprintf("%08x", k)] = fmt.Sprint(v)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	var ticks []uint32
	if err := m.EventTick.Lookup(uint32(0), &ticks); err != nil {
		t.Fatal(err)
	}
	out["event_tick"] = map[string]string{"00000000": fmt.Sprint(ticks)}
	return out
}

// diffState names what differs between two simState readings.
func diffState(before, after map[string]map[string]string) []string {
	var out []string
	for name := range before {
		for k, v := range before[name] {
			if w, ok := after[name][k]; !ok {
				out = append(out, fmt.Sprintf("%s: entry %s gone", name, k))
			} else if w != v {
				out = append(out, fmt.Sprintf("%s: entry %s changed", name, k))
			}
		}
		for k := range after[name] {
			if _, ok := before[name][k]; !ok {
				out = append(out, fmt.Sprintf("%s: entry %s added", name, k))
			}
		}
	}
	slices.Sort(out)
	return out
}

// simulateNoChange is Simulate, failing the test if the call changed any
// map.
func simulateNoChange(t *testing.T, dp *datapath.Datapath, f Flow) Simulation {
	t.Helper()
	before := simState(t, dp)
	sim, err := Simulate(dp, f)
	if err != nil {
		t.Fatalf("Simulate(%v): %v", f, err)
	}
	if d := diffState(before, simState(t, dp)); len(d) > 0 {
		t.Errorf("Simulate(%v) = %+v changed the maps: %v", f, sim, d)
	}
	return sim
}

// Simulate leaves every map as it found it, counters included, whatever
// path the packet takes; and reports as established only a flow the
// program keeps on its backend.
func TestSimulateChangesNothing(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{MaxBackends: 64})
	m := newManager(t, dp)
	fe := netip.MustParseAddrPort("10.96.0.10:80")
	one := svc("10.96.0.10:80/tcp", "10.0.1.2:8080")
	affine := svc("10.96.0.20:80/tcp", "10.0.2.2:8080", "10.0.2.3:8080", "10.0.2.4:8080")
	affine.SessionAffinity = time.Minute
	if _, err := m.Sync([]Service{one, affine}); err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddrPort("10.0.0.2:2000")
	flow := Flow{Source: client, Destination: fe, Protocol: TCP}

	// A new flow.
	sim := simulateNoChange(t, dp, flow)
	if sim.Outcome != Forwarded || sim.Backend != one.Backends[0].Address || sim.Established {
		t.Errorf("new flow: %+v, want forwarded, new, to %s", sim, one.Backends[0].Address)
	}

	// The same flow once a real packet has set it up: established, and
	// its conntrack counts stay as they are.
	runFlow(t, dp, TCP, client, fe)
	sim = simulateNoChange(t, dp, flow)
	if sim.Outcome != Forwarded || sim.Backend != one.Backends[0].Address || !sim.Established {
		t.Errorf("established flow: %+v, want forwarded, established, to %s", sim, one.Backends[0].Address)
	}

	// The service's only backend replaced: the flow's entry names a
	// backend that is gone, so the program balances it afresh.
	replaced := svc("10.96.0.10:80/tcp", "10.0.1.3:8080")
	if err := m.Upsert(replaced); err != nil {
		t.Fatal(err)
	}
	sim = simulateNoChange(t, dp, flow)
	if sim.Outcome != Forwarded || sim.Backend != replaced.Backends[0].Address || sim.Established {
		t.Errorf("flow whose backend was replaced: %+v, want forwarded, new, to %s", sim, replaced.Backends[0].Address)
	}
	// The old backend back, with a new cookie: still not the flow's.
	if err := m.Upsert(one); err != nil {
		t.Fatal(err)
	}
	sim = simulateNoChange(t, dp, flow)
	if sim.Outcome != Forwarded || sim.Established {
		t.Errorf("flow whose backend was replaced and re-added: %+v, want forwarded, new", sim)
	}

	// Session affinity: a client's second flow goes where its first went,
	// and asking does not refresh the client's affinity.
	afe := affine.Frontend.Address
	first := runFlow(t, dp, TCP, client, afe)
	time.Sleep(time.Millisecond) // so that a refreshed timestamp differs
	for port := uint16(3000); port < 3010; port++ {
		sim = simulateNoChange(t, dp, Flow{Source: netip.AddrPortFrom(client.Addr(), port), Destination: afe, Protocol: TCP})
		if sim.Outcome != Forwarded || sim.Backend != first || sim.Established {
			t.Errorf("affine flow from port %d: %+v, want forwarded, new, to %s", port, sim, first)
		}
	}

	// A reply of a tracked flow, another port of a frontend, and a source
	// the node-wide prefilter drops.
	be := one.Backends[0].Address
	runFlow(t, dp, TCP, netip.MustParseAddrPort("10.0.0.3:4000"), fe)
	reply := simulateNoChange(t, dp, Flow{Source: be, Destination: netip.MustParseAddrPort("10.0.0.3:4000"), Protocol: TCP})
	if reply.Outcome != Passed {
		t.Errorf("reply: %+v, want passed", reply)
	}
	if sim := simulateNoChange(t, dp, Flow{Source: client, Destination: netip.MustParseAddrPort("10.96.0.10:81"), Protocol: TCP}); sim.Outcome != Passed {
		t.Errorf("another port: %+v, want passed", sim)
	}
	banned := netip.MustParseAddr("10.0.0.66")
	pk := bpf.XdplanePrefilterKey{Prefixlen: 128, Addr: banned.As16()}
	if err := kernel.Of(dp).Maps.Prefilter.Put(pk, uint8(1)); err != nil {
		t.Fatal(err)
	}
	if sim := simulateNoChange(t, dp, Flow{Source: netip.AddrPortFrom(banned, 1000), Destination: fe, Protocol: TCP}); sim.Outcome != Dropped {
		t.Errorf("prefiltered source: %+v, want dropped", sim)
	}
}
