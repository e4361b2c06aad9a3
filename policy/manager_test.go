package policy

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

// Egress policy judges where a packet goes after DNAT: the backend, not
// the service's frontend. A reply passes the endpoint's ingress policy as
// the backend's, and then leaves translated back to the frontend.
func TestGoldenServiceInterplay(t *testing.T) {
	for _, fam := range []struct {
		name                   string
		build                  func(string, string) []byte
		fe, backend, pod, pod2 string // pod: the client's socket; pod2: another of its ports
		frontendOnly           string
	}{
		{"v4", packets.TCP4, "10.96.0.10:80", "10.1.2.3:443", "10.0.1.2:40000", "10.0.1.2:40001", "10.96.0.10/32"},
		{"v6", packets.TCP6, "[fd00::10]:80", "[fd00:b::3]:443", "[fd00:1::2]:40000", "[fd00:1::2]:40001", "fd00::10/128"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			r := newRig(t, datapath.Limits{})
			serveTCP(t, r, fam.fe, fam.backend)

			// goldenPolicy allows egress to the backend's prefix on TCP
			// 443, nothing to the frontend.
			r.setPolicy(goldenPolicy())
			r.expectTranslated("to the service, backend allowed: DNAT to the backend", r.ifindex, Egress,
				fam.build(fam.pod, fam.fe), fam.build(fam.pod, fam.backend))
			// The reply: ingress allows nothing from the backend, but it
			// belongs to the flow; it leaves as the frontend's.
			r.expectTranslated("the backend's reply: reverse NAT to the frontend", r.ifindex, Ingress,
				fam.build(fam.backend, fam.pod), fam.build(fam.fe, fam.pod))

			// Allowing the frontend alone allows nothing: the backend is
			// judged.
			r.setPolicy(Policy{Egress: Rules{Isolated: true, Rules: []Rule{{Peers: []Peer{{Prefix: pfx(fam.frontendOnly)}}, Ports: []PortRange{{Protocol: TCP, Port: 80}}}}}})
			r.expect("to the service, only the frontend allowed", Egress, fam.build(fam.pod2, fam.fe), false)
			r.expectTranslated("the flow allowed before: still DNAT to the backend", r.ifindex, Egress,
				fam.build(fam.pod, fam.fe), fam.build(fam.pod, fam.backend))
		})
	}
}

// Ingress policy on a backend judges a request by its client's address
// and the backend's port: the load balancer translates the destination
// alone. The request comes in through pol1, no endpoint, whose tc ingress
// translates it, and meets the policy at the backend's tc egress; the
// reply leaves through the backend's isolated egress as part of the flow
// and is translated back at pol1's tc egress.
func TestGoldenServiceInterplayIngress(t *testing.T) {
	for _, fam := range []struct {
		name  string
		build func(string, string) []byte
		// The frontend's port is in no rule; the backend's, the pod's
		// TCP 80, is.
		fe, backend string
		// Clients: one goldenPolicy allows TCP 80 from, one its Deny
		// rule names, one in no rule.
		allowed, denied, unlisted string
	}{
		{"v4", packets.TCP4, "10.96.0.20:8200", "10.0.1.2:80", "10.0.3.4:40000", "10.0.7.7:40000", "10.2.3.4:40000"},
		{"v6", packets.TCP6, "[fd00::20]:8200", "[fd00:1::2]:80", "[fd00:a::3:4]:40000", "[fd00:a::7:7]:40000", "[fd00:c::4]:40000"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			r := newRig(t, datapath.Limits{})
			serveTCP(t, r, fam.fe, fam.backend)
			r.setPolicy(goldenPolicy())
			rd, err := r.dp.Events()
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			pol1 := r.ifindexOf("pol1")

			// dnat is a request from client to the frontend as it leaves
			// pol1's tc ingress: to the backend, from the client still.
			dnat := func(client string) []byte {
				t.Helper()
				want := fam.build(client, fam.backend)
				r.expectTranslated("request from "+client+": DNAT to the backend", pol1, Egress, fam.build(client, fam.fe), want)
				return want
			}
			r.expectCase(goldenCase{"request from an allowed client", Ingress, dnat(fam.allowed), true, 0})
			reply := fam.build(fam.backend, fam.allowed)
			r.expectCase(goldenCase{"the backend's reply, out through an egress that allows nothing to the client", Egress, reply, true, 0})
			r.expectTranslated("the reply at pol1: reverse NAT to the frontend", pol1, Ingress, reply, fam.build(fam.fe, fam.allowed))

			r.expectCase(goldenCase{"request from a client a Deny rule names", Ingress, dnat(fam.denied), false, datapath.DropDenyRule})
			var ev datapath.Event
			rd.SetDeadline(time.Now().Add(time.Second))
			if err := r.ns.Do(func() (err error) { ev, err = rd.Read(); return err }); err != nil {
				t.Fatalf("no event for the denied request: %v", err)
			}
			if ev.Source != netip.MustParseAddrPort(fam.denied) || ev.Destination != netip.MustParseAddrPort(fam.backend) || ev.Reason != datapath.DropDenyRule {
				t.Errorf("event %s, want %s -> %s denied by rule", ev, fam.denied, fam.backend)
			}
			r.expectCase(goldenCase{"request from a client in no rule", Ingress, dnat(fam.unlisted), false, datapath.DropNoRule})
		})
	}
}

// serveTCP opens the load balancer on the rig's datapath with one TCP
// service, from frontend to its one backend.
func serveTCP(t *testing.T, r *rig, frontend, backend string) {
	t.Helper()
	var lbm *lb.Manager
	r.ns.MustDo(func() (err error) {
		lbm, err = lb.NewManager(r.dp)
		return err
	})
	t.Cleanup(func() { lbm.Close() })
	fe, err := lb.ParseFrontend(frontend + "/tcp")
	if err != nil {
		t.Fatal(err)
	}
	svc := lb.Service{Frontend: fe, Backends: []lb.Backend{{Address: netip.MustParseAddrPort(backend)}}}
	if err := lbm.Upsert(svc); err != nil {
		t.Fatal(err)
	}
}

// No packet is judged by a mix of two policies: a flow both allow passes
// at every moment of a stream of switches between them, and a flow
// neither allows never does.
func TestPolicySwitchIsAtomic(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	both := Peer{Prefix: pfx("10.0.3.0/24")}
	mk := func(extra string) Policy {
		var rules []Rule
		// Many prefixes, so that writing one rule set takes a while.
		for i := range 200 {
			rules = append(rules, Rule{Peers: []Peer{{Prefix: netip.PrefixFrom(netip.MustParseAddr(extra).Next(), 32)}},
				Ports: []PortRange{{Protocol: TCP, Port: uint16(1000 + i)}}})
		}
		rules = append(rules, Rule{Peers: []Peer{both, {Prefix: pfx(extra + "/32")}}, Ports: []PortRange{{Protocol: TCP, Port: 80}}})
		return Policy{Ingress: Rules{Isolated: true, Rules: rules}}
	}
	p1, p2 := mk("10.0.4.1"), mk("10.0.4.2")
	r.setPolicy(p1)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var switchErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p := p1
			if i%2 == 0 {
				p = p2
			}
			if err := r.ns.Do(func() error { return r.m.SetPolicy("pol0", p) }); err != nil {
				switchErr = err
				return
			}
		}
	}()
	var allowedDropped, deniedPassed int
	for port := uint16(20000); port < 22000; port++ {
		// New flows each time: a fresh source port.
		if ret, _ := r.run(Ingress, packets.TCP4(netip.AddrPortFrom(netip.MustParseAddr("10.0.3.9"), port).String(), "10.0.1.2:80")); ret != tcActUnspc {
			allowedDropped++
		}
		if ret, _ := r.run(Ingress, packets.TCP4(netip.AddrPortFrom(netip.MustParseAddr("10.0.5.9"), port).String(), "10.0.1.2:80")); ret != tcActShot {
			deniedPassed++
		}
	}
	close(stop)
	wg.Wait()
	if switchErr != nil {
		t.Fatal(switchErr)
	}
	if allowedDropped != 0 || deniedPassed != 0 {
		t.Errorf("during switches: %d flows both policies allow were dropped, %d flows neither allows passed", allowedDropped, deniedPassed)
	}
	// Both policies' entries never pile up: one set is left.
	if n := peerEntries(t, r); n != len(compileRules(p1.Normalize().Ingress).Peers) {
		t.Errorf("%d peer entries left after the switches, want one policy's %d", n, len(compileRules(p1.Normalize().Ingress).Peers))
	}
}

func countEntries(t *testing.T, mp *ebpf.Map) int {
	t.Helper()
	var k, v []byte
	n := 0
	it := mp.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// Endpoints with the same rules share one copy of them.
func TestPolicySharedBetweenEndpoints(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	r.ns.MustDo(func() error {
		return r.m.AddEndpoint(Endpoint{Interface: "pol1"})
	})
	r.setPolicy(goldenPolicy())
	one := peerEntries(t, r)
	r.ns.MustDo(func() error { return r.m.SetPolicy("pol1", goldenPolicy()) })
	if n := peerEntries(t, r); n != one {
		t.Errorf("two endpoints with one policy hold %d peer entries, one holds %d", n, one)
	}
	r.ns.MustDo(func() error { return r.m.RemoveEndpoint("pol0") })
	if n := peerEntries(t, r); n != one {
		t.Errorf("the rules went with the first endpoint: %d entries left, want %d", n, one)
	}
	r.ns.MustDo(func() error { return r.m.RemoveEndpoint("pol1") })
	for _, mp := range []*ebpf.Map{kernel.Of(r.dp).Maps.PolicyPeers, kernel.Of(r.dp).Maps.PolicyPeerHash, kernel.Of(r.dp).Maps.PolicyLens,
		kernel.Of(r.dp).Maps.PolicyPorts, kernel.Of(r.dp).Maps.PolicyPortHash, kernel.Of(r.dp).Maps.Endpoints} {
		if n := countEntries(t, mp); n != 0 {
			t.Errorf("%s holds %d entries with no endpoint left", mp, n)
		}
	}
}

func TestEndpointErrors(t *testing.T) {
	r := newRig(t, datapath.Limits{MaxEndpoints: 2})
	var ve *datapath.ValidationError
	for _, c := range []struct {
		ep    Endpoint
		field string
		is    error
	}{
		{Endpoint{}, "interface", ErrInvalid},
		{Endpoint{Interface: "nosuch0"}, "interface", ErrNotFound},
		{Endpoint{Interface: "pol1", Addresses: []netip.Addr{{}}}, "addresses[0]", ErrInvalid},
		{Endpoint{Interface: "pol1", Addresses: []netip.Addr{pod4, netip.MustParseAddr("::ffff:10.0.1.3")}}, "addresses[1]", ErrInvalid},
		{Endpoint{Interface: "pol1", Addresses: []netip.Addr{pod4, pod4}}, "addresses[1]", ErrInvalid},
	} {
		before := dumpPolicyMaps(t, r)
		err := r.ns.Do(func() error { return r.m.AddEndpoint(c.ep) })
		if !errors.Is(err, c.is) || !errors.As(err, &ve) || ve.Field != c.field {
			t.Errorf("AddEndpoint(%+v) = %v, want %v on %s", c.ep, err, c.is, c.field)
		}
		if dumpPolicyMaps(t, r) != before {
			t.Errorf("AddEndpoint(%+v) failed but changed the maps", c.ep)
		}
	}
	// A failed AddEndpoint attached nothing.
	r.ns.MustDo(func() error {
		if _, attached, err := r.dp.AttachedHook("pol1"); err != nil || attached {
			t.Errorf("pol1 attached after failed adds: %v, %v", attached, err)
		}
		return nil
	})

	if err := r.ns.Do(func() error { return r.m.SetPolicy("nosuch0", Policy{}) }); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetPolicy on no endpoint: %v", err)
	}
	if err := r.ns.Do(func() error { return r.m.RemoveEndpoint("nosuch0") }); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveEndpoint of no endpoint: %v", err)
	}

	// Capacity: two endpoints fit (pol0 and pol1), a third does not.
	r.ns.MustDo(func() error { return r.m.AddEndpoint(Endpoint{Interface: "pol1"}) })
	r.ns.MustDo(func() error { return r.ns.Netlink().LinkAdd(dummy("pol2")) })
	if err := r.ns.Do(func() error { return r.m.AddEndpoint(Endpoint{Interface: "pol2"}) }); !errors.Is(err, ErrCapacity) || !errors.As(err, &ve) || ve.Endpoint != "pol2" {
		t.Errorf("a third endpoint with MaxEndpoints 2: %v, want ErrCapacity naming pol2", err)
	}

	// One writer at a time; a closed Manager refuses calls.
	if _, err := NewManager(r.dp); !errors.Is(err, ErrBusy) {
		t.Errorf("a second Manager: %v, want ErrBusy", err)
	}
	r.m.Close()
	if err := r.m.SetPolicy("pol0", Policy{}); !errors.Is(err, ErrClosed) {
		t.Errorf("SetPolicy after Close: %v, want ErrClosed", err)
	}
}

// A new Manager finds the endpoints an earlier one installed, with their
// rules still in force, cleans what a crash left behind, and replaces the
// recovered rules cleanly.
func TestManagerRecovers(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	r.setPolicy(goldenPolicy())
	st, _ := r.m.Endpoint("pol0")
	r.m.Close()
	peersBefore := peerEntries(t, r)

	// What a crash between writing new rules and switching leaves: entries
	// under a policy id no endpoint names.
	orphan := peerKey(9999, pfx("10.77.0.0/16"))
	if err := kernel.Of(r.dp).Maps.PolicyPeers.Put(orphan, bpf.XdplanePeerValue{Ruleset: 4242, N: peerNotInline}); err != nil {
		t.Fatal(err)
	}
	orphanPort := portKey(4242, portEntry{AnyProto: true, Verdict: verdictAllow})
	if err := kernel.Of(r.dp).Maps.PolicyPorts.Put(orphanPort, uint8(1)); err != nil {
		t.Fatal(err)
	}
	orphanH := peerHashKey(9999, pfx("10.78.0.0/16"))
	orphanHPort := bpf.XdplanePortHkey{Ruleset: kernel.Htonl(4242), Proto: 6, Port: kernel.Htons(80)}
	if err := errors.Join(kernel.Of(r.dp).Maps.PolicyPeerHash.Put(orphanH, bpf.XdplanePeerValue{Ruleset: 4242, N: peerNotInline}), kernel.Of(r.dp).Maps.PolicyPortHash.Put(orphanHPort, uint8(1)),
		kernel.Of(r.dp).Maps.PolicyLens.Put(uint32(9999), bpf.XdplanePlens{Count: 1, Len: [31]uint8{112}})); err != nil {
		t.Fatal(err)
	}

	var m2 *Manager
	r.ns.MustDo(func() (err error) {
		m2, err = NewManager(r.dp)
		return err
	})
	r.m = m2
	eps := m2.Endpoints()
	if len(eps) != 1 || eps[0].Interface != "pol0" || eps[0].ID != st.ID || !eps[0].Recovered {
		t.Fatalf("recovered endpoints %+v, want pol0 with id %d, recovered", eps, st.ID)
	}
	if n := peerEntries(t, r); n != peersBefore {
		t.Errorf("%d peer entries after recovery, want the %d before the crash (the orphan deleted)", n, peersBefore)
	}
	var v uint8
	if err := kernel.Of(r.dp).Maps.PolicyPorts.Lookup(orphanPort, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("orphaned port entry still there: %v", err)
	}
	if err := kernel.Of(r.dp).Maps.PolicyPortHash.Lookup(orphanHPort, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("orphaned port hash entry still there: %v", err)
	}
	var lens bpf.XdplanePlens
	if err := kernel.Of(r.dp).Maps.PolicyLens.Lookup(uint32(9999), &lens); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("orphaned lengths still there: %v", err)
	}
	r.expect("recovered rules still allow", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:80"), true)
	r.expect("recovered rules still deny", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:81"), false)

	// Replacing the recovered rules leaves only the new ones.
	p := Policy{Ingress: Rules{Isolated: true, Rules: []Rule{{Peers: []Peer{{Prefix: pfx("10.0.3.0/24")}}, Ports: []PortRange{{Protocol: TCP, Port: 81}}}}}}
	r.setPolicy(p)
	if n := peerEntries(t, r); n != 1 {
		t.Errorf("%d peer entries after replacing the recovered rules, want 1", n)
	}
	r.expect("new rules", Ingress, packets.TCP4("10.0.3.4:40001", "10.0.1.2:81"), true)
	r.expect("old rule gone", Ingress, packets.TCP4("10.0.3.4:40001", "10.0.1.2:80"), false)
	var ep bpf.XdplaneEndpoint
	if err := kernel.Of(r.dp).Maps.Endpoints.Lookup(r.ifindex, &ep); err != nil || ep.Id != st.ID {
		t.Errorf("endpoint entry %+v, %v", ep, err)
	}
}

// dummy is one end of a new veth pair (name and name+"p"): an interface
// to add as an endpoint.
func dummy(name string) *netlink.Veth {
	return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
}

// A pod restarted with a new interface of the same name: adding it again
// moves the endpoint, its id and its policy to the new interface.
func TestEndpointRecreated(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	r.setPolicy(goldenPolicy())
	st, _ := r.m.Endpoint("pol0")
	old := r.ifindex
	r.ns.MustDo(func() error {
		l, err := r.ns.Netlink().LinkByName("pol0")
		if err != nil {
			return err
		}
		if err := r.ns.Netlink().LinkDel(l); err != nil {
			return err
		}
		if err := r.ns.Netlink().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "pol0"}, PeerName: "pol1"}); err != nil {
			return err
		}
		if err := r.m.AddEndpoint(Endpoint{Interface: "pol0"}); err != nil {
			return err
		}
		l, err = r.ns.Netlink().LinkByName("pol0")
		r.ifindex = uint32(l.Attrs().Index)
		return err
	})
	if r.ifindex == old {
		t.Fatal("the re-created interface has its old index")
	}
	var ep bpf.XdplaneEndpoint
	if err := kernel.Of(r.dp).Maps.Endpoints.Lookup(old, &ep); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("the old interface's entry is still there: %v", err)
	}
	if now, _ := r.m.Endpoint("pol0"); now.ID != st.ID {
		t.Errorf("endpoint id %d, was %d", now.ID, st.ID)
	}
	r.expect("policy followed: allowed", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:80"), true)
	r.expect("policy followed: denied", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:81"), false)
}

// A removed endpoint's flows die with it: an endpoint added later with the
// same id (and the same pod address) does not inherit them.
func TestEndpointFlowsGoWithIt(t *testing.T) {
	r := newRig(t, datapath.Limits{MaxEndpoints: 1})
	r.setPolicy(goldenPolicy())
	r.expect("flow out", Egress, packets.TCP4("10.0.1.2:40000", "10.1.2.3:443"), true)
	r.expect("its reply", Ingress, packets.TCP4("10.1.2.3:443", "10.0.1.2:40000"), true)
	before, _ := r.m.Endpoint("pol0")
	r.ns.MustDo(func() error {
		if err := r.m.RemoveEndpoint("pol0"); err != nil {
			return err
		}
		return r.m.AddEndpoint(Endpoint{Interface: "pol0"})
	})
	if after, _ := r.m.Endpoint("pol0"); after.ID != before.ID {
		t.Fatalf("the re-added endpoint has id %d, not %d: the test needs the id reused", after.ID, before.ID)
	}
	r.setPolicy(Policy{Ingress: Rules{Isolated: true}, Egress: Rules{Isolated: true}})
	r.expect("the old flow's reply, at the new endpoint", Ingress, packets.TCP4("10.1.2.3:443", "10.0.1.2:40000"), false)
	r.expect("the old flow, at the new endpoint", Egress, packets.TCP4("10.0.1.2:40000", "10.1.2.3:443"), false)
}

// peerEntries counts the peer entries of every policy, in the hash and
// the trie.
func peerEntries(t *testing.T, r *rig) int {
	return countEntries(t, kernel.Of(r.dp).Maps.PolicyPeers) + countEntries(t, kernel.Of(r.dp).Maps.PolicyPeerHash)
}

func TestInlineRuleset(t *testing.T) {
	port := func(p uint16) portEntry { return portEntry{Proto: 6, Port: p, Bits: 16, Verdict: verdictAllow} }
	six := ruleset{{AnyProto: true, Verdict: verdictAllow}, {Proto: 17, Verdict: verdictDeny}, port(80), port(443), port(8080), port(9090)}
	v, ok := inlineRuleset(7, six)
	if !ok || v.Ruleset != 7 || v.N != 6 {
		t.Fatalf("six entries: %+v, %v; want inline", v, ok)
	}
	if want := (bpf.XdplanePortInline{Proto: 6, KindVerdict: ikPort<<4 | uint8(verdictAllow), Port: kernel.Htons(8080)}); v.Ports[4] != want {
		t.Errorf("entry 4 = %+v, want %+v", v.Ports[4], want)
	}
	if want := (bpf.XdplanePortInline{Proto: 17, KindVerdict: ikProto<<4 | uint8(verdictDeny)}); v.Ports[1] != want {
		t.Errorf("entry 1 = %+v, want %+v", v.Ports[1], want)
	}
	if _, ok := inlineRuleset(7, append(six, port(9))); ok {
		t.Error("seven entries inline")
	}
	if _, ok := inlineRuleset(7, ruleset{{Proto: 6, Port: 8000, Bits: 12, Verdict: verdictAllow}}); ok {
		t.Error("a port block inline")
	}
}

// A Manager opened in another network namespace than the endpoints'
// cannot see their interfaces; it must refuse to start, not delete them as
// stale. Opened where they are, it recovers them.
func TestManagerRefusesOtherNetNS(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	r.setPolicy(goldenPolicy())
	r.m.Close()
	other := testutil.NewGroup(t).NS("elsewhere")
	var err error
	other.MustDo(func() error {
		_, err = NewManager(r.dp)
		return nil
	})
	if !errors.Is(err, ErrNetNS) {
		t.Fatalf("NewManager in another namespace: %v, want ErrNetNS", err)
	}
	var v bpf.XdplaneEndpoint
	if err := kernel.Of(r.dp).Maps.Endpoints.Lookup(r.ifindex, &v); err != nil {
		t.Fatalf("the refused Manager deleted pol0's endpoint: %v", err)
	}
	r.ns.MustDo(func() (err error) {
		r.m, err = NewManager(r.dp)
		return err
	})
	if eps := r.m.Endpoints(); len(eps) != 1 || eps[0].Interface != "pol0" {
		t.Fatalf("recovered %+v, want pol0", eps)
	}
	r.expect("recovered rules still deny", Ingress, packets.TCP4("10.0.3.4:40000", "10.0.1.2:81"), false)
}
