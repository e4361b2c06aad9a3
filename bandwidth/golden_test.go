package bandwidth

import (
	"encoding/binary"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/endpoint"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
)

// Offsets in struct __sk_buff (linux/bpf.h) that the shaping tests set
// in, or read back from, the context BPF_PROG_TEST_RUN takes and returns.
const (
	skbPriority = 32
	skbIfindex  = 40
	skbTstamp   = 152
	skbGsoSegs  = 164
	skbSize     = 192
)

// shapeIn is what a shaping run sets in the context besides the frame.
type shapeIn struct {
	tstamp  uint64 // a receive time: tstamp_type 0
	gsoSegs uint32
}

// shapeOut is what a shaping run returns.
type shapeOut struct {
	ret           uint32
	stamp         uint64 // skb->tstamp after
	prio          uint32 // skb->priority after
	before, after uint64 // the monotonic clock just before and after the run
}

// shapeRun sends frame through the program of direction dir at the rig's
// endpoint interface with in set in the context.
func (r *rig) shapeRun(t *testing.T, dir datapath.Direction, frame []byte, in shapeIn) shapeOut {
	t.Helper()
	prog := kernel.Of(r.dp).Programs.XdplaneTcEgress
	if dir == datapath.Egress {
		prog = kernel.Of(r.dp).Programs.XdplaneTcIngress
	}
	ctx := make([]byte, skbSize)
	binary.NativeEndian.PutUint32(ctx[skbIfindex:], r.ifindex)
	binary.NativeEndian.PutUint64(ctx[skbTstamp:], in.tstamp)
	binary.NativeEndian.PutUint32(ctx[skbGsoSegs:], in.gsoSegs)
	ctxOut := make([]byte, skbSize)
	opts := ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256), Context: ctx, ContextOut: ctxOut}
	var out shapeOut
	r.ns.MustDo(func() error {
		var err error
		if out.before, err = monotonicNow(); err != nil {
			return err
		}
		if out.ret, err = prog.Run(&opts); err != nil {
			return err
		}
		out.after, err = monotonicNow()
		return err
	})
	out.stamp = binary.NativeEndian.Uint64(ctxOut[skbTstamp:])
	out.prio = binary.NativeEndian.Uint32(ctxOut[skbPriority:])
	return out
}

func (r *rig) setBw(t *testing.T, dir datapath.Direction, v bpf.XdplaneBwValue) bpf.XdplaneBwKey {
	t.Helper()
	k := bwKey(r.ifindex, dir)
	if err := kernel.Of(r.dp).Maps.Bandwidth.Put(k, v); err != nil {
		t.Fatal(err)
	}
	zero := make([]bpf.XdplaneBwCounter, ebpf.MustPossibleCPU())
	if err := kernel.Of(r.dp).Maps.BwStats.Put(k, zero); err != nil {
		t.Fatal(err)
	}
	// The endpoint's flag sends its packets to the entry, as Set sets
	// it.
	flag := uint8(endpoint.IngressBw)
	if dir == datapath.Egress {
		flag = endpoint.EgressBw
	}
	if err := endpoint.Update(kernel.Of(r.dp), r.ifindex, func(e *bpf.XdplaneEndpoint) { e.Flags |= flag }); err != nil {
		t.Fatal(err)
	}
	return k
}

func (r *rig) bw(t *testing.T, k bpf.XdplaneBwKey) (bpf.XdplaneBwValue, ShapeCounters) {
	t.Helper()
	var v bpf.XdplaneBwValue
	var per []bpf.XdplaneBwCounter
	if err := kernel.Of(r.dp).Maps.Bandwidth.Lookup(k, &v); err != nil {
		t.Fatal(err)
	}
	if err := kernel.Of(r.dp).Maps.BwStats.Lookup(k, &per); err != nil {
		t.Fatal(err)
	}
	return v, sumShape(per)
}

// The EDT arithmetic: each packet leaves len/rate after the clock, the
// previous packet's departure; the clock may trail now by the burst; a
// packet with more than the horizon queued ahead is dropped, a lone one
// never; a departure time the packet asks for counts, a receive time
// does not.
func TestGoldenEDT(t *testing.T) {
	r := newRig(t)
	frame := packets.UDP4("10.0.3.4:5000", "10.0.1.2:53")
	n := uint64(len(frame))
	// 1,000 bytes a second, 1 ms a byte: a packet's delay is far longer
	// than the time between two runs.
	const rate = 1_000
	delay := n * 1_000_000

	for _, dir := range []datapath.Direction{datapath.Ingress, datapath.Egress} {
		t.Run(dir.String(), func(t *testing.T) {
			k := r.setBw(t, dir, bpf.XdplaneBwValue{Rate: rate, HorizonNs: 2_000_000_000, Mode: bwEDT})

			// No burst: the first packet leaves delay after now.
			o := r.shapeRun(t, dir, frame, shapeIn{})
			if o.ret != tcActUnspc || o.stamp < o.before+delay || o.stamp > o.after+delay {
				t.Fatalf("first packet: verdict %d, stamp %d, want now+%d in [%d, %d]", int32(o.ret), o.stamp, delay, o.before+delay, o.after+delay)
			}
			if v, _ := r.bw(t, k); v.ClockNs != o.stamp {
				t.Errorf("clock %d after the first packet, want its stamp %d", v.ClockNs, o.stamp)
			}
			// The next leaves exactly delay after it.
			o2 := r.shapeRun(t, dir, frame, shapeIn{})
			if o2.stamp != o.stamp+delay {
				t.Errorf("second packet stamped %d, want %d (one delay after the first)", o2.stamp, o.stamp+delay)
			}
			// A receive timestamp is wall-clock time, far beyond the
			// monotonic clock: it is not a departure time. (A departure
			// time, BPF_SKB_TSTAMP_DELIVERY_MONO, cannot be put in a
			// test run's context: the kernel refuses tstamp_type.)
			received := uint64(time.Now().UnixNano())
			o3 := r.shapeRun(t, dir, frame, shapeIn{tstamp: received})
			if o3.ret != tcActUnspc || o3.stamp != o2.stamp+delay {
				t.Errorf("a packet with a receive time: verdict %d, stamp %d, want %d (one delay after the last)", int32(o3.ret), o3.stamp, o2.stamp+delay)
			}
			_, c := r.bw(t, k)
			if c.ShapedPackets != 3 || c.ShapedBytes != 3*n || c.DroppedPackets != 0 {
				t.Errorf("counters %+v, want 3 shaped", c)
			}
		})
	}

	t.Run("burst", func(t *testing.T) {
		// A burst of 10 delays: a sender idle long enough sends about
		// ten packets at once, then is paced.
		k := r.setBw(t, datapath.Ingress, bpf.XdplaneBwValue{Rate: rate, BurstNs: 10 * delay, HorizonNs: 2_000_000_000, Mode: bwEDT})
		unstamped := 0
		var last uint64
		for i := range 20 {
			o := r.shapeRun(t, datapath.Ingress, frame, shapeIn{})
			if o.stamp == 0 {
				if unstamped != i {
					t.Fatalf("packet %d unstamped after a stamped one", i)
				}
				unstamped++
				continue
			}
			if last != 0 && o.stamp != last+delay {
				t.Fatalf("packet %d stamped %d, want %d (one delay after the one before)", i, o.stamp, last+delay)
			}
			last = o.stamp
		}
		// The clock starts burst behind and the runs take time of their
		// own: 10 or 11 leave at once.
		if unstamped < 10 || unstamped > 11 {
			t.Errorf("%d packets left at once, want the burst's 10 (or 11 as time passes)", unstamped)
		}
		_, c := r.bw(t, k)
		if c.ShapedPackets != 20 {
			t.Errorf("counted %d shaped, want 20", c.ShapedPackets)
		}
	})

	t.Run("horizon", func(t *testing.T) {
		// With a horizon of 1.5 packets, the second waits behind one
		// packet and goes, the third would wait behind two and is
		// dropped.
		slow := bpf.XdplaneBwValue{Rate: rate, HorizonNs: 3 * delay / 2, Mode: bwEDT}
		k := r.setBw(t, datapath.Ingress, slow)
		for i, want := range []uint32{tcActUnspc, tcActUnspc, tcActShot} {
			if o := r.shapeRun(t, datapath.Ingress, frame, shapeIn{}); o.ret != want || (want == tcActUnspc) != (o.stamp != 0) {
				t.Fatalf("packet %d: verdict %d, stamp %d; want verdict %d, stamped if passed", i, int32(o.ret), o.stamp, int32(want))
			}
		}
		_, c := r.bw(t, k)
		if c.DroppedPackets != 1 || c.DroppedBytes != n || c.ShapedPackets != 2 {
			t.Errorf("counters %+v, want two shaped and one dropped", c)
		}

		// A packet that alone takes longer than the horizon still goes
		// when nothing is queued ahead of it; the next does not.
		r.setBw(t, datapath.Ingress, bpf.XdplaneBwValue{Rate: 1, HorizonNs: 100_000_000, Mode: bwEDT})
		o := r.shapeRun(t, datapath.Ingress, frame, shapeIn{})
		if want := n * 1_000_000_000; o.ret != tcActUnspc || o.stamp < o.before+want || o.stamp > o.after+want {
			t.Errorf("a lone slow packet: verdict %d, stamp %d, want now+%d", int32(o.ret), o.stamp, want)
		}
		if o := r.shapeRun(t, datapath.Ingress, frame, shapeIn{}); o.ret != tcActShot {
			t.Errorf("the packet behind it: verdict %d, want dropped", int32(o.ret))
		}

		// The arithmetic at the other end: 1 Tbit/s, a few ns a packet.
		r.setBw(t, datapath.Ingress, bpf.XdplaneBwValue{Rate: 125_000_000_000, HorizonNs: 2_000_000_000, Mode: bwEDT})
		big := udp4Payload(t, 3000)
		o = r.shapeRun(t, datapath.Ingress, big, shapeIn{})
		want := uint64(len(big)) * 1_000_000_000 / 125_000_000_000
		if o.stamp < o.before+want || o.stamp > o.after+want {
			t.Errorf("%d bytes at 1 Tbit/s: stamp %d, want now+%d", len(big), o.stamp, want)
		}
	})

	t.Run("wrap-around", func(t *testing.T) {
		// A burst longer than the monotonic clock has run: "now minus
		// the burst" would wrap below zero. The clock must stay where
		// it is, and the packet leave within the burst, unstamped.
		k := r.setBw(t, datapath.Ingress, bpf.XdplaneBwValue{Rate: rate, BurstNs: math.MaxUint64 / 2, HorizonNs: 2_000_000_000, Mode: bwEDT})
		if o := r.shapeRun(t, datapath.Ingress, frame, shapeIn{}); o.ret != tcActUnspc || o.stamp != 0 {
			t.Errorf("a burst beyond the clock: verdict %d, stamp %d; want passed unstamped", int32(o.ret), o.stamp)
		}
		if v, _ := r.bw(t, k); v.ClockNs != delay {
			t.Errorf("clock %d after it, want %d: one delay after zero, not wrapped", v.ClockNs, delay)
		}
		// A clock at the top of its range: "clock plus a delay" would
		// wrap to a time long past. It is a backlog beyond the horizon:
		// dropped, the clock untouched.
		k = r.setBw(t, datapath.Ingress, bpf.XdplaneBwValue{Rate: rate, ClockNs: math.MaxUint64 - 1, HorizonNs: 2_000_000_000, Mode: bwEDT})
		if o := r.shapeRun(t, datapath.Ingress, frame, shapeIn{}); o.ret != tcActShot {
			t.Errorf("a clock at the top of its range: verdict %d, want dropped", int32(o.ret))
		}
		if v, _ := r.bw(t, k); v.ClockNs != math.MaxUint64-1 {
			t.Errorf("clock %d after it, want it untouched", v.ClockNs)
		}
		// The longest delay the arithmetic meets: a 64 KiB GSO packet
		// of 45 segments at 1 byte a second, len × 10⁹ far from
		// overflowing 64 bits.
		seg := udp4Payload(t, 1400)
		r.setBw(t, datapath.Ingress, bpf.XdplaneBwValue{Rate: 1, HorizonNs: 2_000_000_000, Mode: bwEDT})
		o := r.shapeRun(t, datapath.Ingress, seg, shapeIn{gsoSegs: 45})
		wire := uint64(len(seg)) + 44*(14+20+8)
		if want := wire * 1_000_000_000; o.ret != tcActUnspc || o.stamp < o.before+want || o.stamp > o.after+want {
			t.Errorf("%d bytes at 1 byte a second: verdict %d, stamp now+%d, want now+%d", wire, int32(o.ret), o.stamp-o.before, want)
		}
	})

	t.Run("GSO", func(t *testing.T) {
		// A GSO packet is its segments on the wire, each with its own
		// headers: a qdisc counts them so, and so does the clock.
		seg := packets.TCP4("10.0.3.4:40000", "10.0.1.2:80")
		ihl := int(seg[14]&0xf) * 4
		hdr := uint64(14 + ihl + int(seg[14+ihl+12]>>4)*4)
		k := r.setBw(t, datapath.Ingress, bpf.XdplaneBwValue{Rate: rate, HorizonNs: 2_000_000_000, Mode: bwEDT})
		o := r.shapeRun(t, datapath.Ingress, seg, shapeIn{gsoSegs: 3})
		wire := uint64(len(seg)) + 2*hdr
		if want := wire * 1_000_000; o.stamp < o.before+want || o.stamp > o.after+want {
			t.Errorf("3 segments of %d bytes, %d of headers: stamp now+%d, want now+%d", len(seg), hdr, o.stamp-o.before, want)
		}
		if _, c := r.bw(t, k); c.ShapedBytes != wire {
			t.Errorf("%d bytes shaped, want %d on the wire", c.ShapedBytes, wire)
		}
	})

	t.Run("no limit", func(t *testing.T) {
		if err := kernel.Of(r.dp).Maps.Bandwidth.Delete(bpf.XdplaneBwKey{Ifindex: r.ifindex, Dir: 0}); err != nil {
			t.Fatal(err)
		}
		if o := r.shapeRun(t, datapath.Ingress, frame, shapeIn{}); o.ret != tcActUnspc || o.stamp != 0 || o.prio != 0 {
			t.Errorf("no limit: verdict %d, stamp %d, priority %#x; want the packet untouched", int32(o.ret), o.stamp, o.prio)
		}
	})
}

// HTB classification: the endpoint's packets get its class as
// skb->priority, on the direction that has a limit; an entry with no rate
// for the datapath (the pod side's queue shapes) leaves them untouched.
func TestGoldenHTBClassification(t *testing.T) {
	r := newRig(t)
	frame := packets.TCP4("10.0.3.4:40000", "10.0.1.2:80")
	k := r.setBw(t, datapath.Ingress, bpf.XdplaneBwValue{Rate: 1_250_000, HorizonNs: edtHorizon, Mode: bwHTB, Priority: 0x10001})
	o := r.shapeRun(t, datapath.Ingress, frame, shapeIn{})
	if o.ret != tcActUnspc || o.prio != 0x10001 || o.stamp != 0 {
		t.Errorf("into a limited endpoint: verdict %d, priority %#x, stamp %d; want class 1:1 and no stamp", int32(o.ret), o.prio, o.stamp)
	}
	if _, c := r.bw(t, k); c.ShapedPackets != 1 || c.ShapedBytes != uint64(len(frame)) {
		t.Errorf("counters %+v, want one packet of %d bytes classified", c, len(frame))
	}
	// Without the endpoint's flag the entry is never looked up.
	var e bpf.XdplaneEndpoint
	if err := kernel.Of(r.dp).Maps.Endpoints.Lookup(r.ifindex, &e); err != nil {
		t.Fatal(err)
	}
	e.Flags &^= endpoint.IngressBw
	if err := kernel.Of(r.dp).Maps.Endpoints.Put(r.ifindex, e); err != nil {
		t.Fatal(err)
	}
	if o := r.shapeRun(t, datapath.Ingress, frame, shapeIn{}); o.ret != tcActUnspc || o.prio != 0 {
		t.Errorf("flag cleared: verdict %d, priority %#x; want the packet untouched", int32(o.ret), o.prio)
	}
	if _, c := r.bw(t, k); c.ShapedPackets != 1 {
		t.Errorf("flag cleared: %d classified in all, want still 1", c.ShapedPackets)
	}
	reply := packets.TCP4("10.0.1.2:80", "10.0.3.4:40000")
	if o := r.shapeRun(t, datapath.Egress, reply, shapeIn{}); o.prio != 0 {
		t.Errorf("out of it, with no egress limit: priority %#x, want untouched", o.prio)
	}
	ke := r.setBw(t, datapath.Egress, bpf.XdplaneBwValue{Mode: bwHTB, SetRate: 10_000_000})
	if o := r.shapeRun(t, datapath.Egress, reply, shapeIn{}); o.ret != tcActUnspc || o.prio != 0 || o.stamp != 0 {
		t.Errorf("out of it, shaped on the pod side: verdict %d, priority %#x, stamp %d; want untouched", int32(o.ret), o.prio, o.stamp)
	}
	if _, c := r.bw(t, ke); c != (ShapeCounters{}) {
		t.Errorf("counters %+v for a direction the datapath leaves alone, want none", c)
	}
}

// The packet-rate limit polices: a burst of packets passes, the next is
// dropped, and one interval later one more passes. A GSO packet counts
// its segments.
func TestGoldenPacketRate(t *testing.T) {
	r := newRig(t)
	frame := packets.UDP4("10.0.1.2:5000", "10.0.3.4:53")
	// 10 packets a second, a burst of 3.
	k := r.setBw(t, datapath.Egress, bpf.XdplaneBwValue{PpsIntervalNs: 100_000_000, PpsBurstNs: 200_000_000})
	for i := range 3 {
		if o := r.shapeRun(t, datapath.Egress, frame, shapeIn{}); o.ret != tcActUnspc {
			t.Fatalf("packet %d of the burst: verdict %d", i, int32(o.ret))
		}
	}
	if o := r.shapeRun(t, datapath.Egress, frame, shapeIn{}); o.ret != tcActShot {
		t.Fatalf("the packet past the burst: verdict %d, want dropped", int32(o.ret))
	}
	time.Sleep(120 * time.Millisecond)
	if o := r.shapeRun(t, datapath.Egress, frame, shapeIn{}); o.ret != tcActUnspc {
		t.Fatalf("a packet an interval later: verdict %d, want passed", int32(o.ret))
	}
	if _, c := r.bw(t, k); c.DroppedPackets != 1 || c.DroppedBytes != uint64(len(frame)) || c.ShapedPackets != 0 {
		t.Errorf("counters %+v, want 1 dropped (passing packets are not shaped)", c)
	}

	// A GSO packet counts its segments: after one packet of a fresh
	// burst of 3, one of 3 segments is more than what is left, one of 2
	// takes it all.
	r.setBw(t, datapath.Egress, bpf.XdplaneBwValue{PpsIntervalNs: 100_000_000, PpsBurstNs: 200_000_000})
	for i, c := range []struct {
		segs uint32
		want uint32
	}{{1, tcActUnspc}, {3, tcActShot}, {2, tcActUnspc}, {1, tcActShot}} {
		if o := r.shapeRun(t, datapath.Egress, frame, shapeIn{gsoSegs: c.segs}); o.ret != c.want {
			t.Errorf("packet %d, %d segments: verdict %d, want %d", i, c.segs, int32(o.ret), int32(c.want))
		}
	}
	// An idle bucket passes a GSO packet of more segments than the
	// burst whole, rather than never; the packets after it wait for it.
	r.setBw(t, datapath.Egress, bpf.XdplaneBwValue{PpsIntervalNs: 100_000_000, PpsBurstNs: 200_000_000})
	if o := r.shapeRun(t, datapath.Egress, frame, shapeIn{gsoSegs: 10}); o.ret != tcActUnspc {
		t.Errorf("10 segments into an idle bucket of 3: verdict %d, want passed", int32(o.ret))
	}
	if o := r.shapeRun(t, datapath.Egress, frame, shapeIn{}); o.ret != tcActShot {
		t.Errorf("a packet right after them: verdict %d, want dropped", int32(o.ret))
	}
}

// arpRequest is an Ethernet frame with an ARP request for the pod's
// address.
func arpRequest() []byte {
	return packets.Must(packets.ARPRequest(netip.MustParseAddr("10.0.1.1"), pod4))
}

// No limit holds link plumbing (ARP, neighbour discovery that cannot
// leave the link): past an empty policer's bucket it passes, and under HTB
// it is not classified. What only looks like it is held as any packet.
func TestGoldenBandwidthExempt(t *testing.T) {
	r := newRig(t)
	type frame struct {
		name  string
		frame []byte
	}
	// Out of the pod: a host's solicitations and advertisements to
	// addresses no router forwards to.
	outExempt := []frame{
		{"ARP", arpRequest()},
		{"neighbour solicitation", packets.ICMP6Hop("fe80::2", "ff02::1:ff00:1", 135, 255, 24)},
		{"neighbour solicitation from a global address", packets.ICMP6Hop("fd00:1::2", "ff02::1:ff00:1", 135, 255, 24)},
		{"neighbour advertisement", packets.ICMP6Hop("fe80::2", "fe80::1", 136, 255, 24)},
		{"router solicitation", packets.ICMP6Hop("fe80::2", "ff02::2", 133, 255, 8)},
	}
	outHeld := []frame{
		{"IPv4", packets.UDP4("10.0.1.2:5000", "10.0.3.4:53")},
		{"a neighbour solicitation with hop limit 64", packets.ICMP6Hop("fe80::2", "ff02::1:ff00:1", 135, 64, 24)},
		{"ICMPv6 echo, hop limit 255", packets.ICMP6Hop("fe80::2", "fe80::1", 128, 255, 24)},
		{"a VLAN-tagged frame", packets.VLAN(packets.UDP4("10.0.1.2:5000", "10.0.3.4:53"), 0x8100)},
		// The node would forward these: a pod could carry data past
		// its limit in them.
		{"a neighbour solicitation to a global address", packets.ICMP6Hop("fd00:1::2", "2001:db8::9", 135, 255, 1000)},
		{"a neighbour advertisement to a global address", packets.ICMP6Hop("fd00:1::2", "2001:db8::9", 136, 255, 24)},
		{"a router advertisement", packets.ICMP6Hop("fe80::2", "ff02::1", 134, 255, 24)},
	}
	// An empty bucket: one packet an hour, the one of its burst spent.
	k := r.setBw(t, datapath.Egress, bpf.XdplaneBwValue{PpsIntervalNs: 3_600_000_000_000})
	if o := r.shapeRun(t, datapath.Egress, packets.UDP4("10.0.1.2:5000", "10.0.3.4:53"), shapeIn{}); o.ret != tcActUnspc {
		t.Fatalf("the burst's one packet: verdict %d", int32(o.ret))
	}
	for _, c := range outExempt {
		if o := r.shapeRun(t, datapath.Egress, c.frame, shapeIn{}); o.ret != tcActUnspc {
			t.Errorf("out: %s past an empty bucket: verdict %d, want passed", c.name, int32(o.ret))
		}
	}
	for _, c := range outHeld {
		if o := r.shapeRun(t, datapath.Egress, c.frame, shapeIn{}); o.ret != tcActShot {
			t.Errorf("out: %s past an empty bucket: verdict %d, want dropped", c.name, int32(o.ret))
		}
	}
	if _, c := r.bw(t, k); c.DroppedPackets != uint64(len(outHeld)) {
		t.Errorf("out: %d dropped, want the %d held", c.DroppedPackets, len(outHeld))
	}

	// Into the pod, neighbour discovery with its hop limit whole is the
	// node's own, to any address; forwarded, it has lost one.
	inExempt := []frame{
		{"ARP", arpRequest()},
		{"neighbour solicitation", packets.ICMP6Hop("fd00:1::1", "fd00:1::2", 135, 255, 24)},
		{"router advertisement", packets.ICMP6Hop("fe80::1", "ff02::1", 134, 255, 56)},
		{"redirect", packets.ICMP6Hop("fe80::1", "fd00:1::2", 137, 255, 40)},
	}
	inHeld := []frame{
		{"IPv4", packets.TCP4("10.0.3.4:40000", "10.0.1.2:80")},
		{"a forwarded neighbour solicitation", packets.ICMP6Hop("2001:db8::9", "fd00:1::2", 135, 254, 1000)},
		{"ICMPv6 echo, hop limit 255", packets.ICMP6Hop("fd00:1::1", "fd00:1::2", 128, 255, 24)},
	}
	r.setBw(t, datapath.Ingress, bpf.XdplaneBwValue{Rate: 1_250_000, Mode: bwHTB, Priority: 0x10001})
	for _, c := range inExempt {
		if o := r.shapeRun(t, datapath.Ingress, c.frame, shapeIn{}); o.prio != 0 {
			t.Errorf("in: %s under HTB: priority %#x, want unclassified", c.name, o.prio)
		}
	}
	for _, c := range inHeld {
		if o := r.shapeRun(t, datapath.Ingress, c.frame, shapeIn{}); o.prio != 0x10001 {
			t.Errorf("in: %s under HTB: priority %#x, want the class", c.name, o.prio)
		}
	}
}
