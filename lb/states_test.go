package lb

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/kernel"
)

func TestEligible(t *testing.T) {
	b := func(addr string, st BackendState, local bool) Backend {
		return Backend{Address: netip.MustParseAddrPort(addr), Weight: 1, State: st, Local: local}
	}
	a1, a2 := b("10.0.1.2:80", Active, false), b("10.0.2.2:80", Active, true)
	t1, t2 := b("10.0.3.2:80", Terminating, false), b("10.0.4.2:80", Terminating, true)
	m1 := b("10.0.5.2:80", Maintenance, true)
	for _, tc := range []struct {
		policy   TrafficPolicy
		backends []Backend
		want     []Backend
	}{
		{Cluster, []Backend{a1, a2, t1, m1}, []Backend{a1, a2}},
		{Cluster, []Backend{t1, t2, m1}, []Backend{t1, t2}}, // kube-proxy's fallback
		{Cluster, []Backend{m1}, nil},
		{Local, []Backend{a1, a2, t2}, []Backend{a2}},
		{Local, []Backend{a1, t1, t2}, []Backend{t2}},
		{Local, []Backend{a1, t1, m1}, nil}, // nothing local takes flows: drop
	} {
		got := Service{Backends: tc.backends, TrafficPolicy: tc.policy}.eligible()
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s policy over %v: eligible %v, want %v", tc.policy, tc.backends, got, tc.want)
		}
	}
}

// States and locality decide where new flows go, through the real
// program; a flow keeps its backend whatever its state becomes.
func TestBackendStatesDatapath(t *testing.T) {
	t.Run("ipv4", func(t *testing.T) {
		testBackendStates(t, netip.MustParseAddrPort("10.96.0.10:80"), netip.MustParseAddr("10.0.0.2"),
			"10.0.1.2:8080", "10.0.2.2:8080", "10.0.3.2:8080")
	})
	t.Run("ipv6", func(t *testing.T) {
		testBackendStates(t, netip.MustParseAddrPort("[fd00::10]:80"), netip.MustParseAddr("fd00:9::2"),
			"[fd00:1::2]:8080", "[fd00:2::2]:8080", "[fd00:3::2]:8080")
	})
}

func testBackendStates(t *testing.T, fe netip.AddrPort, client netip.Addr, backends ...string) {
	dp, dir := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	var addrs []netip.AddrPort
	for _, b := range backends {
		addrs = append(addrs, netip.MustParseAddrPort(b))
	}
	service := func(policy TrafficPolicy, states [3]BackendState, local [3]bool) Service {
		s := Service{Frontend: Frontend{fe, TCP}, TrafficPolicy: policy}
		for i, a := range addrs {
			s.Backends = append(s.Backends, Backend{Address: a, State: states[i], Local: local[i]})
		}
		return s
	}
	newFlows := func(from uint16) map[netip.AddrPort]int {
		seen := map[netip.AddrPort]int{}
		for port := from; port < from+60; port++ {
			frame := maglevFrame(t, TCP, netip.AddrPortFrom(client, port), fe)
			out := make([]byte, len(frame)+64)
			opts := ebpf.RunOptions{Data: frame, DataOut: out}
			ret, err := kernel.Of(dp).Programs.XdplaneXdp.Run(&opts)
			if err != nil {
				t.Fatal(err)
			}
			if ret == 3 { // XDP_TX: rejected, no backend takes new flows
				seen[netip.AddrPort{}]++
				continue
			}
			seen[maglevDst(t, opts.DataOut)]++
		}
		return seen
	}
	upsert := func(s Service) {
		t.Helper()
		if err := m.Upsert(s); err != nil {
			t.Fatal(err)
		}
		checkConsistent(t, dp)
	}
	none := [3]bool{}

	upsert(service(Cluster, [3]BackendState{Active, Active, Active}, none))
	established := runFlow(t, dp, TCP, netip.AddrPortFrom(client, 40000), fe)
	idx := map[netip.AddrPort]int{addrs[0]: 0, addrs[1]: 1, addrs[2]: 2}[established]
	id := m.services[Frontend{fe, TCP}].backendIDs[established]

	// Its backend starts terminating: no new flows, but the flow stays.
	states := [3]BackendState{Active, Active, Active}
	states[idx] = Terminating
	upsert(service(Cluster, states, none))
	if got := m.services[Frontend{fe, TCP}].backendIDs[established]; got != id {
		t.Fatalf("a state change gave the backend id %d, was %d", got, id)
	}
	if seen := newFlows(1000); seen[established] != 0 || len(seen) != 2 {
		t.Fatalf("with %s terminating, new flows went to %v", established, seen)
	}
	if got := runFlow(t, dp, TCP, netip.AddrPortFrom(client, 40000), fe); got != established {
		t.Fatalf("the established flow moved from terminating %s to %s", established, got)
	}

	// All terminating: fall back to them; maintenance takes nothing.
	upsert(service(Cluster, [3]BackendState{Terminating, Terminating, Maintenance}, none))
	if seen := newFlows(2000); len(seen) != 2 || seen[addrs[2]] != 0 {
		t.Fatalf("all terminating or in maintenance: new flows went to %v", seen)
	}
	upsert(service(Cluster, [3]BackendState{Maintenance, Maintenance, Maintenance}, none))
	if seen := newFlows(3000); seen[netip.AddrPort{}] != 60 {
		t.Fatalf("all in maintenance: %v, want every new flow rejected", seen)
	}

	// Local policy: only the local backend; none local: reject.
	upsert(service(Local, [3]BackendState{}, [3]bool{false, true, false}))
	if seen := newFlows(4000); len(seen) != 1 || seen[addrs[1]] != 60 {
		t.Fatalf("local policy with one local backend: %v", seen)
	}
	// None local, but backends elsewhere: dropped, as kube-proxy drops.
	upsert(service(Local, [3]BackendState{}, none))
	for port := uint16(5000); port < 5010; port++ {
		frame := maglevFrame(t, TCP, netip.AddrPortFrom(client, port), fe)
		if ret, err := kernel.Of(dp).Programs.XdplaneXdp.Run(&ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+64)}); err != nil || ret != 1 {
			t.Fatalf("local policy with no local backend: verdict %d, %v; want XDP_DROP", ret, err)
		}
	}

	// A restart recovers states, locality and policy: no change to make.
	want := service(Local, [3]BackendState{Terminating, Active, Maintenance}, [3]bool{true, true, false})
	upsert(want)
	m.Close()
	dp2, err := datapath.Open(datapath.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	m2 := newManager(t, dp2)
	if res, err := m2.Sync([]Service{want}); err != nil || len(res.Changed) != 0 {
		t.Fatalf("Sync of the same service after restart = %+v, %v", res, err)
	}
	if got, _ := m2.Get(want.Frontend); fmt.Sprint(got) != fmt.Sprint(want.normalized()) {
		t.Fatalf("recovered %+v, want %+v", got, want.normalized())
	}
}
