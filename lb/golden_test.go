package lb_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

// Golden-packet tests: every input and every expected output is built with
// gopacket, the programs run through BPF_PROG_TEST_RUN, and outputs are
// compared byte for byte, with checksums also checked by packets'
// own arithmetic.

var (
	gClient     = netip.MustParseAddrPort("10.0.0.1:40000")
	gVIPTCP     = netip.MustParseAddrPort("10.96.0.10:80")
	gVIPUDP     = netip.MustParseAddrPort("10.96.0.10:53")
	gBackendTCP = netip.MustParseAddrPort("10.0.1.2:8080")
	gBackendUDP = netip.MustParseAddrPort("10.0.1.2:5353")
	gBackends   = []netip.AddrPort{
		netip.MustParseAddrPort("10.0.1.2:8080"),
		netip.MustParseAddrPort("10.0.1.3:8080"),
		netip.MustParseAddrPort("10.0.1.4:8080"),
	}
)

const (
	gXDPPass   = 2 // XDP_PASS
	gXDPDrop   = 1 // XDP_DROP
	gTCUnspec  = 0xffffffff
	gTCShot    = 2
	gCTForward = 0
	gCTReply   = 1
)

// gTestSKBChecksumComplete is BPF_F_TEST_SKB_CHECKSUM_COMPLETE: the
// kernel gives the skb CHECKSUM_COMPLETE, as a NIC that checksums received
// frames does, and after the run fails with EBADMSG unless the program kept
// skb->csum in step with the bytes it changed.
const gTestSKBChecksumComplete = 1 << 2

// goldenHook is one program, how it is run and the verdicts it gives.
type goldenHook struct {
	name    string
	prog    func(*bpf.XdplanePrograms) *ebpf.Program
	pass    uint32
	drop    uint32
	forward bool   // does DNAT to services (xdp, tc ingress)
	flags   uint32 // BPF_PROG_TEST_RUN flags
}

var (
	goldenXDP       = goldenHook{"xdp", func(p *bpf.XdplanePrograms) *ebpf.Program { return p.XdplaneXdp }, gXDPPass, gXDPDrop, true, 0}
	goldenTCIngress = goldenHook{"tc_ingress", func(p *bpf.XdplanePrograms) *ebpf.Program { return p.XdplaneTcIngress }, gTCUnspec, gTCShot, true, 0}
	goldenTCEgress  = goldenHook{"tc_egress", func(p *bpf.XdplanePrograms) *ebpf.Program { return p.XdplaneTcEgress }, gTCUnspec, gTCShot, false, 0}

	goldenTCIngressComplete = goldenWithChecksumComplete(goldenTCIngress)
	goldenTCEgressComplete  = goldenWithChecksumComplete(goldenTCEgress)

	// The tc programs run twice: on an skb with CHECKSUM_NONE (the
	// default of BPF_PROG_TEST_RUN) and on one with CHECKSUM_COMPLETE.
	goldenAllHooks     = []goldenHook{goldenXDP, goldenTCIngress, goldenTCEgress, goldenTCIngressComplete, goldenTCEgressComplete}
	goldenForwardHooks = []goldenHook{goldenXDP, goldenTCIngress, goldenTCIngressComplete}
	// Reverse NAT happens at XDP (which has no egress) and at tc egress,
	// after routing, never at tc ingress.
	goldenReplyHooks = []goldenHook{goldenXDP, goldenTCEgress, goldenTCEgressComplete}
)

// goldenReplyHookFor is the hook that translates replies on the same
// attachment as forward hook h: XDP itself, tc egress for tc ingress.
func goldenReplyHookFor(h goldenHook) goldenHook {
	switch h.name {
	case goldenTCIngress.name:
		return goldenTCEgress
	case goldenTCIngressComplete.name:
		return goldenTCEgressComplete
	}
	return h
}

func goldenWithChecksumComplete(h goldenHook) goldenHook {
	h.name += "_csum_complete"
	h.flags = gTestSKBChecksumComplete
	return h
}

// golden is a datapath on its own bpffs, with a manager.
type golden struct {
	dp  *datapath.Datapath
	mgr *lb.Manager
	// noChecksumComplete is set when the kernel does not know
	// BPF_F_TEST_SKB_CHECKSUM_COMPLETE (older kernels).
	noChecksumComplete bool
}

func newGolden(t *testing.T, svcs ...lb.Service) *golden {
	t.Helper()
	return newGoldenLimits(t, datapath.Limits{}, svcs...)
}

func newGoldenLimits(t *testing.T, limits datapath.Limits, svcs ...lb.Service) *golden {
	t.Helper()
	dir := testutil.BPFFS(t)
	dp, err := datapath.Open(datapath.Options{Dir: dir, Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dp.Close(); err != nil {
			t.Errorf("close datapath: %v", err)
		}
		if err := datapath.Remove(dir); err != nil {
			t.Errorf("remove datapath: %v", err)
		}
	})
	mgr, err := lb.NewManager(dp)
	if err != nil {
		t.Fatal(err)
	}
	g := &golden{dp: dp, mgr: mgr}
	arp, err := packets.ARPRequest(gClient.Addr(), gVIPTCP.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.runErr(goldenTCIngressComplete, arp); errors.Is(err, unix.EINVAL) {
		g.noChecksumComplete = true
	} else if err != nil {
		t.Fatalf("probe BPF_F_TEST_SKB_CHECKSUM_COMPLETE: %v", err)
	}
	for _, s := range svcs {
		g.upsert(t, s)
	}
	return g
}

func (g *golden) upsert(t *testing.T, s lb.Service) {
	t.Helper()
	if err := g.mgr.Upsert(s); err != nil {
		t.Fatalf("upsert %s: %v", s.Frontend, err)
	}
}

func goldenService(proto lb.Protocol, fe netip.AddrPort, backends ...netip.AddrPort) lb.Service {
	s := lb.Service{Frontend: lb.Frontend{Address: fe, Protocol: proto}}
	for _, b := range backends {
		s.Backends = append(s.Backends, lb.Backend{Address: b})
	}
	return s
}

// run runs h's program on in and returns its verdict and output frame.
func (g *golden) run(t *testing.T, h goldenHook, in []byte) (uint32, []byte) {
	t.Helper()
	if h.flags&gTestSKBChecksumComplete != 0 && g.noChecksumComplete {
		t.Skip("the kernel has no BPF_F_TEST_SKB_CHECKSUM_COMPLETE")
	}
	ret, out, err := g.runErr(h, in)
	if err != nil {
		t.Fatalf("%s: run: %v", h.name, err)
	}
	return ret, out
}

func (g *golden) runErr(h goldenHook, in []byte) (uint32, []byte, error) {
	opts := &ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in)+256), Flags: h.flags}
	ret, err := h.prog(kernel.Of(g.dp).Programs).Run(opts)
	return ret, opts.DataOut, err
}

// pass runs in through h, requires the pass verdict and returns the output.
func (g *golden) pass(t *testing.T, h goldenHook, in []byte) []byte {
	t.Helper()
	ret, out := g.run(t, h, in)
	if ret != h.pass {
		t.Fatalf("%s: verdict %#x, want pass (%#x)", h.name, ret, h.pass)
	}
	return out
}

// untouched requires that h passes in unchanged.
func (g *golden) untouched(t *testing.T, h goldenHook, in []byte) {
	t.Helper()
	out := g.pass(t, h, in)
	goldenRequireBytes(t, h.name+": output of an untouched packet", out, in)
}

// translated requires that h passes in rewritten to exactly want, with
// checksums that verify.
func (g *golden) translated(t *testing.T, h goldenHook, in, want []byte) {
	t.Helper()
	out := g.pass(t, h, in)
	goldenRequireBytes(t, h.name+": translated output", out, want)
	goldenRequireChecksums(t, h.name, out)
}

func goldenRequireBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	t.Fatalf("%s differs at byte %d (got %d bytes, want %d)\ngot:\n%swant:\n%s",
		what, i, len(got), len(want), hex.Dump(got), hex.Dump(want))
}

func goldenRequireChecksums(t *testing.T, what string, frame []byte) {
	t.Helper()
	if err := packets.VerifyChecksums(frame); err != nil {
		t.Fatalf("%s: checksums of the output: %v\n%s", what, err, hex.Dump(frame))
	}
}

func goldenBuild(t *testing.T, p packets.IPv4) []byte {
	t.Helper()
	b, err := p.Build()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func goldenIPProto(p lb.Protocol) layers.IPProtocol {
	if p == lb.TCP {
		return layers.IPProtocolTCP
	}
	return layers.IPProtocolUDP
}

// goldenFlow builds a client packet of proto from src to dst with payload.
func goldenFlow(proto lb.Protocol, src, dst netip.AddrPort, payload []byte) packets.IPv4 {
	p := packets.IPv4{Src: src, Dst: dst, Proto: goldenIPProto(proto), Payload: payload, ID: 0x4d2, Flags: layers.IPv4DontFragment}
	if proto == lb.TCP {
		p.TCPFlags = packets.TCPFlags{ACK: true, PSH: len(payload) > 0}
		p.Seq, p.Ack = 1000, 2000
	}
	return p
}

// goldenDNAT returns p sent to to instead.
func goldenDNAT(p packets.IPv4, to netip.AddrPort) packets.IPv4 {
	p.Dst = to
	return p
}

// goldenSNAT returns p coming from from instead.
func goldenSNAT(p packets.IPv4, from netip.AddrPort) packets.IPv4 {
	p.Src = from
	return p
}

// --- map state ---

func goldenHtons(p uint16) uint16 { return p<<8 | p>>8 }

func goldenCtKey(src, dst netip.AddrPort, proto lb.Protocol, dir uint8) bpf.XdplaneCtKey {
	return bpf.XdplaneCtKey{
		Saddr: src.Addr().As16(),
		Daddr: dst.Addr().As16(),
		Sport: goldenHtons(src.Port()),
		Dport: goldenHtons(dst.Port()),
		Proto: uint8(proto),
		Dir:   dir,
	}
}

func (g *golden) conntrack(t *testing.T) map[bpf.XdplaneCtKey]bpf.XdplaneCtValue {
	t.Helper()
	out := map[bpf.XdplaneCtKey]bpf.XdplaneCtValue{}
	var (
		k bpf.XdplaneCtKey
		v bpf.XdplaneCtValue
	)
	it := kernel.Of(g.dp).Maps.Conntrack.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		t.Fatalf("read conntrack: %v", err)
	}
	return out
}

func (g *golden) flushConntrack(t *testing.T) {
	t.Helper()
	for k := range g.conntrack(t) {
		if err := kernel.Of(g.dp).Maps.Conntrack.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatalf("flush conntrack: %v", err)
		}
	}
	if n := len(g.conntrack(t)); n != 0 {
		t.Fatalf("conntrack holds %d entries after a flush", n)
	}
}

func (g *golden) requireNoConntrack(t *testing.T) {
	t.Helper()
	if ct := g.conntrack(t); len(ct) != 0 {
		t.Fatalf("conntrack holds %d entries, want none: %v", len(ct), ct)
	}
}

// ids returns the service id of fe and the ids of its backends.
func (g *golden) ids(t *testing.T, fe lb.Frontend) (uint32, map[netip.AddrPort]uint32) {
	t.Helper()
	st, err := lb.ReadStatus(g.dp)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Frontend == fe {
			bes := map[netip.AddrPort]uint32{}
			for _, b := range s.Backends {
				bes[b.Address] = b.ID
			}
			return s.ID, bes
		}
	}
	t.Fatalf("service %s not in status", fe)
	return 0, nil
}

// requireFlow checks the forward and reply conntrack entries of a flow
// from client to fe that was sent to backend.
func (g *golden) requireFlow(t *testing.T, fe lb.Frontend, client, backend netip.AddrPort) bpf.XdplaneCtValue {
	t.Helper()
	svcID, bes := g.ids(t, fe)
	beID := bes[backend]
	if beID == 0 {
		t.Fatalf("backend %s is not in service %s", backend, fe)
	}
	ct := g.conntrack(t)
	fwd, ok := ct[goldenCtKey(client, fe.Address, fe.Protocol, gCTForward)]
	if !ok {
		t.Fatalf("no forward conntrack entry for %s -> %s; conntrack: %v", client, fe, ct)
	}
	if fwd.BackendId != beID || fwd.SvcId != svcID {
		t.Fatalf("forward conntrack entry names backend %d of service %d, want backend %d (%s) of service %d",
			fwd.BackendId, fwd.SvcId, beID, backend, svcID)
	}
	if fwd.LastSeen == 0 {
		t.Fatal("forward conntrack entry has no last-seen time")
	}
	rep, ok := ct[goldenCtKey(backend, client, fe.Protocol, gCTReply)]
	if !ok {
		t.Fatalf("no reply conntrack entry for %s -> %s; conntrack: %v", backend, client, ct)
	}
	if rep.BackendId != beID || rep.SvcId != svcID {
		t.Fatalf("reply conntrack entry names backend %d of service %d, want backend %d of service %d",
			rep.BackendId, rep.SvcId, beID, svcID)
	}
	if rep.LastSeen == 0 {
		t.Fatal("reply conntrack entry has no last-seen time")
	}
	return fwd
}

// goldenCounts are packet counts of datapath.Counters.
type goldenCounts struct {
	Passed, ForwardNew, ForwardEst, Replies, NoBackend, Malformed, Fragments, CTFull uint64
	SourceDenied, UnknownPort                                                        uint64
	bytes                                                                            uint64
}

func (g *golden) counts(t *testing.T) goldenCounts {
	t.Helper()
	c, err := g.dp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	all := []datapath.Counter{c.Passed, c.ForwardNew, c.ForwardEstablished, c.Replies, c.NoBackend, c.Malformed, c.Fragments, c.ConntrackFull,
		c.SourceDenied, c.UnknownPort}
	out := goldenCounts{
		Passed: c.Passed.Packets, ForwardNew: c.ForwardNew.Packets, ForwardEst: c.ForwardEstablished.Packets,
		Replies: c.Replies.Packets, NoBackend: c.NoBackend.Packets, Malformed: c.Malformed.Packets,
		Fragments: c.Fragments.Packets, CTFull: c.ConntrackFull.Packets,
		SourceDenied: c.SourceDenied.Packets, UnknownPort: c.UnknownPort.Packets,
	}
	for _, x := range all {
		out.bytes += x.Bytes
	}
	return out
}

func (c goldenCounts) sub(o goldenCounts) goldenCounts {
	return goldenCounts{
		Passed: c.Passed - o.Passed, ForwardNew: c.ForwardNew - o.ForwardNew, ForwardEst: c.ForwardEst - o.ForwardEst,
		Replies: c.Replies - o.Replies, NoBackend: c.NoBackend - o.NoBackend, Malformed: c.Malformed - o.Malformed,
		Fragments: c.Fragments - o.Fragments, CTFull: c.CTFull - o.CTFull,
		SourceDenied: c.SourceDenied - o.SourceDenied, UnknownPort: c.UnknownPort - o.UnknownPort, bytes: c.bytes - o.bytes,
	}
}

// requireCounted runs f, which sends frames of n bytes in all, and requires
// the counters to move by exactly want.
func (g *golden) requireCounted(t *testing.T, want goldenCounts, n int, f func()) {
	t.Helper()
	before := g.counts(t)
	f()
	got := g.counts(t).sub(before)
	want.bytes = uint64(n)
	if got != want {
		t.Fatalf("counters moved by %+v, want %+v", got, want)
	}
}

// --- 1. DNAT ---

func TestGoldenDNAT(t *testing.T) {
	tcpSvc := goldenService(lb.TCP, gVIPTCP, gBackendTCP)
	udpSvc := goldenService(lb.UDP, gVIPUDP, gBackendUDP)
	g := newGolden(t, tcpSvc, udpSvc)

	payload := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + 3)
		}
		return b
	}
	syn := goldenFlow(lb.TCP, gClient, gVIPTCP, nil)
	syn.TCPFlags = packets.TCPFlags{SYN: true}
	syn.Flags = 0
	padded := goldenFlow(lb.TCP, gClient, gVIPTCP, payload(10))
	padded.Pad = 16
	cases := []struct {
		name string
		svc  lb.Service
		in   packets.IPv4
		to   netip.AddrPort
	}{
		{"tcp SYN", tcpSvc, syn, gBackendTCP},
		{"tcp data, DF", tcpSvc, goldenFlow(lb.TCP, gClient, gVIPTCP, payload(100)), gBackendTCP},
		{"tcp odd length", tcpSvc, goldenFlow(lb.TCP, gClient, gVIPTCP, payload(101)), gBackendTCP},
		{"tcp large", tcpSvc, goldenFlow(lb.TCP, netip.MustParseAddrPort("192.168.200.254:65535"), gVIPTCP, payload(1400)), gBackendTCP},
		{"tcp frame longer than IP packet", tcpSvc, padded, gBackendTCP},
		{"udp", udpSvc, goldenFlow(lb.UDP, gClient, gVIPUDP, payload(33)), gBackendUDP},
		{"udp large", udpSvc, goldenFlow(lb.UDP, netip.MustParseAddrPort("172.16.9.1:1"), gVIPUDP, payload(1400)), gBackendUDP},
		{"udp empty", udpSvc, goldenFlow(lb.UDP, gClient, gVIPUDP, nil), gBackendUDP},
	}
	for _, c := range cases {
		in := goldenBuild(t, c.in)
		want := goldenBuild(t, goldenDNAT(c.in, c.to))
		for _, h := range goldenAllHooks {
			t.Run(c.name+"/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				if !h.forward {
					// Egress does reverse NAT only: a packet for a
					// frontend is not for it.
					g.requireCounted(t, goldenCounts{Passed: 1}, len(in), func() { g.untouched(t, h, in) })
					g.requireNoConntrack(t)
					return
				}
				g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(in), func() { g.translated(t, h, in, want) })
				fwd := g.requireFlow(t, c.svc.Frontend, c.in.Src, c.to)
				if fwd.Packets != 1 || fwd.Bytes != uint64(len(in)) {
					t.Fatalf("forward entry counts %d packets, %d bytes; want 1, %d", fwd.Packets, fwd.Bytes, len(in))
				}
				if n := len(g.conntrack(t)); n != 2 {
					t.Fatalf("conntrack holds %d entries, want 2 (forward and reply)", n)
				}
				// The next packet of the flow is established and
				// translated the same way.
				g.requireCounted(t, goldenCounts{ForwardEst: 1}, len(in), func() { g.translated(t, h, in, want) })
			})
		}
	}
}

// --- 2. reverse NAT ---

func TestGoldenReverseNAT(t *testing.T) {
	tcpSvc := goldenService(lb.TCP, gVIPTCP, gBackendTCP)
	udpSvc := goldenService(lb.UDP, gVIPUDP, gBackendUDP)
	g := newGolden(t, tcpSvc, udpSvc)
	other := netip.MustParseAddrPort("10.0.1.99:8080")

	for _, svc := range []lb.Service{tcpSvc, udpSvc} {
		proto, fe, be := svc.Frontend.Protocol, svc.Frontend.Address, svc.Backends[0].Address
		fwdPkt := goldenFlow(proto, gClient, fe, []byte("GET / HTTP/1.1\r\n\r\n"))
		fwdIn, fwdWant := goldenBuild(t, fwdPkt), goldenBuild(t, goldenDNAT(fwdPkt, be))
		reply := goldenFlow(proto, be, gClient, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
		replyIn, replyWant := goldenBuild(t, reply), goldenBuild(t, goldenSNAT(reply, fe))

		for _, fh := range goldenForwardHooks {
			for _, rh := range goldenReplyHooks {
				t.Run(fmt.Sprintf("%s/forward %s/reply %s", proto, fh.name, rh.name), func(t *testing.T) {
					g.flushConntrack(t)
					g.translated(t, fh, fwdIn, fwdWant)
					g.requireCounted(t, goldenCounts{Replies: 1}, len(replyIn), func() { g.translated(t, rh, replyIn, replyWant) })
					rep := g.conntrack(t)[goldenCtKey(be, gClient, proto, gCTReply)]
					if rep.Packets != 1 || rep.Bytes != uint64(len(replyIn)) {
						t.Fatalf("reply entry counts %d packets, %d bytes; want 1, %d", rep.Packets, rep.Bytes, len(replyIn))
					}
					g.requireCounted(t, goldenCounts{Replies: 1}, len(replyIn), func() { g.translated(t, rh, replyIn, replyWant) })
				})
			}
		}

		// Reply-shaped packets that match no conntrack entry.
		otherProto := lb.UDP
		if proto == lb.UDP {
			otherProto = lb.TCP
		}
		noState := []struct {
			name      string
			withState bool // after a forward packet created state
			pkt       packets.IPv4
		}{
			{"no conntrack at all", false, reply},
			{"other client port", true, goldenFlow(proto, be, netip.AddrPortFrom(gClient.Addr(), gClient.Port()+1), nil)},
			{"other client", true, goldenFlow(proto, be, netip.MustParseAddrPort("10.0.0.2:40000"), nil)},
			{"other backend port", true, goldenFlow(proto, netip.AddrPortFrom(be.Addr(), be.Port()+1), gClient, nil)},
			{"other backend", true, goldenFlow(proto, other, gClient, nil)},
			{"other protocol", true, goldenFlow(otherProto, be, gClient, nil)},
			{"client to the backend directly", true, goldenFlow(proto, gClient, be, nil)},
		}
		for _, c := range noState {
			in := goldenBuild(t, c.pkt)
			for _, h := range goldenAllHooks {
				t.Run(fmt.Sprintf("%s/untracked/%s/%s", proto, c.name, h.name), func(t *testing.T) {
					g.flushConntrack(t)
					if c.withState {
						g.translated(t, goldenTCIngress, fwdIn, fwdWant)
					}
					before := g.conntrack(t)
					g.requireCounted(t, goldenCounts{Passed: 1}, len(in), func() { g.untouched(t, h, in) })
					after := g.conntrack(t)
					if len(after) != len(before) {
						t.Fatalf("conntrack went from %d to %d entries", len(before), len(after))
					}
					for k, v := range after {
						if before[k].Packets != v.Packets {
							t.Fatalf("conntrack entry %+v counted the untracked packet", k)
						}
					}
				})
			}
		}
	}
}

// --- 3. established flows ---

func TestGoldenEstablishedFlow(t *testing.T) {
	a, b, c := gBackends[0], gBackends[1], gBackends[2]
	g := newGolden(t)
	for _, h := range goldenForwardHooks {
		t.Run(h.name, func(t *testing.T) {
			g.flushConntrack(t)
			g.upsert(t, goldenService(lb.TCP, gVIPTCP, a))
			fe := lb.Frontend{Address: gVIPTCP, Protocol: lb.TCP}
			pkt := goldenFlow(lb.TCP, gClient, gVIPTCP, []byte("data"))
			in := goldenBuild(t, pkt)
			want := func(be netip.AddrPort) []byte { return goldenBuild(t, goldenDNAT(pkt, be)) }

			g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(in), func() { g.translated(t, h, in, want(a)) })
			g.requireFlow(t, fe, gClient, a)

			// The service grows: the flow stays on a.
			g.upsert(t, goldenService(lb.TCP, gVIPTCP, a, b, c))
			g.requireCounted(t, goldenCounts{ForwardEst: 16}, 16*len(in), func() {
				for range 16 {
					g.translated(t, h, in, want(a))
				}
			})
			if fwd := g.requireFlow(t, fe, gClient, a); fwd.Packets != 17 {
				t.Fatalf("forward entry counts %d packets, want 17", fwd.Packets)
			}
			// ...while new flows do use the new backends.
			seen := map[netip.AddrPort]int{}
			for i := range 40 {
				client := netip.AddrPortFrom(gClient.Addr(), uint16(20000+i))
				p := goldenFlow(lb.TCP, client, gVIPTCP, nil)
				be := g.sentTo(t, h, goldenBuild(t, p), p, a, b, c)
				g.requireFlow(t, fe, client, be)
				seen[be]++
			}
			if seen[b]+seen[c] == 0 {
				t.Fatalf("40 new flows all went to %s, none to the new backends: %v", a, seen)
			}

			// Its backend goes: the flow moves to one that remains, and
			// stays there.
			g.upsert(t, goldenService(lb.TCP, gVIPTCP, b, c))
			var moved netip.AddrPort
			g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(in), func() { moved = g.sentTo(t, h, in, pkt, b, c) })
			g.requireFlow(t, fe, gClient, moved)
			g.requireCounted(t, goldenCounts{ForwardEst: 8}, 8*len(in), func() {
				for range 8 {
					g.translated(t, h, in, want(moved))
				}
			})
			// Replies from the new backend are translated back.
			reply := goldenFlow(lb.TCP, moved, gClient, []byte("ok"))
			g.translated(t, goldenTCEgress, goldenBuild(t, reply), goldenBuild(t, goldenSNAT(reply, gVIPTCP)))
		})
	}
}

// A flow whose backend is gone and whose backend id now belongs to another
// service's backend must not follow the id to that stranger.
func TestGoldenReusedBackendID(t *testing.T) {
	const maxBackends = 4
	g := newGoldenLimits(t, datapath.Limits{MaxBackends: maxBackends})
	a, b := gBackends[0], gBackends[1]
	fe := lb.Frontend{Address: gVIPTCP, Protocol: lb.TCP}
	otherFE := netip.MustParseAddrPort("10.96.0.20:80")
	strangers := []netip.AddrPort{
		netip.MustParseAddrPort("10.0.9.1:9090"),
		netip.MustParseAddrPort("10.0.9.2:9090"),
		netip.MustParseAddrPort("10.0.9.3:9090"),
	}
	pkt := goldenFlow(lb.TCP, gClient, gVIPTCP, []byte("hello"))
	in := goldenBuild(t, pkt)
	for _, h := range goldenForwardHooks {
		t.Run(h.name, func(t *testing.T) {
			g.flushConntrack(t)
			if _, ok := g.mgr.Get(lb.Frontend{Address: otherFE, Protocol: lb.TCP}); ok {
				if err := g.mgr.Delete(lb.Frontend{Address: otherFE, Protocol: lb.TCP}); err != nil {
					t.Fatal(err)
				}
			}
			g.upsert(t, goldenService(lb.TCP, gVIPTCP, a))
			_, ids := g.ids(t, fe)
			idA := ids[a]
			g.translated(t, h, in, goldenBuild(t, goldenDNAT(pkt, a)))

			// a goes; the other service takes every free id, a's too.
			g.upsert(t, goldenService(lb.TCP, gVIPTCP, b))
			g.upsert(t, goldenService(lb.TCP, otherFE, strangers...))
			_, otherIDs := g.ids(t, lb.Frontend{Address: otherFE, Protocol: lb.TCP})
			reused := false
			for _, id := range otherIDs {
				reused = reused || id == idA
			}
			if !reused {
				t.Fatalf("test setup: backend id %d of %s was not reused (other service has %v)", idA, a, otherIDs)
			}

			g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(in), func() {
				g.translated(t, h, in, goldenBuild(t, goldenDNAT(pkt, b)))
			})
			g.requireFlow(t, fe, gClient, b)
		})
	}
}

// A backend id freed and reused within the same service (as after a
// restart, when the allocator starts over) must not capture the old
// backend's flows: the conntrack entry carries the backend's cookie, so the
// flow is balanced afresh to the newcomer, reply entry and all.
func TestGoldenReusedBackendIDSameService(t *testing.T) {
	g := newGoldenLimits(t, datapath.Limits{MaxBackends: 2})
	a, b, c := gBackends[0], gBackends[1], gBackends[2]
	fe := lb.Frontend{Address: gVIPUDP, Protocol: lb.UDP}
	for i, be := range []*netip.AddrPort{&a, &b, &c} {
		*be = netip.AddrPortFrom(gBackends[i].Addr(), gBackendUDP.Port())
	}
	pkt := goldenFlow(lb.UDP, gClient, gVIPUDP, []byte("query"))
	in := goldenBuild(t, pkt)
	for _, h := range goldenForwardHooks {
		t.Run(h.name, func(t *testing.T) {
			g.flushConntrack(t)
			g.upsert(t, goldenService(lb.UDP, gVIPUDP, a))
			_, ids := g.ids(t, fe)
			idA := ids[a]
			g.translated(t, h, in, goldenBuild(t, goldenDNAT(pkt, a)))

			// a goes, b comes, then b goes and c comes: with two ids,
			// c gets a's.
			g.upsert(t, goldenService(lb.UDP, gVIPUDP, b))
			g.upsert(t, goldenService(lb.UDP, gVIPUDP, c))
			if _, ids := g.ids(t, fe); ids[c] != idA {
				t.Fatalf("test setup: %s got id %d, want a's id %d", c, ids[c], idA)
			}

			g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(in), func() {
				g.translated(t, h, in, goldenBuild(t, goldenDNAT(pkt, c)))
			})
			g.requireFlow(t, fe, gClient, c)
			reply := goldenFlow(lb.UDP, c, gClient, []byte("answer"))
			g.translated(t, goldenReplyHookFor(h), goldenBuild(t, reply), goldenBuild(t, goldenSNAT(reply, gVIPUDP)))
		})
	}
}

// sentTo runs in (built from p) through h, requires it to come out DNATed
// to exactly one of backends and returns which.
func (g *golden) sentTo(t *testing.T, h goldenHook, in []byte, p packets.IPv4, backends ...netip.AddrPort) netip.AddrPort {
	t.Helper()
	return g.sentToWant(t, h, in, func(be netip.AddrPort) []byte { return goldenBuild(t, goldenDNAT(p, be)) }, backends...)
}

// sentToWant runs in through h, requires it to come out as exactly
// want(be) for one of backends and returns which.
func (g *golden) sentToWant(t *testing.T, h goldenHook, in []byte, want func(netip.AddrPort) []byte, backends ...netip.AddrPort) netip.AddrPort {
	t.Helper()
	out := g.pass(t, h, in)
	goldenRequireChecksums(t, h.name, out)
	for _, be := range backends {
		if bytes.Equal(out, want(be)) {
			return be
		}
	}
	t.Fatalf("%s: output is not the DNAT to any of %v:\n%s", h.name, backends, hex.Dump(out))
	return netip.AddrPort{}
}

// --- 4. traffic not for a service ---

func TestGoldenNotForAService(t *testing.T) {
	g := newGolden(t, goldenService(lb.TCP, gVIPTCP, gBackendTCP), goldenService(lb.UDP, gVIPUDP, gBackendUDP))
	body := bytes.Repeat([]byte{0xab}, 24)
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	firstFrag := goldenFlow(lb.TCP, gClient, gVIPTCP, body)
	firstFrag.Flags = layers.IPv4MoreFragments
	firstFragUDP := goldenFlow(lb.UDP, gClient, gVIPUDP, body)
	firstFragUDP.Flags = layers.IPv4MoreFragments
	// A later fragment whose body happens to look like a TCP header for
	// the service.
	fakeTCP := goldenBuild(t, goldenFlow(lb.TCP, gClient, gVIPTCP, nil))[packets.EthLen+packets.IPv4Len:][:packets.TCPLen]
	laterFrag := packets.IPv4{Src: gClient, Dst: gVIPTCP, Proto: layers.IPProtocolTCP, NoL4Header: true,
		FragOffset: 185, Payload: append(append([]byte{}, fakeTCP...), body...)}
	lastFrag := laterFrag
	lastFrag.Flags = 0
	midFrag := laterFrag
	midFrag.Flags = layers.IPv4MoreFragments
	shortLastFrag := packets.IPv4{Src: gClient, Dst: gVIPTCP, Proto: layers.IPProtocolTCP, NoL4Header: true,
		FragOffset: 3, Payload: []byte("tail1234")}
	shortLastFragUDP := packets.IPv4{Src: gClient, Dst: gVIPUDP, Proto: layers.IPProtocolUDP, NoL4Header: true,
		FragOffset: 1, Payload: []byte("end")}
	icmp := packets.IPv4{Src: gClient, Dst: netip.AddrPortFrom(gVIPTCP.Addr(), 0), Proto: layers.IPProtocolICMPv4, Payload: body}

	// A fragment whose body is shorter than the transport header is still
	// a well-formed fragment, not a malformed packet.
	cases := []struct {
		name string
		in   []byte
		want goldenCounts
	}{
		{name: "tcp to another port of the VIP", in: goldenBuild(t, goldenFlow(lb.TCP, gClient, netip.AddrPortFrom(gVIPTCP.Addr(), 81), nil)), want: goldenCounts{Passed: 1}},
		{name: "tcp to the udp service port", in: goldenBuild(t, goldenFlow(lb.TCP, gClient, gVIPUDP, nil)), want: goldenCounts{Passed: 1}},
		{name: "udp to the tcp service port", in: goldenBuild(t, goldenFlow(lb.UDP, gClient, gVIPTCP, nil)), want: goldenCounts{Passed: 1}},
		{name: "tcp to another address", in: goldenBuild(t, goldenFlow(lb.TCP, gClient, netip.MustParseAddrPort("10.96.0.11:80"), nil)), want: goldenCounts{Passed: 1}},
		{name: "udp to another address", in: goldenBuild(t, goldenFlow(lb.UDP, gClient, netip.MustParseAddrPort("192.168.1.1:53"), body)), want: goldenCounts{Passed: 1}},
		{name: "icmp echo to the VIP", in: goldenBuild(t, icmp), want: goldenCounts{Passed: 1}},
		{name: "arp for the VIP", in: must(packets.ARPRequest(gClient.Addr(), gVIPTCP.Addr())), want: goldenCounts{Passed: 1}},
		{name: "ipv6 tcp", in: must(packets.IPv6TCP(netip.MustParseAddrPort("[fd00::1]:40000"), netip.MustParseAddrPort("[fd00::10]:80"), nil)), want: goldenCounts{Passed: 1}},
		{name: "ipv6 tcp to the v4-mapped VIP", in: must(packets.IPv6TCP(netip.MustParseAddrPort("[fd00::1]:40000"),
			netip.AddrPortFrom(netip.AddrFrom16(gVIPTCP.Addr().As16()), 80), nil)), want: goldenCounts{Passed: 1}},
		{name: "first fragment (MF) tcp to the service", in: goldenBuild(t, firstFrag), want: goldenCounts{Fragments: 1}},
		{name: "first fragment (MF) udp to the service", in: goldenBuild(t, firstFragUDP), want: goldenCounts{Fragments: 1}},
		{name: "middle fragment (MF, offset)", in: goldenBuild(t, midFrag), want: goldenCounts{Fragments: 1}},
		{name: "last fragment (offset)", in: goldenBuild(t, lastFrag), want: goldenCounts{Fragments: 1}},
		{name: "short last tcp fragment", in: goldenBuild(t, shortLastFrag), want: goldenCounts{Fragments: 1}},
		{name: "short last udp fragment", in: goldenBuild(t, shortLastFragUDP), want: goldenCounts{Fragments: 1}},
	}
	for _, c := range cases {
		for _, h := range goldenAllHooks {
			t.Run(c.name+"/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				before := g.counts(t)
				g.untouched(t, h, c.in)
				got := g.counts(t).sub(before)
				g.requireNoConntrack(t)
				want := c.want
				want.bytes = uint64(len(c.in))
				if got != want {
					t.Fatalf("counters moved by %+v, want %+v", got, want)
				}
			})
		}
	}
}

// --- 5. truncated and malformed ---

func TestGoldenMalformed(t *testing.T) {
	// Besides the services the packets are for, trap services catch the
	// packets whose bad ihl a lax parser would follow: with ihl 4 the
	// "ports" are the last two bytes of the destination address (port
	// 10), with ihl 0 they are the total length (port 56).
	g := newGolden(t, goldenService(lb.TCP, gVIPTCP, gBackendTCP), goldenService(lb.UDP, gVIPUDP, gBackendUDP),
		goldenService(lb.TCP, netip.AddrPortFrom(gVIPTCP.Addr(), 10), gBackendTCP),
		goldenService(lb.TCP, netip.AddrPortFrom(gVIPTCP.Addr(), 56), gBackendTCP))
	body := []byte("0123456789abcdef")
	tcpPkt := goldenBuild(t, goldenFlow(lb.TCP, gClient, gVIPTCP, body))
	udpPkt := goldenBuild(t, goldenFlow(lb.UDP, gClient, gVIPUDP, body))
	tcpOpts := goldenFlow(lb.TCP, gClient, gVIPTCP, body)
	tcpOpts.Options = goldenOptsIHL6
	tcpOptsPkt := goldenBuild(t, tcpOpts)
	// ihl 4 puts a lax parser's TCP header at IP byte 16: its data
	// offset is then the top byte of the acknowledgment number, 5.
	ihl4 := goldenFlow(lb.TCP, gClient, gVIPTCP, body)
	ihl4.Ack = 0x50000000
	ihl4Pkt := goldenBuild(t, ihl4)
	// ihl 0 puts it at IP byte 0: its data offset is the top of the
	// source address, 5 for 80.0.0.1; its destination port the total
	// length, 56.
	ihl0Pkt := goldenBuild(t, goldenFlow(lb.TCP, netip.MustParseAddrPort("80.0.0.1:40000"), gVIPTCP, body))
	if tot := binary.BigEndian.Uint16(ihl0Pkt[packets.EthLen+2:]); tot != 56 {
		t.Fatalf("the ihl 0 packet has total length %d, not the trap's port 56", tot)
	}

	const (
		ipOff  = packets.EthLen
		l4Off  = packets.EthLen + packets.IPv4Len
		totOff = ipOff + 2
	)
	// mod copies frame, changes it, and fixes the IPv4 header checksum so
	// that the frame is wrong only where meant.
	mod := func(frame []byte, f func(b []byte) []byte) []byte {
		b := f(append([]byte(nil), frame...))
		packets.FixIPv4Checksum(b)
		return b
	}
	setTot := func(b []byte, n int) { binary.BigEndian.PutUint16(b[totOff:], uint16(n)) }
	// truncate cuts the IP packet to n bytes, frame and total length both.
	truncate := func(frame []byte, n int) []byte {
		return mod(frame, func(b []byte) []byte { setTot(b, n); return b[:packets.EthLen+n] })
	}

	cases := []struct {
		name string
		in   []byte
		// The kernel's BPF_PROG_TEST_RUN may refuse the frame (EINVAL):
		// it wants ETH_HLEN bytes of packet data, and for skb programs
		// a whole IPv4 header behind an IPv4 ethertype.
		kernelMayRefuse bool
	}{
		{"shorter than ethernet", tcpPkt[:packets.EthLen-1], true},
		{"ethernet header only", tcpPkt[:packets.EthLen], true},
		{"ipv4 header cut short", tcpPkt[:ipOff+12], true},
		{"ipv4 header cut short by one byte", tcpPkt[:ipOff+19], true},
		{name: "ihl 4", in: mod(ihl4Pkt, func(b []byte) []byte { b[ipOff] = 0x44; return b })},
		{name: "ihl 0", in: mod(ihl0Pkt, func(b []byte) []byte { b[ipOff] = 0x40; return b })},
		{name: "version 6 in an ipv4 frame", in: mod(tcpPkt, func(b []byte) []byte { b[ipOff] = 0x65; return b })},
		{name: "version 0", in: mod(udpPkt, func(b []byte) []byte { b[ipOff] = 0x05; return b })},
		{name: "total length one more than the frame", in: mod(tcpPkt, func(b []byte) []byte { setTot(b, len(b)-packets.EthLen+1); return b })},
		{name: "total length 1500 in a short frame", in: mod(udpPkt, func(b []byte) []byte { setTot(b, 1500); return b })},
		{name: "frame cut inside the payload", in: tcpPkt[:len(tcpPkt)-4]},
		{name: "ihl 6 with the frame cut inside the options", in: tcpOptsPkt[:ipOff+22]},
		{name: "ihl 15 beyond the total length", in: mod(tcpPkt, func(b []byte) []byte { b[ipOff] = 0x4f; return b })},
		{name: "total length below the ip header", in: mod(tcpPkt, func(b []byte) []byte { setTot(b, 16); return b })},
		{name: "tcp header cut short", in: truncate(tcpPkt, packets.IPv4Len+10)},
		{name: "tcp header cut short, total length not", in: tcpPkt[:l4Off+10]},
		{name: "tcp header cut short, padded frame", in: mod(tcpPkt, func(b []byte) []byte { setTot(b, packets.IPv4Len+19); return b })},
		{name: "tcp data offset 4", in: mod(tcpPkt, func(b []byte) []byte { b[l4Off+12] = 4 << 4; return b })},
		{name: "tcp data offset 0", in: mod(tcpPkt, func(b []byte) []byte { b[l4Off+12] = 0; return b })},
		{name: "tcp data offset beyond the segment", in: mod(goldenBuild(t, goldenFlow(lb.TCP, gClient, gVIPTCP, nil)), func(b []byte) []byte {
			setTot(b, packets.IPv4Len+packets.TCPLen)
			b[l4Off+12] = 15 << 4
			return b
		})},
		{name: "udp header cut short", in: truncate(udpPkt, packets.IPv4Len+4)},
		{name: "udp length 7", in: mod(udpPkt, func(b []byte) []byte { binary.BigEndian.PutUint16(b[l4Off+4:], 7); return b })},
		{name: "udp length 0", in: mod(udpPkt, func(b []byte) []byte { binary.BigEndian.PutUint16(b[l4Off+4:], 0); return b })},
		{name: "udp length beyond the ip packet", in: mod(udpPkt, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[l4Off+4:], uint16(packets.UDPLen+len(body)+1))
			return b
		})},
	}
	for _, c := range cases {
		for _, h := range goldenAllHooks {
			t.Run(c.name+"/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				if c.kernelMayRefuse {
					if _, _, err := g.runErr(h, c.in); errors.Is(err, unix.EINVAL) {
						t.Skipf("not testable here: BPF_PROG_TEST_RUN refuses this %d-byte frame for %s: %v", len(c.in), h.name, err)
					}
					g.flushConntrack(t)
				}
				g.requireCounted(t, goldenCounts{Malformed: 1}, len(c.in), func() { g.untouched(t, h, c.in) })
				g.requireNoConntrack(t)
			})
		}
	}

	// A valid packet after all of those is still translated, so the
	// service was live throughout.
	t.Run("control", func(t *testing.T) {
		for _, h := range goldenForwardHooks {
			g.flushConntrack(t)
			g.translated(t, h, tcpPkt, goldenBuild(t, goldenDNAT(goldenFlow(lb.TCP, gClient, gVIPTCP, body), gBackendTCP)))
		}
	})
}

// --- 6. IPv4 options ---

var (
	// ihl 6: three NOPs and an end of options.
	goldenOptsIHL6 = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
	// ihl 15: a NOP and a record-route option with room for nine hops.
	goldenOptsIHL15 = []layers.IPv4Option{{OptionType: 1}, {OptionType: 7, OptionLength: 39, OptionData: append([]byte{4}, make([]byte, 36)...)}}
	// ihl 8: router alert, a timestamp option, end of options.
	goldenOptsIHL8 = []layers.IPv4Option{
		{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}},
		{OptionType: 68, OptionLength: 8, OptionData: []byte{5, 0, 0, 0, 0, 0}},
	}
)

func TestGoldenIPv4Options(t *testing.T) {
	tcpSvc := goldenService(lb.TCP, gVIPTCP, gBackendTCP)
	udpSvc := goldenService(lb.UDP, gVIPUDP, gBackendUDP)
	g := newGolden(t, tcpSvc, udpSvc)

	for _, o := range []struct {
		name string
		ihl  int
		opts []layers.IPv4Option
	}{{"ihl 6", 6, goldenOptsIHL6}, {"ihl 8", 8, goldenOptsIHL8}, {"ihl 15", 15, goldenOptsIHL15}} {
		for _, svc := range []lb.Service{tcpSvc, udpSvc} {
			proto, fe, be := svc.Frontend.Protocol, svc.Frontend.Address, svc.Backends[0].Address
			fwd := goldenFlow(proto, gClient, fe, []byte("options ahead of me"))
			fwd.Options = o.opts
			reply := goldenFlow(proto, be, gClient, []byte("and of my reply"))
			reply.Options = o.opts
			fwdIn, fwdWant := goldenBuild(t, fwd), goldenBuild(t, goldenDNAT(fwd, be))
			replyIn, replyWant := goldenBuild(t, reply), goldenBuild(t, goldenSNAT(reply, fe))
			if got := int(fwdIn[packets.EthLen] & 0x0f); got != o.ihl {
				t.Fatalf("%s: built a header with ihl %d", o.name, got)
			}
			for _, h := range goldenAllHooks {
				t.Run(fmt.Sprintf("%s/%s/%s", o.name, proto, h.name), func(t *testing.T) {
					g.flushConntrack(t)
					if !h.forward {
						g.untouched(t, h, fwdIn)
						g.translated(t, goldenTCIngress, fwdIn, fwdWant)
					} else {
						g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(fwdIn), func() { g.translated(t, h, fwdIn, fwdWant) })
					}
					g.requireFlow(t, svc.Frontend, gClient, be)
					if h.forward && h.name != goldenXDP.name {
						// tc ingress leaves replies to tc egress.
						g.requireCounted(t, goldenCounts{Passed: 1}, len(replyIn), func() { g.untouched(t, h, replyIn) })
						return
					}
					g.requireCounted(t, goldenCounts{Replies: 1}, len(replyIn), func() { g.translated(t, h, replyIn, replyWant) })
				})
			}
		}
	}
}

// --- 7. UDP checksums ---

func TestGoldenUDPChecksum(t *testing.T) {
	svc := goldenService(lb.UDP, gVIPUDP, gBackendUDP)
	g := newGolden(t, svc)
	udpCheck := func(frame []byte) uint16 {
		l, err := packets.Parse(frame)
		if err != nil {
			t.Fatal(err)
		}
		return binary.BigEndian.Uint16(frame[l.L4+6:])
	}

	t.Run("zero stays zero", func(t *testing.T) {
		fwd := goldenFlow(lb.UDP, gClient, gVIPUDP, []byte("no checksum"))
		fwd.UDPNoChecksum = true
		reply := goldenFlow(lb.UDP, gBackendUDP, gClient, []byte("none here either"))
		reply.UDPNoChecksum = true
		fwdIn, fwdWant := goldenBuild(t, fwd), goldenBuild(t, goldenDNAT(fwd, gBackendUDP))
		replyIn, replyWant := goldenBuild(t, reply), goldenBuild(t, goldenSNAT(reply, gVIPUDP))
		if udpCheck(fwdIn) != 0 || udpCheck(fwdWant) != 0 || udpCheck(replyWant) != 0 {
			t.Fatal("the inputs do not have UDP checksum 0")
		}
		for _, fh := range goldenForwardHooks {
			for _, rh := range goldenReplyHooks {
				t.Run(fh.name+"/"+rh.name, func(t *testing.T) {
					g.flushConntrack(t)
					g.translated(t, fh, fwdIn, fwdWant)
					g.translated(t, rh, replyIn, replyWant)
				})
			}
		}
	})

	t.Run("real checksum is updated", func(t *testing.T) {
		fwd := goldenFlow(lb.UDP, gClient, gVIPUDP, []byte("with checksum"))
		reply := goldenFlow(lb.UDP, gBackendUDP, gClient, []byte("with checksum too"))
		fwdIn, fwdWant := goldenBuild(t, fwd), goldenBuild(t, goldenDNAT(fwd, gBackendUDP))
		replyIn, replyWant := goldenBuild(t, reply), goldenBuild(t, goldenSNAT(reply, gVIPUDP))
		if udpCheck(fwdIn) == 0 || udpCheck(fwdWant) == udpCheck(fwdIn) {
			t.Fatal("the test packets do not exercise a checksum change")
		}
		for _, fh := range goldenForwardHooks {
			for _, rh := range goldenReplyHooks {
				t.Run(fh.name+"/"+rh.name, func(t *testing.T) {
					g.flushConntrack(t)
					g.translated(t, fh, fwdIn, fwdWant)
					g.translated(t, rh, replyIn, replyWant)
				})
			}
		}
	})

	// A payload chosen so that the translated datagram's checksum
	// computes to 0, which must go out as 0xffff (0 would mean "none").
	t.Run("computed zero is sent as 0xffff", func(t *testing.T) {
		zeroing := func(p packets.IPv4, translated func(packets.IPv4) packets.IPv4) (in, want []byte) {
			p.Payload = []byte{0, 0}
			c := udpCheck(goldenBuild(t, translated(p)))
			p.Payload = []byte{byte(c >> 8), byte(c)}
			in, want = goldenBuild(t, p), goldenBuild(t, translated(p))
			if udpCheck(want) != 0 {
				t.Fatalf("payload tuning failed: translated checksum %#04x", udpCheck(want))
			}
			l, _ := packets.Parse(want)
			want[l.L4+6], want[l.L4+7] = 0xff, 0xff
			return in, want
		}
		fwdIn, fwdWant := zeroing(goldenFlow(lb.UDP, gClient, gVIPUDP, nil), func(p packets.IPv4) packets.IPv4 { return goldenDNAT(p, gBackendUDP) })
		replyIn, replyWant := zeroing(goldenFlow(lb.UDP, gBackendUDP, gClient, nil), func(p packets.IPv4) packets.IPv4 { return goldenSNAT(p, gVIPUDP) })
		for _, fh := range goldenForwardHooks {
			for _, rh := range goldenReplyHooks {
				t.Run(fh.name+"/"+rh.name, func(t *testing.T) {
					g.flushConntrack(t)
					g.translated(t, fh, fwdIn, fwdWant)
					g.translated(t, rh, replyIn, replyWant)
				})
			}
		}
	})
}

// --- 8. no backends ---

func TestGoldenNoBackend(t *testing.T) {
	tcpSvc := goldenService(lb.TCP, gVIPTCP)
	udpSvc := goldenService(lb.UDP, gVIPUDP)
	g := newGolden(t, tcpSvc, udpSvc)

	for _, svc := range []lb.Service{tcpSvc, udpSvc} {
		proto := svc.Frontend.Protocol
		in := goldenBuild(t, goldenFlow(proto, gClient, svc.Frontend.Address, []byte("anyone?")))
		for _, h := range goldenAllHooks {
			t.Run(fmt.Sprintf("%s/%s", proto, h.name), func(t *testing.T) {
				g.flushConntrack(t)
				if !h.forward {
					g.requireCounted(t, goldenCounts{Passed: 1}, len(in), func() { g.untouched(t, h, in) })
					g.requireNoConntrack(t)
					return
				}
				g.requireCounted(t, goldenCounts{NoBackend: 1}, len(in), func() { goldenRequireReject(t, g, h, in) })
				g.requireNoConntrack(t)
			})
		}
	}

	// A service that loses all its backends rejects its established flows.
	for _, h := range goldenForwardHooks {
		t.Run("established/"+h.name, func(t *testing.T) {
			g.flushConntrack(t)
			p := goldenFlow(lb.TCP, gClient, gVIPTCP, nil)
			in := goldenBuild(t, p)
			g.upsert(t, goldenService(lb.TCP, gVIPTCP, gBackendTCP))
			g.translated(t, h, in, goldenBuild(t, goldenDNAT(p, gBackendTCP)))
			g.upsert(t, goldenService(lb.TCP, gVIPTCP))
			g.requireCounted(t, goldenCounts{NoBackend: 1}, len(in), func() { goldenRequireReject(t, g, h, in) })
		})
	}
}

// goldenRequireReject runs in through h and requires the reject: XDP_TX
// or a tc redirect, of an ICMP port unreachable from the frontend to the
// client, with valid checksums. (lb/reject_test.go checks its exact bytes.)
func goldenRequireReject(t *testing.T, g *golden, h goldenHook, in []byte) {
	t.Helper()
	const xdpTX, tcRedirect = 3, 7
	want := uint32(tcRedirect)
	if h.name == goldenXDP.name {
		want = xdpTX
	}
	// The reject resets the skb's checksum state to CHECKSUM_NONE (it
	// must, for locally sent packets with partial checksums), after which
	// skb->csum means nothing; BPF_PROG_TEST_RUN's CHECKSUM_COMPLETE mode
	// would still compare it with the data, so that mode is not used here.
	h.flags &^= gTestSKBChecksumComplete
	ret, out := g.run(t, h, in)
	if ret != want {
		t.Fatalf("%s: verdict %#x, want reject (%#x)", h.name, ret, want)
	}
	p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if ip == nil || icmp == nil || icmp.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort) {
		t.Fatalf("%s: not an ICMP port unreachable:\n%s", h.name, hex.Dump(out))
	}
	if !ip.SrcIP.Equal(gVIPTCP.Addr().AsSlice()) || !ip.DstIP.Equal(gClient.Addr().AsSlice()) {
		t.Fatalf("%s: reject from %s to %s, want from the frontend to the client", h.name, ip.SrcIP, ip.DstIP)
	}
	if s := packets.Sum(0, out[packets.EthLen:packets.EthLen+20]); s != 0xffff {
		t.Fatalf("%s: IPv4 header checksum wrong (sums to %#x)", h.name, s)
	}
	if s := packets.Sum(0, out[packets.EthLen+20:]); s != 0xffff {
		t.Fatalf("%s: ICMP checksum wrong (sums to %#x)", h.name, s)
	}
}

// --- 9. per-backend counters, multi-backend DNAT ---

func TestGoldenBackendCounters(t *testing.T) {
	svc := goldenService(lb.TCP, gVIPTCP, gBackends...)
	other := goldenService(lb.UDP, gVIPUDP, gBackendUDP)
	g := newGolden(t, other)
	for _, h := range goldenForwardHooks {
		t.Run(h.name, func(t *testing.T) {
			// A fresh service: its backends' counters start at zero.
			g.flushConntrack(t)
			g.upsert(t, svc)
			t.Cleanup(func() {
				if err := g.mgr.Delete(svc.Frontend); err != nil {
					t.Error(err)
				}
			})
			sent := map[netip.AddrPort]uint64{}
			bytesTo := map[netip.AddrPort]uint64{}
			const flows = 60
			for i := range flows {
				client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(1 + i%7)}), uint16(30000+i))
				p := goldenFlow(lb.TCP, client, gVIPTCP, bytes.Repeat([]byte{'x'}, i))
				in := goldenBuild(t, p)
				be := g.sentTo(t, h, in, p, gBackends...)
				g.requireFlow(t, svc.Frontend, client, be)
				sent[be]++
				bytesTo[be] += uint64(len(in))
				if i%3 == 0 {
					// A second packet of the flow counts too.
					g.translated(t, h, in, goldenBuild(t, goldenDNAT(p, be)))
					sent[be]++
					bytesTo[be] += uint64(len(in))
				}
				if i%5 == 0 {
					// Replies do not count for the backend.
					r := goldenFlow(lb.TCP, be, client, []byte("reply"))
					g.translated(t, goldenReplyHookFor(h), goldenBuild(t, r), goldenBuild(t, goldenSNAT(r, gVIPTCP)))
				}
			}
			if len(sent) < 2 {
				t.Fatalf("%d flows over 3 backends all went to one: %v", flows, sent)
			}

			st, err := lb.ReadStatus(g.dp)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range st {
				for _, b := range s.Backends {
					want, wantBytes := sent[b.Address], bytesTo[b.Address]
					if s.Frontend != svc.Frontend {
						want, wantBytes = 0, 0
					}
					if b.Packets != want || b.Bytes != wantBytes {
						t.Errorf("%s backend %s: status says %d packets, %d bytes; sent %d, %d",
							s.Frontend, b.Address, b.Packets, b.Bytes, want, wantBytes)
					}
				}
			}
			t.Logf("flows per backend: %v", sent)
		})
	}
}
