package policy

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/internal/testutil"
)

// rig is a datapath with one endpoint, "pol0", in a namespace of its own,
// whose programs the golden tests run through BPF_PROG_TEST_RUN with the
// endpoint's interface index in the context, as the kernel would.
type rig struct {
	t       testing.TB
	ns      *testutil.NS
	dir     string
	dp      *datapath.Datapath
	m       *Manager
	ifindex uint32
}

const (
	tcActShot  = 2
	tcActUnspc = 0xffffffff // TC_ACT_UNSPEC (-1): on to the next program
)

func newRig(t testing.TB, limits datapath.Limits) *rig {
	t.Helper()
	return newRigWith(t, datapath.Options{Limits: limits})
}

// newRigWith is newRig with the datapath opened with opts; its Dir is
// always the rig's own bpffs.
func newRigWith(t testing.TB, opts datapath.Options) *rig {
	t.Helper()
	testutil.RequireRoot(t)
	g := testutil.NewGroup(t)
	r := &rig{t: t, ns: g.NS("pol"), dir: testutil.BPFFS(t)}
	testutil.Veth(t, r.ns, "pol0", r.ns, "pol1")
	r.ns.MustDo(func() error {
		opts.Dir = r.dir
		dp, err := datapath.Open(opts)
		if err != nil {
			return err
		}
		r.dp = dp
		m, err := NewManager(dp)
		if err != nil {
			return err
		}
		r.m = m
		return m.AddEndpoint(Endpoint{Interface: "pol0", Addresses: []netip.Addr{pod4, pod6}})
	})
	t.Cleanup(func() {
		r.m.Close()
		r.dp.Close()
		if err := datapath.Remove(r.dir); err != nil {
			t.Error(err)
		}
	})
	r.ifindex = r.ifindexOf("pol0")
	return r
}

// skbContext is the head of struct __sk_buff up to ifindex: the fields
// BPF_PROG_TEST_RUN lets a caller set are mark, priority and the two
// interface indexes; the rest must be zero.
type skbContext struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority uint32
	IngressIfindex, Ifindex                                                               uint32
}

// run sends frame through the program that judges direction dir of the
// endpoint: tc ingress of its interface for Egress (what the pod sends),
// tc egress for Ingress. It returns the verdict and the bytes after.
func (r *rig) run(dir Direction, frame []byte) (uint32, []byte) {
	r.t.Helper()
	return r.runOn(r.ifindex, dir, frame)
}

// runOn is run at the interface with index ifindex.
func (r *rig) runOn(ifindex uint32, dir Direction, frame []byte) (uint32, []byte) {
	r.t.Helper()
	ret, out, err := r.tryRun(ifindex, dir, frame)
	if err != nil {
		r.t.Fatal(err)
	}
	return ret, out
}

// tryRun is runOn that returns the error of BPF_PROG_TEST_RUN, which
// refuses some frames (an IPv4 frame without a whole IPv4 header) before
// any program runs.
func (r *rig) tryRun(ifindex uint32, dir Direction, frame []byte) (uint32, []byte, error) {
	prog := kernel.Of(r.dp).Programs.XdplaneTcEgress
	if dir == Egress {
		prog = kernel.Of(r.dp).Programs.XdplaneTcIngress
	}
	out := make([]byte, len(frame)+256)
	ctx := skbContext{Ifindex: ifindex}
	opts := ebpf.RunOptions{Data: frame, DataOut: out, Context: ctx}
	var ret uint32
	err := r.ns.Do(func() (err error) {
		ret, err = prog.Run(&opts)
		return err
	})
	return ret, opts.DataOut, err
}

// expect runs frame and checks the verdict: a passed packet must come out
// byte for byte as it went in.
func (r *rig) expect(name string, dir Direction, frame []byte, pass bool) {
	r.t.Helper()
	ret, out := r.run(dir, frame)
	switch {
	case pass && ret != tcActUnspc:
		r.t.Errorf("%s: verdict %d, want pass (TC_ACT_UNSPEC)", name, int32(ret))
	case pass && string(out) != string(frame):
		r.t.Errorf("%s: passed but changed:\n got %x\nwant %x", name, out, frame)
	case !pass && ret != tcActShot:
		r.t.Errorf("%s: verdict %d, want drop (TC_ACT_SHOT)", name, int32(ret))
	}
}

// expectTranslated runs frame at the interface with index ifindex and
// checks that it passes changed into want, as the load balancer
// translates it.
func (r *rig) expectTranslated(name string, ifindex uint32, dir Direction, frame, want []byte) {
	r.t.Helper()
	if ret, out := r.runOn(ifindex, dir, frame); ret != tcActUnspc || string(out) != string(want) {
		r.t.Errorf("%s: verdict %d\n got %x\nwant %x", name, int32(ret), out, want)
	}
}

// expectCase is expect for a golden case that also reads the drop
// counters: a dropped packet counts once, under the case's reason, and a
// passed one nowhere.
func (r *rig) expectCase(c goldenCase) {
	r.t.Helper()
	before := r.dropCounters()
	r.expect(c.name, c.dir, c.frame, c.pass)
	after := r.dropCounters()
	for reason := range after.Packets {
		want := uint64(0)
		if !c.pass && reason == c.reason {
			want = 1
		}
		if got := after.Packets[reason] - before.Packets[reason]; got != want {
			r.t.Errorf("%s: drop counter %s went up by %d, want %d", c.name, reason, got, want)
		}
	}
}

func (r *rig) dropCounters() DropCounters {
	r.t.Helper()
	dc, err := ReadDropCounters(r.dp)
	if err != nil {
		r.t.Fatal(err)
	}
	return dc
}

// ifindexOf is the index of the rig's interface name.
func (r *rig) ifindexOf(name string) uint32 {
	r.t.Helper()
	var index uint32
	r.ns.MustDo(func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		index = uint32(ifc.Index)
		return nil
	})
	return index
}

func (r *rig) setPolicy(p Policy) {
	r.t.Helper()
	r.ns.MustDo(func() error { return r.m.SetPolicy("pol0", p) })
}

// The endpoint's addresses in every golden test.
var (
	pod4 = netip.MustParseAddr("10.0.1.2")
	pod6 = netip.MustParseAddr("fd00:1::2")
)

// mustBuild takes a builder's result; a frame the test cannot build is a
// bug in the test.
func mustBuild(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// tcp4 and friends build a first packet (a SYN for TCP) from src to dst.
func tcp4(t testing.TB, src, dst string) []byte {
	return mustBuild(packets.IPv4{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		Proto: layers.IPProtocolTCP, TCPFlags: packets.TCPFlags{SYN: true}}.Build())
}

func udp4(t testing.TB, src, dst string) []byte {
	return mustBuild(packets.IPv4{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		Proto: layers.IPProtocolUDP, Payload: []byte("hello")}.Build())
}

func tcp6(t testing.TB, src, dst string) []byte {
	return mustBuild(packets.IPv6{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		Proto: layers.IPProtocolTCP, TCPFlags: packets.TCPFlags{SYN: true}}.Build())
}

func udp6(t testing.TB, src, dst string) []byte {
	return mustBuild(packets.IPv6{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst),
		Proto: layers.IPProtocolUDP, Payload: []byte("hello")}.Build())
}

// raw4 is an IPv4 packet of protocol proto whose body is l4, verbatim.
func raw4(t testing.TB, src, dst string, proto layers.IPProtocol, l4 []byte) []byte {
	return mustBuild(packets.IPv4{Src: netip.AddrPortFrom(netip.MustParseAddr(src), 0), Dst: netip.AddrPortFrom(netip.MustParseAddr(dst), 0),
		Proto: proto, NoL4Header: true, Payload: l4}.Build())
}

func raw6(t testing.TB, src, dst string, proto layers.IPProtocol, l4 []byte, ext ...packets.IPv6Ext) []byte {
	return mustBuild(packets.IPv6{Src: netip.AddrPortFrom(netip.MustParseAddr(src), 0), Dst: netip.AddrPortFrom(netip.MustParseAddr(dst), 0),
		Proto: proto, NoL4Header: true, Payload: l4, Ext: ext}.Build())
}

// flowStart is the first packet of a TCP, UDP or SCTP flow from src to dst,
// in the family of their addresses.
func flowStart(t testing.TB, proto layers.IPProtocol, src, dst string) []byte {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	v4 := s.Addr().Is4()
	switch {
	case proto == layers.IPProtocolSCTP && v4:
		return raw4(t, s.Addr().String(), d.Addr().String(), proto, sctpHeader(s.Port(), d.Port()))
	case proto == layers.IPProtocolSCTP:
		return raw6(t, s.Addr().String(), d.Addr().String(), proto, sctpHeader(s.Port(), d.Port()))
	case proto == layers.IPProtocolUDP && v4:
		return udp4(t, src, dst)
	case proto == layers.IPProtocolUDP:
		return udp6(t, src, dst)
	case v4:
		return tcp4(t, src, dst)
	}
	return tcp6(t, src, dst)
}

// echo is an ICMP message of type typ (ICMPv6 between IPv6 addresses)
// with identifier id, sequence 1: an echo request or reply for the types
// that are.
func echo(t testing.TB, src, dst string, typ uint8, id uint16) []byte {
	msg := icmpMsg(typ, 0, uint32(id)<<16|1, []byte("ping"))
	if netip.MustParseAddr(src).Is4() {
		return raw4(t, src, dst, layers.IPProtocolICMPv4, msg)
	}
	return raw6(t, src, dst, layers.IPProtocolICMPv6, msg)
}

// hostPort joins addr and port as netip.AddrPort writes them.
func hostPort(addr string, port uint16) string {
	return netip.AddrPortFrom(netip.MustParseAddr(addr), port).String()
}

// sctpHeader is an SCTP common header and one empty DATA-less chunk
// header: enough for the ports.
func sctpHeader(sport, dport uint16) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 0x1234)
	b[12] = 1 // INIT
	binary.BigEndian.PutUint16(b[14:], 4)
	return b
}

// icmpMsg is an ICMP message of type typ with rest as its second word and
// body after it. The checksum is ICMPv4's (ICMPv6's covers a
// pseudo-header too); policy does not read it.
func icmpMsg(typ, code uint8, rest uint32, body []byte) []byte {
	b := make([]byte, 8, 8+len(body))
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint32(b[4:], rest)
	b = append(b, body...)
	binary.BigEndian.PutUint16(b[2:], ^packets.Sum(0, b))
	return b
}

// ipPacket strips the Ethernet header: what an ICMP error quotes.
func ipPacket(frame []byte) []byte { return frame[packets.EthLen:] }

// dumpPolicyMaps renders every policy map that SetPolicy writes, sorted:
// what the kernel holds, for before-and-after comparisons.
func dumpPolicyMaps(t testing.TB, r *rig) string {
	t.Helper()
	var lines []string
	for _, mp := range []*ebpf.Map{kernel.Of(r.dp).Maps.Endpoints, kernel.Of(r.dp).Maps.PolicyPeers, kernel.Of(r.dp).Maps.PolicyPeerHash,
		kernel.Of(r.dp).Maps.PolicyLens, kernel.Of(r.dp).Maps.PolicyPorts, kernel.Of(r.dp).Maps.PolicyPortHash} {
		var k, v []byte
		it := mp.Iterate()
		for it.Next(&k, &v) {
			lines = append(lines, fmt.Sprintf("%s %x=%x", mp, k, v))
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// icmp6Hop is an ICMPv6 message of type typ with body bytes of body, sent
// with hop limit hop.
func icmp6Hop(src, dst string, typ, hop uint8, body int) []byte {
	return mustBuild(packets.IPv6{Src: netip.AddrPortFrom(netip.MustParseAddr(src), 0), Dst: netip.AddrPortFrom(netip.MustParseAddr(dst), 0),
		Proto: layers.IPProtocolICMPv6, NoL4Header: true, HopLimit: hop, Payload: icmpMsg(typ, 0, 0, make([]byte, body))}.Build())
}

// vlan inserts tags with the given TPIDs (outermost first, VLAN id 0)
// between frame's MAC addresses and its EtherType.
func vlan(frame []byte, tpids ...uint16) []byte {
	out := append([]byte(nil), frame[:12]...)
	for _, tpid := range tpids {
		out = binary.BigEndian.AppendUint16(out, tpid)
		out = append(out, 0, 0)
	}
	return append(out, frame[12:]...)
}

// udp4Payload is a UDP datagram with size bytes of payload.
func udp4Payload(t testing.TB, size int) []byte {
	return mustBuild(packets.IPv4{Src: netip.MustParseAddrPort("10.0.3.4:5000"), Dst: netip.MustParseAddrPort("10.0.1.2:53"),
		Proto: layers.IPProtocolUDP, Payload: make([]byte, size)}.Build())
}
