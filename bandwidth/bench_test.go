package bandwidth

// Per-packet cost of bandwidth limits, measured by the kernel through
// BPF_PROG_TEST_RUN: what xdplane_tc_egress, which applies an endpoint's
// ingress limit as packets leave for the pod, adds to a packet when it
// classifies it into an HTB class, stamps its departure time (EDT) or
// polices its packet rate, over the same program at an endpoint with no
// limit. `make bench` runs it (internal/scripts/bench.sh).

import (
	"math/rand/v2"
	"net"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/benchrand"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/endpoint"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/policy"
)

// BenchmarkShaping reports the mean kernel-measured time per packet
// ("ns/pkt"), its median and 99th percentile, of one TCP packet through:
//
//   - trivial: a tc program that only returns TC_ACT_UNSPEC, the baseline;
//   - no-endpoint: xdplane_tc_egress at an interface that is no endpoint;
//   - endpoint: at an endpoint with no policy and no limit (a pod that
//     package policy knows, as every pod of an agent that enforces
//     network policy);
//   - htb: at that endpoint with an ingress limit that is an HTB class
//     (the mode without fq): the packet gets the class as its priority;
//   - edt: the same limit stamped as departure times (the mode with fq),
//     every packet stamped later than now;
//   - policer: a packet-rate limit that passes every packet.
//
// After each case the endpoint's shaping counters must have gone up by one
// shaped packet per packet (htb, edt) and none dropped, so that a packet
// that took another path fails the benchmark instead of being measured.
func BenchmarkShaping(b *testing.B) {
	benchrand.Seed(b) // prints the run's seed before any result
	r := newShapingBenchEnv(b)
	pkt := packets.TCP4("10.0.3.4:40000", "10.0.1.2:80")
	same := func(*rand.Rand) []byte { return pkt }
	prog := kernel.Of(r.dp).Programs.XdplaneTcEgress

	b.Run("trivial", func(b *testing.B) {
		testutil.MeasureProg(b, r.ns, testutil.TrivialProgram(b, ebpf.SchedCLS, -1), r.ctx, tcActUnspc, same)
	})
	b.Run("no-endpoint", func(b *testing.B) {
		testutil.MeasureProg(b, r.ns, prog, r.otherCtx, tcActUnspc, same)
	})
	for _, c := range []struct {
		name   string
		set    func(b *testing.B)
		shaped bool
	}{
		{"endpoint", func(*testing.B) {}, false},
		{"htb", func(*testing.B) { r.setBandwidth(ModeHTB, Limit{Rate: 10_000_000}) }, true},
		{"edt", func(b *testing.B) {
			// The kernel has no fq here, so the Manager will not
			// install EDT: the entry goes into the map directly. Its
			// horizon is far away, so that a clock that runs ahead of
			// now with every packet never drops one; the cost of the
			// arithmetic is the same.
			v, _ := limitValue(ModeEDT, datapath.Ingress, Limit{Rate: 10_000_000})
			v.HorizonNs = 1 << 62
			if err := kernel.Of(r.dp).Maps.Bandwidth.Put(bwKey(r.ifindex, datapath.Ingress), v); err != nil {
				b.Fatal(err)
			}
			r.setFlag(b, true)
		}, true},
		{"policer", func(*testing.B) {
			r.setBandwidth(ModeHTB, Limit{PacketRate: maxPacketRate, PacketBurst: maxPacketBurst})
		}, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			r.clearBandwidth(b)
			c.set(b)
			before := r.counters(b)
			_, packets := testutil.MeasureProg(b, r.ns, prog, r.ctx, tcActUnspc, same)
			after := r.counters(b)
			want := uint64(0)
			if c.shaped {
				want = uint64(packets)
			}
			if got := after.ShapedPackets - before.ShapedPackets; got != want {
				b.Errorf("%d packets shaped of %d, want %d: not every packet took the path measured", got, packets, want)
			}
			if d := after.DroppedPackets - before.DroppedPackets; d != 0 {
				b.Errorf("%d packets dropped, want none", d)
			}
		})
	}
}

// shapingBenchEnv is an endpoint, "bw0", with no policy, in a namespace
// and datapath of its own, with a bandwidth and a policy Manager; "bw1",
// the other end of its veth, is no endpoint.
type shapingBenchEnv struct {
	ns       *testutil.NS
	dp       *datapath.Datapath
	m        *Manager
	ifindex  uint32
	ctx      []byte // skb context naming bw0
	otherCtx []byte // naming bw1
}

func newShapingBenchEnv(b *testing.B) *shapingBenchEnv {
	b.Helper()
	r := &shapingBenchEnv{ns: testutil.NewGroup(b).NS("shb")}
	testutil.Veth(b, r.ns, "bw0", r.ns, "bw1")
	dir := testutil.BPFFS(b)
	var (
		pm    *policy.Manager
		other int
	)
	r.ns.MustDo(func() error {
		dp, err := datapath.Open(datapath.Options{Dir: dir})
		if err != nil {
			return err
		}
		r.dp = dp
		b.Cleanup(func() {
			if r.m != nil {
				r.m.Close()
			}
			if pm != nil {
				pm.Close()
			}
			dp.Close()
			if err := datapath.Remove(dir); err != nil {
				b.Errorf("remove datapath: %v", err)
			}
		})
		if r.m, err = NewManager(dp); err != nil {
			return err
		}
		if pm, err = policy.NewManager(dp); err != nil {
			return err
		}
		if err := pm.AddEndpoint(policy.Endpoint{Interface: "bw0"}); err != nil {
			return err
		}
		ep, err := net.InterfaceByName("bw0")
		if err != nil {
			return err
		}
		peer, err := net.InterfaceByName("bw1")
		if err != nil {
			return err
		}
		r.ifindex, other = uint32(ep.Index), peer.Index
		return nil
	})
	r.ctx = testutil.SKBContextBytes(r.ifindex)
	r.otherCtx = testutil.SKBContextBytes(uint32(other))
	return r
}

// setBandwidth sets bw0's ingress limit under mode.
func (r *shapingBenchEnv) setBandwidth(mode Mode, l Limit) {
	r.ns.MustDo(func() error {
		if err := r.m.SetMode(mode); err != nil {
			return err
		}
		return r.m.Set(Endpoint{Interface: "bw0"}, Limits{Ingress: l})
	})
}

// setFlag sets or clears bw0's ingress bandwidth flag, for an entry
// written behind the Manager's back.
func (r *shapingBenchEnv) setFlag(b *testing.B, on bool) {
	err := endpoint.Update(kernel.Of(r.dp), r.ifindex, func(e *bpf.XdplaneEndpoint) {
		e.Flags &^= endpoint.IngressBw
		if on {
			e.Flags |= endpoint.IngressBw
		}
	})
	if err != nil {
		b.Fatal(err)
	}
}

// clearBandwidth removes bw0's limits, and whatever a case wrote into
// the maps behind the Manager's back.
func (r *shapingBenchEnv) clearBandwidth(b *testing.B) {
	r.ns.MustDo(func() error { return r.m.Set(Endpoint{Interface: "bw0"}, Limits{}) })
	r.setFlag(b, false)
	if err := kernel.IgnoreMissing(kernel.Of(r.dp).Maps.Bandwidth.Delete(bwKey(r.ifindex, datapath.Ingress))); err != nil {
		b.Fatal(err)
	}
	zero := make([]bpf.XdplaneBwCounter, ebpf.MustPossibleCPU())
	if err := kernel.Of(r.dp).Maps.BwStats.Put(bwKey(r.ifindex, datapath.Ingress), zero); err != nil {
		b.Fatal(err)
	}
}

// counters reads bw0's ingress shaping counters from the datapath.
func (r *shapingBenchEnv) counters(b *testing.B) ShapeCounters {
	var per []bpf.XdplaneBwCounter
	if err := kernel.Of(r.dp).Maps.BwStats.Lookup(bwKey(r.ifindex, datapath.Ingress), &per); err != nil {
		b.Fatal(err)
	}
	return sumShape(per)
}
