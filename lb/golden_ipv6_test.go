package lb_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/lb"
)

// Golden-packet tests of what only IPv6 has, and of the two families side
// by side: extension headers, the IPv6 header's own faults, v4-mapped
// addresses, dual stack. golden_test.go holds the harness and the cases
// both families share.

// --- extension headers ---

var (
	g6Hop  = netip.MustParseAddr("fd00:5::1")
	g6Home = netip.MustParseAddr("fd00:7::1")
)

// goldenBigHopByHop is a hop-by-hop header of n bytes (a multiple of 8,
// at least 8), filled with one option of an unknown, skippable type.
func goldenBigHopByHop(n int) packets.IPv6Ext {
	return packets.IPv6Ext{Type: layers.IPProtocolIPv6HopByHop, Options: []packets.IPv6Option{{Type: 0x1f, Data: make([]byte, n-4)}}}
}

func TestGoldenIPv6ExtensionHeaders(t *testing.T) {
	f6 := goldenIPv6
	tcpSvc, udpSvc := f6.service(lb.TCP), f6.service(lb.UDP)
	g := newGolden(t, tcpSvc, udpSvc)

	// Routing headers have segments left 0: the IPv6 destination is
	// then the final one, which the transport pseudo-header uses, so the
	// program's checksum update and packets' checker agree. (With
	// segments left, the pseudo-header names the routing header's last
	// address, which NAT does not touch.) Eight headers are walked, as
	// policy walks them: the two share one walker.
	four := []packets.IPv6Ext{packets.HopByHop, packets.DestOpts, packets.Routing(0, 0, g6Hop), packets.AH}
	five := append(slices.Clone(four), packets.DestOpts)
	eight := append(slices.Clone(five), packets.DestOpts, packets.AH, packets.DestOpts)
	chains := []struct {
		name string
		ext  []packets.IPv6Ext
		l4   int // offset of the transport header in the frame
	}{
		{"hop-by-hop", []packets.IPv6Ext{packets.HopByHop}, 62},
		{"destination options", []packets.IPv6Ext{packets.DestOpts}, 62},
		{"routing type 0, segments left 0", []packets.IPv6Ext{packets.Routing(0, 0, g6Hop, g6Home)}, 94},
		{"routing type 2, segments left 0", []packets.IPv6Ext{packets.Routing(2, 0, g6Home)}, 78},
		{"AH", []packets.IPv6Ext{packets.AH}, 78},
		{"hop-by-hop, routing, destination options", []packets.IPv6Ext{packets.HopByHop, packets.Routing(0, 0, g6Hop), packets.DestOpts}, 94},
		{"destination options, AH, destination options", []packets.IPv6Ext{packets.DestOpts, packets.AH, packets.DestOpts}, 94},
		{"four", four, 118},
		{"five", five, 126},
		{"eight, the most walked", eight, 166},
		{"transport header at byte 254, the farthest within 256", []packets.IPv6Ext{goldenBigHopByHop(200)}, 254},
	}
	for _, ch := range chains {
		for _, svc := range []lb.Service{tcpSvc, udpSvc} {
			proto, fe, be := svc.Frontend.Protocol, svc.Frontend.Address, svc.Backends[0].Address
			fwd := goldenFlow6(proto, f6.client, fe, []byte("extension headers ahead of me"))
			fwd.Ext = ch.ext
			reply := goldenFlow6(proto, be, f6.client, []byte("and of my reply"))
			reply.Ext = ch.ext
			fwdIn, fwdWant := goldenBuild(t, fwd), goldenBuild(t, goldenDNAT(fwd, be))
			replyIn, replyWant := goldenBuild(t, reply), goldenBuild(t, goldenSNAT(reply, fe))
			if l, err := packets.Parse(fwdIn); err != nil || l.L4 != ch.l4 || l.Exts != len(ch.ext) {
				t.Fatalf("%s: built a frame with %d extension headers, transport at %d (%v)", ch.name, l.Exts, l.L4, err)
			}
			for _, h := range goldenAllHooks {
				t.Run(fmt.Sprintf("%s/%s/%s", ch.name, proto, h.name), func(t *testing.T) {
					g.requireRoundTrip(t, h, svc.Frontend, f6.client, be, fwdIn, fwdWant, replyIn, replyWant)
				})
			}
		}
	}

	// With segments left, a routing header's last address is the final
	// destination, and the transport pseudo-header names it (RFC 8200,
	// 8.1), not the IPv6 destination, the VIP here. NAT of the VIP must
	// not break the checksum: the packet either passes untouched or is
	// translated with the checksum still valid for the final destination
	// (only the port's change absorbed), which is what packets builds.
	for _, rt := range []struct {
		name string
		ext  packets.IPv6Ext
	}{
		{"routing type 0, segments left 1", packets.Routing(0, 1, g6Home)},
		{"routing type 2, segments left 1", packets.Routing(2, 1, g6Home)},
	} {
		p := goldenFlow6(lb.TCP, f6.client, f6.vipTCP, []byte("not the final destination"))
		p.Ext = []packets.IPv6Ext{rt.ext}
		in, translated := goldenBuild(t, p), goldenBuild(t, goldenDNAT(p, f6.backendTCP))
		if l, err := packets.Parse(in); err != nil || l.Dst != g6Home {
			t.Fatalf("%s: pseudo-header destination %v (%v)", rt.name, l.Dst, err)
		}
		for _, h := range goldenForwardHooks {
			t.Run(fmt.Sprintf("%s/%s", rt.name, h.name), func(t *testing.T) {
				g.flushConntrack(t)
				before := g.counts(t)
				_, out := g.run(t, h, in)
				got := g.counts(t).sub(before)
				goldenRequireChecksums(t, h.name, out)
				switch {
				case bytes.Equal(out, in):
					if got != (goldenCounts{Passed: 1, bytes: uint64(len(in))}) {
						t.Fatalf("untouched, and counters moved by %+v", got)
					}
				default:
					goldenRequireBytes(t, h.name+": translated output", out, translated)
					if got != (goldenCounts{ForwardNew: 1, bytes: uint64(len(in))}) {
						t.Fatalf("translated, and counters moved by %+v", got)
					}
				}
			})
		}
	}

	// Chains the programs do not walk, and a fragment header as the last
	// header they walk. The packets are otherwise for the services,
	// established flows included, so a lax parser would translate them.
	nine := append(slices.Clone(eight), packets.DestOpts)
	fragEighth := append(slices.Clone(eight[:7]), packets.Fragment(0, true, 0x1238))
	fragNinth := append(slices.Clone(eight), packets.Fragment(0, true, 0x1239))
	beyond := []packets.IPv6Ext{goldenBigHopByHop(208)}
	extBeyond := []packets.IPv6Ext{goldenBigHopByHop(208), packets.DestOpts}
	notWalked := []struct {
		name string
		ext  []packets.IPv6Ext
		want goldenCounts
	}{
		{"nine", nine, goldenCounts{Malformed: 1}},
		{"fragment header eighth", fragEighth, goldenCounts{Fragments: 1}},
		{"fragment header ninth", fragNinth, goldenCounts{Malformed: 1}},
		{"transport header at byte 262", beyond, goldenCounts{Malformed: 1}},
		{"extension header at byte 262", extBeyond, goldenCounts{Malformed: 1}},
	}
	for _, c := range notWalked {
		for _, svc := range []lb.Service{tcpSvc, udpSvc} {
			proto, fe, be := svc.Frontend.Protocol, svc.Frontend.Address, svc.Backends[0].Address
			fwd := goldenFlow6(proto, f6.client, fe, []byte("too far"))
			fwd.Ext = c.ext
			reply := goldenFlow6(proto, be, f6.client, []byte("too far"))
			reply.Ext = c.ext
			plain := goldenFlow6(proto, f6.client, fe, nil)
			plainIn := goldenBuild(t, plain)
			for _, d := range []struct {
				dir string
				in  []byte
			}{{"forward", goldenBuild(t, fwd)}, {"reply", goldenBuild(t, reply)}} {
				dir, in := d.dir, d.in
				if err := packets.VerifyChecksums(in); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				for _, h := range goldenAllHooks {
					t.Run(fmt.Sprintf("%s/%s/%s/%s", c.name, proto, dir, h.name), func(t *testing.T) {
						g.flushConntrack(t)
						// The flow is established, so replies would match.
						g.translated(t, goldenTCIngress, plainIn, goldenBuild(t, goldenDNAT(plain, be)))
						before := g.conntrack(t)
						got := g.counts(t)
						g.untouched(t, h, in)
						got = g.counts(t).sub(got)
						if after := g.conntrack(t); len(after) != len(before) {
							t.Fatalf("conntrack went from %d to %d entries", len(before), len(after))
						}
						want := c.want
						want.bytes = uint64(len(in))
						if got != want {
							t.Fatalf("counters moved by %+v, want %+v", got, want)
						}
					})
				}
			}
		}
	}
}

// --- traffic not for a service: ESP, no next header, fragment headers ---

func TestGoldenIPv6NotForAService(t *testing.T) {
	f6 := goldenIPv6
	g := newGolden(t, f6.service(lb.TCP), f6.service(lb.UDP))
	body := bytes.Repeat([]byte{0xab}, 24)
	frag := func(p packets.IPv6, ext ...packets.IPv6Ext) packets.IPv6 {
		p.Ext = append(p.Ext, ext...)
		return p
	}
	// A body that happens to look like a TCP header for the service.
	fakeTCP := goldenBuild(t, goldenFlow6(lb.TCP, f6.client, f6.vipTCP, nil))[packets.EthLen+packets.IPv6Len:][:packets.TCPLen]
	afterHopByHop := frag(goldenFlow6(lb.TCP, f6.client, f6.vipTCP, body), packets.HopByHop, packets.Fragment(0, true, 0x1236))
	atomic := frag(goldenFlow6(lb.UDP, f6.client, f6.vipUDP, body), packets.Fragment(0, false, 0x1237))
	esp := packets.IPv6{Src: f6.client, Dst: f6.vipTCP, Proto: layers.IPProtocolESP, NoL4Header: true,
		Payload: append([]byte{0, 0, 0x10, 0, 0, 0, 0, 1}, fakeTCP...)}
	espAfterDestOpts := esp
	espAfterDestOpts.Ext = []packets.IPv6Ext{packets.DestOpts}
	noNext := packets.IPv6{Src: f6.client, Dst: f6.vipTCP, Proto: layers.IPProtocolNoNextHeader, NoL4Header: true, Payload: fakeTCP}
	noNextAfterHopByHop := packets.IPv6{Src: f6.client, Dst: f6.vipTCP, Proto: layers.IPProtocolNoNextHeader, NoL4Header: true,
		Ext: []packets.IPv6Ext{packets.HopByHop}}
	unknown := packets.IPv6{Src: f6.client, Dst: f6.vipTCP, Proto: 253, NoL4Header: true, Payload: fakeTCP}

	build := func(p packets.IPv6) []byte { return goldenBuild(t, p) }
	passed, fragment := goldenCounts{Passed: 1}, goldenCounts{Fragments: 1}
	g.requireAllUntouched(t, []goldenUntouched{
		{"esp to the VIP", build(esp), passed},
		{"esp after destination options", build(espAfterDestOpts), passed},
		{"no next header", build(noNext), passed},
		{"no next header after hop-by-hop", build(noNextAfterHopByHop), passed},
		{"unknown next header 253", build(unknown), passed},
		{"fragment header after hop-by-hop", build(afterHopByHop), fragment},
		{"atomic fragment (no M, no offset)", build(atomic), fragment},
	})
}

// --- truncated and malformed ---

func TestGoldenIPv6Malformed(t *testing.T) {
	f6 := goldenIPv6
	g := newGolden(t, f6.service(lb.TCP), f6.service(lb.UDP))
	body := []byte("0123456789abcdef")
	tcp := goldenFlow6(lb.TCP, f6.client, f6.vipTCP, body)
	tcpPkt := goldenBuild(t, tcp)
	hbh := tcp
	hbh.Ext = []packets.IPv6Ext{packets.HopByHop}
	hbhPkt := goldenBuild(t, hbh)
	ah := goldenFlow6(lb.UDP, f6.client, f6.vipUDP, body)
	ah.Ext = []packets.IPv6Ext{packets.AH}
	ahPkt := goldenBuild(t, ah)
	// A jumbogram: payload length 0 and a jumbo payload option (RFC 2675)
	// with the real length.
	jumbo := tcp
	jumbo.Ext = []packets.IPv6Ext{{Type: layers.IPProtocolIPv6HopByHop, Options: []packets.IPv6Option{{Type: 0xc2, Data: []byte{0, 0, 0, 8 + packets.TCPLen + byte(len(body))}}}}}
	jumboPkt := goldenBuild(t, jumbo)

	const (
		ipOff   = packets.EthLen
		plenOff = ipOff + 4
		l4Off   = packets.EthLen + packets.IPv6Len
	)
	mod := goldenMod
	setPlen := func(b []byte, n int) { binary.BigEndian.PutUint16(b[plenOff:], uint16(n)) }
	// truncate cuts the IPv6 payload to n bytes, frame and payload length
	// both.
	truncate := func(frame []byte, n int) []byte {
		return mod(frame, func(b []byte) []byte { setPlen(b, n); return b[:l4Off+n] })
	}
	g.requireAllMalformed(t, []goldenMalformed{
		{"ipv6 header cut short", tcpPkt[:ipOff+20], true},
		{"ipv6 header cut short by one byte", tcpPkt[:ipOff+39], true},
		{name: "version 4 with ethertype ipv6", in: mod(tcpPkt, func(b []byte) []byte { b[ipOff] = 0x4b; return b })},
		{name: "version 7", in: mod(tcpPkt, func(b []byte) []byte { b[ipOff] = 0x7b; return b })},
		{name: "payload length 0", in: mod(tcpPkt, func(b []byte) []byte { setPlen(b, 0); return b })},
		{name: "jumbogram", in: mod(jumboPkt, func(b []byte) []byte { setPlen(b, 0); return b })},
		{name: "extension header cut short", in: truncate(hbhPkt, 1)},
		{name: "extension header cut short, padded frame", in: mod(hbhPkt, func(b []byte) []byte { setPlen(b, 1); return b })},
		{name: "extension header longer than the payload", in: mod(hbhPkt, func(b []byte) []byte { b[l4Off+1] = 8; return b })},
		{name: "AH longer than the payload", in: mod(ahPkt, func(b []byte) []byte { b[l4Off+1] = 20; return b })},
		{name: "frame cut inside an extension header", in: hbhPkt[:l4Off+5]},
		{name: "tcp header cut short after hop-by-hop", in: truncate(hbhPkt, 8+10)},
		{name: "udp header cut short after AH", in: truncate(ahPkt, 24+4)},
		{name: "udp length beyond the payload after AH", in: mod(ahPkt, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[l4Off+24+4:], uint16(packets.UDPLen+len(body)+1))
			return b
		})},
	})

	// A valid packet after all of those is still translated, so the
	// services were live throughout.
	t.Run("control", func(t *testing.T) {
		for _, h := range goldenForwardHooks {
			g.flushConntrack(t)
			g.translated(t, h, tcpPkt, goldenBuild(t, goldenDNAT(tcp, f6.backendTCP)))
			g.translated(t, h, hbhPkt, goldenBuild(t, goldenDNAT(hbh, f6.backendTCP)))
			g.translated(t, h, ahPkt, goldenBuild(t, goldenDNAT(ah, f6.backendUDP)))
		}
	})
}

// --- v4-mapped addresses ---

// IPv4 services are stored v4-mapped; an IPv6 packet with a v4-mapped
// address (which never appears on the wire) must match neither them nor
// an IPv6 service, nor an IPv4 flow's reply entry.
func TestGoldenIPv6V4Mapped(t *testing.T) {
	f4, f6 := goldenIPv4, goldenIPv6
	g := newGolden(t,
		f4.service(lb.TCP), f4.service(lb.UDP),
		f6.service(lb.TCP), f6.service(lb.UDP))
	mapped := func(ap netip.AddrPort) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom16(ap.Addr().As16()), ap.Port())
	}
	if a := mapped(f4.vipTCP).Addr(); !a.Is4In6() || a.String() != "::ffff:10.96.0.10" {
		t.Fatalf("v4-mapped VIP is %v", a)
	}
	v4Fwd := goldenFlow(lb.TCP, f4.client, f4.vipTCP, []byte("v4"))
	v4FwdIn, v4FwdWant := goldenBuild(t, v4Fwd), goldenBuild(t, goldenDNAT(v4Fwd, f4.backendTCP))
	v4FwdUDP := goldenFlow(lb.UDP, f4.client, f4.vipUDP, []byte("v4"))

	cases := []struct {
		name string
		in   packets.IPv6
		v4   bool // with IPv4 flows from f4.client established
	}{
		{"tcp to the v4-mapped IPv4 VIP", goldenFlow6(lb.TCP, f6.client, mapped(f4.vipTCP), nil), false},
		{"udp to the v4-mapped IPv4 VIP", goldenFlow6(lb.UDP, f6.client, mapped(f4.vipUDP), []byte("q")), false},
		{"tcp from a v4-mapped client to the v4-mapped VIP", goldenFlow6(lb.TCP, mapped(f4.client), mapped(f4.vipTCP), nil), false},
		{"tcp from a v4-mapped client to the IPv6 VIP", goldenFlow6(lb.TCP, mapped(f4.client), f6.vipTCP, nil), false},
		{"udp from a v4-mapped client to the IPv6 VIP", goldenFlow6(lb.UDP, mapped(f4.client), f6.vipUDP, []byte("q")), false},
		{"tcp from the v4-mapped IPv4 VIP to an IPv6 client", goldenFlow6(lb.TCP, mapped(f4.vipTCP), f6.client, nil), false},
		{"tcp, the IPv4 flow's reply v4-mapped", goldenFlow6(lb.TCP, mapped(f4.backendTCP), mapped(f4.client), []byte("r")), true},
		{"udp, the IPv4 flow's reply v4-mapped", goldenFlow6(lb.UDP, mapped(f4.backendUDP), mapped(f4.client), []byte("r")), true},
		{"tcp, the IPv4 flow's forward packet v4-mapped", goldenFlow6(lb.TCP, mapped(f4.client), mapped(f4.vipTCP), []byte("v4")), true},
	}
	for _, c := range cases {
		in := goldenBuild(t, c.in)
		for _, h := range goldenAllHooks {
			t.Run(c.name+"/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				if c.v4 {
					g.translated(t, goldenTCIngress, v4FwdIn, v4FwdWant)
					g.translated(t, goldenTCIngress, goldenBuild(t, v4FwdUDP), goldenBuild(t, goldenDNAT(v4FwdUDP, f4.backendUDP)))
				}
				g.requireUntracked(t, h, in)
			})
		}
	}
}

// --- dual stack ---

func TestGoldenDualStack(t *testing.T) {
	f4, f6 := goldenIPv4, goldenIPv6
	v4 := []lb.Service{f4.service(lb.TCP), f4.service(lb.UDP)}
	v6 := []lb.Service{f6.service(lb.TCP), f6.service(lb.UDP)}
	g := newGolden(t, append(append([]lb.Service{}, v4...), v6...)...)

	for i, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
		s4, s6 := v4[i], v6[i]
		fe4, be4, fe6, be6 := s4.Frontend.Address, s4.Backends[0].Address, s6.Frontend.Address, s6.Backends[0].Address
		// The same client port and service port in both families.
		fwd4, reply4 := goldenFlow(proto, f4.client, fe4, []byte("four")), goldenFlow(proto, be4, f4.client, []byte("four back"))
		fwd6, reply6 := goldenFlow6(proto, f6.client, fe6, []byte("six")), goldenFlow6(proto, be6, f6.client, []byte("six back"))
		fwd4In, fwd4Want := goldenBuild(t, fwd4), goldenBuild(t, goldenDNAT(fwd4, be4))
		reply4In, reply4Want := goldenBuild(t, reply4), goldenBuild(t, goldenSNAT(reply4, fe4))
		fwd6In, fwd6Want := goldenBuild(t, fwd6), goldenBuild(t, goldenDNAT(fwd6, be6))
		reply6In, reply6Want := goldenBuild(t, reply6), goldenBuild(t, goldenSNAT(reply6, fe6))
		for _, fh := range goldenForwardHooks {
			rh := goldenReplyHookFor(fh)
			t.Run(fmt.Sprintf("%s/%s", proto, fh.name), func(t *testing.T) {
				g.flushConntrack(t)
				g.requireCounted(t, goldenCounts{ForwardNew: 2}, len(fwd4In)+len(fwd6In), func() {
					g.translated(t, fh, fwd4In, fwd4Want)
					g.translated(t, fh, fwd6In, fwd6Want)
				})
				g.requireFlow(t, s4.Frontend, f4.client, be4)
				g.requireFlow(t, s6.Frontend, f6.client, be6)
				if n := len(g.conntrack(t)); n != 4 {
					t.Fatalf("conntrack holds %d entries, want 4", n)
				}
				g.requireCounted(t, goldenCounts{ForwardEst: 2, Replies: 2}, len(fwd4In)+len(fwd6In)+len(reply4In)+len(reply6In), func() {
					g.translated(t, rh, reply6In, reply6Want)
					g.translated(t, fh, fwd6In, fwd6Want)
					g.translated(t, rh, reply4In, reply4Want)
					g.translated(t, fh, fwd4In, fwd4Want)
				})
			})
		}

		// One family's service on a port the other family's VIP does not
		// serve: the other family's packets to that port pass.
		port := uint16(8000 + i)
		only6 := goldenService(proto, netip.AddrPortFrom(fe6.Addr(), port), be6)
		only4 := goldenService(proto, netip.AddrPortFrom(fe4.Addr(), port+100), be4)
		g.upsert(t, only6)
		g.upsert(t, only4)
		cross := []struct {
			name string
			in   []byte
		}{
			{"ipv4 to the port only ipv6 serves", goldenBuild(t, goldenFlow(proto, f4.client, netip.AddrPortFrom(fe4.Addr(), port), nil))},
			{"ipv6 to the port only ipv4 serves", goldenBuild(t, goldenFlow6(proto, f6.client, netip.AddrPortFrom(fe6.Addr(), port+100), nil))},
		}
		for _, c := range cross {
			for _, h := range goldenAllHooks {
				t.Run(fmt.Sprintf("%s/%s/%s", proto, c.name, h.name), func(t *testing.T) {
					g.flushConntrack(t)
					g.requireCounted(t, goldenCounts{Passed: 1}, len(c.in), func() { g.untouched(t, h, c.in) })
					g.requireNoConntrack(t)
				})
			}
		}

		// Deleting one family's service leaves the other's flows alone.
		for _, fh := range goldenForwardHooks {
			t.Run(fmt.Sprintf("%s/delete one family/%s", proto, fh.name), func(t *testing.T) {
				g.flushConntrack(t)
				g.upsert(t, s4)
				g.upsert(t, s6)
				g.translated(t, fh, fwd4In, fwd4Want)
				g.translated(t, fh, fwd6In, fwd6Want)
				if err := g.mgr.Delete(s6.Frontend); err != nil {
					t.Fatal(err)
				}
				g.requireCounted(t, goldenCounts{Passed: 1, ForwardEst: 1}, len(fwd6In)+len(fwd4In), func() {
					g.untouched(t, fh, fwd6In)
					g.translated(t, fh, fwd4In, fwd4Want)
				})
				g.upsert(t, s6)
				if err := g.mgr.Delete(s4.Frontend); err != nil {
					t.Fatal(err)
				}
				g.requireCounted(t, goldenCounts{Passed: 1, ForwardNew: 1}, len(fwd4In)+len(fwd6In), func() {
					g.untouched(t, fh, fwd4In)
					g.translated(t, fh, fwd6In, fwd6Want)
				})
				g.upsert(t, s4)
			})
		}
	}
}
