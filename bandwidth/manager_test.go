package bandwidth

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/endpoint"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
)

// bwState is what the kernel holds of an endpoint's limits: the map
// entries of both directions and the HTB classes on both sides of its
// link.
type bwState struct {
	entries [2]*bpf.XdplaneBwValue // by datapath.Direction; nil: none
	classes [2]*netlink.HtbClass   // the host side's (ingress), the pod side's (egress)
	flags   uint8                  // the endpoint's bandwidth flags (endpoint.BandwidthFlags)
}

// bwStateOf reads the rig endpoint's bwState. The rig's pod side, bw1, is
// in the rig's namespace.
func (r *rig) bwStateOf(t *testing.T) bwState {
	t.Helper()
	var s bwState
	for _, d := range []datapath.Direction{datapath.Ingress, datapath.Egress} {
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
		s.flags = e.Flags & endpoint.BandwidthFlags
	case !errors.Is(err, ebpf.ErrKeyNotExist):
		t.Fatal(err)
	}
	for d, ifname := range []string{"bw0", "bw1"} {
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

// attached reports whether the datapath's tc programs run on the rig's
// bw0.
func (r *rig) attached() bool {
	r.t.Helper()
	var (
		hook     datapath.Hook
		attached bool
	)
	r.ns.MustDo(func() (err error) { hook, attached, err = r.dp.AttachedHook("bw0"); return })
	return attached && hook == datapath.HookTC
}

// noEntries fails t unless the bandwidth and bw_stats maps are empty.
func (r *rig) noEntries(t *testing.T, what string) {
	t.Helper()
	for _, mp := range []*ebpf.Map{kernel.Of(r.dp).Maps.Bandwidth, kernel.Of(r.dp).Maps.BwStats} {
		var k bpf.XdplaneBwKey
		var v []byte
		if it := mp.Iterate(); it.Next(&k, &v) {
			t.Errorf("%s: %s keeps %+v", what, mp, k)
		}
	}
}

// Limits become HTB classes at their rates on the side each direction's
// queue is, map entries that remember them, and all of it goes when the
// limits do. The interface need not be a policy endpoint.
func TestSetHTB(t *testing.T) {
	r := newRig(t)
	if mode := r.m.Mode(); mode != ModeHTB && mode != ModeEDT {
		t.Fatalf("Mode() = %v, want htb or edt once detected", mode)
	}
	r.ns.MustDo(func() error { return r.m.SetMode(ModeHTB) })
	b := Limits{Ingress: Limit{Rate: 10_000_000, Burst: 800_000}, Egress: Limit{Rate: 3_000_000, PacketRate: 500}}
	r.set(r.pod(), b)

	s := r.bwStateOf(t)
	for d, l := range []Limit{b.Ingress, b.Egress} {
		c := s.classes[d]
		if c == nil || c.Rate != l.Rate/8 || c.Ceil != l.Rate/8 {
			t.Fatalf("%s: class %+v, want rate and ceil %d bytes/s", datapath.Direction(d), c, l.Rate/8)
		}
		want, _ := limitValue(ModeHTB, datapath.Direction(d), l)
		if e := s.entries[d]; e == nil || *e != want {
			t.Errorf("%s: entry %+v, want %+v", datapath.Direction(d), e, want)
		}
	}
	if st, err := r.m.Status("bw0"); err != nil || st != (Status{Endpoint: r.pod(), Limits: b}) {
		t.Errorf("Status(bw0) = %+v, %v; want Limits %+v in %s", st, err, b, r.pod().NetNS)
	}
	if l := r.m.List(); len(l) != 1 || l[0].Limits != b {
		t.Errorf("List() = %+v, want bw0's limits alone", l)
	}
	// Ingress is classified, egress policed (its rate is the pod side's
	// queue's): both send packets to their entries.
	if s.flags != endpoint.IngressBw|endpoint.EgressBw {
		t.Errorf("endpoint flags %#x, want ingress and egress bandwidth", s.flags)
	}
	if !r.attached() {
		t.Error("Set did not attach the tc programs to bw0")
	}

	// A change moves the class's rate, and keeps the entry's clocks. An
	// Endpoint without NetNS keeps the one the Manager knows.
	b.Ingress.Rate = 20_000_000
	r.set(hostSide, b)
	if c := r.bwStateOf(t).classes[datapath.Ingress]; c == nil || c.Rate != 2_500_000 {
		t.Errorf("after a change: ingress class %+v, want 2,500,000 bytes/s", c)
	}
	if st, _ := r.m.Status("bw0"); st.NetNS != r.ns.Path() {
		t.Errorf("after a Set without NetNS: Status says NetNS %q, want the one known, %q", st.NetNS, r.ns.Path())
	}

	// Removing one direction leaves the other; removing the endpoint
	// leaves nothing.
	r.set(hostSide, Limits{Egress: b.Egress})
	s = r.bwStateOf(t)
	if s.entries[datapath.Ingress] != nil || s.classes[datapath.Ingress] != nil || s.entries[datapath.Egress] == nil || s.classes[datapath.Egress] == nil || s.flags != endpoint.EgressBw {
		t.Errorf("ingress limit removed: state %+v, want egress only", s)
	}
	// An egress rate alone is all the pod side's queue's: the entry
	// stays, for a restarted Manager to read, but no packet looks it up.
	r.set(hostSide, Limits{Egress: Limit{Rate: b.Egress.Rate}})
	if s := r.bwStateOf(t); s.entries[datapath.Egress] == nil || s.classes[datapath.Egress] == nil || s.flags != 0 {
		t.Errorf("egress rate alone: state %+v, want its entry and class, and no flag", s)
	}
	r.ns.MustDo(func() error { return r.m.Remove(hostSide) })
	if s := r.bwStateOf(t); !s.equal(bwState{}) {
		t.Errorf("limits removed: state %+v, want nothing left", s)
	}
	r.noEntries(t, "limits removed")
	// Nothing else uses bw0's entry: it goes. The programs stay, for the
	// load balancer.
	if e, ok := r.entry(); ok {
		t.Errorf("limits removed: bw0's endpoints entry %+v stays, want it deleted", e)
	}
	if !r.attached() {
		t.Error("Remove detached the tc programs from bw0, want them left for the load balancer")
	}
	if _, err := r.m.Status("bw0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status after Remove = %v, want ErrNotFound", err)
	}
	if l := r.m.List(); len(l) != 0 {
		t.Errorf("List after Remove = %+v, want none", l)
	}
}

// A refused limit names the endpoint and field, and leaves the one in
// force as it was: entries, classes and the Manager's record.
func TestSetRefusedKeepsLimit(t *testing.T) {
	r := newRig(t)
	r.ns.MustDo(func() error { return r.m.SetMode(ModeHTB) })
	old := Limits{Ingress: Limit{Rate: 10_000_000, PacketRate: 1000}}
	r.set(hostSide, old)
	before := r.bwStateOf(t)

	for _, tt := range []struct {
		name  string
		e     Endpoint
		b     Limits
		field string
	}{
		{"zero rate with a burst", hostSide, Limits{Ingress: Limit{Burst: 100_000}}, "ingress.burst"},
		{"a rate of 5 bit/s", hostSide, Limits{Ingress: Limit{Rate: 5}}, "ingress.rate"},
		{"an absurd rate", hostSide, Limits{Egress: Limit{Rate: 1 << 62}}, "egress.rate"},
		{"an absurd burst", hostSide, Limits{Ingress: Limit{Rate: 10_000_000, Burst: 1 << 40}}, "ingress.burst"},
		{"an absurd packet rate", hostSide, Limits{Ingress: Limit{PacketRate: 1 << 40}}, "ingress.packetRate"},
		// The Manager was never told the pod's namespace.
		{"an egress rate, no pod namespace", hostSide, Limits{Ingress: Limit{Rate: 20_000_000}, Egress: Limit{Rate: 1_000_000}}, "egress.rate"},
		{"a namespace that is not there", Endpoint{Interface: "bw0", NetNS: "/var/run/netns/xdplane-no-such-ns"},
			Limits{Ingress: Limit{Rate: 20_000_000}}, "netns"},
	} {
		err := r.do(func() error { return r.m.Set(tt.e, tt.b) })
		var ve *datapath.ValidationError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) || ve.Field != tt.field || ve.Endpoint != "bw0" {
			t.Errorf("%s: Set = %v, want a *datapath.ValidationError wrapping ErrInvalid for bw0's %s", tt.name, err, tt.field)
		}
		if after := r.bwStateOf(t); !after.equal(before) {
			t.Errorf("%s: the kernel's state changed:\n%+v\nwant\n%+v", tt.name, after, before)
		}
		if st, _ := r.m.Status("bw0"); st != (Status{Endpoint: hostSide, Limits: old}) {
			t.Errorf("%s: Status says %+v, want %+v and no namespace", tt.name, st, old)
		}
	}

	// A failure past validation: the pod's namespace has no pod side
	// (another namespace's file).
	other := testutil.NewGroup(t).NS("other")
	err := r.do(func() error {
		return r.m.Set(Endpoint{Interface: "bw0", NetNS: other.Path()}, Limits{Ingress: Limit{Rate: 20_000_000}, Egress: Limit{Rate: 1_000_000}})
	})
	if err == nil {
		t.Fatal("Set with the pod side in no namespace it can find: nil error")
	}
	t.Logf("refused: %v", err)
	if after := r.bwStateOf(t); !after.equal(before) {
		t.Errorf("after a failed change: the kernel's state changed:\n%+v\nwant\n%+v", after, before)
	}
	// The namespace of the failed call is not kept either.
	if st, _ := r.m.Status("bw0"); st != (Status{Endpoint: hostSide, Limits: old}) {
		t.Errorf("after a failed change: Status says %+v, want %+v and no namespace", st, old)
	}
	if err := r.do(func() error { return r.m.Set(Endpoint{Interface: "nope0"}, old) }); !errors.Is(err, ErrNotFound) {
		t.Errorf("Set on no interface = %v, want ErrNotFound", err)
	}
	if err := r.do(func() error { return r.m.Remove(Endpoint{Interface: "bw1"}) }); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove of an interface with no limits = %v, want ErrNotFound", err)
	}
}

// A change that fails half-way, with ingress already changed and the
// pod side's queue installed, puts back the limits in force before it.
func TestSetFailedHalfWay(t *testing.T) {
	// Room for two limits: bw0's ingress and one more.
	r := newRigWith(t, datapath.Limits{MaxEndpoints: 1})
	r.ns.MustDo(func() error { return r.m.SetMode(ModeHTB) })
	old := Limits{Ingress: Limit{Rate: 10_000_000, PacketRate: 1000}}
	r.set(r.pod(), old)
	before := r.bwStateOf(t)
	// The last slot taken, as by another endpoint's limit.
	filler := bwKey(r.ifindex+1, datapath.Egress)
	if err := kernel.Of(r.dp).Maps.Bandwidth.Put(filler, bpf.XdplaneBwValue{PpsIntervalNs: 1}); err != nil {
		t.Fatal(err)
	}

	err := r.do(func() error {
		return r.m.Set(hostSide, Limits{Ingress: Limit{Rate: 20_000_000}, Egress: Limit{Rate: 1_000_000}})
	})
	if err == nil {
		t.Fatal("Set with no room for its egress entry: nil error")
	}
	t.Logf("refused: %v", err)
	if after := r.bwStateOf(t); !after.equal(before) {
		t.Errorf("after a failed change: the kernel's state changed:\n%+v\nwant\n%+v", after, before)
	}
	var per []bpf.XdplaneBwCounter
	if err := kernel.Of(r.dp).Maps.BwStats.Lookup(bwKey(r.ifindex, datapath.Egress), &per); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("after a failed change: egress counters: lookup = %v, want none", err)
	}
	if st, _ := r.m.Status("bw0"); st != (Status{Endpoint: r.pod(), Limits: old}) {
		t.Errorf("after a failed change: Status says %+v, want %+v", st, old)
	}
}

// A namespace that does not hold the pod's side of its link can neither
// change nor take away the egress queue there: a Set or Remove that names
// one is refused, and leaves the limits, and the namespace the Manager
// knows (none, for recovered limits), as they were.
func TestWrongNetNSRefused(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restarted=%v", restart), func(t *testing.T) {
			r := newRig(t)
			r.ns.MustDo(func() error { return r.m.SetMode(ModeHTB) })
			b := Limits{Ingress: Limit{Rate: 10_000_000}, Egress: Limit{Rate: 2_000_000}}
			r.set(r.pod(), b)
			want := Status{Endpoint: r.pod(), Limits: b}
			if restart {
				r.restart()
				want = Status{Endpoint: hostSide, Limits: b, Recovered: true}
			}
			before := r.bwStateOf(t)
			wrong := Endpoint{Interface: "bw0", NetNS: testutil.NewGroup(t).NS("other").Path()}
			for _, c := range []struct {
				what string
				call func() error
			}{
				{"Set without the egress limit", func() error { return r.m.Set(wrong, Limits{Ingress: b.Ingress}) }},
				{"Set of another egress limit", func() error {
					return r.m.Set(wrong, Limits{Ingress: Limit{Rate: 20_000_000}, Egress: Limit{Rate: 3_000_000}})
				}},
				{"Set of no limits", func() error { return r.m.Set(wrong, Limits{}) }},
				{"Remove", func() error { return r.m.Remove(wrong) }},
			} {
				err := r.do(c.call)
				if err == nil {
					t.Errorf("%s, naming a namespace without the pod side: nil error", c.what)
				} else {
					t.Logf("%s: refused: %v", c.what, err)
				}
				if after := r.bwStateOf(t); !after.equal(before) {
					t.Errorf("%s refused, but the kernel's state changed:\n%+v\nwant\n%+v", c.what, after, before)
				}
				if st, err := r.m.Status("bw0"); err != nil || st != want {
					t.Errorf("%s refused: Status = %+v, %v; want %+v", c.what, st, err, want)
				}
			}
			// The right namespace still removes them.
			r.ns.MustDo(func() error { return r.m.Remove(r.pod()) })
			if s := r.bwStateOf(t); !s.equal(bwState{}) {
				t.Errorf("limits removed: state %+v, want nothing left", s)
			}
		})
	}
}

// A restarted Manager reads the limits and the mode back from the maps,
// and can change and remove them once told the pod's namespace; entries
// of gone interfaces are deleted.
func TestRecovery(t *testing.T) {
	r := newRig(t)
	r.ns.MustDo(func() error { return r.m.SetMode(ModeHTB) })
	b := Limits{Ingress: Limit{Rate: 10_000_000, Burst: 200_000, PacketRate: 1000, PacketBurst: 20}, Egress: Limit{Rate: 2_000_000}}
	r.set(r.pod(), b)
	// An entry whose interface is gone, as a crash between a pod's
	// deletion and its limits' leaves.
	stale := bwKey(r.ifindex+1000, datapath.Ingress)
	if err := kernel.Of(r.dp).Maps.Bandwidth.Put(stale, bpf.XdplaneBwValue{Rate: 1, Mode: bwHTB}); err != nil {
		t.Fatal(err)
	}
	if err := kernel.Of(r.dp).Maps.BwStats.Put(stale, make([]bpf.XdplaneBwCounter, ebpf.MustPossibleCPU())); err != nil {
		t.Fatal(err)
	}
	before := r.bwStateOf(t)
	r.restart()

	st, err := r.m.Status("bw0")
	if err != nil || st != (Status{Endpoint: hostSide, Limits: b, Recovered: true}) {
		t.Errorf("recovered endpoint %+v, %v; want Recovered with Limits %+v and no namespace", st, err, b)
	}
	if mode := r.m.Mode(); mode != ModeHTB {
		t.Errorf("recovered mode %v, want htb", mode)
	}
	// The counters of a recovered egress limit, whose queue is in a
	// namespace this Manager does not know, are the datapath's alone.
	var c Counters
	if err := r.do(func() (err error) { c, err = r.m.Counters("bw0"); return err }); err != nil {
		t.Errorf("Counters of a recovered egress limit: %v", err)
	} else if c.Egress.ShapedPackets != 0 {
		t.Errorf("Counters of a recovered egress limit: %+v, want no shaped packets read from a queue it cannot see", c.Egress)
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

	// The pod's namespace is not in the maps: the egress limit can be
	// neither changed nor removed while its link is there...
	for what, call := range map[string]func() error{
		"Set":    func() error { return r.m.Set(hostSide, Limits{Ingress: b.Ingress}) },
		"Remove": func() error { return r.m.Remove(hostSide) },
	} {
		err := r.do(call)
		var ve *datapath.ValidationError
		if !errors.As(err, &ve) || ve.Field != "egress.rate" || ve.Endpoint != "bw0" || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s of a recovered egress limit, no namespace: %v, want bw0's egress.rate refused", what, err)
		}
		if after := r.bwStateOf(t); !after.equal(before) {
			t.Errorf("%s refused, but the kernel's state changed", what)
		}
		if st, _ := r.m.Status("bw0"); !st.Recovered || st.Limits != b {
			t.Errorf("%s refused, but Status says %+v", what, st)
		}
	}
	// ...until a Set names it, as the agent's next one after a restart
	// does: the limits are the Manager's again.
	b.Egress.Rate = 3_000_000
	r.set(r.pod(), b)
	if st, _ := r.m.Status("bw0"); st != (Status{Endpoint: r.pod(), Limits: b}) {
		t.Errorf("after a Set that names the namespace: Status %+v, want Limits %+v, not Recovered", st, b)
	}
	if c := r.bwStateOf(t).classes[datapath.Egress]; c == nil || c.Rate != 375_000 {
		t.Errorf("after a Set that names the namespace: pod side's class %+v, want 375,000 bytes/s", c)
	}

	// A Remove that names it works as well.
	r.restart()
	r.ns.MustDo(func() error { return r.m.Remove(r.pod()) })
	if s := r.bwStateOf(t); !s.equal(bwState{}) {
		t.Errorf("recovered limits removed: state %+v, want nothing left", s)
	}
	r.noEntries(t, "recovered limits removed")
	if e, ok := r.entry(); ok {
		t.Errorf("recovered limits removed: bw0's endpoints entry %+v stays, want it deleted", e)
	}
}

// Recovery puts the endpoints' bandwidth flags right where a crash left
// an entry and its flag apart, and leaves policy's fields of the entries
// as they are.
func TestRecoveryFlags(t *testing.T) {
	r := newRig(t)
	r.withPolicy()
	r.ns.MustDo(func() error { return r.m.SetMode(ModeHTB) })
	r.set(hostSide, Limits{Ingress: Limit{Rate: 10_000_000}, Egress: Limit{PacketRate: 100}})
	want, _ := r.entry()
	if want.Id == 0 || want.Flags != endpoint.IngressBw|endpoint.EgressBw {
		t.Fatalf("bw0's entry %+v, want policy's id and both bandwidth flags", want)
	}
	// bw1 has neither limits nor a policy endpoint.
	var bw1 uint32
	r.ns.MustDo(func() (err error) { bw1, err = endpoint.Ifindex("bw1"); return })

	for _, tt := range []struct {
		name string
		bw0  uint8 // bw0's bandwidth flags before the restart
		bw1  *bpf.XdplaneEndpoint
	}{
		{"ingress flag lost", endpoint.EgressBw, nil},
		{"both flags lost", 0, nil},
		{"a flag with no limit", endpoint.IngressBw | endpoint.EgressBw, &bpf.XdplaneEndpoint{Flags: endpoint.IngressBw}},
		{"a flag on a policy endpoint with no limit", endpoint.IngressBw | endpoint.EgressBw,
			&bpf.XdplaneEndpoint{Id: 4000, Cookie: 7, IngressPolicy: 9, Flags: endpoint.IngressIsolated | endpoint.EgressBw}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			broken := want
			broken.Flags = want.Flags&^endpoint.BandwidthFlags | tt.bw0
			if err := kernel.Of(r.dp).Maps.Endpoints.Put(r.ifindex, broken); err != nil {
				t.Fatal(err)
			}
			if tt.bw1 != nil {
				if err := kernel.Of(r.dp).Maps.Endpoints.Put(bw1, *tt.bw1); err != nil {
					t.Fatal(err)
				}
			}
			r.restart()
			if got, _ := r.entry(); got != want {
				t.Errorf("bw0's entry after recovery %+v, want %+v", got, want)
			}
			got, ok := r.entryAt(bw1)
			switch {
			case tt.bw1 == nil || tt.bw1.Id == 0:
				if ok {
					t.Errorf("bw1's entry after recovery %+v, want it deleted: it has no limits, nor an id", got)
				}
			default:
				fixed := *tt.bw1
				fixed.Flags &^= endpoint.BandwidthFlags
				if got != fixed {
					t.Errorf("bw1's entry after recovery %+v, want %+v: the flag cleared, policy's fields kept", got, fixed)
				}
				if err := kernel.Of(r.dp).Maps.Endpoints.Delete(bw1); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// The mode: detected, overridable while no limit is set, and EDT only
// where the fq qdisc is.
func TestMode(t *testing.T) {
	r := newRig(t)
	have, err := haveFQ()
	if err != nil {
		t.Fatal(err)
	}
	err = r.do(func() error { return r.m.SetMode(ModeEDT) })
	if have {
		if err != nil {
			t.Fatalf("SetMode(edt) with fq: %v", err)
		}
		r.set(hostSide, Limits{Ingress: Limit{Rate: 10_000_000}})
		if e := r.bwStateOf(t).entries[datapath.Ingress]; e == nil || e.Mode != bwEDT {
			t.Errorf("under edt: entry %+v, want mode EDT", e)
		}
	} else {
		if !errors.Is(err, datapath.ErrNotSupported) {
			t.Errorf("SetMode(edt) without fq = %v, want ErrNotSupported", err)
		}
		if mode := r.m.Mode(); mode != ModeHTB {
			t.Errorf("without fq the mode is %v, want htb", mode)
		}
		r.set(hostSide, Limits{Ingress: Limit{Rate: 10_000_000}})
	}
	err = r.do(func() error { return r.m.SetMode(ModeHTB) })
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("SetMode with a limit set = %v, want ErrInvalid", err)
	}
	if err := r.m.SetMode(Mode(7)); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetMode(7) = %v, want ErrInvalid", err)
	}
}

// The first limit fixes the mode: a probe that answers otherwise later
// (fq appearing, or a failed probe tried again) changes nothing while
// limits are in force, so EDT and HTB never mix.
func TestModeFixedByFirstLimit(t *testing.T) {
	r := newRig(t)
	have, err := haveFQ()
	if err != nil {
		t.Fatal(err)
	}
	want, wantEntry := ModeHTB, uint8(bwHTB)
	if have {
		want, wantEntry = ModeEDT, bwEDT
	}
	r.set(hostSide, Limits{Ingress: Limit{Rate: 10_000_000}})
	// The probe now answers the other way.
	fqMu.Lock()
	fqHave = !have
	fqMu.Unlock()
	t.Cleanup(func() {
		fqMu.Lock()
		fqHave = have
		fqMu.Unlock()
	})
	if mode := r.m.Mode(); mode != want {
		t.Errorf("Mode() after the probe changed its answer = %v, want %v, as the limit in force", mode, want)
	}
	if err := r.do(func() error { return r.m.Set(hostSide, Limits{Ingress: Limit{Rate: 20_000_000}}) }); err != nil {
		t.Fatalf("Set of a new rate after the probe changed its answer: %v", err)
	}
	if e := r.bwStateOf(t).entries[datapath.Ingress]; e == nil || e.Mode != wantEntry {
		t.Errorf("entry %+v, want mode %d, as before", e, wantEntry)
	}
}

// A pod deleted before its limits takes its link and qdiscs with it:
// removing the limits then still succeeds and clears the maps, also for
// a restarted Manager that does not know the pod's namespace.
func TestRemoveLinkGone(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restarted=%v", restart), func(t *testing.T) {
			r := newRig(t)
			r.ns.MustDo(func() error { return r.m.SetMode(ModeHTB) })
			r.set(r.pod(), Limits{Ingress: Limit{Rate: 10_000_000}, Egress: Limit{Rate: 5_000_000, PacketRate: 100}})
			if restart {
				r.restart()
			}
			l, err := r.ns.Netlink().LinkByName("bw0")
			if err != nil {
				t.Fatal(err)
			}
			if err := r.ns.Netlink().LinkDel(l); err != nil {
				t.Fatal(err)
			}
			r.ns.MustDo(func() error { return r.m.Remove(hostSide) })
			for _, d := range []datapath.Direction{datapath.Ingress, datapath.Egress} {
				var v bpf.XdplaneBwValue
				if err := kernel.Of(r.dp).Maps.Bandwidth.Lookup(bwKey(r.ifindex, d), &v); !errors.Is(err, ebpf.ErrKeyNotExist) {
					t.Errorf("%s entry after the limits went: lookup = %v, want none", d, err)
				}
			}
			r.noEntries(t, "limits of a gone link removed")
			if e, ok := r.entry(); ok {
				t.Errorf("the gone link's endpoints entry %+v stays, want it deleted", e)
			}
			if _, err := r.m.Status("bw0"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Status after Remove = %v, want ErrNotFound", err)
			}
		})
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
// the next Set, naming the new namespace, puts its limits on both sides
// of the new link, and none are left of the old one's; told the wrong
// namespace first, the Manager sets nothing, and sets them once told the
// right one.
func TestMove(t *testing.T) {
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
	b := Limits{Ingress: Limit{Rate: 8_000_000}, Egress: Limit{Rate: 4_000_000}}
	node.MustDo(func() error {
		if err := m.SetMode(ModeHTB); err != nil {
			return err
		}
		return m.Set(Endpoint{Interface: "bwm0", NetNS: pod1.Path()}, b)
	})
	old, err := node.Netlink().LinkByName("bwm0")
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Netlink().LinkDel(old); err != nil {
		t.Fatal(err)
	}
	testutil.Veth(t, node, "bwm0", pod2, "eth0")
	l, err := node.Netlink().LinkByName("bwm0")
	if err != nil {
		t.Fatal(err)
	}
	entries := func(ifindex int) (n int) {
		for _, d := range []datapath.Direction{datapath.Ingress, datapath.Egress} {
			var v bpf.XdplaneBwValue
			switch err := kernel.Of(dp).Maps.Bandwidth.Lookup(bwKey(uint32(ifindex), d), &v); {
			case err == nil:
				n++
			case !errors.Is(err, ebpf.ErrKeyNotExist):
				t.Fatal(err)
			}
		}
		return n
	}

	// The old namespace has no pod side any more.
	var moveErr error
	node.MustDo(func() error { moveErr = m.Set(Endpoint{Interface: "bwm0", NetNS: pod1.Path()}, b); return nil })
	if moveErr == nil {
		t.Fatal("Set with a namespace that has no pod side: nil error")
	}
	t.Logf("refused: %v", moveErr)
	if got := htbRate(t, node, "bwm0"); got != 0 {
		t.Errorf("after the refused Set: host side has an HTB class of %d bytes/s, want none", got)
	}
	if n := entries(l.Attrs().Index) + entries(old.Attrs().Index); n != 0 {
		t.Errorf("after the refused Set: %d bandwidth entries on the old and new interfaces, want none", n)
	}
	if _, err := m.Status("bwm0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after the refused Set: Status = %v, want ErrNotFound: the old interface's limits went with it", err)
	}

	node.MustDo(func() error { return m.Set(Endpoint{Interface: "bwm0", NetNS: pod2.Path()}, b) })
	if got := htbRate(t, node, "bwm0"); got != 1_000_000 {
		t.Errorf("host side: HTB rate %d bytes/s, want 1,000,000", got)
	}
	if got := htbRate(t, pod2, "eth0"); got != 500_000 {
		t.Errorf("pod side: HTB rate %d bytes/s, want 500,000", got)
	}
	if n := entries(l.Attrs().Index); n != 2 {
		t.Errorf("%d bandwidth entries on the new interface, want 2", n)
	}
	if n := entries(old.Attrs().Index); n != 0 {
		t.Errorf("%d bandwidth entries on the old interface, want none", n)
	}
	var e bpf.XdplaneEndpoint
	if err := kernel.Of(dp).Maps.Endpoints.Lookup(uint32(old.Attrs().Index), &e); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("the old interface's endpoints entry: lookup = %v, want none", err)
	}
	want := Status{Endpoint: Endpoint{Interface: "bwm0", NetNS: pod2.Path()}, Limits: b}
	if st, err := m.Status("bwm0"); err != nil || st != want {
		t.Errorf("Status(bwm0) = %+v, %v; want %+v", st, err, want)
	}
}
