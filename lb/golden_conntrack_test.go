package lb_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/dptest"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/lb"
)

// Timeouts short enough to age entries past on a machine up for minutes,
// and far enough apart that the ages below fall between them.
var goldenTimeouts = datapath.ConntrackTimeouts{
	TCPClosing: 5 * time.Second, UDP: 10 * time.Second, TCPOpening: 20 * time.Second,
	UDPStream: 30 * time.Second, TCPEstablished: 40 * time.Second,
}

// age makes every conntrack entry d older.
func (g *golden) age(t *testing.T, d time.Duration) {
	t.Helper()
	dptest.AgeConntrack(t, g.dp, d)
}

// ctFlags are a conntrack entry's flags, in the order of the C struct.
type ctFlags struct{ seenReply, finForward, finReply, rst bool }

func flagsOf(v bpf.XdplaneCtValue) ctFlags {
	return ctFlags{v.SeenReply != 0, v.FinForward != 0, v.FinReply != 0, v.Rst != 0}
}

func (g *golden) ctStats(t *testing.T) lb.ConntrackStats {
	t.Helper()
	st, err := lb.ReadConntrackStats(g.dp)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Every transition of a TCP flow's life, on each hook that balances and
// the hook that translates its replies: a SYN goes to a backend and a
// retransmitted SYN stays there; an answer makes the flow established, a
// FIN from one side does not end it (a SYN then stays too), a FIN from
// both does, and a SYN over it is balanced afresh; a reset ends it; an
// opening flow expires after TCPOpening, an established one not before
// TCPEstablished; and a packet other than a SYN keeps its backend however
// long it was idle. Each step checks the exact frame, which backend the
// flow's entries name, and their flags.
func TestGoldenConntrackTCPLife(t *testing.T) {
	goldenForFamilies(t, goldenTCPLife[packets.IPv4], goldenTCPLife[packets.IPv6])
}

func goldenTCPLife[P goldenIP](t *testing.T, fam goldenFamily[P]) {
	a, b := fam.backends[0], fam.backends[1]
	fe := lb.Frontend{Address: fam.vipTCP, Protocol: lb.TCP}
	withFlags := func(p P, f packets.TCPFlags) P {
		return goldenEdit(p, func(q *packets.IPv4) { q.TCPFlags = f }, func(q *packets.IPv6) { q.TCPFlags = f })
	}
	syn := withFlags(fam.flow(lb.TCP, fam.client, fam.vipTCP, nil), packets.TCPFlags{SYN: true})
	ack := withFlags(fam.flow(lb.TCP, fam.client, fam.vipTCP, goldenPayload(10)), packets.TCPFlags{ACK: true, PSH: true})
	fin := withFlags(fam.flow(lb.TCP, fam.client, fam.vipTCP, nil), packets.TCPFlags{FIN: true, ACK: true})
	reply := func(from netip.AddrPort, f packets.TCPFlags) P {
		return withFlags(goldenPlain[P](from, fam.client, goldenIPProto(lb.TCP), nil, false), f)
	}
	// only makes be the one backend that takes new flows; the other stays
	// in the service, in maintenance, so its flows go on.
	only := func(g *golden, be netip.AddrPort) {
		other := a
		if be == a {
			other = b
		}
		s := goldenService(lb.TCP, fam.vipTCP, be, other)
		s.Backends[1].State = lb.Maintenance
		g.upsert(t, s)
	}

	for _, h := range goldenForwardHooks {
		t.Run(h.name, func(t *testing.T) {
			g := newGoldenWith(t, datapath.Options{Conntrack: goldenTimeouts})
			rh := goldenReplyHookFor(h)
			only(g, a)
			// step sends p from the client and requires it to reach be,
			// counted as new or established; then the flow's forward
			// entry must name be and hold want.
			step := func(what string, p P, be netip.AddrPort, isNew bool, want ctFlags) {
				t.Helper()
				in := goldenBuild(t, p)
				c := goldenCounts{ForwardEst: 1}
				if isNew {
					c = goldenCounts{ForwardNew: 1}
				}
				g.requireCounted(t, c, len(in), func() { g.translated(t, h, in, goldenBuild(t, goldenDNAT(p, be))) })
				fwd := g.requireFlow(t, fe, fam.client, be)
				if got := flagsOf(fwd); got != want {
					t.Fatalf("%s: forward entry flags %+v, want %+v", what, got, want)
				}
			}
			answer := func(from netip.AddrPort, f packets.TCPFlags) {
				t.Helper()
				p := reply(from, f)
				g.translated(t, rh, goldenBuild(t, p), goldenBuild(t, goldenSNAT(p, fam.vipTCP)))
			}

			created := g.ctStats(t).Created
			step("SYN", syn, a, true, ctFlags{})
			if got := g.ctStats(t).Created - created; got != 2 {
				t.Fatalf("a new flow made %d entries, want 2", got)
			}
			only(g, b) // from now on new flows go to b
			step("retransmitted SYN", syn, a, false, ctFlags{})
			answer(a, packets.TCPFlags{SYN: true, ACK: true})
			step("data", ack, a, false, ctFlags{seenReply: true})
			step("client FIN", fin, a, false, ctFlags{seenReply: true, finForward: true})
			step("SYN of a half-closed flow", syn, a, false, ctFlags{seenReply: true, finForward: true})
			answer(a, packets.TCPFlags{FIN: true, ACK: true})
			reopened := g.ctStats(t).Reopened
			step("SYN over a closed flow", syn, b, true, ctFlags{})
			if got := g.ctStats(t).Reopened - reopened; got != 1 {
				t.Fatalf("Reopened moved by %d, want 1", got)
			}

			only(g, a)
			answer(b, packets.TCPFlags{RST: true, ACK: true})
			step("SYN over a reset flow", syn, a, true, ctFlags{})

			only(g, b)
			g.age(t, 15*time.Second) // opening, under TCPOpening
			step("SYN of an opening flow", syn, a, false, ctFlags{})
			g.age(t, 25*time.Second) // past TCPOpening
			step("SYN over an expired opening flow", syn, b, true, ctFlags{})

			only(g, a)
			answer(b, packets.TCPFlags{SYN: true, ACK: true})
			g.age(t, 35*time.Second) // established, under TCPEstablished
			step("SYN of an established flow", syn, b, false, ctFlags{seenReply: true})
			g.age(t, 45*time.Second) // past every timeout
			step("data after a long silence", ack, b, false, ctFlags{seenReply: true})
			g.age(t, 45*time.Second)
			step("SYN over an expired established flow", syn, a, true, ctFlags{})
		})
	}
}

// A UDP flow expires after UDP until its backend answers, after UDPStream
// once it has; a datagram over an expired entry is balanced afresh.
func TestGoldenConntrackUDPLife(t *testing.T) {
	goldenForFamilies(t, goldenUDPLife[packets.IPv4], goldenUDPLife[packets.IPv6])
}

func goldenUDPLife[P goldenIP](t *testing.T, fam goldenFamily[P]) {
	a, b := netip.AddrPortFrom(fam.backends[0].Addr(), 5353), netip.AddrPortFrom(fam.backends[1].Addr(), 5353)
	fe := lb.Frontend{Address: fam.vipUDP, Protocol: lb.UDP}
	only := func(g *golden, be netip.AddrPort) {
		other := a
		if be == a {
			other = b
		}
		s := goldenService(lb.UDP, fam.vipUDP, be, other)
		s.Backends[1].State = lb.Maintenance
		g.upsert(t, s)
	}
	dgram := fam.flow(lb.UDP, fam.client, fam.vipUDP, goldenPayload(12))
	for _, h := range goldenForwardHooks {
		t.Run(h.name, func(t *testing.T) {
			g := newGoldenWith(t, datapath.Options{Conntrack: goldenTimeouts})
			step := func(what string, be netip.AddrPort, isNew bool, want ctFlags) {
				t.Helper()
				in := goldenBuild(t, dgram)
				c := goldenCounts{ForwardEst: 1}
				if isNew {
					c = goldenCounts{ForwardNew: 1}
				}
				g.requireCounted(t, c, len(in), func() { g.translated(t, h, in, goldenBuild(t, goldenDNAT(dgram, be))) })
				if got := flagsOf(g.requireFlow(t, fe, fam.client, be)); got != want {
					t.Fatalf("%s: forward entry flags %+v, want %+v", what, got, want)
				}
			}
			only(g, a)
			step("first datagram", a, true, ctFlags{})
			only(g, b)
			g.age(t, 8*time.Second)
			step("within UDP", a, false, ctFlags{})
			g.age(t, 12*time.Second)
			step("past UDP", b, true, ctFlags{})
			p := goldenPlain[P](b, fam.client, goldenIPProto(lb.UDP), goldenPayload(4), false)
			g.translated(t, goldenReplyHookFor(h), goldenBuild(t, p), goldenBuild(t, goldenSNAT(p, fam.vipUDP)))
			only(g, a)
			g.age(t, 25*time.Second)
			step("answered, within UDPStream", b, false, ctFlags{seenReply: true})
			g.age(t, 35*time.Second)
			step("past UDPStream", a, true, ctFlags{})
		})
	}
}
