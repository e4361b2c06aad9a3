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
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
)

// BenchmarkShaping reports the mean kernel-measured time per packet
// ("ns/pkt"), its median and 99th percentile, of one TCP packet through:
//
//   - trivial: a tc program that only returns TC_ACT_UNSPEC, the baseline;
//   - no-endpoint: xdplane_tc_egress at an interface that is no endpoint;
//   - endpoint: at an endpoint with no policy and no limit;
//   - htb: at an endpoint whose ingress limit is an HTB class (the mode
//     without fq): the packet gets the class as its priority;
//   - edt: the same limit stamped as departure times (the mode with fq),
//     every packet stamped later than now;
//   - policer: a packet-rate limit that passes every packet.
//
// After each case the endpoint's shaping counters must have gone up by one
// shaped packet per packet (htb, edt) and none dropped, so that a packet
// that took another path fails the benchmark instead of being measured.
func BenchmarkShaping(b *testing.B) {
	r := newShapingBenchEnv(b)
	pkt := benchTCPSYN(nil, netip.MustParseAddrPort("10.0.3.4:40000"), netip.MustParseAddrPort("10.0.1.2:80"))
	same := func(*rand.Rand) []byte { return pkt }
	prog := kernel.Of(r.dp).Programs.XdplaneTcEgress

	b.Run("trivial", func(b *testing.B) {
		benchMeasure(b, r.ns, benchTrivialTC(b), r.ctx, same)
	})
	b.Run("no-endpoint", func(b *testing.B) {
		benchMeasure(b, r.ns, prog, r.otherCtx, same)
	})
	for _, c := range []struct {
		name   string
		set    func(b *testing.B)
		shaped bool
	}{
		{"endpoint", func(*testing.B) {}, false},
		{"htb", func(*testing.B) { r.setBandwidth(BandwidthHTB, Limit{Rate: 10_000_000}) }, true},
		{"edt", func(b *testing.B) {
			// The kernel has no fq here, so the Manager will not
			// install EDT: the entry goes into the map directly. Its
			// horizon is far away, so that a clock that runs ahead of
			// now with every packet never drops one; the cost of the
			// arithmetic is the same.
			v, _ := limitValue(BandwidthEDT, Ingress, Limit{Rate: 10_000_000})
			v.HorizonNs = 1 << 62
			if err := kernel.Of(r.dp).Maps.Bandwidth.Put(bwKey(r.ifindex, Ingress), v); err != nil {
				b.Fatal(err)
			}
			r.m.mu.Lock()
			err := r.m.setFlag(r.m.endpoints["pol0"], epIngressBw, true)
			r.m.mu.Unlock()
			if err != nil {
				b.Fatal(err)
			}
		}, true},
		{"policer", func(*testing.B) {
			r.setBandwidth(BandwidthHTB, Limit{PacketRate: maxPacketRate, PacketBurst: maxPacketBurst})
		}, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			r.clearBandwidth(b)
			c.set(b)
			before := r.counters(b)
			_, packets := benchMeasure(b, r.ns, prog, r.ctx, same)
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

// shapingBenchEnv is an endpoint, "pol0", with no policy, in a namespace
// and datapath of its own; "pol1", the other end of its veth, is no
// endpoint.
type shapingBenchEnv struct {
	ns       *testutil.NS
	dp       *datapath.Datapath
	m        *Manager
	ifindex  uint32
	ctx      []byte // skb context naming pol0
	otherCtx []byte // naming pol1
}

func newShapingBenchEnv(b *testing.B) *shapingBenchEnv {
	b.Helper()
	r := &shapingBenchEnv{ns: testutil.NewGroup(b).NS("shb")}
	testutil.Veth(b, r.ns, "pol0", r.ns, "pol1")
	dir := testutil.BPFFS(b)
	var other int
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
			dp.Close()
			if err := datapath.Remove(dir); err != nil {
				b.Errorf("remove datapath: %v", err)
			}
		})
		if r.m, err = NewManager(dp); err != nil {
			return err
		}
		if err := r.m.AddEndpoint(Endpoint{Interface: "pol0", NetNS: r.ns.Path()}); err != nil {
			return err
		}
		ep, err := net.InterfaceByName("pol0")
		if err != nil {
			return err
		}
		peer, err := net.InterfaceByName("pol1")
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

// setBandwidth sets pol0's ingress limit under mode.
func (r *shapingBenchEnv) setBandwidth(mode BandwidthMode, l Limit) {
	r.ns.MustDo(func() error {
		if err := r.m.SetBandwidthMode(mode); err != nil {
			return err
		}
		return r.m.SetBandwidth("pol0", Bandwidth{Ingress: l})
	})
}

// clearBandwidth removes pol0's limits, and whatever a case wrote into
// the map behind the Manager's back.
func (r *shapingBenchEnv) clearBandwidth(b *testing.B) {
	r.ns.MustDo(func() error { return r.m.SetBandwidth("pol0", Bandwidth{}) })
	if err := kernel.IgnoreMissing(kernel.Of(r.dp).Maps.Bandwidth.Delete(bwKey(r.ifindex, Ingress))); err != nil {
		b.Fatal(err)
	}
	zero := make([]bpf.XdplaneBwCounter, ebpf.MustPossibleCPU())
	if err := kernel.Of(r.dp).Maps.BwStats.Put(bwKey(r.ifindex, Ingress), zero); err != nil {
		b.Fatal(err)
	}
}

// counters reads pol0's ingress shaping counters from the datapath.
func (r *shapingBenchEnv) counters(b *testing.B) ShapeCounters {
	var per []bpf.XdplaneBwCounter
	if err := kernel.Of(r.dp).Maps.BwStats.Lookup(bwKey(r.ifindex, Ingress), &per); err != nil {
		b.Fatal(err)
	}
	return sumShape(per)
}
