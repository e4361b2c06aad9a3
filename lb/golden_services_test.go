package lb_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/lb"
)

// Golden-packet tests of what a service does beyond plain DNAT: Maglev,
// session affinity, traffic policies, backend states, source ranges, node
// ports and the other ports of a virtual IP. Each runs in IPv4 and IPv6,
// TCP and UDP, through XDP and tc ingress (with CHECKSUM_NONE and
// CHECKSUM_COMPLETE), and requires the exact verdict and output frame,
// the backend worked out beforehand: by the Go Maglev table
// (lb.MaglevBackendFor), or because one backend alone may take the flow.

// goldenFam is an address family's cast.
type goldenFam struct {
	name     string
	client   netip.Addr // inside allowed
	outsider netip.Addr // outside allowed
	vip      netip.Addr // a cluster IP
	node     netip.Addr // one of the node's own addresses
	backends [3]netip.Addr
	allowed  netip.Prefix
}

var goldenFams = []goldenFam{
	{"ipv4", netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("172.16.5.5"), netip.MustParseAddr("10.96.0.10"),
		netip.MustParseAddr("192.168.1.1"),
		[3]netip.Addr{netip.MustParseAddr("10.0.1.2"), netip.MustParseAddr("10.0.1.3"), netip.MustParseAddr("10.0.1.4")},
		netip.MustParsePrefix("10.0.0.0/24")},
	{"ipv6", netip.MustParseAddr("fd00:9::2"), netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("fd00::10"),
		netip.MustParseAddr("fd00:ff::1"),
		[3]netip.Addr{netip.MustParseAddr("fd00:1::2"), netip.MustParseAddr("fd00:1::3"), netip.MustParseAddr("fd00:1::4")},
		netip.MustParsePrefix("fd00:9::/64")},
}

// goldenCase is a family and a protocol, and the service ports for them.
type goldenCase struct {
	goldenFam
	proto             lb.Protocol
	port, backendPort uint16
	otherPort         uint16 // a port no service of the case serves
}

func (c goldenCase) String() string { return c.name + "/" + c.proto.String() }

func goldenCases() []goldenCase {
	var out []goldenCase
	for _, f := range goldenFams {
		out = append(out, goldenCase{goldenFam: f, proto: lb.TCP, port: 80, backendPort: 8080, otherPort: 8081},
			goldenCase{goldenFam: f, proto: lb.UDP, port: 53, backendPort: 5353, otherPort: 54})
	}
	return out
}

// frontend is the case's cluster IP service port.
func (c goldenCase) frontend() netip.AddrPort { return netip.AddrPortFrom(c.vip, c.port) }

// backend is backend i of the case.
func (c goldenCase) backend(i int) netip.AddrPort {
	return netip.AddrPortFrom(c.backends[i], c.backendPort)
}

// from is the case's client at port p.
func (c goldenCase) from(p uint16) netip.AddrPort { return netip.AddrPortFrom(c.client, p) }

// service is a service of the case at fe with the three backends, their
// states and locality, by the algorithm.
func (c goldenCase) service(fe netip.AddrPort, alg lb.Algorithm, states [3]lb.BackendState, local [3]bool) lb.Service {
	s := lb.Service{Frontend: lb.Frontend{Address: fe, Protocol: c.proto}, Algorithm: alg}
	for i := range c.backends {
		s.Backends = append(s.Backends, lb.Backend{Address: c.backend(i), Weight: uint16(i + 1), State: states[i], Local: local[i]})
	}
	return s
}

// goldenPacket builds a packet of proto from src to dst, IPv4 or IPv6 by
// their family, with goldenFlow or goldenFlow6.
func goldenPacket(t *testing.T, proto lb.Protocol, src, dst netip.AddrPort, payload []byte) []byte {
	t.Helper()
	if src.Addr().Is4() {
		return goldenBuild(t, goldenFlow(proto, src, dst, payload))
	}
	return goldenBuild(t, goldenFlow6(proto, src, dst, payload))
}

var goldenHello = []byte("hello, service")

// sendsTo requires that h sends a new flow from src to fe on to exactly
// be, counted as a new flow, and the reply back from fe.
func (g *golden) sendsTo(t *testing.T, h goldenHook, c goldenCase, src, fe, be netip.AddrPort) {
	t.Helper()
	in := goldenPacket(t, c.proto, src, fe, goldenHello)
	g.requireCounted(t, goldenCounts{ForwardNew: 1}, len(in), func() {
		g.translated(t, h, in, goldenPacket(t, c.proto, src, be, goldenHello))
	})
	g.requireFlow(t, lb.Frontend{Address: fe, Protocol: c.proto}, src, be)
	reply := goldenPacket(t, c.proto, be, src, []byte("hello back"))
	g.translated(t, goldenReplyHookFor(h), reply, goldenPacket(t, c.proto, fe, src, []byte("hello back")))
}

// dropped requires that h drops in untouched, counted in want.
func (g *golden) dropped(t *testing.T, h goldenHook, in []byte, want goldenCounts) {
	t.Helper()
	g.requireCounted(t, want, len(in), func() {
		ret, out := g.run(t, h, in)
		if ret != h.drop {
			t.Fatalf("%s: verdict %#x, want drop (%#x)", h.name, ret, h.drop)
		}
		goldenRequireBytes(t, h.name+": output of a dropped packet", out, in)
	})
	g.requireNoConntrack(t)
}

// rejected requires that h turns in into exactly the ICMP (ICMPv6) port
// unreachable the datapath sends back, counted in want.
func (g *golden) rejected(t *testing.T, h goldenHook, in []byte, want goldenCounts) {
	t.Helper()
	const xdpTX, tcRedirect = 3, 7
	verdict := uint32(tcRedirect)
	if h.name == goldenXDP.name {
		verdict = xdpTX
	}
	l, err := packets.Parse(in)
	if err != nil {
		t.Fatal(err)
	}
	quote := in[l.IP : l.IP+l.IHL+8]
	if l.Proto == 6 {
		quote = in[l.IP : l.IP+l.IHL+packets.TCPLen]
	}
	reject, err := lb.RejectFrame(in[0:6], in[6:12], l.Dst, l.Src, quote)
	if err != nil {
		t.Fatal(err)
	}
	// As in goldenRequireReject: a reject resets the skb's checksum state.
	h.flags &^= gTestSKBChecksumComplete
	g.requireCounted(t, want, len(in), func() {
		ret, out := g.run(t, h, in)
		if ret != verdict {
			t.Fatalf("%s: verdict %#x, want reject (%#x)", h.name, ret, verdict)
		}
		goldenRequireBytes(t, h.name+": reject", out, reject)
	})
	g.requireNoConntrack(t)
}

// --- Maglev ---

// New flows go to the backend the Go Maglev table names, weighted, for
// flows from many ports and two client addresses.
func TestGoldenServiceMaglev(t *testing.T) {
	g := newGolden(t)
	for _, c := range goldenCases() {
		s := c.service(c.frontend(), lb.Maglev, [3]lb.BackendState{}, [3]bool{})
		g.upsert(t, s)
		clients := []netip.Addr{c.client, c.outsider}
		for _, h := range goldenForwardHooks {
			t.Run(c.String()+"/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				seen := map[netip.AddrPort]int{}
				for i := range 36 {
					src := netip.AddrPortFrom(clients[i%2], uint16(20000+97*i))
					be := lb.MaglevBackendFor(s, src)
					g.sendsTo(t, h, c, src, c.frontend(), be)
					seen[be]++
				}
				if len(seen) != 3 {
					t.Fatalf("36 flows reached %v: the flows do not exercise the table", seen)
				}
			})
		}
	}
}

// --- session affinity ---

func TestGoldenServiceAffinity(t *testing.T) {
	g := newGolden(t)
	for _, c := range goldenCases() {
		// Maglev: every choice is known, so the table's answer can be
		// told from affinity's.
		s := c.service(c.frontend(), lb.Maglev, [3]lb.BackendState{}, [3]bool{})
		s.SessionAffinity = lb.DefaultSessionAffinity
		g.upsert(t, s)
		svcID, _ := g.ids(t, s.Frontend)
		// elsewhere returns n client ports from start up whose Maglev
		// backend is not be.
		elsewhere := func(be netip.AddrPort, start uint16, n int) []uint16 {
			var out []uint16
			for p := start; len(out) < n; p++ {
				if lb.MaglevBackendFor(s, c.from(p)) != be {
					out = append(out, p)
				}
			}
			return out
		}
		first := lb.MaglevBackendFor(s, c.from(30000))
		others := elsewhere(first, 30001, 3)
		for _, h := range goldenForwardHooks {
			t.Run(c.String()+"/maglev/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				g.flushAffinity(t)
				g.sendsTo(t, h, c, c.from(30000), c.frontend(), first)
				// A second and third connection, which the table would
				// send elsewhere, go to the first one's backend.
				g.sendsTo(t, h, c, c.from(others[0]), c.frontend(), first)
				g.sendsTo(t, h, c, c.from(others[1]), c.frontend(), first)

				// Its backend goes into maintenance: the table chooses
				// among the others, and the client stays with that
				// choice when the backend is back.
				down := s
				down.Backends = slices.Clone(s.Backends)
				down.Backends[slices.IndexFunc(s.Backends, func(b lb.Backend) bool { return b.Address == first })].State = lb.Maintenance
				g.upsert(t, down)
				moved := lb.MaglevBackendFor(down, c.from(others[2]))
				g.sendsTo(t, h, c, c.from(others[2]), c.frontend(), moved)
				g.upsert(t, s)
				g.sendsTo(t, h, c, c.from(elsewhere(moved, 31000, 1)[0]), c.frontend(), moved)

				// Past the timeout the table chooses again, and the
				// client keeps its new backend.
				g.ageAffinity(t, c.client, svcID, s.SessionAffinity+time.Second)
				free := elsewhere(moved, 32000, 1)[0]
				next := lb.MaglevBackendFor(s, c.from(free))
				g.sendsTo(t, h, c, c.from(free), c.frontend(), next)
				g.sendsTo(t, h, c, c.from(elsewhere(next, 33000, 1)[0]), c.frontend(), next)
			})
		}

		// Random: the first connection goes anywhere; the next ones
		// follow it.
		rs := c.service(netip.AddrPortFrom(c.vip, c.port+1), lb.Random, [3]lb.BackendState{}, [3]bool{})
		rs.SessionAffinity = 30 * time.Second
		g.upsert(t, rs)
		for _, h := range goldenForwardHooks {
			t.Run(c.String()+"/random/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				g.flushAffinity(t)
				in := goldenPacket(t, c.proto, c.from(40000), rs.Frontend.Address, goldenHello)
				want := func(be netip.AddrPort) []byte { return goldenPacket(t, c.proto, c.from(40000), be, goldenHello) }
				be := g.sentToWant(t, h, in, want, c.backend(0), c.backend(1), c.backend(2))
				for port := uint16(40001); port < 40013; port++ {
					g.sendsTo(t, h, c, c.from(port), rs.Frontend.Address, be)
				}
			})
		}
	}
}

func (g *golden) flushAffinity(t *testing.T) {
	t.Helper()
	var (
		k    bpf.XdplaneAffinityKey
		v    bpf.XdplaneAffinityValue
		keys []bpf.XdplaneAffinityKey
	)
	it := kernel.Of(g.dp).Maps.Affinity.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := kernel.Of(g.dp).Maps.Affinity.Delete(k); err != nil {
			t.Fatal(err)
		}
	}
}

// ageAffinity moves client's affinity entry for service svc by d into the
// past.
func (g *golden) ageAffinity(t *testing.T, client netip.Addr, svc uint32, d time.Duration) {
	t.Helper()
	key := bpf.XdplaneAffinityKey{Client: client.As16(), SvcId: svc}
	var v bpf.XdplaneAffinityValue
	if err := kernel.Of(g.dp).Maps.Affinity.Lookup(key, &v); err != nil {
		t.Fatalf("no affinity entry for %s: %v", client, err)
	}
	v.LastUsed -= uint64(d)
	if err := kernel.Of(g.dp).Maps.Affinity.Put(key, v); err != nil {
		t.Fatal(err)
	}
}

// --- traffic policies ---

// Under a Local policy, on a cluster IP (internalTrafficPolicy) or a node
// port (externalTrafficPolicy), new flows go to the local backend alone;
// with backends but none local they are dropped, untouched; with no
// backends at all they are rejected.
func TestGoldenServiceTrafficPolicy(t *testing.T) {
	g := newGolden(t)
	for _, c := range goldenCases() {
		for _, fe := range []struct {
			name string
			addr netip.AddrPort
		}{{"cluster IP", c.frontend()}, {"node port", netip.AddrPortFrom(c.node, 30080)}} {
			for _, alg := range []lb.Algorithm{lb.Random, lb.Maglev} {
				for _, h := range goldenForwardHooks {
					t.Run(fmt.Sprintf("%s/%s/%s/%s", c, fe.name, alg, h.name), func(t *testing.T) {
						g.flushConntrack(t)
						s := c.service(fe.addr, alg, [3]lb.BackendState{}, [3]bool{false, true, false})
						s.TrafficPolicy = lb.Local
						g.upsert(t, s)
						for port := uint16(41000); port < 41012; port++ {
							g.sendsTo(t, h, c, c.from(port), fe.addr, c.backend(1))
						}

						s.Backends[1].Local = false
						g.upsert(t, s)
						g.flushConntrack(t)
						g.dropped(t, h, goldenPacket(t, c.proto, c.from(41100), fe.addr, goldenHello), goldenCounts{NoBackend: 1})

						s.Backends = nil
						g.upsert(t, s)
						g.rejected(t, h, goldenPacket(t, c.proto, c.from(41101), fe.addr, goldenHello), goldenCounts{NoBackend: 1})
					})
				}
			}
		}
	}
}

// --- backend states ---

func TestGoldenServiceBackendStates(t *testing.T) {
	g := newGolden(t)
	const (
		active      = lb.Active
		terminating = lb.Terminating
		maintenance = lb.Maintenance
	)
	for _, c := range goldenCases() {
		for _, alg := range []lb.Algorithm{lb.Random, lb.Maglev} {
			for _, tc := range []struct {
				name   string
				states [3]lb.BackendState
				only   int // the backend that takes every new flow
			}{
				{"active over terminating and maintenance", [3]lb.BackendState{terminating, active, maintenance}, 1},
				{"terminating fallback", [3]lb.BackendState{maintenance, maintenance, terminating}, 2},
				{"never maintenance", [3]lb.BackendState{maintenance, active, maintenance}, 1},
			} {
				for _, h := range goldenForwardHooks {
					t.Run(fmt.Sprintf("%s/%s/%s/%s", c, alg, tc.name, h.name), func(t *testing.T) {
						g.flushConntrack(t)
						s := c.service(c.frontend(), alg, tc.states, [3]bool{})
						g.upsert(t, s)
						for port := uint16(42000); port < 42012; port++ {
							g.sendsTo(t, h, c, c.from(port), c.frontend(), c.backend(tc.only))
						}
					})
				}
			}

			// A flow keeps its backend when the backend starts
			// terminating; new flows go elsewhere; it takes new flows
			// again when no other backend does.
			for _, h := range goldenForwardHooks {
				t.Run(fmt.Sprintf("%s/%s/established on a terminating backend/%s", c, alg, h.name), func(t *testing.T) {
					g.flushConntrack(t)
					s := c.service(c.frontend(), alg, [3]lb.BackendState{maintenance, active, maintenance}, [3]bool{})
					g.upsert(t, s)
					src := c.from(43000)
					g.sendsTo(t, h, c, src, c.frontend(), c.backend(1))

					s.Backends[1].State, s.Backends[2].State = terminating, active
					g.upsert(t, s)
					in := goldenPacket(t, c.proto, src, c.frontend(), goldenHello)
					g.requireCounted(t, goldenCounts{ForwardEst: 1}, len(in), func() {
						g.translated(t, h, in, goldenPacket(t, c.proto, src, c.backend(1), goldenHello))
					})
					g.sendsTo(t, h, c, c.from(43001), c.frontend(), c.backend(2))

					s.Backends[2].State = maintenance
					g.upsert(t, s)
					g.sendsTo(t, h, c, c.from(43002), c.frontend(), c.backend(1))
				})
			}
		}
	}
}

// --- source ranges ---

// A load balancer frontend with source ranges takes new flows from them
// alone; others are dropped untouched; an established flow is not cut
// when its client leaves the ranges.
func TestGoldenServiceSourceRanges(t *testing.T) {
	g := newGolden(t)
	for _, c := range goldenCases() {
		fe := netip.AddrPortFrom(c.vip, 443)
		for _, h := range goldenForwardHooks {
			t.Run(c.String()+"/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				s := c.service(fe, lb.Random, [3]lb.BackendState{lb.Active, lb.Maintenance, lb.Maintenance}, [3]bool{})
				s.SourceRanges = []netip.Prefix{c.allowed}
				g.upsert(t, s)
				outside := netip.AddrPortFrom(c.outsider, 44000)
				g.dropped(t, h, goldenPacket(t, c.proto, outside, fe, goldenHello), goldenCounts{SourceDenied: 1})
				inside := c.from(44000)
				g.sendsTo(t, h, c, inside, fe, c.backend(0))

				// The ranges narrow to exclude the client: its flow goes
				// on, its new ones are dropped.
				s.SourceRanges = []netip.Prefix{netip.PrefixFrom(c.outsider, c.outsider.BitLen())}
				g.upsert(t, s)
				in := goldenPacket(t, c.proto, inside, fe, goldenHello)
				g.requireCounted(t, goldenCounts{ForwardEst: 1}, len(in), func() {
					g.translated(t, h, in, goldenPacket(t, c.proto, inside, c.backend(0), goldenHello))
				})
				fresh := goldenPacket(t, c.proto, c.from(44001), fe, goldenHello)
				ct := g.conntrack(t)
				g.requireCounted(t, goldenCounts{SourceDenied: 1}, len(fresh), func() {
					ret, out := g.run(t, h, fresh)
					if ret != h.drop {
						t.Fatalf("%s: verdict %#x, want drop (%#x)", h.name, ret, h.drop)
					}
					goldenRequireBytes(t, h.name+": output of a dropped packet", out, fresh)
				})
				if n := len(g.conntrack(t)); n != len(ct) {
					t.Fatalf("a dropped packet changed conntrack from %d to %d entries", len(ct), n)
				}
				g.sendsTo(t, h, c, netip.AddrPortFrom(c.outsider, 44002), fe, c.backend(0))
			})
		}
	}
}

// --- node ports and virtual IPs ---

// A node port is a frontend on a node address: its port is translated
// both ways; the address's other ports are the node's own and pass
// untouched.
func TestGoldenServiceNodePort(t *testing.T) {
	g := newGolden(t)
	for _, c := range goldenCases() {
		fe := netip.AddrPortFrom(c.node, 30080)
		g.upsert(t, c.service(fe, lb.Random, [3]lb.BackendState{lb.Maintenance, lb.Maintenance, lb.Active}, [3]bool{}))
		for _, h := range goldenForwardHooks {
			t.Run(c.String()+"/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				g.sendsTo(t, h, c, c.from(45000), fe, c.backend(2))
				own := goldenPacket(t, c.proto, c.from(45001), netip.AddrPortFrom(c.node, 22), goldenHello)
				g.requireCounted(t, goldenCounts{Passed: 1}, len(own), func() { g.untouched(t, h, own) })
			})
		}
	}
}

// The other ports of a virtual IP (a cluster IP) are rejected, on XDP and
// on tc, with the exact ICMP or ICMPv6 port unreachable; other protocols
// on the service's own port too.
func TestGoldenServiceVirtualIPOtherPorts(t *testing.T) {
	g := newGolden(t)
	for _, c := range goldenCases() {
		s := c.service(c.frontend(), lb.Random, [3]lb.BackendState{lb.Active, lb.Maintenance, lb.Maintenance}, [3]bool{})
		s.VirtualIP = true
		g.upsert(t, s)
		other := lb.TCP
		if c.proto == lb.TCP {
			other = lb.UDP
		}
		for _, h := range []goldenHook{goldenXDP, goldenTCIngress} {
			t.Run(c.String()+"/"+h.name, func(t *testing.T) {
				g.flushConntrack(t)
				for _, in := range [][]byte{
					goldenPacket(t, c.proto, c.from(46000), netip.AddrPortFrom(c.vip, c.otherPort), goldenHello),
					goldenPacket(t, other, c.from(46001), c.frontend(), goldenHello),
				} {
					g.rejected(t, h, in, goldenCounts{UnknownPort: 1})
				}
				g.sendsTo(t, h, c, c.from(46002), c.frontend(), c.backend(0))
			})
		}
	}
}
