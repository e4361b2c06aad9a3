package lb_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/lb"
)

// Golden-packet tests for IPv6, in the style of golden_test.go: every
// input and expected output is built with gopacket (extension headers
// written by packets), run through BPF_PROG_TEST_RUN on every hook it
// applies to, compared byte for byte, and checksummed by packets' own
// arithmetic (pseudo-header with 16-byte addresses).

var (
	g6Client     = netip.MustParseAddrPort("[fd00:9::2]:40000")
	g6VIPTCP     = netip.MustParseAddrPort("[fd00::10]:80")
	g6VIPUDP     = netip.MustParseAddrPort("[fd00::10]:53")
	g6BackendTCP = netip.MustParseAddrPort("[fd00:1::2]:8080")
	g6BackendUDP = netip.MustParseAddrPort("[fd00:1::2]:5353")
	g6Backends   = []netip.AddrPort{
		netip.MustParseAddrPort("[fd00:1::2]:8080"),
		netip.MustParseAddrPort("[fd00:1::3]:8080"),
		netip.MustParseAddrPort("[fd00:1::4]:8080"),
	}
)

func goldenBuild6(t *testing.T, p packets.IPv6) []byte {
	t.Helper()
	b, err := p.Build()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenFlow6 builds a client packet of proto from src to dst with
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

// goldenDNAT6 returns p sent to to instead.
func goldenDNAT6(p packets.IPv6, to netip.AddrPort) packets.IPv6 {
	p.Dst = to
	return p
}

// goldenSNAT6 returns p coming from from instead.
func goldenSNAT6(p packets.IPv6, from netip.AddrPort) packets.IPv6 {
	p.Src = from
	return p
}

// goldenPayload is n bytes of a pattern.
func goldenPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

// --- 1. DNAT ---

func TestGolden6DNAT(t *testing.T) {
	tcpSvc := goldenService(lb.TCP, g6VIPTCP, g6BackendTCP)
	udpSvc := goldenService(lb.UDP, g6VIPUDP, g6BackendUDP)
	g := newGolden(t, tcpSvc, udpSvc)

	syn := goldenFlow6(lb.TCP, g6Client, g6VIPTCP, nil)
	syn.TCPFlags = packets.TCPFlags{SYN: true}
	padded := goldenFlow6(lb.TCP, g6Client, g6VIPTCP, goldenPayload(10))
	padded.Pad = 16
	cases := []struct {
		name string
		svc  lb.Service
		in   packets.IPv6
		to   netip.AddrPort
	}{
		{"tcp SYN", tcpSvc, syn, g6BackendTCP},
		{"tcp data", tcpSvc, goldenFlow6(lb.TCP, g6Client, g6VIPTCP, goldenPayload(100)), g6BackendTCP},
		{"tcp odd length", tcpSvc, goldenFlow6(lb.TCP, g6Client, g6VIPTCP, goldenPayload(101)), g6BackendTCP},
		{"tcp large", tcpSvc, goldenFlow6(lb.TCP, netip.MustParseAddrPort("[2001:db8:ffff:ffff:ffff:ffff:ffff:fffe]:65535"), g6VIPTCP, goldenPayload(1400)), g6BackendTCP},
		{"tcp frame longer than IP packet", tcpSvc, padded, g6BackendTCP},
		{"udp", udpSvc, goldenFlow6(lb.UDP, g6Client, g6VIPUDP, goldenPayload(33)), g6BackendUDP},
		{"udp large", udpSvc, goldenFlow6(lb.UDP, netip.MustParseAddrPort("[fe80::1]:1"), g6VIPUDP, goldenPayload(1400)), g6BackendUDP},
		{"udp empty", udpSvc, goldenFlow6(lb.UDP, g6Client, g6VIPUDP, nil), g6BackendUDP},
	}
	for _, c := range cases {
		in := goldenBuild6(t, c.in)
		want := goldenBuild6(t, goldenDNAT6(c.in, c.to))
		for _, h := range goldenAllHooks {
			t.Run(c.name+"/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				if !h.forward {
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
				g.requireCounted(t, goldenCounts{ForwardEst: 1}, len(in), func() { g.translated(t, h, in, want) })
			})
		}
	}
}

// --- 2. reverse NAT ---

func TestGolden6ReverseNAT(t *testing.T) {
	tcpSvc := goldenService(lb.TCP, g6VIPTCP, g6BackendTCP)
	udpSvc := goldenService(lb.UDP, g6VIPUDP, g6BackendUDP)
	g := newGolden(t, tcpSvc, udpSvc)
	other := netip.MustParseAddrPort("[fd00:1::99]:8080")

	for _, svc := range []lb.Service{tcpSvc, udpSvc} {
		proto, fe, be := svc.Frontend.Protocol, svc.Frontend.Address, svc.Backends[0].Address
		fwdPkt := goldenFlow6(proto, g6Client, fe, []byte("GET / HTTP/1.1\r\n\r\n"))
		fwdIn, fwdWant := goldenBuild6(t, fwdPkt), goldenBuild6(t, goldenDNAT6(fwdPkt, be))
		reply := goldenFlow6(proto, be, g6Client, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
		replyIn, replyWant := goldenBuild6(t, reply), goldenBuild6(t, goldenSNAT6(reply, fe))

		for _, fh := range goldenForwardHooks {
			for _, rh := range goldenReplyHooks {
				t.Run(fmt.Sprintf("%s/forward %s/reply %s", proto, fh.name, rh.name), func(t *testing.T) {
					g.flushConntrack(t)
					g.translated(t, fh, fwdIn, fwdWant)
					g.requireCounted(t, goldenCounts{Replies: 1}, len(replyIn), func() { g.translated(t, rh, replyIn, replyWant) })
					rep := g.conntrack(t)[goldenCtKey(be, g6Client, proto, gCTReply)]
					if rep.Packets != 1 || rep.Bytes != uint64(len(replyIn)) {
						t.Fatalf("reply entry counts %d packets, %d bytes; want 1, %d", rep.Packets, rep.Bytes, len(replyIn))
					}
					g.requireCounted(t, goldenCounts{Replies: 1}, len(replyIn), func() { g.translated(t, rh, replyIn, replyWant) })
				})
			}
		}

		// Reply-shaped packets that match no conntrack entry; the
		// addresses differ from the tracked ones in their first or last
		// byte, so all 16 bytes must be compared.
		otherProto := lb.UDP
		if proto == lb.UDP {
			otherProto = lb.TCP
		}
		noState := []struct {
			name      string
			withState bool // after a forward packet created state
			pkt       packets.IPv6
		}{
			{"no conntrack at all", false, reply},
			{"other client port", true, goldenFlow6(proto, be, netip.AddrPortFrom(g6Client.Addr(), g6Client.Port()+1), nil)},
			{"other client, last byte", true, goldenFlow6(proto, be, netip.MustParseAddrPort("[fd00:9::3]:40000"), nil)},
			{"other client, first byte", true, goldenFlow6(proto, be, netip.MustParseAddrPort("[fc00:9::2]:40000"), nil)},
			{"other backend port", true, goldenFlow6(proto, netip.AddrPortFrom(be.Addr(), be.Port()+1), g6Client, nil)},
			{"other backend", true, goldenFlow6(proto, other, g6Client, nil)},
			{"other backend, first byte", true, goldenFlow6(proto, netip.MustParseAddrPort("[fe00:1::2]:"+fmt.Sprint(be.Port())), g6Client, nil)},
			{"other protocol", true, goldenFlow6(otherProto, be, g6Client, nil)},
			{"client to the backend directly", true, goldenFlow6(proto, g6Client, be, nil)},
		}
		for _, c := range noState {
			in := goldenBuild6(t, c.pkt)
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

func TestGolden6EstablishedFlow(t *testing.T) {
	a, b, c := g6Backends[0], g6Backends[1], g6Backends[2]
	g := newGolden(t)
	for _, h := range goldenForwardHooks {
		t.Run(h.name, func(t *testing.T) {
			g.flushConntrack(t)
			g.upsert(t, goldenService(lb.TCP, g6VIPTCP, a))
			fe := lb.Frontend{Address: g6VIPTCP, Protocol: lb.TCP}
			pkt := goldenFlow6(lb.TCP, g6Client, g6VIPTCP, []byte("data"))
			in := goldenBuild6(t, pkt)
			want := func(be netip.AddrPort) []byte { return goldenBuild6(t, goldenDNAT6(pkt, be)) }

			g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(in), func() { g.translated(t, h, in, want(a)) })
			g.requireFlow(t, fe, g6Client, a)

			// The service grows: the flow stays on a.
			g.upsert(t, goldenService(lb.TCP, g6VIPTCP, a, b, c))
			g.requireCounted(t, goldenCounts{ForwardEst: 16}, 16*len(in), func() {
				for range 16 {
					g.translated(t, h, in, want(a))
				}
			})
			if fwd := g.requireFlow(t, fe, g6Client, a); fwd.Packets != 17 {
				t.Fatalf("forward entry counts %d packets, want 17", fwd.Packets)
			}
			// ...while new flows do use the new backends.
			seen := map[netip.AddrPort]int{}
			for i := range 40 {
				client := netip.AddrPortFrom(g6Client.Addr(), uint16(20000+i))
				p := goldenFlow6(lb.TCP, client, g6VIPTCP, nil)
				be := g.sentToWant(t, h, goldenBuild6(t, p), func(be netip.AddrPort) []byte { return goldenBuild6(t, goldenDNAT6(p, be)) }, a, b, c)
				g.requireFlow(t, fe, client, be)
				seen[be]++
			}
			if seen[b]+seen[c] == 0 {
				t.Fatalf("40 new flows all went to %s, none to the new backends: %v", a, seen)
			}

			// Its backend goes: the flow moves to one that remains, and
			// stays there.
			g.upsert(t, goldenService(lb.TCP, g6VIPTCP, b, c))
			var moved netip.AddrPort
			g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(in), func() { moved = g.sentToWant(t, h, in, want, b, c) })
			g.requireFlow(t, fe, g6Client, moved)
			g.requireCounted(t, goldenCounts{ForwardEst: 8}, 8*len(in), func() {
				for range 8 {
					g.translated(t, h, in, want(moved))
				}
			})
			// Replies from the new backend are translated back.
			reply := goldenFlow6(lb.TCP, moved, g6Client, []byte("ok"))
			g.translated(t, goldenTCEgress, goldenBuild6(t, reply), goldenBuild6(t, goldenSNAT6(reply, g6VIPTCP)))
		})
	}
}

// --- 4. extension headers ---

var (
	g6Hop  = netip.MustParseAddr("fd00:5::1")
	g6Home = netip.MustParseAddr("fd00:7::1")
)

// goldenBigHopByHop is a hop-by-hop header of n bytes (a multiple of 8,
// at least 8), filled with one option of an unknown, skippable type.
func goldenBigHopByHop(n int) packets.IPv6Ext {
	return packets.IPv6Ext{Type: layers.IPProtocolIPv6HopByHop, Options: []packets.IPv6Option{{Type: 0x1f, Data: make([]byte, n-4)}}}
}

func TestGolden6ExtensionHeaders(t *testing.T) {
	tcpSvc := goldenService(lb.TCP, g6VIPTCP, g6BackendTCP)
	udpSvc := goldenService(lb.UDP, g6VIPUDP, g6BackendUDP)
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
			fwd := goldenFlow6(proto, g6Client, fe, []byte("extension headers ahead of me"))
			fwd.Ext = ch.ext
			reply := goldenFlow6(proto, be, g6Client, []byte("and of my reply"))
			reply.Ext = ch.ext
			fwdIn, fwdWant := goldenBuild6(t, fwd), goldenBuild6(t, goldenDNAT6(fwd, be))
			replyIn, replyWant := goldenBuild6(t, reply), goldenBuild6(t, goldenSNAT6(reply, fe))
			if l, err := packets.Parse(fwdIn); err != nil || l.L4 != ch.l4 || l.Exts != len(ch.ext) {
				t.Fatalf("%s: built a frame with %d extension headers, transport at %d (%v)", ch.name, l.Exts, l.L4, err)
			}
			for _, h := range goldenAllHooks {
				t.Run(fmt.Sprintf("%s/%s/%s", ch.name, proto, h.name), func(t *testing.T) {
					g.flushConntrack(t)
					if !h.forward {
						g.requireCounted(t, goldenCounts{Passed: 1}, len(fwdIn), func() { g.untouched(t, h, fwdIn) })
						g.translated(t, goldenTCIngress, fwdIn, fwdWant)
					} else {
						g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(fwdIn), func() { g.translated(t, h, fwdIn, fwdWant) })
					}
					g.requireFlow(t, svc.Frontend, g6Client, be)
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
		p := goldenFlow6(lb.TCP, g6Client, g6VIPTCP, []byte("not the final destination"))
		p.Ext = []packets.IPv6Ext{rt.ext}
		in, translated := goldenBuild6(t, p), goldenBuild6(t, goldenDNAT6(p, g6BackendTCP))
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
			fwd := goldenFlow6(proto, g6Client, fe, []byte("too far"))
			fwd.Ext = c.ext
			reply := goldenFlow6(proto, be, g6Client, []byte("too far"))
			reply.Ext = c.ext
			plain := goldenFlow6(proto, g6Client, fe, nil)
			plainIn := goldenBuild6(t, plain)
			for _, d := range []struct {
				dir string
				in  []byte
			}{{"forward", goldenBuild6(t, fwd)}, {"reply", goldenBuild6(t, reply)}} {
				dir, in := d.dir, d.in
				if err := packets.VerifyChecksums(in); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				for _, h := range goldenAllHooks {
					t.Run(fmt.Sprintf("%s/%s/%s/%s", c.name, proto, dir, h.name), func(t *testing.T) {
						g.flushConntrack(t)
						// The flow is established, so replies would match.
						g.translated(t, goldenTCIngress, plainIn, goldenBuild6(t, goldenDNAT6(plain, be)))
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

// --- 5. traffic not for a service: other destinations, fragments, ESP ---

func TestGolden6NotForAService(t *testing.T) {
	g := newGolden(t, goldenService(lb.TCP, g6VIPTCP, g6BackendTCP), goldenService(lb.UDP, g6VIPUDP, g6BackendUDP))
	body := bytes.Repeat([]byte{0xab}, 24)
	frag := func(p packets.IPv6, ext ...packets.IPv6Ext) packets.IPv6 {
		p.Ext = append(p.Ext, ext...)
		return p
	}
	firstFrag := frag(goldenFlow6(lb.TCP, g6Client, g6VIPTCP, body), packets.Fragment(0, true, 0x1234))
	firstFragUDP := frag(goldenFlow6(lb.UDP, g6Client, g6VIPUDP, body), packets.Fragment(0, true, 0x1235))
	// A later fragment whose body happens to look like a TCP header for
	// the service.
	fakeTCP := goldenBuild6(t, goldenFlow6(lb.TCP, g6Client, g6VIPTCP, nil))[packets.EthLen+packets.IPv6Len:][:packets.TCPLen]
	laterFrag := packets.IPv6{Src: g6Client, Dst: g6VIPTCP, Proto: layers.IPProtocolTCP, NoL4Header: true,
		Payload: append(append([]byte{}, fakeTCP...), body...), Ext: []packets.IPv6Ext{packets.Fragment(185, true, 0x1234)}}
	lastFrag := laterFrag
	lastFrag.Ext = []packets.IPv6Ext{packets.Fragment(185, false, 0x1234)}
	shortLastFrag := packets.IPv6{Src: g6Client, Dst: g6VIPUDP, Proto: layers.IPProtocolUDP, NoL4Header: true,
		Payload: []byte("end"), Ext: []packets.IPv6Ext{packets.Fragment(1, false, 0x1235)}}
	afterHopByHop := frag(goldenFlow6(lb.TCP, g6Client, g6VIPTCP, body), packets.HopByHop, packets.Fragment(0, true, 0x1236))
	atomic := frag(goldenFlow6(lb.UDP, g6Client, g6VIPUDP, body), packets.Fragment(0, false, 0x1237))
	esp := packets.IPv6{Src: g6Client, Dst: g6VIPTCP, Proto: layers.IPProtocolESP, NoL4Header: true,
		Payload: append([]byte{0, 0, 0x10, 0, 0, 0, 0, 1}, fakeTCP...)}
	espAfterDestOpts := esp
	espAfterDestOpts.Ext = []packets.IPv6Ext{packets.DestOpts}
	noNext := packets.IPv6{Src: g6Client, Dst: g6VIPTCP, Proto: layers.IPProtocolNoNextHeader, NoL4Header: true, Payload: fakeTCP}
	noNextAfterHopByHop := packets.IPv6{Src: g6Client, Dst: g6VIPTCP, Proto: layers.IPProtocolNoNextHeader, NoL4Header: true,
		Ext: []packets.IPv6Ext{packets.HopByHop}}
	unknown := packets.IPv6{Src: g6Client, Dst: g6VIPTCP, Proto: 253, NoL4Header: true, Payload: fakeTCP}
	icmp := packets.IPv6{Src: g6Client, Dst: netip.AddrPortFrom(g6VIPTCP.Addr(), 0), Proto: layers.IPProtocolICMPv6, Payload: body}

	cases := []struct {
		name string
		in   packets.IPv6
		want goldenCounts
	}{
		{"tcp to another port of the VIP", goldenFlow6(lb.TCP, g6Client, netip.AddrPortFrom(g6VIPTCP.Addr(), 81), nil), goldenCounts{Passed: 1}},
		{"tcp to the udp service port", goldenFlow6(lb.TCP, g6Client, g6VIPUDP, nil), goldenCounts{Passed: 1}},
		{"udp to the tcp service port", goldenFlow6(lb.UDP, g6Client, g6VIPTCP, nil), goldenCounts{Passed: 1}},
		{"tcp to another address, last byte", goldenFlow6(lb.TCP, g6Client, netip.MustParseAddrPort("[fd00::11]:80"), nil), goldenCounts{Passed: 1}},
		{"tcp to another address, first byte", goldenFlow6(lb.TCP, g6Client, netip.MustParseAddrPort("[fc00::10]:80"), nil), goldenCounts{Passed: 1}},
		{"udp to another address", goldenFlow6(lb.UDP, g6Client, netip.MustParseAddrPort("[2001:db8::1]:53"), body), goldenCounts{Passed: 1}},
		{"icmpv6 echo to the VIP", icmp, goldenCounts{Passed: 1}},
		{"esp to the VIP", esp, goldenCounts{Passed: 1}},
		{"esp after destination options", espAfterDestOpts, goldenCounts{Passed: 1}},
		{"no next header", noNext, goldenCounts{Passed: 1}},
		{"no next header after hop-by-hop", noNextAfterHopByHop, goldenCounts{Passed: 1}},
		{"unknown next header 253", unknown, goldenCounts{Passed: 1}},
		{"first fragment (M) tcp to the service", firstFrag, goldenCounts{Fragments: 1}},
		{"first fragment (M) udp to the service", firstFragUDP, goldenCounts{Fragments: 1}},
		{"middle fragment (M, offset)", laterFrag, goldenCounts{Fragments: 1}},
		{"last fragment (offset)", lastFrag, goldenCounts{Fragments: 1}},
		{"short last udp fragment", shortLastFrag, goldenCounts{Fragments: 1}},
		{"fragment header after hop-by-hop", afterHopByHop, goldenCounts{Fragments: 1}},
		{"atomic fragment (no M, no offset)", atomic, goldenCounts{Fragments: 1}},
	}
	for _, c := range cases {
		in := goldenBuild6(t, c.in)
		for _, h := range goldenAllHooks {
			t.Run(c.name+"/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				g.requireCounted(t, c.want, len(in), func() { g.untouched(t, h, in) })
				g.requireNoConntrack(t)
			})
		}
	}
}

// --- 6. truncated and malformed ---

func TestGolden6Malformed(t *testing.T) {
	g := newGolden(t, goldenService(lb.TCP, g6VIPTCP, g6BackendTCP), goldenService(lb.UDP, g6VIPUDP, g6BackendUDP))
	body := []byte("0123456789abcdef")
	tcp := goldenFlow6(lb.TCP, g6Client, g6VIPTCP, body)
	tcpPkt := goldenBuild6(t, tcp)
	udpPkt := goldenBuild6(t, goldenFlow6(lb.UDP, g6Client, g6VIPUDP, body))
	hbh := tcp
	hbh.Ext = []packets.IPv6Ext{packets.HopByHop}
	hbhPkt := goldenBuild6(t, hbh)
	ah := goldenFlow6(lb.UDP, g6Client, g6VIPUDP, body)
	ah.Ext = []packets.IPv6Ext{packets.AH}
	ahPkt := goldenBuild6(t, ah)
	// A jumbogram: payload length 0 and a jumbo payload option (RFC 2675)
	// with the real length.
	jumbo := tcp
	jumbo.Ext = []packets.IPv6Ext{{Type: layers.IPProtocolIPv6HopByHop, Options: []packets.IPv6Option{{Type: 0xc2, Data: []byte{0, 0, 0, 8 + packets.TCPLen + byte(len(body))}}}}}
	jumboPkt := goldenBuild6(t, jumbo)
	noBody := goldenBuild6(t, goldenFlow6(lb.TCP, g6Client, g6VIPTCP, nil))

	const (
		ipOff   = packets.EthLen
		plenOff = ipOff + 4
		l4Off   = packets.EthLen + packets.IPv6Len
	)
	mod := func(frame []byte, f func(b []byte) []byte) []byte { return f(append([]byte(nil), frame...)) }
	setPlen := func(b []byte, n int) { binary.BigEndian.PutUint16(b[plenOff:], uint16(n)) }
	// truncate cuts the IPv6 payload to n bytes, frame and payload length
	// both.
	truncate := func(frame []byte, n int) []byte {
		return mod(frame, func(b []byte) []byte { setPlen(b, n); return b[:l4Off+n] })
	}

	cases := []struct {
		name string
		in   []byte
		// The kernel's BPF_PROG_TEST_RUN may refuse the frame (EINVAL).
		kernelMayRefuse bool
	}{
		{"ipv6 header cut short", tcpPkt[:ipOff+20], true},
		{"ipv6 header cut short by one byte", tcpPkt[:ipOff+39], true},
		{name: "version 4 with ethertype ipv6", in: mod(tcpPkt, func(b []byte) []byte { b[ipOff] = 0x4b; return b })},
		{name: "version 0", in: mod(udpPkt, func(b []byte) []byte { b[ipOff] = 0x0b; return b })},
		{name: "version 7", in: mod(tcpPkt, func(b []byte) []byte { b[ipOff] = 0x7b; return b })},
		{name: "payload length 0", in: mod(tcpPkt, func(b []byte) []byte { setPlen(b, 0); return b })},
		{name: "jumbogram", in: mod(jumboPkt, func(b []byte) []byte { setPlen(b, 0); return b })},
		{name: "payload length one more than the frame", in: mod(tcpPkt, func(b []byte) []byte { setPlen(b, len(b)-l4Off+1); return b })},
		{name: "payload length 1500 in a short frame", in: mod(udpPkt, func(b []byte) []byte { setPlen(b, 1500); return b })},
		{name: "frame cut inside the payload", in: tcpPkt[:len(tcpPkt)-4]},
		{name: "extension header cut short", in: truncate(hbhPkt, 1)},
		{name: "extension header cut short, padded frame", in: mod(hbhPkt, func(b []byte) []byte { setPlen(b, 1); return b })},
		{name: "extension header longer than the payload", in: mod(hbhPkt, func(b []byte) []byte { b[l4Off+1] = 8; return b })},
		{name: "AH longer than the payload", in: mod(ahPkt, func(b []byte) []byte { b[l4Off+1] = 20; return b })},
		{name: "frame cut inside an extension header", in: hbhPkt[:l4Off+5]},
		{name: "tcp header cut short", in: truncate(tcpPkt, 10)},
		{name: "tcp header cut short, payload length not", in: tcpPkt[:l4Off+10]},
		{name: "tcp header cut short, padded frame", in: mod(tcpPkt, func(b []byte) []byte { setPlen(b, packets.TCPLen-1); return b })},
		{name: "tcp header cut short after hop-by-hop", in: truncate(hbhPkt, 8+10)},
		{name: "tcp data offset 4", in: mod(tcpPkt, func(b []byte) []byte { b[l4Off+12] = 4 << 4; return b })},
		{name: "tcp data offset 0", in: mod(tcpPkt, func(b []byte) []byte { b[l4Off+12] = 0; return b })},
		{name: "tcp data offset beyond the segment", in: mod(noBody, func(b []byte) []byte { b[l4Off+12] = 15 << 4; return b })},
		{name: "udp header cut short", in: truncate(udpPkt, 4)},
		{name: "udp header cut short after AH", in: truncate(ahPkt, 24+4)},
		{name: "udp length 7", in: mod(udpPkt, func(b []byte) []byte { binary.BigEndian.PutUint16(b[l4Off+4:], 7); return b })},
		{name: "udp length 0", in: mod(udpPkt, func(b []byte) []byte { binary.BigEndian.PutUint16(b[l4Off+4:], 0); return b })},
		{name: "udp length beyond the payload", in: mod(udpPkt, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[l4Off+4:], uint16(packets.UDPLen+len(body)+1))
			return b
		})},
		{name: "udp length beyond the payload after AH", in: mod(ahPkt, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[l4Off+24+4:], uint16(packets.UDPLen+len(body)+1))
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
	// services were live throughout.
	t.Run("control", func(t *testing.T) {
		for _, h := range goldenForwardHooks {
			g.flushConntrack(t)
			g.translated(t, h, tcpPkt, goldenBuild6(t, goldenDNAT6(tcp, g6BackendTCP)))
			g.translated(t, h, hbhPkt, goldenBuild6(t, goldenDNAT6(hbh, g6BackendTCP)))
			g.translated(t, h, ahPkt, goldenBuild6(t, goldenDNAT6(ah, g6BackendUDP)))
		}
	})
}

// --- 7. v4-mapped addresses ---

// IPv4 services are stored v4-mapped; an IPv6 packet with a v4-mapped
// address (which never appears on the wire) must match neither them nor
// an IPv6 service, nor an IPv4 flow's reply entry.
func TestGolden6V4Mapped(t *testing.T) {
	g := newGolden(t,
		goldenService(lb.TCP, gVIPTCP, gBackendTCP), goldenService(lb.UDP, gVIPUDP, gBackendUDP),
		goldenService(lb.TCP, g6VIPTCP, g6BackendTCP), goldenService(lb.UDP, g6VIPUDP, g6BackendUDP))
	mapped := func(ap netip.AddrPort) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom16(ap.Addr().As16()), ap.Port())
	}
	if a := mapped(gVIPTCP).Addr(); !a.Is4In6() || a.String() != "::ffff:10.96.0.10" {
		t.Fatalf("v4-mapped VIP is %v", a)
	}
	v4Fwd := goldenFlow(lb.TCP, gClient, gVIPTCP, []byte("v4"))
	v4FwdIn, v4FwdWant := goldenBuild(t, v4Fwd), goldenBuild(t, goldenDNAT(v4Fwd, gBackendTCP))
	v4FwdUDP := goldenFlow(lb.UDP, gClient, gVIPUDP, []byte("v4"))

	cases := []struct {
		name string
		in   packets.IPv6
		v4   bool // with IPv4 flows from gClient established
	}{
		{"tcp to the v4-mapped IPv4 VIP", goldenFlow6(lb.TCP, g6Client, mapped(gVIPTCP), nil), false},
		{"udp to the v4-mapped IPv4 VIP", goldenFlow6(lb.UDP, g6Client, mapped(gVIPUDP), []byte("q")), false},
		{"tcp from a v4-mapped client to the v4-mapped VIP", goldenFlow6(lb.TCP, mapped(gClient), mapped(gVIPTCP), nil), false},
		{"tcp from a v4-mapped client to the IPv6 VIP", goldenFlow6(lb.TCP, mapped(gClient), g6VIPTCP, nil), false},
		{"udp from a v4-mapped client to the IPv6 VIP", goldenFlow6(lb.UDP, mapped(gClient), g6VIPUDP, []byte("q")), false},
		{"tcp from the v4-mapped IPv4 VIP to an IPv6 client", goldenFlow6(lb.TCP, mapped(gVIPTCP), g6Client, nil), false},
		{"tcp, the IPv4 flow's reply v4-mapped", goldenFlow6(lb.TCP, mapped(gBackendTCP), mapped(gClient), []byte("r")), true},
		{"udp, the IPv4 flow's reply v4-mapped", goldenFlow6(lb.UDP, mapped(gBackendUDP), mapped(gClient), []byte("r")), true},
		{"tcp, the IPv4 flow's forward packet v4-mapped", goldenFlow6(lb.TCP, mapped(gClient), mapped(gVIPTCP), []byte("v4")), true},
	}
	for _, c := range cases {
		in := goldenBuild6(t, c.in)
		for _, h := range goldenAllHooks {
			t.Run(c.name+"/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				if c.v4 {
					g.translated(t, goldenTCIngress, v4FwdIn, v4FwdWant)
					g.translated(t, goldenTCIngress, goldenBuild(t, v4FwdUDP), goldenBuild(t, goldenDNAT(v4FwdUDP, gBackendUDP)))
				}
				before := g.conntrack(t)
				g.requireCounted(t, goldenCounts{Passed: 1}, len(in), func() { g.untouched(t, h, in) })
				after := g.conntrack(t)
				if len(after) != len(before) {
					t.Fatalf("conntrack went from %d to %d entries", len(before), len(after))
				}
				for k, v := range after {
					if before[k].Packets != v.Packets {
						t.Fatalf("conntrack entry %+v counted the packet", k)
					}
				}
			})
		}
	}
}

// --- 8. UDP checksums ---

func TestGolden6UDPChecksum(t *testing.T) {
	svc := goldenService(lb.UDP, g6VIPUDP, g6BackendUDP)
	g := newGolden(t, svc)
	udpCheck := func(frame []byte) uint16 {
		l, err := packets.Parse(frame)
		if err != nil {
			t.Fatal(err)
		}
		return binary.BigEndian.Uint16(frame[l.L4+6:])
	}
	setCheck := func(frame []byte, c uint16) {
		l, _ := packets.Parse(frame)
		binary.BigEndian.PutUint16(frame[l.L4+6:], c)
	}
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
	dnat := func(p packets.IPv6) packets.IPv6 { return goldenDNAT6(p, g6BackendUDP) }
	snat := func(p packets.IPv6) packets.IPv6 { return goldenSNAT6(p, g6VIPUDP) }

	t.Run("real checksum is updated", func(t *testing.T) {
		fwd := goldenFlow6(lb.UDP, g6Client, g6VIPUDP, []byte("with checksum"))
		reply := goldenFlow6(lb.UDP, g6BackendUDP, g6Client, []byte("with checksum too"))
		fwdIn, fwdWant := goldenBuild6(t, fwd), goldenBuild6(t, dnat(fwd))
		replyIn, replyWant := goldenBuild6(t, reply), goldenBuild6(t, snat(reply))
		if udpCheck(fwdIn) == 0 || udpCheck(fwdWant) == udpCheck(fwdIn) {
			t.Fatal("the test packets do not exercise a checksum change")
		}
		run(t, fwdIn, fwdWant, replyIn, replyWant)
	})

	// zeroing tunes p's payload so that translated(p)'s checksum
	// computes to 0; it returns p and translated(p), the latter with the
	// checksum field 0xffff (0 would mean "none", which IPv6 forbids).
	zeroing := func(p packets.IPv6, translated func(packets.IPv6) packets.IPv6) (packets.IPv6, []byte) {
		p.Payload = []byte{0, 0}
		c := udpCheck(goldenBuild6(t, translated(p)))
		p.Payload = []byte{byte(c >> 8), byte(c)}
		want := goldenBuild6(t, translated(p))
		if udpCheck(want) != 0 {
			t.Fatalf("payload tuning failed: translated checksum %#04x", udpCheck(want))
		}
		setCheck(want, 0xffff)
		return p, want
	}

	t.Run("computed zero is sent as 0xffff", func(t *testing.T) {
		fwd, fwdWant := zeroing(goldenFlow6(lb.UDP, g6Client, g6VIPUDP, nil), dnat)
		reply, replyWant := zeroing(goldenFlow6(lb.UDP, g6BackendUDP, g6Client, nil), snat)
		run(t, goldenBuild6(t, fwd), fwdWant, goldenBuild6(t, reply), replyWant)
	})

	// The same, the other way round: inputs whose checksum computes to 0
	// and is sent as 0xffff translate to the right checksum.
	t.Run("0xffff is updated", func(t *testing.T) {
		untranslated := func(p packets.IPv6) packets.IPv6 { return p }
		fwd, fwdIn := zeroing(goldenFlow6(lb.UDP, g6Client, g6VIPUDP, nil), untranslated)
		reply, replyIn := zeroing(goldenFlow6(lb.UDP, g6BackendUDP, g6Client, nil), untranslated)
		fwdWant, replyWant := goldenBuild6(t, dnat(fwd)), goldenBuild6(t, snat(reply))
		if udpCheck(fwdIn) != 0xffff || udpCheck(fwdWant) == 0 || udpCheck(fwdWant) == 0xffff {
			t.Fatalf("the test packets do not start from 0xffff: %#04x -> %#04x", udpCheck(fwdIn), udpCheck(fwdWant))
		}
		run(t, fwdIn, fwdWant, replyIn, replyWant)
	})
}

// A UDP checksum of 0 is not allowed over IPv6 (RFC 8200, 8.1), except
// that tunnels may send it and their endpoints accept it (RFC 6935, 6936;
// Linux: UDP_NO_CHECK6_RX). The tc programs' checksum helpers, with
// BPF_F_MARK_MANGLED_0, leave a zero UDP checksum alone whatever the
// family; so every hook must, or XDP and tc would give different bytes, and
// a tunnel's datagram would arrive with a checksum that is neither none
// nor right.
func TestGolden6UDPZeroChecksum(t *testing.T) {
	svc := goldenService(lb.UDP, g6VIPUDP, g6BackendUDP)
	g := newGolden(t, svc)
	fwd := goldenFlow6(lb.UDP, g6Client, g6VIPUDP, []byte("tunnelled, no checksum"))
	fwd.UDPZeroChecksum = true
	reply := goldenFlow6(lb.UDP, g6BackendUDP, g6Client, []byte("none here either"))
	reply.UDPZeroChecksum = true
	fwdIn, fwdWant := goldenBuild6(t, fwd), goldenBuild6(t, goldenDNAT6(fwd, g6BackendUDP))
	replyIn, replyWant := goldenBuild6(t, reply), goldenBuild6(t, goldenSNAT6(reply, g6VIPUDP))
	// zeroKept is translated without the checksum check, which rejects a
	// UDP checksum of 0 over IPv6.
	zeroKept := func(t *testing.T, h goldenHook, in, want []byte) {
		t.Helper()
		goldenRequireBytes(t, h.name+": translated output", g.pass(t, h, in), want)
	}
	for _, fh := range goldenForwardHooks {
		for _, rh := range goldenReplyHooks {
			t.Run(fh.name+"/"+rh.name, func(t *testing.T) {
				g.flushConntrack(t)
				g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(fwdIn), func() { zeroKept(t, fh, fwdIn, fwdWant) })
				g.requireFlow(t, svc.Frontend, g6Client, g6BackendUDP)
				g.requireCounted(t, goldenCounts{Replies: 1}, len(replyIn), func() { zeroKept(t, rh, replyIn, replyWant) })
			})
		}
	}
}

// --- 9. dual stack ---

func TestGolden6DualStack(t *testing.T) {
	v4 := []lb.Service{goldenService(lb.TCP, gVIPTCP, gBackendTCP), goldenService(lb.UDP, gVIPUDP, gBackendUDP)}
	v6 := []lb.Service{goldenService(lb.TCP, g6VIPTCP, g6BackendTCP), goldenService(lb.UDP, g6VIPUDP, g6BackendUDP)}
	g := newGolden(t, append(append([]lb.Service{}, v4...), v6...)...)

	for i, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
		s4, s6 := v4[i], v6[i]
		fe4, be4, fe6, be6 := s4.Frontend.Address, s4.Backends[0].Address, s6.Frontend.Address, s6.Backends[0].Address
		// The same client port and service port in both families.
		fwd4, reply4 := goldenFlow(proto, gClient, fe4, []byte("four")), goldenFlow(proto, be4, gClient, []byte("four back"))
		fwd6, reply6 := goldenFlow6(proto, g6Client, fe6, []byte("six")), goldenFlow6(proto, be6, g6Client, []byte("six back"))
		fwd4In, fwd4Want := goldenBuild(t, fwd4), goldenBuild(t, goldenDNAT(fwd4, be4))
		reply4In, reply4Want := goldenBuild(t, reply4), goldenBuild(t, goldenSNAT(reply4, fe4))
		fwd6In, fwd6Want := goldenBuild6(t, fwd6), goldenBuild6(t, goldenDNAT6(fwd6, be6))
		reply6In, reply6Want := goldenBuild6(t, reply6), goldenBuild6(t, goldenSNAT6(reply6, fe6))
		for _, fh := range goldenForwardHooks {
			rh := goldenReplyHookFor(fh)
			t.Run(fmt.Sprintf("%s/%s", proto, fh.name), func(t *testing.T) {
				g.flushConntrack(t)
				g.requireCounted(t, goldenCounts{ForwardNew: 2}, len(fwd4In)+len(fwd6In), func() {
					g.translated(t, fh, fwd4In, fwd4Want)
					g.translated(t, fh, fwd6In, fwd6Want)
				})
				g.requireFlow(t, s4.Frontend, gClient, be4)
				g.requireFlow(t, s6.Frontend, g6Client, be6)
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
			{"ipv4 to the port only ipv6 serves", goldenBuild(t, goldenFlow(proto, gClient, netip.AddrPortFrom(fe4.Addr(), port), nil))},
			{"ipv6 to the port only ipv4 serves", goldenBuild6(t, goldenFlow6(proto, g6Client, netip.AddrPortFrom(fe6.Addr(), port+100), nil))},
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
