package lb_test

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/lb"
)

// Golden-packet tests of what only IPv4 has: its header's options, ihl and
// version, ARP, and the ICMPv4 reject. golden_test.go holds the harness
// and the cases both families share.

// --- traffic not for a service ---

func TestGoldenIPv4NotForAService(t *testing.T) {
	f := goldenIPv4
	g := newGolden(t, f.service(lb.TCP), f.service(lb.UDP))
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	shortLastFrag := goldenFragment(goldenPlain[packets.IPv4](f.client, f.vipTCP, layers.IPProtocolTCP, []byte("tail1234"), true), 3, false, 0)
	passed := goldenCounts{Passed: 1}
	g.requireAllUntouched(t, []goldenUntouched{
		{"arp for the VIP", must(packets.ARPRequest(f.client.Addr(), f.vipTCP.Addr())), passed},
		{"ipv6 tcp", must(packets.IPv6TCP(netip.MustParseAddrPort("[fd00::1]:40000"), netip.MustParseAddrPort("[fd00::10]:80"), nil)), passed},
		{"ipv6 tcp to the v4-mapped VIP", must(packets.IPv6TCP(netip.MustParseAddrPort("[fd00::1]:40000"),
			netip.AddrPortFrom(netip.AddrFrom16(f.vipTCP.Addr().As16()), 80), nil)), passed},
		{"short last tcp fragment", goldenBuild(t, shortLastFrag), goldenCounts{Fragments: 1}},
	})
}

// --- truncated and malformed ---

func TestGoldenIPv4Malformed(t *testing.T) {
	f := goldenIPv4
	// Besides the services the packets are for, trap services catch the
	// packets whose bad ihl a lax parser would follow: with ihl 4 the
	// "ports" are the last two bytes of the destination address (port
	// 10), with ihl 0 they are the total length (port 56).
	g := newGolden(t, f.service(lb.TCP), f.service(lb.UDP),
		goldenService(lb.TCP, netip.AddrPortFrom(f.vipTCP.Addr(), 10), f.backendTCP),
		goldenService(lb.TCP, netip.AddrPortFrom(f.vipTCP.Addr(), 56), f.backendTCP))
	body := []byte("0123456789abcdef")
	tcp := goldenFlow(lb.TCP, f.client, f.vipTCP, body)
	tcpPkt := goldenBuild(t, tcp)
	tcpOpts := goldenFlow(lb.TCP, f.client, f.vipTCP, body)
	tcpOpts.Options = goldenOptsIHL6
	tcpOptsPkt := goldenBuild(t, tcpOpts)
	// ihl 4 puts a lax parser's TCP header at IP byte 16: its data
	// offset is then the top byte of the acknowledgment number, 5.
	ihl4 := goldenFlow(lb.TCP, f.client, f.vipTCP, body)
	ihl4.Ack = 0x50000000
	ihl4Pkt := goldenBuild(t, ihl4)
	// ihl 0 puts it at IP byte 0: its data offset is the top of the
	// source address, 5 for 80.0.0.1; its destination port the total
	// length, 56.
	ihl0Pkt := goldenBuild(t, goldenFlow(lb.TCP, netip.MustParseAddrPort("80.0.0.1:40000"), f.vipTCP, body))
	if tot := binary.BigEndian.Uint16(ihl0Pkt[packets.EthLen+2:]); tot != 56 {
		t.Fatalf("the ihl 0 packet has total length %d, not the trap's port 56", tot)
	}

	const (
		ipOff  = packets.EthLen
		totOff = ipOff + 2
	)
	mod := goldenMod
	setTot := func(b []byte, n int) { binary.BigEndian.PutUint16(b[totOff:], uint16(n)) }
	g.requireAllMalformed(t, []goldenMalformed{
		{"shorter than ethernet", tcpPkt[:packets.EthLen-1], true},
		{"ethernet header only", tcpPkt[:packets.EthLen], true},
		{"ipv4 header cut short", tcpPkt[:ipOff+12], true},
		{"ipv4 header cut short by one byte", tcpPkt[:ipOff+19], true},
		{name: "ihl 4", in: mod(ihl4Pkt, func(b []byte) []byte { b[ipOff] = 0x44; return b })},
		{name: "ihl 0", in: mod(ihl0Pkt, func(b []byte) []byte { b[ipOff] = 0x40; return b })},
		{name: "version 6 in an ipv4 frame", in: mod(tcpPkt, func(b []byte) []byte { b[ipOff] = 0x65; return b })},
		{name: "ihl 6 with the frame cut inside the options", in: tcpOptsPkt[:ipOff+22]},
		{name: "ihl 15 beyond the total length", in: mod(tcpPkt, func(b []byte) []byte { b[ipOff] = 0x4f; return b })},
		{name: "total length below the ip header", in: mod(tcpPkt, func(b []byte) []byte { setTot(b, 16); return b })},
	})

	// A valid packet after all of those is still translated, so the
	// service was live throughout.
	t.Run("control", func(t *testing.T) {
		for _, h := range goldenForwardHooks {
			g.flushConntrack(t)
			g.translated(t, h, tcpPkt, goldenBuild(t, goldenDNAT(tcp, f.backendTCP)))
		}
	})
}

// --- options ---

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
	f := goldenIPv4
	tcpSvc, udpSvc := f.service(lb.TCP), f.service(lb.UDP)
	g := newGolden(t, tcpSvc, udpSvc)

	for _, o := range []struct {
		name string
		ihl  int
		opts []layers.IPv4Option
	}{{"ihl 6", 6, goldenOptsIHL6}, {"ihl 8", 8, goldenOptsIHL8}, {"ihl 15", 15, goldenOptsIHL15}} {
		for _, svc := range []lb.Service{tcpSvc, udpSvc} {
			proto, fe, be := svc.Frontend.Protocol, svc.Frontend.Address, svc.Backends[0].Address
			fwd := goldenFlow(proto, f.client, fe, []byte("options ahead of me"))
			fwd.Options = o.opts
			reply := goldenFlow(proto, be, f.client, []byte("and of my reply"))
			reply.Options = o.opts
			fwdIn, fwdWant := goldenBuild(t, fwd), goldenBuild(t, goldenDNAT(fwd, be))
			replyIn, replyWant := goldenBuild(t, reply), goldenBuild(t, goldenSNAT(reply, fe))
			if got := int(fwdIn[packets.EthLen] & 0x0f); got != o.ihl {
				t.Fatalf("%s: built a header with ihl %d", o.name, got)
			}
			for _, h := range goldenAllHooks {
				t.Run(fmt.Sprintf("%s/%s/%s", o.name, proto, h.name), func(t *testing.T) {
					g.requireRoundTrip(t, h, svc.Frontend, f.client, be, fwdIn, fwdWant, replyIn, replyWant)
				})
			}
		}
	}
}

// --- no backends ---

// A frontend without backends rejects new flows and, when it loses them,
// established ones. goldenRequireReject reads an ICMPv4 reject; the
// ICMPv6 one is checked byte for byte in reject_test.go and
// golden_services_test.go.
func TestGoldenIPv4NoBackend(t *testing.T) {
	f := goldenIPv4
	tcpSvc := goldenService(lb.TCP, f.vipTCP)
	udpSvc := goldenService(lb.UDP, f.vipUDP)
	g := newGolden(t, tcpSvc, udpSvc)

	for _, svc := range []lb.Service{tcpSvc, udpSvc} {
		proto := svc.Frontend.Protocol
		in := goldenBuild(t, goldenFlow(proto, f.client, svc.Frontend.Address, []byte("anyone?")))
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
			p := goldenFlow(lb.TCP, f.client, f.vipTCP, nil)
			in := goldenBuild(t, p)
			g.upsert(t, goldenService(lb.TCP, f.vipTCP, f.backendTCP))
			g.translated(t, h, in, goldenBuild(t, goldenDNAT(p, f.backendTCP)))
			g.upsert(t, goldenService(lb.TCP, f.vipTCP))
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
	if !ip.SrcIP.Equal(goldenIPv4.vipTCP.Addr().AsSlice()) || !ip.DstIP.Equal(goldenIPv4.client.Addr().AsSlice()) {
		t.Fatalf("%s: reject from %s to %s, want from the frontend to the client", h.name, ip.SrcIP, ip.DstIP)
	}
	if s := packets.Sum(0, out[packets.EthLen:packets.EthLen+20]); s != 0xffff {
		t.Fatalf("%s: IPv4 header checksum wrong (sums to %#x)", h.name, s)
	}
	if s := packets.Sum(0, out[packets.EthLen+20:]); s != 0xffff {
		t.Fatalf("%s: ICMP checksum wrong (sums to %#x)", h.name, s)
	}
}
