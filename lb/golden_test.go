package lb_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
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
// gopacket (IPv6 extension headers written by packets), the programs run
// through BPF_PROG_TEST_RUN on every hook the packet applies to, and
// outputs are compared byte for byte, with checksums also checked by
// packets' own arithmetic. The cases both address families have run in
// each, as subtests named ipv4 and ipv6; golden_ipv4_test.go and
// golden_ipv6_test.go hold the cases of one family's own headers.

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
	return newGoldenWith(t, datapath.Options{Limits: limits}, svcs...)
}

func newGoldenWith(t *testing.T, opts datapath.Options, svcs ...lb.Service) *golden {
	t.Helper()
	dir := testutil.BPFFS(t)
	opts.Dir = dir
	dp, err := datapath.Open(opts)
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
	t.Cleanup(func() { mgr.Close() }) // before Remove, which refuses while it is open
	g := &golden{dp: dp, mgr: mgr}
	arp, err := packets.ARPRequest(goldenIPv4.client.Addr(), goldenIPv4.vipTCP.Addr())
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

// --- packets of either family ---

// goldenIP is a packet description of either family.
type goldenIP interface {
	packets.IPv4 | packets.IPv6
	Build() ([]byte, error)
}

// goldenFamily is what the golden tests that run in both families need of
// one: its addresses, and its packet builder. P is packets.IPv4 or
// packets.IPv6.
type goldenFamily[P goldenIP] struct {
	name                   string // the subtest: ipv4, ipv6
	client                 netip.AddrPort
	vipTCP, vipUDP         netip.AddrPort
	backendTCP, backendUDP netip.AddrPort // backends[0]'s address
	backends               [3]netip.AddrPort
	// farTCP and farUDP are clients far from client, at the ends of the
	// port range.
	farTCP, farUDP netip.AddrPort
	// Addresses one byte off client, a VIP and backends[0], in their last
	// or their first byte: a lookup that compared part of an address
	// would take them for those.
	clientLast, clientFirst netip.Addr
	vipLast, vipFirst       netip.Addr
	backendFirst            netip.Addr
	// otherBackend and strangers are backends of no service at first;
	// otherVIP is a VIP of no service at first; elsewhere is an address
	// that is none of these.
	otherBackend netip.AddrPort
	strangers    [3]netip.AddrPort
	otherVIP     netip.Addr
	elsewhere    netip.Addr
	icmp         layers.IPProtocol // the family's ICMP, for an echo request
	// mf names the more-fragments flag; length the IP header field that
	// gives the packet's length, which counts the bytes from lengthFrom
	// on and sits at lengthOff.
	mf                    string
	length                string
	lengthOff, lengthFrom int
	// flow builds a client packet: goldenFlow or goldenFlow6.
	flow func(proto lb.Protocol, src, dst netip.AddrPort, payload []byte) P
}

var (
	goldenIPv4 = goldenFamily[packets.IPv4]{
		name:       "ipv4",
		client:     netip.MustParseAddrPort("10.0.0.1:40000"),
		vipTCP:     netip.MustParseAddrPort("10.96.0.10:80"),
		vipUDP:     netip.MustParseAddrPort("10.96.0.10:53"),
		backendTCP: netip.MustParseAddrPort("10.0.1.2:8080"),
		backendUDP: netip.MustParseAddrPort("10.0.1.2:5353"),
		backends: [3]netip.AddrPort{
			netip.MustParseAddrPort("10.0.1.2:8080"),
			netip.MustParseAddrPort("10.0.1.3:8080"),
			netip.MustParseAddrPort("10.0.1.4:8080"),
		},
		farTCP:       netip.MustParseAddrPort("192.168.200.254:65535"),
		farUDP:       netip.MustParseAddrPort("172.16.9.1:1"),
		clientLast:   netip.MustParseAddr("10.0.0.2"),
		clientFirst:  netip.MustParseAddr("11.0.0.1"),
		vipLast:      netip.MustParseAddr("10.96.0.11"),
		vipFirst:     netip.MustParseAddr("11.96.0.10"),
		backendFirst: netip.MustParseAddr("11.0.1.2"),
		otherBackend: netip.MustParseAddrPort("10.0.1.99:8080"),
		strangers: [3]netip.AddrPort{
			netip.MustParseAddrPort("10.0.9.1:9090"),
			netip.MustParseAddrPort("10.0.9.2:9090"),
			netip.MustParseAddrPort("10.0.9.3:9090"),
		},
		otherVIP:   netip.MustParseAddr("10.96.0.20"),
		elsewhere:  netip.MustParseAddr("192.168.1.1"),
		icmp:       layers.IPProtocolICMPv4,
		mf:         "MF",
		length:     "total length",
		lengthOff:  packets.EthLen + 2,
		lengthFrom: packets.EthLen,
		flow:       goldenFlow,
	}
	goldenIPv6 = goldenFamily[packets.IPv6]{
		name:       "ipv6",
		client:     netip.MustParseAddrPort("[fd00:9::2]:40000"),
		vipTCP:     netip.MustParseAddrPort("[fd00::10]:80"),
		vipUDP:     netip.MustParseAddrPort("[fd00::10]:53"),
		backendTCP: netip.MustParseAddrPort("[fd00:1::2]:8080"),
		backendUDP: netip.MustParseAddrPort("[fd00:1::2]:5353"),
		backends: [3]netip.AddrPort{
			netip.MustParseAddrPort("[fd00:1::2]:8080"),
			netip.MustParseAddrPort("[fd00:1::3]:8080"),
			netip.MustParseAddrPort("[fd00:1::4]:8080"),
		},
		farTCP:       netip.MustParseAddrPort("[2001:db8:ffff:ffff:ffff:ffff:ffff:fffe]:65535"),
		farUDP:       netip.MustParseAddrPort("[fe80::1]:1"),
		clientLast:   netip.MustParseAddr("fd00:9::3"),
		clientFirst:  netip.MustParseAddr("fc00:9::2"),
		vipLast:      netip.MustParseAddr("fd00::11"),
		vipFirst:     netip.MustParseAddr("fc00::10"),
		backendFirst: netip.MustParseAddr("fe00:1::2"),
		otherBackend: netip.MustParseAddrPort("[fd00:1::99]:8080"),
		strangers: [3]netip.AddrPort{
			netip.MustParseAddrPort("[fd00:3::1]:9090"),
			netip.MustParseAddrPort("[fd00:3::2]:9090"),
			netip.MustParseAddrPort("[fd00:3::3]:9090"),
		},
		otherVIP:   netip.MustParseAddr("fd00::20"),
		elsewhere:  netip.MustParseAddr("2001:db8::1"),
		icmp:       layers.IPProtocolICMPv6,
		mf:         "M",
		length:     "payload length",
		lengthOff:  packets.EthLen + 4,
		lengthFrom: packets.EthLen + packets.IPv6Len,
		flow:       goldenFlow6,
	}
)

// goldenForFamilies runs a test for IPv4 and for IPv6, as subtests named
// for the family.
func goldenForFamilies(t *testing.T, v4 func(*testing.T, goldenFamily[packets.IPv4]), v6 func(*testing.T, goldenFamily[packets.IPv6])) {
	t.Run(goldenIPv4.name, func(t *testing.T) { v4(t, goldenIPv4) })
	t.Run(goldenIPv6.name, func(t *testing.T) { v6(t, goldenIPv6) })
}

// service is the family's service for proto: the VIP, and backends[0] at
// the backend port.
func (f goldenFamily[P]) service(proto lb.Protocol) lb.Service {
	if proto == lb.TCP {
		return goldenService(lb.TCP, f.vipTCP, f.backendTCP)
	}
	return goldenService(lb.UDP, f.vipUDP, f.backendUDP)
}

// goldenBuild builds p, failing t on error.
func goldenBuild[P goldenIP](t *testing.T, p P) []byte {
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

// goldenFlow builds an IPv4 client packet of proto from src to dst with
// payload.
func goldenFlow(proto lb.Protocol, src, dst netip.AddrPort, payload []byte) packets.IPv4 {
	p := packets.IPv4{Src: src, Dst: dst, Proto: goldenIPProto(proto), Payload: payload, ID: 0x4d2, Flags: layers.IPv4DontFragment}
	if proto == lb.TCP {
		p.TCPFlags = packets.TCPFlags{ACK: true, PSH: len(payload) > 0}
		p.Seq, p.Ack = 1000, 2000
	}
	return p
}

// goldenFlow6 builds an IPv6 client packet of proto from src to dst with
// payload. A traffic class and flow label are set, so that a program that
// touched them would be caught.
func goldenFlow6(proto lb.Protocol, src, dst netip.AddrPort, payload []byte) packets.IPv6 {
	p := packets.IPv6{Src: src, Dst: dst, Proto: goldenIPProto(proto), Payload: payload, TrafficClass: 0xb8, FlowLabel: 0x5eed5}
	if proto == lb.TCP {
		p.TCPFlags = packets.TCPFlags{ACK: true, PSH: len(payload) > 0}
		p.Seq, p.Ack = 1000, 2000
	}
	return p
}

// goldenPlain is a packet of P's family from src to dst with no more
// than its addresses, protocol and payload set; with noL4Header, the
// payload follows the IP header directly.
func goldenPlain[P goldenIP](src, dst netip.AddrPort, proto layers.IPProtocol, payload []byte, noL4Header bool) P {
	var p P
	switch q := any(&p).(type) {
	case *packets.IPv4:
		*q = packets.IPv4{Src: src, Dst: dst, Proto: proto, Payload: payload, NoL4Header: noL4Header}
	case *packets.IPv6:
		*q = packets.IPv6{Src: src, Dst: dst, Proto: proto, Payload: payload, NoL4Header: noL4Header}
	}
	return p
}

// goldenEdit returns p changed by v4 or v6, whichever is p's family.
func goldenEdit[P goldenIP](p P, v4 func(*packets.IPv4), v6 func(*packets.IPv6)) P {
	switch q := any(&p).(type) {
	case *packets.IPv4:
		v4(q)
	case *packets.IPv6:
		v6(q)
	}
	return p
}

// goldenDNAT returns p sent to to instead.
func goldenDNAT[P goldenIP](p P, to netip.AddrPort) P {
	return goldenEdit(p, func(q *packets.IPv4) { q.Dst = to }, func(q *packets.IPv6) { q.Dst = to })
}

// goldenSNAT returns p coming from from instead.
func goldenSNAT[P goldenIP](p P, from netip.AddrPort) P {
	return goldenEdit(p, func(q *packets.IPv4) { q.Src = from }, func(q *packets.IPv6) { q.Src = from })
}

// goldenSrc is p's source.
func goldenSrc[P goldenIP](p P) netip.AddrPort {
	var src netip.AddrPort
	goldenEdit(p, func(q *packets.IPv4) { src = q.Src }, func(q *packets.IPv6) { src = q.Src })
	return src
}

// goldenWithPayload returns p with payload.
func goldenWithPayload[P goldenIP](p P, payload []byte) P {
	return goldenEdit(p, func(q *packets.IPv4) { q.Payload = payload }, func(q *packets.IPv6) { q.Payload = payload })
}

// goldenFragment returns p as a fragment at offset (in 8-byte units),
// with more to come if more: in IPv4 by the header's flags (DF cleared)
// and offset, in IPv6 by a fragment header of identification id after
// any other extension headers.
func goldenFragment[P goldenIP](p P, offset uint16, more bool, id uint32) P {
	return goldenEdit(p, func(q *packets.IPv4) {
		q.Flags, q.FragOffset = 0, offset
		if more {
			q.Flags = layers.IPv4MoreFragments
		}
	}, func(q *packets.IPv6) {
		q.Ext = append(slices.Clone(q.Ext), packets.Fragment(offset, more, id))
	})
}

// goldenPayload is n bytes of a pattern.
func goldenPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

// goldenL4 is the offset of frame's transport header.
func goldenL4(t *testing.T, frame []byte) int {
	t.Helper()
	l, err := packets.Parse(frame)
	if err != nil {
		t.Fatal(err)
	}
	return l.L4
}

// goldenMod copies frame, changes it, and fixes an IPv4 header checksum,
// so that the frame is wrong only where meant.
func goldenMod(frame []byte, f func(b []byte) []byte) []byte {
	b := f(append([]byte(nil), frame...))
	if binary.BigEndian.Uint16(frame[12:]) == uint16(layers.EthernetTypeIPv4) {
		packets.FixIPv4Checksum(b)
	}
	return b
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

// requireUntracked requires that h passes in untouched, counted as
// passed, and that it neither adds a conntrack entry nor counts in one.
func (g *golden) requireUntracked(t *testing.T, h goldenHook, in []byte) {
	t.Helper()
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
}

// requireRoundTrip requires h to translate a new flow from client to fe,
// sent to backend be, whose forward packet is fwdIn, and its reply
// replyIn, to exactly fwdWant and replyWant, counted as such. A hook that does not translate
// one direction must pass it untouched: tc egress forward packets (which
// tc ingress then translates), tc ingress replies.
func (g *golden) requireRoundTrip(t *testing.T, h goldenHook, fe lb.Frontend, client, be netip.AddrPort, fwdIn, fwdWant, replyIn, replyWant []byte) {
	t.Helper()
	g.flushConntrack(t)
	if !h.forward {
		g.requireCounted(t, goldenCounts{Passed: 1}, len(fwdIn), func() { g.untouched(t, h, fwdIn) })
		g.translated(t, goldenTCIngress, fwdIn, fwdWant)
	} else {
		g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(fwdIn), func() { g.translated(t, h, fwdIn, fwdWant) })
	}
	g.requireFlow(t, fe, client, be)
	if h.forward && h.name != goldenXDP.name {
		// tc ingress leaves replies to tc egress.
		g.requireCounted(t, goldenCounts{Passed: 1}, len(replyIn), func() { g.untouched(t, h, replyIn) })
		return
	}
	g.requireCounted(t, goldenCounts{Replies: 1}, len(replyIn), func() { g.translated(t, h, replyIn, replyWant) })
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

// --- DNAT ---

func TestGoldenDNAT(t *testing.T) { goldenForFamilies(t, testGoldenDNAT, testGoldenDNAT) }

func testGoldenDNAT[P goldenIP](t *testing.T, f goldenFamily[P]) {
	tcpSvc, udpSvc := f.service(lb.TCP), f.service(lb.UDP)
	g := newGolden(t, tcpSvc, udpSvc)

	// A SYN; in IPv4 without DF, which the other packets have.
	syn := goldenEdit(f.flow(lb.TCP, f.client, f.vipTCP, nil),
		func(p *packets.IPv4) { p.TCPFlags, p.Flags = packets.TCPFlags{SYN: true}, 0 },
		func(p *packets.IPv6) { p.TCPFlags = packets.TCPFlags{SYN: true} })
	padded := goldenEdit(f.flow(lb.TCP, f.client, f.vipTCP, goldenPayload(10)),
		func(p *packets.IPv4) { p.Pad = 16 }, func(p *packets.IPv6) { p.Pad = 16 })
	cases := []struct {
		name string
		svc  lb.Service
		in   P
		to   netip.AddrPort
	}{
		{"tcp SYN", tcpSvc, syn, f.backendTCP},
		{"tcp data", tcpSvc, f.flow(lb.TCP, f.client, f.vipTCP, goldenPayload(100)), f.backendTCP},
		{"tcp odd length", tcpSvc, f.flow(lb.TCP, f.client, f.vipTCP, goldenPayload(101)), f.backendTCP},
		{"tcp large", tcpSvc, f.flow(lb.TCP, f.farTCP, f.vipTCP, goldenPayload(1400)), f.backendTCP},
		{"tcp frame longer than IP packet", tcpSvc, padded, f.backendTCP},
		{"udp", udpSvc, f.flow(lb.UDP, f.client, f.vipUDP, goldenPayload(33)), f.backendUDP},
		{"udp large", udpSvc, f.flow(lb.UDP, f.farUDP, f.vipUDP, goldenPayload(1400)), f.backendUDP},
		{"udp empty", udpSvc, f.flow(lb.UDP, f.client, f.vipUDP, nil), f.backendUDP},
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
				fwd := g.requireFlow(t, c.svc.Frontend, goldenSrc(c.in), c.to)
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

// --- reverse NAT ---

func TestGoldenReverseNAT(t *testing.T) {
	goldenForFamilies(t, testGoldenReverseNAT, testGoldenReverseNAT)
}

func testGoldenReverseNAT[P goldenIP](t *testing.T, f goldenFamily[P]) {
	tcpSvc, udpSvc := f.service(lb.TCP), f.service(lb.UDP)
	g := newGolden(t, tcpSvc, udpSvc)

	for _, svc := range []lb.Service{tcpSvc, udpSvc} {
		proto, fe, be := svc.Frontend.Protocol, svc.Frontend.Address, svc.Backends[0].Address
		fwdPkt := f.flow(proto, f.client, fe, []byte("GET / HTTP/1.1\r\n\r\n"))
		fwdIn, fwdWant := goldenBuild(t, fwdPkt), goldenBuild(t, goldenDNAT(fwdPkt, be))
		reply := f.flow(proto, be, f.client, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
		replyIn, replyWant := goldenBuild(t, reply), goldenBuild(t, goldenSNAT(reply, fe))

		for _, fh := range goldenForwardHooks {
			for _, rh := range goldenReplyHooks {
				t.Run(fmt.Sprintf("%s/forward %s/reply %s", proto, fh.name, rh.name), func(t *testing.T) {
					g.flushConntrack(t)
					g.translated(t, fh, fwdIn, fwdWant)
					g.requireCounted(t, goldenCounts{Replies: 1}, len(replyIn), func() { g.translated(t, rh, replyIn, replyWant) })
					rep := g.conntrack(t)[goldenCtKey(be, f.client, proto, gCTReply)]
					if rep.Packets != 1 || rep.Bytes != uint64(len(replyIn)) {
						t.Fatalf("reply entry counts %d packets, %d bytes; want 1, %d", rep.Packets, rep.Bytes, len(replyIn))
					}
					g.requireCounted(t, goldenCounts{Replies: 1}, len(replyIn), func() { g.translated(t, rh, replyIn, replyWant) })
				})
			}
		}

		// Reply-shaped packets that match no conntrack entry; the
		// addresses differ from the tracked ones in their first or last
		// byte, so the whole address must be compared.
		otherProto := lb.UDP
		if proto == lb.UDP {
			otherProto = lb.TCP
		}
		noState := []struct {
			name      string
			withState bool // after a forward packet created state
			pkt       P
		}{
			{"no conntrack at all", false, reply},
			{"other client port", true, f.flow(proto, be, netip.AddrPortFrom(f.client.Addr(), f.client.Port()+1), nil)},
			{"other client, last byte", true, f.flow(proto, be, netip.AddrPortFrom(f.clientLast, f.client.Port()), nil)},
			{"other client, first byte", true, f.flow(proto, be, netip.AddrPortFrom(f.clientFirst, f.client.Port()), nil)},
			{"other backend port", true, f.flow(proto, netip.AddrPortFrom(be.Addr(), be.Port()+1), f.client, nil)},
			{"other backend", true, f.flow(proto, f.otherBackend, f.client, nil)},
			{"other backend, first byte", true, f.flow(proto, netip.AddrPortFrom(f.backendFirst, be.Port()), f.client, nil)},
			{"other protocol", true, f.flow(otherProto, be, f.client, nil)},
			{"client to the backend directly", true, f.flow(proto, f.client, be, nil)},
		}
		for _, c := range noState {
			in := goldenBuild(t, c.pkt)
			for _, h := range goldenAllHooks {
				t.Run(fmt.Sprintf("%s/untracked/%s/%s", proto, c.name, h.name), func(t *testing.T) {
					g.flushConntrack(t)
					if c.withState {
						g.translated(t, goldenTCIngress, fwdIn, fwdWant)
					}
					g.requireUntracked(t, h, in)
				})
			}
		}
	}
}

// --- established flows ---

func TestGoldenEstablishedFlow(t *testing.T) {
	goldenForFamilies(t, testGoldenEstablishedFlow, testGoldenEstablishedFlow)
}

func testGoldenEstablishedFlow[P goldenIP](t *testing.T, f goldenFamily[P]) {
	a, b, c := f.backends[0], f.backends[1], f.backends[2]
	g := newGolden(t)
	for _, h := range goldenForwardHooks {
		t.Run(h.name, func(t *testing.T) {
			g.flushConntrack(t)
			g.upsert(t, goldenService(lb.TCP, f.vipTCP, a))
			fe := lb.Frontend{Address: f.vipTCP, Protocol: lb.TCP}
			pkt := f.flow(lb.TCP, f.client, f.vipTCP, []byte("data"))
			in := goldenBuild(t, pkt)
			want := func(be netip.AddrPort) []byte { return goldenBuild(t, goldenDNAT(pkt, be)) }

			g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(in), func() { g.translated(t, h, in, want(a)) })
			g.requireFlow(t, fe, f.client, a)

			// The service grows: the flow stays on a.
			g.upsert(t, goldenService(lb.TCP, f.vipTCP, a, b, c))
			g.requireCounted(t, goldenCounts{ForwardEst: 16}, 16*len(in), func() {
				for range 16 {
					g.translated(t, h, in, want(a))
				}
			})
			if fwd := g.requireFlow(t, fe, f.client, a); fwd.Packets != 17 {
				t.Fatalf("forward entry counts %d packets, want 17", fwd.Packets)
			}
			// ...while new flows do use the new backends.
			seen := map[netip.AddrPort]int{}
			for i := range 40 {
				client := netip.AddrPortFrom(f.client.Addr(), uint16(20000+i))
				p := f.flow(lb.TCP, client, f.vipTCP, nil)
				be := goldenSentTo(t, g, h, p, a, b, c)
				g.requireFlow(t, fe, client, be)
				seen[be]++
			}
			if seen[b]+seen[c] == 0 {
				t.Fatalf("40 new flows all went to %s, none to the new backends: %v", a, seen)
			}

			// Its backend goes: the flow moves to one that remains, and
			// stays there.
			g.upsert(t, goldenService(lb.TCP, f.vipTCP, b, c))
			var moved netip.AddrPort
			g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(in), func() { moved = goldenSentTo(t, g, h, pkt, b, c) })
			g.requireFlow(t, fe, f.client, moved)
			g.requireCounted(t, goldenCounts{ForwardEst: 8}, 8*len(in), func() {
				for range 8 {
					g.translated(t, h, in, want(moved))
				}
			})
			// Replies from the new backend are translated back.
			reply := f.flow(lb.TCP, moved, f.client, []byte("ok"))
			g.translated(t, goldenTCEgress, goldenBuild(t, reply), goldenBuild(t, goldenSNAT(reply, f.vipTCP)))
		})
	}
}

// A flow whose backend is gone and whose backend id now belongs to another
// service's backend must not follow the id to that stranger.
func TestGoldenReusedBackendID(t *testing.T) {
	goldenForFamilies(t, testGoldenReusedBackendID, testGoldenReusedBackendID)
}

func testGoldenReusedBackendID[P goldenIP](t *testing.T, f goldenFamily[P]) {
	const maxBackends = 4
	g := newGoldenLimits(t, datapath.Limits{MaxBackends: maxBackends})
	a, b := f.backends[0], f.backends[1]
	fe := lb.Frontend{Address: f.vipTCP, Protocol: lb.TCP}
	otherFE := netip.AddrPortFrom(f.otherVIP, 80)
	pkt := f.flow(lb.TCP, f.client, f.vipTCP, []byte("hello"))
	in := goldenBuild(t, pkt)
	for _, h := range goldenForwardHooks {
		t.Run(h.name, func(t *testing.T) {
			g.flushConntrack(t)
			if _, ok := g.mgr.Get(lb.Frontend{Address: otherFE, Protocol: lb.TCP}); ok {
				if err := g.mgr.Delete(lb.Frontend{Address: otherFE, Protocol: lb.TCP}); err != nil {
					t.Fatal(err)
				}
			}
			g.upsert(t, goldenService(lb.TCP, f.vipTCP, a))
			_, ids := g.ids(t, fe)
			idA := ids[a]
			g.translated(t, h, in, goldenBuild(t, goldenDNAT(pkt, a)))

			// a goes; the other service takes every free id, a's too.
			g.upsert(t, goldenService(lb.TCP, f.vipTCP, b))
			g.upsert(t, goldenService(lb.TCP, otherFE, f.strangers[:]...))
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
			g.requireFlow(t, fe, f.client, b)
		})
	}
}

// A backend id freed and reused within the same service (as after a
// restart, when the allocator starts over) must not capture the old
// backend's flows: the conntrack entry carries the backend's cookie, so the
// flow is balanced afresh to the newcomer, reply entry and all.
func TestGoldenReusedBackendIDSameService(t *testing.T) {
	goldenForFamilies(t, testGoldenReusedBackendIDSameService, testGoldenReusedBackendIDSameService)
}

func testGoldenReusedBackendIDSameService[P goldenIP](t *testing.T, f goldenFamily[P]) {
	g := newGoldenLimits(t, datapath.Limits{MaxBackends: 2})
	a, b, c := f.backends[0], f.backends[1], f.backends[2]
	fe := lb.Frontend{Address: f.vipUDP, Protocol: lb.UDP}
	for i, be := range []*netip.AddrPort{&a, &b, &c} {
		*be = netip.AddrPortFrom(f.backends[i].Addr(), f.backendUDP.Port())
	}
	pkt := f.flow(lb.UDP, f.client, f.vipUDP, []byte("query"))
	in := goldenBuild(t, pkt)
	for _, h := range goldenForwardHooks {
		t.Run(h.name, func(t *testing.T) {
			g.flushConntrack(t)
			g.upsert(t, goldenService(lb.UDP, f.vipUDP, a))
			_, ids := g.ids(t, fe)
			idA := ids[a]
			g.translated(t, h, in, goldenBuild(t, goldenDNAT(pkt, a)))

			// a goes, b comes, then b goes and c comes: with two ids,
			// c gets a's.
			g.upsert(t, goldenService(lb.UDP, f.vipUDP, b))
			g.upsert(t, goldenService(lb.UDP, f.vipUDP, c))
			if _, ids := g.ids(t, fe); ids[c] != idA {
				t.Fatalf("test setup: %s got id %d, want a's id %d", c, ids[c], idA)
			}

			g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(in), func() {
				g.translated(t, h, in, goldenBuild(t, goldenDNAT(pkt, c)))
			})
			g.requireFlow(t, fe, f.client, c)
			reply := f.flow(lb.UDP, c, f.client, []byte("answer"))
			g.translated(t, goldenReplyHookFor(h), goldenBuild(t, reply), goldenBuild(t, goldenSNAT(reply, f.vipUDP)))
		})
	}
}

// goldenSentTo runs p through h, requires it to come out DNATed to
// exactly one of backends and returns which.
func goldenSentTo[P goldenIP](t *testing.T, g *golden, h goldenHook, p P, backends ...netip.AddrPort) netip.AddrPort {
	t.Helper()
	return g.sentToWant(t, h, goldenBuild(t, p), func(be netip.AddrPort) []byte { return goldenBuild(t, goldenDNAT(p, be)) }, backends...)
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

// --- traffic not for a service ---

// goldenUntouched is a frame that every hook must pass unchanged, moving
// the counters by want (and by its bytes), making no conntrack entry.
type goldenUntouched struct {
	name string
	in   []byte
	want goldenCounts
}

func (g *golden) requireAllUntouched(t *testing.T, cases []goldenUntouched) {
	t.Helper()
	for _, c := range cases {
		for _, h := range goldenAllHooks {
			t.Run(c.name+"/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				g.requireCounted(t, c.want, len(c.in), func() { g.untouched(t, h, c.in) })
				g.requireNoConntrack(t)
			})
		}
	}
}

// Packets for other ports, protocols and addresses, and fragments, pass
// untouched. golden_ipv4_test.go and golden_ipv6_test.go add what only one
// family has.
func TestGoldenNotForAService(t *testing.T) {
	goldenForFamilies(t, testGoldenNotForAService, testGoldenNotForAService)
}

func testGoldenNotForAService[P goldenIP](t *testing.T, f goldenFamily[P]) {
	g := newGolden(t, f.service(lb.TCP), f.service(lb.UDP))
	body := bytes.Repeat([]byte{0xab}, 24)
	build := func(p P) []byte { return goldenBuild(t, p) }

	// A later fragment whose body happens to look like a TCP header for
	// the service.
	flowStart := build(f.flow(lb.TCP, f.client, f.vipTCP, nil))
	fakeTCP := flowStart[goldenL4(t, flowStart):][:packets.TCPLen]
	laterFrag := goldenPlain[P](f.client, f.vipTCP, layers.IPProtocolTCP, append(append([]byte{}, fakeTCP...), body...), true)
	// A fragment whose body is shorter than the transport header is still
	// a well-formed fragment, not a malformed packet.
	shortLastFrag := goldenFragment(goldenPlain[P](f.client, f.vipUDP, layers.IPProtocolUDP, []byte("end"), true), 1, false, 0x1235)
	icmp := goldenPlain[P](f.client, netip.AddrPortFrom(f.vipTCP.Addr(), 0), f.icmp, body, false)

	passed, fragment := goldenCounts{Passed: 1}, goldenCounts{Fragments: 1}
	g.requireAllUntouched(t, []goldenUntouched{
		{"tcp to another port of the VIP", build(f.flow(lb.TCP, f.client, netip.AddrPortFrom(f.vipTCP.Addr(), 81), nil)), passed},
		{"tcp to the udp service port", build(f.flow(lb.TCP, f.client, f.vipUDP, nil)), passed},
		{"udp to the tcp service port", build(f.flow(lb.UDP, f.client, f.vipTCP, nil)), passed},
		{"tcp to another address, last byte", build(f.flow(lb.TCP, f.client, netip.AddrPortFrom(f.vipLast, 80), nil)), passed},
		{"tcp to another address, first byte", build(f.flow(lb.TCP, f.client, netip.AddrPortFrom(f.vipFirst, 80), nil)), passed},
		{"udp to another address", build(f.flow(lb.UDP, f.client, netip.AddrPortFrom(f.elsewhere, 53), body)), passed},
		{"icmp echo to the VIP", build(icmp), passed},
		{"first fragment (" + f.mf + ") tcp to the service", build(goldenFragment(f.flow(lb.TCP, f.client, f.vipTCP, body), 0, true, 0x1234)), fragment},
		{"first fragment (" + f.mf + ") udp to the service", build(goldenFragment(f.flow(lb.UDP, f.client, f.vipUDP, body), 0, true, 0x1235)), fragment},
		{"middle fragment (" + f.mf + ", offset)", build(goldenFragment(laterFrag, 185, true, 0x1234)), fragment},
		{"last fragment (offset)", build(goldenFragment(laterFrag, 185, false, 0x1234)), fragment},
		{"short last udp fragment", build(shortLastFrag), fragment},
	})
}

// --- truncated and malformed ---

// goldenMalformed is a frame that every hook must pass unchanged, counted
// as malformed.
type goldenMalformed struct {
	name string
	in   []byte
	// The kernel's BPF_PROG_TEST_RUN may refuse the frame (EINVAL): it
	// wants ETH_HLEN bytes of packet data, and for skb programs a whole
	// IP header behind an IP ethertype.
	kernelMayRefuse bool
}

func (g *golden) requireAllMalformed(t *testing.T, cases []goldenMalformed) {
	t.Helper()
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
}

// Frames whose IP length or transport header is wrong pass untouched,
// counted as malformed. golden_ipv4_test.go and golden_ipv6_test.go break
// each family's own headers.
func TestGoldenMalformed(t *testing.T) {
	goldenForFamilies(t, testGoldenMalformed, testGoldenMalformed)
}

func testGoldenMalformed[P goldenIP](t *testing.T, f goldenFamily[P]) {
	// The trap services of TestGoldenIPv4Malformed (ports 10 and 56 of
	// the TCP frontend) are there too: a lax parser that followed a bad
	// length to the wrong bytes could find them.
	g := newGolden(t, f.service(lb.TCP), f.service(lb.UDP),
		goldenService(lb.TCP, netip.AddrPortFrom(f.vipTCP.Addr(), 10), f.backendTCP),
		goldenService(lb.TCP, netip.AddrPortFrom(f.vipTCP.Addr(), 56), f.backendTCP))
	body := []byte("0123456789abcdef")
	tcp := f.flow(lb.TCP, f.client, f.vipTCP, body)
	tcpPkt := goldenBuild(t, tcp)
	udpPkt := goldenBuild(t, f.flow(lb.UDP, f.client, f.vipUDP, body))
	noBody := goldenBuild(t, f.flow(lb.TCP, f.client, f.vipTCP, nil))
	l4 := goldenL4(t, tcpPkt)

	// setLen sets the IP header's length field; setL4Len sets it to
	// count n bytes from the transport header on.
	setLen := func(b []byte, n int) { binary.BigEndian.PutUint16(b[f.lengthOff:], uint16(n)) }
	setL4Len := func(b []byte, n int) { setLen(b, l4-f.lengthFrom+n) }
	// truncate cuts the transport header and payload to n bytes, frame
	// and length field both.
	truncate := func(frame []byte, n int) []byte {
		return goldenMod(frame, func(b []byte) []byte { setL4Len(b, n); return b[:l4+n] })
	}
	mod := goldenMod
	g.requireAllMalformed(t, []goldenMalformed{
		{name: "version 0", in: mod(udpPkt, func(b []byte) []byte { b[packets.EthLen] &= 0x0f; return b })},
		{name: f.length + " one more than the frame", in: mod(tcpPkt, func(b []byte) []byte { setL4Len(b, len(b)-l4+1); return b })},
		{name: f.length + " 1500 in a short frame", in: mod(udpPkt, func(b []byte) []byte { setLen(b, 1500); return b })},
		{name: "frame cut inside the payload", in: tcpPkt[:len(tcpPkt)-4]},
		{name: "tcp header cut short", in: truncate(tcpPkt, 10)},
		{name: "tcp header cut short, " + f.length + " not", in: tcpPkt[:l4+10]},
		{name: "tcp header cut short, padded frame", in: mod(tcpPkt, func(b []byte) []byte { setL4Len(b, packets.TCPLen-1); return b })},
		{name: "tcp data offset 4", in: mod(tcpPkt, func(b []byte) []byte { b[l4+12] = 4 << 4; return b })},
		{name: "tcp data offset 0", in: mod(tcpPkt, func(b []byte) []byte { b[l4+12] = 0; return b })},
		{name: "tcp data offset beyond the segment", in: mod(noBody, func(b []byte) []byte { b[l4+12] = 15 << 4; return b })},
		{name: "udp header cut short", in: truncate(udpPkt, 4)},
		{name: "udp length 7", in: mod(udpPkt, func(b []byte) []byte { binary.BigEndian.PutUint16(b[l4+4:], 7); return b })},
		{name: "udp length 0", in: mod(udpPkt, func(b []byte) []byte { binary.BigEndian.PutUint16(b[l4+4:], 0); return b })},
		{name: "udp length beyond the ip packet", in: mod(udpPkt, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[l4+4:], uint16(packets.UDPLen+len(body)+1))
			return b
		})},
	})

	// A valid packet after all of those is still translated, so the
	// services were live throughout.
	t.Run("control", func(t *testing.T) {
		for _, h := range goldenForwardHooks {
			g.flushConntrack(t)
			g.translated(t, h, tcpPkt, goldenBuild(t, goldenDNAT(tcp, f.backendTCP)))
		}
	})
}

// --- UDP checksums ---

func TestGoldenUDPChecksum(t *testing.T) {
	goldenForFamilies(t, testGoldenUDPChecksum, testGoldenUDPChecksum)
}

func testGoldenUDPChecksum[P goldenIP](t *testing.T, f goldenFamily[P]) {
	svc := f.service(lb.UDP)
	g := newGolden(t, svc)
	udpCheck := func(frame []byte) uint16 { return binary.BigEndian.Uint16(frame[goldenL4(t, frame)+6:]) }
	setCheck := func(frame []byte, c uint16) { binary.BigEndian.PutUint16(frame[goldenL4(t, frame)+6:], c) }
	run := func(t *testing.T, fwdIn, fwdWant, replyIn, replyWant []byte) {
		for _, fh := range goldenForwardHooks {
			for _, rh := range goldenReplyHooks {
				t.Run(fh.name+"/"+rh.name, func(t *testing.T) {
					g.flushConntrack(t)
					g.translated(t, fh, fwdIn, fwdWant)
					g.translated(t, rh, replyIn, replyWant)
				})
			}
		}
	}
	dnat := func(p P) P { return goldenDNAT(p, f.backendUDP) }
	snat := func(p P) P { return goldenSNAT(p, f.vipUDP) }

	// Checksum 0 means "none" over IPv4 (RFC 768). Over IPv6 it is not
	// allowed (RFC 8200, 8.1), except that tunnels may send it and their
	// endpoints accept it (RFC 6935, 6936; Linux: UDP_NO_CHECK6_RX). The
	// tc programs' checksum helpers, with BPF_F_MARK_MANGLED_0, leave a
	// zero UDP checksum alone whatever the family; so every hook must, or
	// XDP and tc would give different bytes, and a tunnel's datagram would
	// arrive with a checksum that is neither none nor right.
	t.Run("zero stays zero", func(t *testing.T) {
		zero := func(p P) P {
			return goldenEdit(p, func(q *packets.IPv4) { q.UDPNoChecksum = true }, func(q *packets.IPv6) { q.UDPZeroChecksum = true })
		}
		fwd := zero(f.flow(lb.UDP, f.client, f.vipUDP, []byte("no checksum")))
		reply := zero(f.flow(lb.UDP, f.backendUDP, f.client, []byte("none here either")))
		fwdIn, fwdWant := goldenBuild(t, fwd), goldenBuild(t, dnat(fwd))
		replyIn, replyWant := goldenBuild(t, reply), goldenBuild(t, snat(reply))
		if udpCheck(fwdIn) != 0 || udpCheck(fwdWant) != 0 || udpCheck(replyWant) != 0 {
			t.Fatal("the inputs do not have UDP checksum 0")
		}
		// zeroKept is translated, without the checksum check over IPv6,
		// which rejects a UDP checksum of 0.
		zeroKept := func(t *testing.T, h goldenHook, in, want []byte) {
			t.Helper()
			if f.name == goldenIPv4.name {
				g.translated(t, h, in, want)
				return
			}
			goldenRequireBytes(t, h.name+": translated output", g.pass(t, h, in), want)
		}
		for _, fh := range goldenForwardHooks {
			for _, rh := range goldenReplyHooks {
				t.Run(fh.name+"/"+rh.name, func(t *testing.T) {
					g.flushConntrack(t)
					g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(fwdIn), func() { zeroKept(t, fh, fwdIn, fwdWant) })
					g.requireFlow(t, svc.Frontend, f.client, f.backendUDP)
					g.requireCounted(t, goldenCounts{Replies: 1}, len(replyIn), func() { zeroKept(t, rh, replyIn, replyWant) })
				})
			}
		}
	})

	t.Run("real checksum is updated", func(t *testing.T) {
		fwd := f.flow(lb.UDP, f.client, f.vipUDP, []byte("with checksum"))
		reply := f.flow(lb.UDP, f.backendUDP, f.client, []byte("with checksum too"))
		fwdIn, fwdWant := goldenBuild(t, fwd), goldenBuild(t, dnat(fwd))
		replyIn, replyWant := goldenBuild(t, reply), goldenBuild(t, snat(reply))
		if udpCheck(fwdIn) == 0 || udpCheck(fwdWant) == udpCheck(fwdIn) {
			t.Fatal("the test packets do not exercise a checksum change")
		}
		run(t, fwdIn, fwdWant, replyIn, replyWant)
	})

	// zeroing tunes p's payload so that translated(p)'s checksum
	// computes to 0; it returns p and translated(p), the latter with the
	// checksum field 0xffff (0 would mean "none", which IPv6 forbids).
	zeroing := func(p P, translated func(P) P) (P, []byte) {
		p = goldenWithPayload(p, []byte{0, 0})
		c := udpCheck(goldenBuild(t, translated(p)))
		p = goldenWithPayload(p, []byte{byte(c >> 8), byte(c)})
		want := goldenBuild(t, translated(p))
		if udpCheck(want) != 0 {
			t.Fatalf("payload tuning failed: translated checksum %#04x", udpCheck(want))
		}
		setCheck(want, 0xffff)
		return p, want
	}

	t.Run("computed zero is sent as 0xffff", func(t *testing.T) {
		fwd, fwdWant := zeroing(f.flow(lb.UDP, f.client, f.vipUDP, nil), dnat)
		reply, replyWant := zeroing(f.flow(lb.UDP, f.backendUDP, f.client, nil), snat)
		run(t, goldenBuild(t, fwd), fwdWant, goldenBuild(t, reply), replyWant)
	})

	// The same, the other way round: inputs whose checksum computes to 0
	// and is sent as 0xffff translate to the right checksum.
	t.Run("0xffff is updated", func(t *testing.T) {
		untranslated := func(p P) P { return p }
		fwd, fwdIn := zeroing(f.flow(lb.UDP, f.client, f.vipUDP, nil), untranslated)
		reply, replyIn := zeroing(f.flow(lb.UDP, f.backendUDP, f.client, nil), untranslated)
		fwdWant, replyWant := goldenBuild(t, dnat(fwd)), goldenBuild(t, snat(reply))
		if udpCheck(fwdIn) != 0xffff || udpCheck(fwdWant) == 0 || udpCheck(fwdWant) == 0xffff {
			t.Fatalf("the test packets do not start from 0xffff: %#04x -> %#04x", udpCheck(fwdIn), udpCheck(fwdWant))
		}
		run(t, fwdIn, fwdWant, replyIn, replyWant)
	})
}

// --- per-backend counters, multi-backend DNAT ---

func TestGoldenBackendCounters(t *testing.T) {
	goldenForFamilies(t, testGoldenBackendCounters, testGoldenBackendCounters)
}

func testGoldenBackendCounters[P goldenIP](t *testing.T, f goldenFamily[P]) {
	svc := goldenService(lb.TCP, f.vipTCP, f.backends[:]...)
	other := f.service(lb.UDP)
	g := newGolden(t, other)
	// clientAt is one of seven client addresses, the client's with its
	// last byte 1 to 7.
	clientAt := func(i int) netip.Addr {
		a := f.client.Addr().AsSlice()
		a[len(a)-1] = byte(1 + i%7)
		addr, _ := netip.AddrFromSlice(a)
		return addr
	}
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
				client := netip.AddrPortFrom(clientAt(i), uint16(30000+i))
				p := f.flow(lb.TCP, client, f.vipTCP, bytes.Repeat([]byte{'x'}, i))
				in := goldenBuild(t, p)
				be := goldenSentTo(t, g, h, p, f.backends[:]...)
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
					r := f.flow(lb.TCP, be, client, []byte("reply"))
					g.translated(t, goldenReplyHookFor(h), goldenBuild(t, r), goldenBuild(t, goldenSNAT(r, f.vipTCP)))
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
