package bandwidth

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
)

// bwState is what the kernel holds of an endpoint's limits: the map
// entries of both directions and the HTB classes on both sides of its
// link.
type bwState struct {
	entries [2]*bpf.XdplaneBwValue // by Direction; nil: none
	classes [2]*netlink.HtbClass   // the host side's (Ingress), the pod side's (Egress)
	flags   uint8                  // the endpoint's bandwidth flags (epBw)
}

// bwStateOf reads the rig endpoint's bwState. The rig's pod side, pol1, is
// in the rig's namespace.
func (r *rig) bwStateOf(t *testing.T) bwState {
	t.Helper()
	var s bwState
	for _, d := range []Direction{Ingress, Egress} {
		var v bpf.XdplaneBwValue
		err := kernel.Of(r.dp).Maps.Bandwidth.Lookup(bwKey(r.ifindex, d), &v)
		switch {
		case err == nil:
			s.entries[d] = &v
		case !errors.Is(err, ebpf.ErrKeyNotExist):
			t.Fatal(err)
		}
	}
	var e bpf.XdplaneEndpoint
	switch err := kernel.Of(r.dp).Maps.Endpoints.Lookup(r.ifindex, &e); {
	case err == nil:
		s.flags = e.Flags & epBw
	case !errors.Is(err, ebpf.ErrKeyNotExist):
		t.Fatal(err)
	}
	for d, ifname := range []string{"pol0", "pol1"} {
		l, err := r.ns.Netlink().LinkByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := r.ns.Netlink().ClassList(l, netlink.HANDLE_NONE)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if h, ok := c.(*netlink.HtbClass); ok {
				if s.classes[d] != nil {
					t.Fatalf("%s: two HTB classes", ifname)
				}
				s.classes[d] = h
			}
		}
		if q := htbQdiscs(t, r.ns, ifname); (len(q) == 0) != (s.classes[d] == nil) {
			t.Fatalf("%s: HTB qdiscs %v, class %v: want both or neither", ifname, q, s.classes[d])
		}
	}
	return s
}

// equal compares two states by what shapes: entries, and class rates and
// buffers.
func (s bwState) equal(o bwState) bool {
	if s.flags != o.flags {
		return false
	}
	for d := range 2 {
		if (s.entries[d] == nil) != (o.entries[d] == nil) || s.entries[d] != nil && *s.entries[d] != *o.entries[d] {
			return false
		}
		a, b := s.classes[d], o.classes[d]
		if (a == nil) != (b == nil) || a != nil && (a.Rate != b.Rate || a.Ceil != b.Ceil || a.Buffer != b.Buffer) {
			return false
		}
	}
	return true
}

// withPodNS re-adds the rig's endpoint with its namespace, which the pod
// side's queue needs.
func (r *rig) withPodNS(t *testing.T) {
	t.Helper()
	r.ns.MustDo(func() error {
		return r.m.AddEndpoint(Endpoint{Interface: "pol0", Addresses: []netip.Addr{pod4, pod6}, NetNS: r.ns.Path()})
	})
}

// Limits become HTB classes at their rates on the side each direction's
// queue is, map entries that remember them, and all of it goes when the
// limits do.
func TestSetBandwidthHTB(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	r.withPodNS(t)
	if mode := r.m.BandwidthMode(); mode != BandwidthHTB && mode != BandwidthEDT {
		t.Fatalf("BandwidthMode() = %v, want htb or edt once detected", mode)
	}
	r.ns.MustDo(func() error { return r.m.SetBandwidthMode(BandwidthHTB) })
	b := Bandwidth{Ingress: Limit{Rate: 10_000_000, Burst: 800_000}, Egress: Limit{Rate: 3_000_000, PacketRate: 500}}
	r.ns.MustDo(func() error { return r.m.SetBandwidth("pol0", b) })

	s := r.bwStateOf(t)
	for d, l := range []Limit{b.Ingress, b.Egress} {
		c := s.classes[d]
		if c == nil || c.Rate != l.Rate/8 || c.Ceil != l.Rate/8 {
			t.Fatalf("%s: class %+v, want rate and ceil %d bytes/s", Direction(d), c, l.Rate/8)
		}
		want, _ := limitValue(BandwidthHTB, Direction(d), l)
		if e := s.entries[d]; e == nil || *e != want {
			t.Errorf("%s: entry %+v, want %+v", Direction(d), e, want)
		}
	}
	if st, err := r.m.Endpoint("pol0"); err != nil || st.Bandwidth != b {
		t.Errorf("Endpoint(pol0) = %+v, %v; want Bandwidth %+v", st.Bandwidth, err, b)
	}
	// Ingress is classified, egress policed (its rate is the pod side's
	// queue's): both send packets to their entries.
	if s.flags != epIngressBw|epEgressBw {
		t.Errorf("endpoint flags %#x, want ingress and egress bandwidth", s.flags)
	}

	// A change moves the class's rate, and keeps the entry's clocks.
	b.Ingress.Rate = 20_000_000
	r.ns.MustDo(func() error { return r.m.SetBandwidth("pol0", b) })
	if c := r.bwStateOf(t).classes[Ingress]; c == nil || c.Rate != 2_500_000 {
		t.Errorf("after a change: ingress class %+v, want 2,500,000 bytes/s", c)
	}

	// Removing one direction leaves the other; removing the endpoint
	// leaves nothing.
	r.ns.MustDo(func() error { return r.m.SetBandwidth("pol0", Bandwidth{Egress: b.Egress}) })
	s = r.bwStateOf(t)
	if s.entries[Ingress] != nil || s.classes[Ingress] != nil || s.entries[Egress] == nil || s.classes[Egress] == nil || s.flags != epEgressBw {
		t.Errorf("ingress limit removed: state %+v, want egress only", s)
	}
	// An egress rate alone is all the pod side's queue's: the entry
	// stays, for a restarted Manager to read, but no packet looks it up.
	r.ns.MustDo(func() error { return r.m.SetBandwidth("pol0", Bandwidth{Egress: Limit{Rate: b.Egress.Rate}}) })
	if s := r.bwStateOf(t); s.entries[Egress] == nil || s.classes[Egress] == nil || s.flags != 0 {
		t.Errorf("egress rate alone: state %+v, want its entry and class, and no flag", s)
	}
	r.ns.MustDo(func() error { return r.m.RemoveEndpoint("pol0") })
	if s := r.bwStateOf(t); !s.equal(bwState{}) {
		t.Errorf("endpoint removed: state %+v, want nothing left", s)
	}
	var k bpf.XdplaneBwKey
	var per []bpf.XdplaneBwCounter
	if it := kernel.Of(r.dp).Maps.BwStats.Iterate(); it.Next(&k, &per) {
		t.Errorf("bw_stats keeps %+v after the endpoint went", k)
	}
}

// A refused limit names the endpoint and field, and leaves the one in
// force as it was: entries, classes and the Manager's record.
func TestSetBandwidthRefusedKeepsLimit(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	r.ns.MustDo(func() error { return r.m.SetBandwidthMode(BandwidthHTB) })
	old := Bandwidth{Ingress: Limit{Rate: 10_000_000, PacketRate: 1000}}
	r.ns.MustDo(func() error { return r.m.SetBandwidth("pol0", old) })
	before := r.bwStateOf(t)

	for _, tt := range []struct {
		name  string
		b     Bandwidth
		field string
	}{
		{"zero rate with a burst", Bandwidth{Ingress: Limit{Burst: 100_000}}, "ingress.burst"},
		{"a rate of 5 bit/s", Bandwidth{Ingress: Limit{Rate: 5}}, "ingress.rate"},
		{"an absurd rate", Bandwidth{Egress: Limit{Rate: 1 << 62}}, "egress.rate"},
		{"an absurd burst", Bandwidth{Ingress: Limit{Rate: 10_000_000, Burst: 1 << 40}}, "ingress.burst"},
		{"an absurd packet rate", Bandwidth{Ingress: Limit{PacketRate: 1 << 40}}, "ingress.packetRate"},
		// The rig's endpoint was added without its namespace.
		{"an egress rate, no pod namespace", Bandwidth{Ingress: Limit{Rate: 20_000_000}, Egress: Limit{Rate: 1_000_000}}, "egress.rate"},
	} {
		var err error
		r.ns.MustDo(func() error { err = r.m.SetBandwidth("pol0", tt.b); return nil })
		var ve *ValidationError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) || ve.Field != tt.field || ve.Endpoint != "pol0" {
			t.Errorf("%s: SetBandwidth = %v, want a *ValidationError wrapping ErrInvalid for pol0's %s", tt.name, err, tt.field)
		}
		if after := r.bwStateOf(t); !after.equal(before) {
			t.Errorf("%s: the kernel's state changed:\n%+v\nwant\n%+v", tt.name, after, before)
		}
	}

	// A failure past validation, with ingress already changed: the
	// pod's namespace has no pod side (another namespace's file).
	other := testutil.NewGroup(t).NS("other")
	r.ns.MustDo(func() error {
		return r.m.AddEndpoint(Endpoint{Interface: "pol0", NetNS: other.Path()})
	})
	var err error
	r.ns.MustDo(func() error {
		err = r.m.SetBandwidth("pol0", Bandwidth{Ingress: Limit{Rate: 20_000_000}, Egress: Limit{Rate: 1_000_000}})
		return nil
	})
	if err == nil {
		t.Fatal("SetBandwidth with the pod side in no namespace it can find: nil error")
	}
	t.Logf("refused: %v", err)
	if after := r.bwStateOf(t); !after.equal(before) {
		t.Errorf("after a failed change: the kernel's state changed:\n%+v\nwant\n%+v", after, before)
	}
	if st, _ := r.m.Endpoint("pol0"); st.Bandwidth != old {
		t.Errorf("after a failed change: Endpoint says %+v, want %+v", st.Bandwidth, old)
	}
	if err := r.m.SetBandwidth("nope0", old); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetBandwidth on no endpoint = %v, want ErrNotFound", err)
	}
}

// A restarted Manager reads the limits and the mode back from the maps,
// and can change and remove them; entries of gone interfaces are deleted.
func TestBandwidthRecovery(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	r.withPodNS(t)
	r.ns.MustDo(func() error { return r.m.SetBandwidthMode(BandwidthHTB) })
	b := Bandwidth{Ingress: Limit{Rate: 10_000_000, Burst: 200_000, PacketRate: 1000, PacketBurst: 20}, Egress: Limit{Rate: 2_000_000}}
	r.ns.MustDo(func() error { return r.m.SetBandwidth("pol0", b) })
	// An entry whose interface is no endpoint, as a crash between
	// removing an endpoint and its limits leaves.
	stale := bwKey(r.ifindex+1000, Ingress)
	if err := kernel.Of(r.dp).Maps.Bandwidth.Put(stale, bpf.XdplaneBwValue{Rate: 1, Mode: bwHTB}); err != nil {
		t.Fatal(err)
	}
	if err := kernel.Of(r.dp).Maps.BwStats.Put(stale, make([]bpf.XdplaneBwCounter, ebpf.MustPossibleCPU())); err != nil {
		t.Fatal(err)
	}
	before := r.bwStateOf(t)
	if err := r.m.Close(); err != nil {
		t.Fatal(err)
	}

	r.ns.MustDo(func() (err error) { r.m, err = NewManager(r.dp); return })
	st, err := r.m.Endpoint("pol0")
	if err != nil || !st.Recovered || st.Bandwidth != b {
		t.Errorf("recovered endpoint %+v, %v; want Recovered with Bandwidth %+v", st, err, b)
	}
	if mode := r.m.BandwidthMode(); mode != BandwidthHTB {
		t.Errorf("recovered mode %v, want htb", mode)
	}
	if after := r.bwStateOf(t); !after.equal(before) {
		t.Errorf("recovery changed the kernel's state:\n%+v\nwant\n%+v", after, before)
	}
	var v bpf.XdplaneBwValue
	if err := kernel.Of(r.dp).Maps.Bandwidth.Lookup(stale, &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("the stale entry: lookup = %v, want it deleted", err)
	}
	var per []bpf.XdplaneBwCounter
	if err := kernel.Of(r.dp).Maps.BwStats.Lookup(stale, &per); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("the stale counters: lookup = %v, want them deleted", err)
	}

	// The pod's namespace is not in the maps: the egress limit cannot be
	// touched, nor the endpoint removed while its link is there...
	for what, call := range map[string]func() error{
		"SetBandwidth":   func() error { return r.m.SetBandwidth("pol0", Bandwidth{Ingress: b.Ingress}) },
		"RemoveEndpoint": func() error { return r.m.RemoveEndpoint("pol0") },
	} {
		var err error
		r.ns.MustDo(func() error { err = call(); return nil })
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != "egress.rate" || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s of a recovered egress limit, no namespace: %v, want egress.rate refused", what, err)
		}
		if after := r.bwStateOf(t); !after.equal(before) {
			t.Errorf("%s refused, but the kernel's state changed", what)
		}
	}
	// ...until the agent adds the endpoint again, as after any restart.
	r.withPodNS(t)
	r.ns.MustDo(func() error { return r.m.RemoveEndpoint("pol0") })
	if s := r.bwStateOf(t); !s.equal(bwState{}) {
		t.Errorf("recovered endpoint removed: state %+v, want nothing left", s)
	}
}

// The mode: detected, overridable while no limit is set, and EDT only
// where the fq qdisc is.
func TestBandwidthMode(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	have, err := haveFQ()
	if err != nil {
		t.Fatal(err)
	}
	r.ns.MustDo(func() error { err = r.m.SetBandwidthMode(BandwidthEDT); return nil })
	if have {
		if err != nil {
			t.Fatalf("SetBandwidthMode(edt) with fq: %v", err)
		}
		r.ns.MustDo(func() error { return r.m.SetBandwidth("pol0", Bandwidth{Ingress: Limit{Rate: 10_000_000}}) })
		if e := r.bwStateOf(t).entries[Ingress]; e == nil || e.Mode != bwEDT {
			t.Errorf("under edt: entry %+v, want mode EDT", e)
		}
	} else {
		if !errors.Is(err, datapath.ErrNotSupported) {
			t.Errorf("SetBandwidthMode(edt) without fq = %v, want ErrNotSupported", err)
		}
		if mode := r.m.BandwidthMode(); mode != BandwidthHTB {
			t.Errorf("without fq the mode is %v, want htb", mode)
		}
		r.ns.MustDo(func() error { return r.m.SetBandwidth("pol0", Bandwidth{Ingress: Limit{Rate: 10_000_000}}) })
	}
	r.ns.MustDo(func() error { err = r.m.SetBandwidthMode(BandwidthHTB); return nil })
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("SetBandwidthMode with a limit set = %v, want ErrInvalid", err)
	}
	if err := r.m.SetBandwidthMode(BandwidthMode(7)); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetBandwidthMode(7) = %v, want ErrInvalid", err)
	}
}

// A pod deleted before its endpoint takes its link and qdiscs with it:
// removing the endpoint then still succeeds and clears the maps.
func TestRemoveEndpointLinkGone(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	r.withPodNS(t)
	r.ns.MustDo(func() error { return r.m.SetBandwidthMode(BandwidthHTB) })
	r.ns.MustDo(func() error {
		return r.m.SetBandwidth("pol0", Bandwidth{Ingress: Limit{Rate: 10_000_000}, Egress: Limit{Rate: 5_000_000, PacketRate: 100}})
	})
	l, err := r.ns.Netlink().LinkByName("pol0")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ns.Netlink().LinkDel(l); err != nil {
		t.Fatal(err)
	}
	r.ns.MustDo(func() error { return r.m.RemoveEndpoint("pol0") })
	for _, d := range []Direction{Ingress, Egress} {
		var v bpf.XdplaneBwValue
		if err := kernel.Of(r.dp).Maps.Bandwidth.Lookup(bwKey(r.ifindex, d), &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Errorf("%s entry after the endpoint went: lookup = %v, want none", d, err)
		}
	}
}

// htbRate is the rate, in bytes a second, of the one HTB class on ifname
// in ns, or 0 if it has none.
func htbRate(t *testing.T, ns *testutil.NS, ifname string) uint64 {
	t.Helper()
	l, err := ns.Netlink().LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := ns.Netlink().ClassList(l, netlink.HANDLE_NONE)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if h, ok := c.(*netlink.HtbClass); ok {
			return h.Rate
		}
	}
	return 0
}

// A pod restarted on a new veth of the same name, in a new namespace:
// its limits follow it there, on both sides of the new link; told the
// wrong namespace first, the Manager sets them once told the right one.
func TestBandwidthMove(t *testing.T) {
	g := testutil.NewGroup(t)
	node, pod1, pod2 := g.NS("node"), g.NS("pod1"), g.NS("pod2")
	testutil.Veth(t, node, "bwm0", pod1, "eth0")
	dir := testutil.BPFFS(t)
	var (
		dp *datapath.Datapath
		m  *Manager
	)
	node.MustDo(func() (err error) {
		if dp, err = datapath.Open(datapath.Options{Dir: dir}); err != nil {
			return err
		}
		m, err = NewManager(dp)
		return err
	})
	t.Cleanup(func() {
		m.Close()
		dp.Close()
		node.MustDo(func() error { return datapath.Remove(dir) })
	})
	b := Bandwidth{Ingress: Limit{Rate: 8_000_000}, Egress: Limit{Rate: 4_000_000}}
	node.MustDo(func() error {
		if err := m.SetBandwidthMode(BandwidthHTB); err != nil {
			return err
		}
		if err := m.AddEndpoint(Endpoint{Interface: "bwm0", NetNS: pod1.Path()}); err != nil {
			return err
		}
		return m.SetBandwidth("bwm0", b)
	})
	old, err := node.Netlink().LinkByName("bwm0")
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Netlink().LinkDel(old); err != nil {
		t.Fatal(err)
	}
	testutil.Veth(t, node, "bwm0", pod2, "eth0")

	// The old namespace has no pod side any more.
	var moveErr error
	node.MustDo(func() error { moveErr = m.AddEndpoint(Endpoint{Interface: "bwm0", NetNS: pod1.Path()}); return nil })
	if moveErr == nil {
		t.Fatal("AddEndpoint with a namespace that has no pod side: nil error")
	}
	node.MustDo(func() error { return m.AddEndpoint(Endpoint{Interface: "bwm0", NetNS: pod2.Path()}) })

	if got := htbRate(t, node, "bwm0"); got != 1_000_000 {
		t.Errorf("host side: HTB rate %d bytes/s, want 1,000,000", got)
	}
	if got := htbRate(t, pod2, "eth0"); got != 500_000 {
		t.Errorf("pod side: HTB rate %d bytes/s, want 500,000", got)
	}
	l, err := node.Netlink().LinkByName("bwm0")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []Direction{Ingress, Egress} {
		var v bpf.XdplaneBwValue
		if err := kernel.Of(dp).Maps.Bandwidth.Lookup(bwKey(uint32(l.Attrs().Index), d), &v); err != nil {
			t.Errorf("%s entry on the new interface: %v", d, err)
		}
		if err := kernel.Of(dp).Maps.Bandwidth.Lookup(bwKey(uint32(old.Attrs().Index), d), &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Errorf("%s entry on the old interface: lookup = %v, want none", d, err)
		}
	}
	if st, err := m.Endpoint("bwm0"); err != nil || st.Bandwidth != b {
		t.Errorf("Endpoint(bwm0) = %+v, %v; want Bandwidth %+v", st.Bandwidth, err, b)
	}
}
