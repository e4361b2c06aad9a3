package policy

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
)

// Random policies, installed through the Manager and judged by the
// programs through BPF_PROG_TEST_RUN, decide every probe as Decide does:
// the whole chain, compiler, key encoding and the datapath's lookups, held
// to the reference meaning.
func TestDatapathMatchesDecide(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	seeds := 60
	if testing.Short() {
		seeds = 15
	}
	for seed := range uint64(seeds) {
		rng := rand.New(rand.NewPCG(seed, 77))
		p := genPolicy(rng)
		r.setPolicy(p)
		addrs, flows := probeAddrs(rng, p), probePorts(p)
		for _, dir := range []Direction{Ingress, Egress} {
			// Every probe a new flow: nothing an earlier one let through.
			clearMap(t, kernel.Of(r.dp).Maps.PolicyCt)
			for i := range 250 {
				peer := addrs[rng.IntN(len(addrs))]
				fl := flows[rng.IntN(len(flows))]
				frame, ok := probeFrame(t, dir, peer, fl.proto, fl.port, uint16(20000+i))
				if !ok {
					continue
				}
				want := p.Decide(dir, peer, fl.proto, fl.port) == Allowed
				ret, _ := r.run(dir, frame)
				if got := ret == tcActUnspc; got != want {
					t.Fatalf("seed %d: %s %s %s: datapath passes=%v, Decide allows=%v\npolicy %+v", seed, dir, peer, fl, got, want, p)
				}
			}
		}
	}
}

// probeFrame builds the first packet of a flow between the golden
// endpoint and peer, in direction dir, of protocol proto to port (an ICMP
// type for ICMP). It reports false for what the datapath deliberately
// treats apart: v4-mapped addresses on the wire, IPv6 neighbour discovery,
// and protocols whose number is an IPv6 extension header.
func probeFrame(t *testing.T, dir Direction, peer netip.Addr, proto Protocol, port, sport uint16) ([]byte, bool) {
	if peer.Is4In6() {
		return nil, false
	}
	pod := pod4
	if peer.Is6() {
		pod = pod6
	}
	src, dst := netip.AddrPortFrom(peer, sport), netip.AddrPortFrom(pod, port)
	if dir == Egress {
		src, dst = netip.AddrPortFrom(pod, sport), netip.AddrPortFrom(peer, port)
	}
	s, d := src.String(), dst.String()
	switch {
	case proto == TCP && peer.Is4():
		return packets.TCP4(s, d), true
	case proto == TCP:
		return packets.TCP6(s, d), true
	case proto == UDP && peer.Is4():
		return packets.UDP4(s, d), true
	case proto == UDP:
		return packets.UDP6(s, d), true
	case proto == SCTP && peer.Is4():
		return packets.Raw4(src.Addr().String(), dst.Addr().String(), layers.IPProtocolSCTP, packets.SCTPHeader(sport, port)), true
	case proto == SCTP:
		return packets.Raw6(src.Addr().String(), dst.Addr().String(), layers.IPProtocolSCTP, packets.SCTPHeader(sport, port)), true
	case (proto == ICMP || proto == 58) && port > 255:
		return nil, false
	case proto == ICMP && peer.Is4():
		return packets.Raw4(src.Addr().String(), dst.Addr().String(), layers.IPProtocolICMPv4, packets.ICMPMsg(uint8(port), 0, uint32(sport)<<16, make([]byte, 8))), true
	case proto == ICMP || proto == 58 && peer.Is6():
		if port >= 130 && port <= 137 || port == 143 {
			return nil, false // neighbour discovery: never judged
		}
		return packets.Raw6(src.Addr().String(), dst.Addr().String(), layers.IPProtocolICMPv6, packets.ICMPMsg(uint8(port), 0, uint32(sport)<<16, make([]byte, 8))), true
	}
	switch proto {
	case 0, 43, 44, 51, 60:
		if peer.Is6() {
			return nil, false // extension headers, walked rather than judged
		}
	}
	if peer.Is4() {
		return packets.Raw4(src.Addr().String(), dst.Addr().String(), layers.IPProtocol(proto), make([]byte, 8)), true
	}
	return packets.Raw6(src.Addr().String(), dst.Addr().String(), layers.IPProtocol(proto), make([]byte, 8)), true
}

// A policy whose prefixes come in more lengths than policy_lens holds is
// looked up in the trie instead; both ways give Decide's answers.
func TestDatapathManyLengths(t *testing.T) {
	r := newRig(t, datapath.Limits{})
	rng := rand.New(rand.NewPCG(5, 5))
	for _, many := range []bool{false, true} {
		var rules []Rule
		lengths := 8
		if many {
			lengths = 40
		}
		// Nested prefixes of distinct lengths around fd00::/112 and
		// 10.0.0.0/16, each allowing another port.
		for i := range lengths {
			bits := 128 - i
			rules = append(rules, Rule{Peers: []Peer{{Prefix: netip.PrefixFrom(netip.MustParseAddr("fd00::1234"), bits).Masked()}},
				Ports: []PortRange{{Protocol: TCP, Port: uint16(100 + i)}}})
			if i < 25 {
				rules = append(rules, Rule{Peers: []Peer{{Prefix: netip.PrefixFrom(netip.MustParseAddr("10.0.18.52"), 32-i).Masked()}},
					Ports: []PortRange{{Protocol: TCP, Port: uint16(100 + i)}}})
			}
		}
		p := Policy{Ingress: Rules{Isolated: true, Rules: rules}}
		r.setPolicy(p)
		st, _ := r.m.Endpoint("pol0")
		var ep bpf.XdplaneEndpoint
		var lens bpf.XdplanePlens
		if err := kernel.Of(r.dp).Maps.Endpoints.Lookup(r.ifindex, &ep); err != nil {
			t.Fatal(err)
		}
		if err := kernel.Of(r.dp).Maps.PolicyLens.Lookup(ep.IngressPolicy, &lens); err != nil {
			t.Fatal(err)
		}
		if trie := lens.Count == plensLPM; trie != many {
			t.Fatalf("endpoint %d, %d lengths: lengths entry %+v, want the trie: %v", st.ID, lengths, lens, many)
		}
		clearMap(t, kernel.Of(r.dp).Maps.PolicyCt)
		addrs := probeAddrs(rng, p)
		for i := range 600 {
			peer := addrs[rng.IntN(len(addrs))]
			port := uint16(99 + rng.IntN(lengths+2))
			frame, ok := probeFrame(t, Ingress, peer, TCP, port, uint16(20000+i))
			if !ok {
				continue
			}
			want := p.Decide(Ingress, peer, TCP, port) == Allowed
			if ret, _ := r.run(Ingress, frame); (ret == tcActUnspc) != want {
				t.Fatalf("%d lengths: %s port %d: datapath passes=%v, Decide allows=%v", lengths, peer, port, ret == tcActUnspc, want)
			}
		}
	}
}
