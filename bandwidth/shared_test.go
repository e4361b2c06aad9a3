package bandwidth

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/endpoint"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/policy"
)

// Frames into the rig's pod: from a peer its policy admits, and from one
// it does not.
var (
	fromAdmitted = packets.TCP4("10.0.3.4:40000", "10.0.1.2:80")
	fromOther    = packets.TCP4("10.0.3.5:40000", "10.0.1.2:80")
)

// isolating admits into the pod only what comes from 10.0.3.4.
var isolating = policy.Policy{Ingress: policy.Rules{Isolated: true, Rules: []policy.Rule{
	{Peers: []policy.Peer{{Prefix: netip.MustParsePrefix("10.0.3.4/32")}}},
}}}

// htbPriority is the class the datapath gives a packet an HTB ingress
// limit holds.
var htbPriority = netlink.MakeHandle(htbHandle, htbClass)

// expectInto runs fromAdmitted and fromOther through the program that
// sees what enters the pod, and checks: under the policy, fromOther is
// dropped; shaped, what passes is put in the ingress limit's HTB class.
func (r *rig) expectInto(t *testing.T, step string, underPolicy, shaped bool) {
	t.Helper()
	want := uint32(0)
	if shaped {
		want = htbPriority
	}
	if o := r.shapeRun(t, datapath.Ingress, fromAdmitted, shapeIn{}); o.ret != tcActUnspc || o.prio != want {
		t.Errorf("%s: from the admitted peer: verdict %d, priority %#x; want passed, priority %#x", step, int32(o.ret), o.prio, want)
	}
	o := r.shapeRun(t, datapath.Ingress, fromOther, shapeIn{})
	switch {
	case underPolicy && o.ret != tcActShot:
		t.Errorf("%s: from another peer: verdict %d, want dropped by the policy", step, int32(o.ret))
	case !underPolicy && (o.ret != tcActUnspc || o.prio != want):
		t.Errorf("%s: from another peer: verdict %d, priority %#x; want passed, priority %#x", step, int32(o.ret), o.prio, want)
	}
}

// policyFields is e with package bandwidth's flags taken out: what
// package policy wrote.
func policyFields(e bpf.XdplaneEndpoint) bpf.XdplaneEndpoint {
	e.Flags &^= endpoint.BandwidthFlags
	return e
}

// A bandwidth.Manager and a policy.Manager on one datapath share bw0's
// entry in the endpoints map, each writing its own fields: neither undoes
// the other's, whatever the order of their calls, and the entry goes when
// the last of them is done with it. The verdicts of the datapath's own
// programs show both in force.
func TestSharedEndpointEntry(t *testing.T) {
	limits := Limits{Ingress: Limit{Rate: 10_000_000}, Egress: Limit{PacketRate: 1_000_000}}
	const bwFlags = endpoint.IngressBw | endpoint.EgressBw
	for _, policyLast := range []bool{false, true} {
		name := "bandwidth goes last"
		if policyLast {
			name = "policy goes last"
		}
		t.Run(name, func(t *testing.T) {
			r := newRig(t)
			r.ns.MustDo(func() error { return r.m.SetMode(ModeHTB) })

			// Limits first, then the policy endpoint and its policy.
			r.set(hostSide, limits)
			if e, ok := r.entry(); !ok || e != (bpf.XdplaneEndpoint{Flags: bwFlags}) {
				t.Fatalf("limits alone: entry %+v (%v), want only the bandwidth flags", e, ok)
			}
			r.expectInto(t, "limits alone", false, true)
			pm := r.withPolicy()
			r.ns.MustDo(func() error { return pm.SetPolicy("bw0", isolating) })
			e, _ := r.entry()
			pol := policyFields(e)
			if pol.Id == 0 || pol.Cookie == 0 || pol.IngressPolicy == 0 || pol.Flags != endpoint.IngressIsolated || e.Flags&endpoint.BandwidthFlags != bwFlags {
				t.Fatalf("SetPolicy after Set: entry %+v, want policy's fields and both bandwidth flags", e)
			}
			r.expectInto(t, "SetPolicy after Set", true, true)

			// Changing and removing the limits leaves the policy.
			r.set(hostSide, Limits{Ingress: Limit{Rate: 20_000_000}})
			if e, _ := r.entry(); policyFields(e) != pol || e.Flags&endpoint.BandwidthFlags != endpoint.IngressBw {
				t.Errorf("Set after SetPolicy: entry %+v, want policy's %+v and the ingress flag", e, pol)
			}
			r.expectInto(t, "Set after SetPolicy", true, true)
			r.ns.MustDo(func() error { return r.m.Remove(hostSide) })
			if e, _ := r.entry(); e != pol {
				t.Errorf("Remove after SetPolicy: entry %+v, want policy's %+v alone", e, pol)
			}
			r.expectInto(t, "Remove after SetPolicy", true, false)
			if !r.attached() {
				t.Error("Remove detached the tc programs from a policy endpoint")
			}

			// A first Set that fails on a policy endpoint leaves the
			// programs that policy attached, and the entry, as they were.
			other := testutil.NewGroup(t).NS("other")
			if err := r.do(func() error {
				return r.m.Set(Endpoint{Interface: "bw0", NetNS: other.Path()}, Limits{Egress: Limit{Rate: 1_000_000}})
			}); err == nil {
				t.Fatal("Set with the pod side in no namespace it can find: nil error")
			}
			if e, _ := r.entry(); e != pol || !r.attached() {
				t.Errorf("a failed Set on a policy endpoint: entry %+v, attached %v; want policy's %+v, attached", e, r.attached(), pol)
			}
			r.expectInto(t, "a failed Set", true, false)

			r.set(hostSide, limits)
			if e, _ := r.entry(); policyFields(e) != pol || e.Flags&endpoint.BandwidthFlags != bwFlags {
				t.Errorf("Set again: entry %+v, want policy's %+v and both bandwidth flags", e, pol)
			}
			r.expectInto(t, "Set again", true, true)

			if policyLast {
				r.ns.MustDo(func() error { return r.m.Remove(hostSide) })
				if e, _ := r.entry(); e != pol {
					t.Errorf("limits removed: entry %+v, want policy's %+v alone", e, pol)
				}
				r.ns.MustDo(func() error { return pm.RemoveEndpoint("bw0") })
			} else {
				r.ns.MustDo(func() error { return pm.RemoveEndpoint("bw0") })
				// The limits stay in force, and the entry with them.
				if e, ok := r.entry(); !ok || e != (bpf.XdplaneEndpoint{Flags: bwFlags}) {
					t.Errorf("RemoveEndpoint with limits set: entry %+v (%v), want the bandwidth flags alone", e, ok)
				}
				r.expectInto(t, "RemoveEndpoint with limits set", false, true)
				if !r.attached() {
					t.Error("RemoveEndpoint detached the tc programs from an interface with limits")
				}
				if st, err := r.m.Status("bw0"); err != nil || st.Limits != limits {
					t.Errorf("RemoveEndpoint with limits set: Status = %+v, %v; want %+v", st, err, limits)
				}
				r.ns.MustDo(func() error { return r.m.Remove(hostSide) })
			}
			if e, ok := r.entry(); ok {
				t.Errorf("neither policy nor limits left: entry %+v, want it deleted", e)
			}
			r.expectInto(t, "both gone", false, false)
		})
	}
}

// Limits on an interface that is no policy endpoint shape: Set attaches
// the programs, marks the interface's entry, and its packets are
// classified and policed.
func TestGoldenLimitsWithoutPolicy(t *testing.T) {
	r := newRig(t)
	r.ns.MustDo(func() error { return r.m.SetMode(ModeHTB) })
	// A packet a second, a burst of two.
	r.set(hostSide, Limits{Ingress: Limit{Rate: 10_000_000}, Egress: Limit{PacketRate: 1, PacketBurst: 2}})
	if !r.attached() {
		t.Fatal("Set did not attach the tc programs")
	}
	if e, ok := r.entry(); !ok || e != (bpf.XdplaneEndpoint{Flags: endpoint.IngressBw | endpoint.EgressBw}) {
		t.Errorf("entry %+v (%v), want the bandwidth flags alone", e, ok)
	}
	r.expectInto(t, "into the pod", false, true)
	out := packets.UDP4("10.0.1.2:5000", "10.0.3.4:53")
	for i, want := range []uint32{tcActUnspc, tcActUnspc, tcActShot} {
		if o := r.shapeRun(t, datapath.Egress, out, shapeIn{}); o.ret != want {
			t.Errorf("out of the pod, packet %d: verdict %d, want %d", i, int32(o.ret), int32(want))
		}
	}
	var c Counters
	r.ns.MustDo(func() (err error) { c, err = r.m.Counters("bw0"); return })
	in := ShapeCounters{ShapedPackets: 2, ShapedBytes: uint64(len(fromAdmitted) + len(fromOther))}
	eg := ShapeCounters{DroppedPackets: 1, DroppedBytes: uint64(len(out))}
	if c != (Counters{Ingress: in, Egress: eg}) {
		t.Errorf("Counters = %+v, want ingress %+v, egress %+v", c, in, eg)
	}
	// Policy has no endpoint here: it tracked no flow and counted nothing.
	maps := kernel.Of(r.dp).Maps
	if n := mapLen(t, maps.PolicyCt); n != 0 {
		t.Errorf("policy_ct holds %d entries, want none without a policy endpoint", n)
	}
	var per []bpf.XdplaneEpCounter
	for idx := range uint32(2) {
		if err := maps.PolicyStats.Lookup(idx, &per); err != nil {
			t.Fatal(err)
		}
		for _, p := range per {
			if p != (bpf.XdplaneEpCounter{}) {
				t.Errorf("policy_stats[%d] = %+v, want nothing counted for id 0", idx, p)
			}
		}
	}

	t.Run("edt", func(t *testing.T) {
		if have, err := haveFQ(); err != nil || !have {
			t.Skipf("no fq qdisc in this kernel (%v): ModeEDT cannot be set", err)
		}
		r := newRig(t)
		r.ns.MustDo(func() error { return r.m.SetMode(ModeEDT) })
		// 1,000 bytes a second, a burst of 1,500 bytes: the frames after
		// the first 1,500 bytes leave later than now.
		r.set(hostSide, Limits{Ingress: Limit{Rate: 8_000, Burst: minBurst}})
		for i := 0; i*len(fromAdmitted) <= 1500+len(fromAdmitted); i++ {
			o := r.shapeRun(t, datapath.Ingress, fromAdmitted, shapeIn{})
			if o.ret != tcActUnspc {
				t.Fatalf("under EDT, frame %d: verdict %d, want passed", i, int32(o.ret))
			}
			if o.stamp > o.after {
				return
			}
		}
		t.Errorf("under EDT: no frame stamped later than now past the burst")
	})
}

// mapLen is the number of entries in m.
func mapLen(t *testing.T, m *ebpf.Map) int {
	t.Helper()
	var k, v []byte
	n := 0
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
