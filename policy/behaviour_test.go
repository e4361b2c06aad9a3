package policy

// Behaviour tests: real sockets in network namespaces, with the backends of
// testutil.LBTopology as pods. Each backend's node-side interface (n-be<i>)
// is an endpoint of a Manager opened in the node namespace; the client
// namespace is a peer outside the cluster, with extra addresses that play
// further peers. Every "blocked" outcome must be a timeout (the datapath
// drops; it never answers for the pod), and the tests first show that the
// same connections work without a policy, so that a block is the policy's
// doing and not a missing listener or route.
//
// That first round also lets the node and the pods learn each other's
// link addresses before any policy applies. TestBehaviourIsolatedFromStart
// covers a pod isolated before it has any traffic, where the policy must
// let ARP and IPv6 neighbour discovery through.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/dptest"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

const (
	// bhAllowTimeout bounds a connection or request that must get
	// through: a lost SYN's retransmit (after 1 s) fits in it.
	bhAllowTimeout = 3 * time.Second
	// bhBlockTimeout bounds one that must be dropped: it has to time
	// out, as a dropped SYN or datagram does.
	bhBlockTimeout = 400 * time.Millisecond
	// bhEchoTimeout bounds one round trip on an open connection.
	bhEchoTimeout = 2 * time.Second
)

// bhFamily is one address family's view of the topology: the peers the
// tests use, outside the pods' own addresses.
type bhFamily struct {
	name string
	// client is the client namespace's own address; other and excepted
	// are extra addresses of its eth0, in clientNet, excepted inside
	// exceptNet.
	client, other, excepted netip.Addr
	clientNet, exceptNet    netip.Prefix
	vip                     netip.AddrPort
}

var bhFamilies = []bhFamily{
	{
		name:   "ipv4",
		client: netip.MustParseAddr("10.0.0.2"), other: netip.MustParseAddr("10.0.0.3"), excepted: netip.MustParseAddr("10.0.0.9"),
		clientNet: netip.MustParsePrefix("10.0.0.0/24"), exceptNet: netip.MustParsePrefix("10.0.0.8/29"),
		vip: netip.MustParseAddrPort("10.96.0.10:80"),
	},
	{
		name:   "ipv6",
		client: netip.MustParseAddr("fd01::2"), other: netip.MustParseAddr("fd01::3"), excepted: netip.MustParseAddr("fd01::9"),
		clientNet: netip.MustParsePrefix("fd01::/64"), exceptNet: netip.MustParsePrefix("fd01::8/125"),
		vip: netip.MustParseAddrPort("[fd00::10]:80"),
	},
}

func (f bhFamily) v6() bool { return f.client.Is6() }

// bhSolicitedNode holds the multicast addresses neighbour solicitations
// go to (RFC 4291 2.7.1).
var bhSolicitedNode = netip.MustParsePrefix("ff02::1:ff00:0/104")

// bhHost is a's prefix of one address.
func bhHost(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// bhNode is a topology whose backends are pods: each backend's node-side
// interface is an endpoint of m.
type bhNode struct {
	t   *testing.T
	fam bhFamily
	tp  *testutil.LBTopology
	dp  *datapath.Datapath
	m   *Manager
	// ports counts the client source ports port has handed out.
	ports atomic.Uint32
}

// newBhNode builds a topology of pods backends, opens the datapath and a
// Manager in the node namespace, and adds every pod's interface as an
// endpoint, with no policy. The client namespace gets fam's extra peer
// addresses.
func newBhNode(t *testing.T, fam bhFamily, pods int) *bhNode {
	t.Helper()
	n := &bhNode{t: t, fam: fam, tp: testutil.NewLBTopology(t, pods)}
	bits := 24
	if fam.v6() {
		bits = 64
	}
	for _, a := range []netip.Addr{fam.other, fam.excepted} {
		n.tp.Client.AddAddr("eth0", netip.PrefixFrom(a, bits))
	}
	n.dp = dptest.Open(t, n.tp.Node, datapath.Options{})
	n.tp.Node.MustDo(func() (err error) {
		if n.m, err = NewManager(n.dp); err != nil {
			return err
		}
		for i := range pods {
			ep := Endpoint{Interface: n.podIf(i), Addresses: []netip.Addr{n.tp.BackendAddrs[i], n.tp.BackendAddrs6[i]}}
			if err := n.m.AddEndpoint(ep); err != nil {
				return err
			}
		}
		return nil
	})
	t.Cleanup(func() { n.m.Close() })
	return n
}

// podIf is pod i's interface on the node: its endpoint.
func (n *bhNode) podIf(i int) string { return n.tp.NodeInterfaces[i+1] }

// pod is pod i's address of the test's family.
func (n *bhNode) pod(i int) netip.Addr {
	if n.fam.v6() {
		return n.tp.BackendAddrs6[i]
	}
	return n.tp.BackendAddrs[i]
}

// serve starts TCP servers in ns on addr's ports, each answering with
// "<name>:<port>".
func (n *bhNode) serve(ns *testutil.NS, name string, addr netip.Addr, ports ...uint16) {
	n.t.Helper()
	for _, p := range ports {
		testutil.ServeTCP(n.t, ns, netip.AddrPortFrom(addr, p), fmt.Sprintf("%s:%d", name, p))
	}
}

// port returns a client source port no earlier probe of n has used, so
// that every probe is a new flow to the policy: a port the kernel picks
// could be an earlier flow's, whose conntrack entry would let it through
// whatever the policy now says. Below the ephemeral range, so the kernel
// gives none of them away.
func (n *bhNode) port() uint16 {
	p := 10000 + n.ports.Add(1)
	if p > 19999 {
		n.t.Fatalf("out of fresh source ports")
	}
	return uint16(p)
}

func (n *bhNode) setPolicy(ifname string, p Policy) {
	n.t.Helper()
	if err := n.m.SetPolicy(ifname, p); err != nil {
		n.t.Fatalf("SetPolicy(%s): %v", ifname, err)
	}
}

// bhProbe is one new connection (or UDP request) and what must come of
// it.
type bhProbe struct {
	from *testutil.NS
	// src is the source address, or the zero Addr for the one routing
	// picks.
	src netip.Addr
	dst netip.AddrPort
	udp bool
	// want is the server's answer, or "" if the probe must be dropped
	// (time out).
	want string
}

func (p bhProbe) String() string {
	proto := "tcp"
	if p.udp {
		proto = "udp"
	}
	src := "(auto)"
	if p.src.IsValid() {
		src = p.src.String()
	}
	return fmt.Sprintf("%s %s -> %s", proto, src, p.dst)
}

// allow and block make probes from the client namespace, from src.
func (n *bhNode) allow(src netip.Addr, dst netip.AddrPort, want string) bhProbe {
	return bhProbe{from: n.tp.Client, src: src, dst: dst, want: want}
}

func (n *bhNode) block(src netip.Addr, dst netip.AddrPort) bhProbe {
	return bhProbe{from: n.tp.Client, src: src, dst: dst}
}

// run makes the probes, all at once (so that the blocked ones cost one
// timeout together), and reports every one whose outcome is not the one
// wanted. Allowed TCP probes must also echo.
func (n *bhNode) run(what string, probes ...bhProbe) {
	n.t.Helper()
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() { errs[i] = n.probe(p) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			n.t.Errorf("%s: %s: %v", what, probes[i], err)
		}
	}
}

func (n *bhNode) probe(p bhProbe) error {
	timeout := bhAllowTimeout
	if p.want == "" {
		timeout = bhBlockTimeout
	}
	local := netip.AddrPortFrom(p.src, n.port())
	var (
		got string
		err error
	)
	if p.udp {
		got, err = testutil.AskUDPFrom(p.from, local, p.dst, timeout)
	} else {
		var c *testutil.Conn
		c, err = testutil.DialTCPFrom(p.from, local, p.dst, timeout)
		if err == nil {
			got = c.Server
			if p.want != "" {
				err = c.Echo("ping", bhEchoTimeout)
			}
			c.Abort()
		}
	}
	switch {
	case p.want == "" && err == nil:
		return fmt.Errorf("got through to %q, want it dropped", got)
	case p.want == "" && !testutil.ErrTimeout(err):
		return fmt.Errorf("failed with %v, want a timeout (a drop)", err)
	case p.want == "":
		return nil
	case err != nil:
		return fmt.Errorf("want it through to %q: %v", p.want, err)
	case got != p.want:
		return fmt.Errorf("answered by %q, want %q", got, p.want)
	}
	return nil
}

// dial opens a connection from src (the zero Addr: the one routing
// picks) that must get through to want, for a test to keep open.
func (n *bhNode) dial(from *testutil.NS, src netip.Addr, dst netip.AddrPort, want string) *testutil.Conn {
	n.t.Helper()
	c, err := testutil.DialTCPFrom(from, netip.AddrPortFrom(src, n.port()), dst, bhAllowTimeout)
	if err != nil {
		n.t.Fatalf("connect to %s: %v", dst, err)
	}
	n.t.Cleanup(func() { c.Abort() })
	if c.Server != want {
		n.t.Fatalf("connect to %s: answered by %q, want %q", dst, c.Server, want)
	}
	return c
}

// echo fails the test unless c still carries data both ways.
func (n *bhNode) echo(what string, c *testutil.Conn) {
	n.t.Helper()
	if err := c.Echo(what, bhEchoTimeout); err != nil {
		n.t.Fatalf("open connection to %s (%s): %v", c.RemoteAddr(), what, err)
	}
}

// Ingress isolation of a pod, by peer, port range, except prefix, deny
// rule and protocol, against real listeners.
func TestBehaviourIngress(t *testing.T) {
	for _, fam := range bhFamilies {
		t.Run(fam.name, func(t *testing.T) {
			n := newBhNode(t, fam, 1)
			pod := n.pod(0)
			n.serve(n.tp.Backends[0], "be0", pod, 8080, 8081, 9000, 9001, 9002, 9003)
			for _, p := range []uint16{5353, 5354} {
				testutil.ServeUDP(t, n.tp.Backends[0], netip.AddrPortFrom(pod, p), fmt.Sprintf("be0:%d", p))
			}
			at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(pod, port) }
			udp := func(p bhProbe) bhProbe { p.udp = true; return p }
			tcp := func(ports ...uint16) []PortRange {
				var out []PortRange
				for _, p := range ports {
					out = append(out, PortRange{Protocol: TCP, Port: p})
				}
				return out
			}
			client, other, excepted := fam.client, fam.other, fam.excepted

			cases := []struct {
				name    string
				ingress Rules
				probes  []bhProbe
			}{{
				name: "no policy",
				probes: []bhProbe{
					n.allow(client, at(8080), "be0:8080"), n.allow(other, at(8080), "be0:8080"),
					n.allow(excepted, at(8081), "be0:8081"), n.allow(client, at(9003), "be0:9003"),
					udp(n.allow(other, at(5354), "be0:5354")),
				},
			}, {
				name: "one peer, one port",
				ingress: Rules{Isolated: true, Rules: []Rule{
					{Peers: []Peer{{Prefix: bhHost(client)}}, Ports: tcp(8080)},
				}},
				probes: []bhProbe{
					n.allow(client, at(8080), "be0:8080"),
					n.block(other, at(8080)),
					n.block(client, at(8081)),
					udp(n.block(client, at(5353))),
				},
			}, {
				name: "port range",
				ingress: Rules{Isolated: true, Rules: []Rule{
					{Peers: []Peer{{Prefix: fam.clientNet}}, Ports: []PortRange{{Protocol: TCP, Port: 9000, EndPort: 9002}}},
				}},
				probes: []bhProbe{
					n.allow(client, at(9000), "be0:9000"), n.allow(other, at(9001), "be0:9001"), n.allow(client, at(9002), "be0:9002"),
					n.block(client, at(9003)), n.block(client, at(8080)),
				},
			}, {
				name: "except prefix",
				ingress: Rules{Isolated: true, Rules: []Rule{
					{Peers: []Peer{{Prefix: fam.clientNet, Except: []netip.Prefix{fam.exceptNet}}}, Ports: tcp(8080)},
				}},
				probes: []bhProbe{
					n.allow(client, at(8080), "be0:8080"), n.allow(other, at(8080), "be0:8080"),
					n.block(excepted, at(8080)),
				},
			}, {
				name: "deny beats allow",
				ingress: Rules{Isolated: true, Rules: []Rule{
					{Peers: []Peer{{Prefix: fam.clientNet}}, Ports: tcp(8080, 8081)},
					{Action: Deny, Peers: []Peer{{Prefix: bhHost(other)}}},
				}},
				probes: []bhProbe{
					n.allow(client, at(8080), "be0:8080"), n.allow(excepted, at(8081), "be0:8081"),
					n.block(other, at(8080)), n.block(other, at(8081)),
				},
			}, {
				name: "deny without isolation",
				ingress: Rules{Rules: []Rule{
					{Action: Deny, Peers: []Peer{{Prefix: bhHost(other)}}, Ports: tcp(8080)},
				}},
				probes: []bhProbe{
					n.allow(client, at(8080), "be0:8080"), n.allow(other, at(8081), "be0:8081"),
					n.allow(client, at(9003), "be0:9003"), udp(n.allow(other, at(5353), "be0:5353")),
					n.block(other, at(8080)),
				},
			}, {
				name: "UDP",
				ingress: Rules{Isolated: true, Rules: []Rule{
					{Peers: []Peer{{Prefix: bhHost(client)}}, Ports: []PortRange{{Protocol: UDP, Port: 5353}}},
				}},
				probes: []bhProbe{
					udp(n.allow(client, at(5353), "be0:5353")),
					udp(n.block(client, at(5354))), udp(n.block(other, at(5353))),
					n.block(client, at(5353)), // TCP to the UDP rule's port: no listener, but a drop is no reset
				},
			}}
			for _, c := range cases {
				n.setPolicy(n.podIf(0), Policy{Ingress: c.ingress})
				n.run(c.name, c.probes...)
			}
		})
	}
}

// A pod isolated both ways, whose egress allows one port of one other pod
// and whose ingress allows nothing: its own connections get their replies
// (the policy is stateful), and nothing else gets through either way.
func TestBehaviourEgress(t *testing.T) {
	for _, fam := range bhFamilies {
		t.Run(fam.name, func(t *testing.T) {
			n := newBhNode(t, fam, 2)
			be0, be1 := n.tp.Backends[0], n.tp.Backends[1]
			pod0, pod1 := n.pod(0), n.pod(1)
			n.serve(be0, "be0", pod0, 8080)
			n.serve(be1, "be1", pod1, 8080, 8081)
			n.serve(n.tp.Client, "client", fam.client, 8080)
			at := netip.AddrPortFrom
			from := func(ns *testutil.NS, dst netip.AddrPort, want string) bhProbe {
				return bhProbe{from: ns, dst: dst, want: want}
			}

			n.run("no policy",
				from(be0, at(pod1, 8080), "be1:8080"), from(be0, at(pod1, 8081), "be1:8081"),
				from(be0, at(fam.client, 8080), "client:8080"),
				from(be1, at(pod0, 8080), "be0:8080"), n.allow(fam.client, at(pod0, 8080), "be0:8080"))

			n.setPolicy(n.podIf(0), Policy{
				Ingress: Rules{Isolated: true},
				Egress: Rules{Isolated: true, Rules: []Rule{
					{Peers: []Peer{{Prefix: bhHost(pod1)}}, Ports: []PortRange{{Protocol: TCP, Port: 8080}}},
				}},
			})
			c := n.dial(be0, netip.Addr{}, at(pod1, 8080), "be1:8080")
			for i := range 3 {
				n.echo(fmt.Sprintf("reply %d", i), c)
			}
			n.run("isolated",
				from(be0, at(pod1, 8080), "be1:8080"),
				from(be0, at(pod1, 8081), ""),
				from(be0, at(fam.client, 8080), ""),
				from(be1, at(pod0, 8080), ""),
				n.block(fam.client, at(pod0, 8080)))
			n.echo("after the blocked ones", c)
		})
	}
}

// A policy change judges new connections and leaves open ones alone, in
// both directions: policy A allows the client in on 8080 and the pod out
// to the other pod's 8080; B allows 8081 instead.
func TestBehaviourPolicyChange(t *testing.T) {
	for _, fam := range bhFamilies {
		t.Run(fam.name, func(t *testing.T) {
			n := newBhNode(t, fam, 2)
			be0, be1 := n.tp.Backends[0], n.tp.Backends[1]
			pod0, pod1 := n.pod(0), n.pod(1)
			n.serve(be0, "be0", pod0, 8080, 8081)
			n.serve(be1, "be1", pod1, 8080, 8081)
			at := netip.AddrPortFrom
			out := func(dst netip.AddrPort, want string) bhProbe { return bhProbe{from: be0, dst: dst, want: want} }
			only := func(port uint16) Policy {
				return Policy{
					Ingress: Rules{Isolated: true, Rules: []Rule{
						{Peers: []Peer{{Prefix: bhHost(fam.client)}}, Ports: []PortRange{{Protocol: TCP, Port: port}}},
					}},
					Egress: Rules{Isolated: true, Rules: []Rule{
						{Peers: []Peer{{Prefix: bhHost(pod1)}}, Ports: []PortRange{{Protocol: TCP, Port: port}}},
					}},
				}
			}

			n.run("no policy",
				n.allow(fam.client, at(pod0, 8080), "be0:8080"), n.allow(fam.client, at(pod0, 8081), "be0:8081"),
				out(at(pod1, 8080), "be1:8080"), out(at(pod1, 8081), "be1:8081"))

			n.setPolicy(n.podIf(0), only(8080))
			in8080 := n.dial(n.tp.Client, fam.client, at(pod0, 8080), "be0:8080")
			out8080 := n.dial(be0, netip.Addr{}, at(pod1, 8080), "be1:8080")
			n.echo("A", in8080)
			n.echo("A", out8080)
			n.run("A",
				n.block(fam.client, at(pod0, 8081)), out(at(pod1, 8081), ""))

			n.setPolicy(n.podIf(0), only(8081))
			n.echo("B", in8080)
			n.echo("B", out8080)
			n.run("B",
				n.allow(fam.client, at(pod0, 8081), "be0:8081"), out(at(pod1, 8081), "be1:8081"),
				n.block(fam.client, at(pod0, 8080)), out(at(pod1, 8080), ""))
			in8081 := n.dial(n.tp.Client, fam.client, at(pod0, 8081), "be0:8081")
			out8081 := n.dial(be0, netip.Addr{}, at(pod1, 8081), "be1:8081")

			n.setPolicy(n.podIf(0), only(8080))
			for _, c := range []*testutil.Conn{in8080, out8080, in8081, out8081} {
				n.echo("back to A", c)
			}
			n.run("back to A",
				n.allow(fam.client, at(pod0, 8080), "be0:8080"), out(at(pod1, 8080), "be1:8080"),
				n.block(fam.client, at(pod0, 8081)), out(at(pod1, 8081), ""))
		})
	}
}

// With the load balancer on the same datapath, a pod's egress policy
// judges the backend a service connection goes to, not the frontend, and
// a backend's ingress policy sees the client's own address, as
// kube-proxy and NetworkPolicy do together.
func TestBehaviourService(t *testing.T) {
	for _, fam := range bhFamilies {
		t.Run(fam.name, func(t *testing.T) {
			n := newBhNode(t, fam, 2)
			be0 := n.tp.Backends[0]
			pod0, pod1 := n.pod(0), n.pod(1)
			backend := netip.AddrPortFrom(pod1, 8080)
			n.serve(n.tp.Backends[1], "be1", pod1, 8080)

			services, err := lb.NewManager(n.dp)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { services.Close() })
			svc := lb.Service{
				Frontend: lb.Frontend{Address: fam.vip, Protocol: lb.TCP},
				Backends: []lb.Backend{{Address: backend}},
			}
			if err := services.Upsert(svc); err != nil {
				t.Fatal(err)
			}
			// The client's traffic is load-balanced where it enters the
			// node; the pods' at their own interfaces, by the endpoints'
			// programs.
			n.tp.Node.MustDo(func() error {
				return n.dp.Attach("n-cli", datapath.AttachOptions{Hook: datapath.HookTC})
			})
			rd, err := n.dp.Events()
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			fromPod := func(dst netip.AddrPort, want string) bhProbe { return bhProbe{from: be0, dst: dst, want: want} }
			tcpTo := func(p netip.Prefix, port uint16) []Rule {
				return []Rule{{Peers: []Peer{{Prefix: p}}, Ports: []PortRange{{Protocol: TCP, Port: port}}}}
			}

			n.run("no policy",
				fromPod(fam.vip, "be1:8080"), fromPod(backend, "be1:8080"), n.allow(fam.client, fam.vip, "be1:8080"))

			n.setPolicy(n.podIf(0), Policy{Egress: Rules{Isolated: true, Rules: tcpTo(bhHost(pod1), 8080)}})
			n.run("egress allows the backend",
				fromPod(fam.vip, "be1:8080"), fromPod(backend, "be1:8080"))

			n.setPolicy(n.podIf(0), Policy{Egress: Rules{Isolated: true, Rules: tcpTo(bhHost(fam.vip.Addr()), 80)}})
			n.run("egress allows only the frontend",
				fromPod(fam.vip, ""), fromPod(backend, ""))

			n.setPolicy(n.podIf(0), Policy{})
			n.setPolicy(n.podIf(1), Policy{Ingress: Rules{Isolated: true, Rules: tcpTo(bhHost(pod0), 8080)}})
			drain(t, n, rd)
			n.run("backend's ingress allows the pod",
				fromPod(fam.vip, "be1:8080"), fromPod(backend, "be1:8080"),
				n.block(fam.client, fam.vip), n.block(fam.client, backend))

			// The client's drops at the backend name the client, and the
			// backend's port: after DNAT, before any SNAT (there is none).
			st, err := n.m.Endpoint(n.podIf(1))
			if err != nil {
				t.Fatal(err)
			}
			evs := drain(t, n, rd)
			seen := false
			for _, ev := range evs {
				if ev.Protocol != uint8(TCP) {
					continue // the isolated backend's multicast listener reports, say
				}
				if ev.Endpoint != st.ID || ev.Direction != Ingress || ev.Reason != datapath.DropNoRule || ev.Interface != n.podIf(1) {
					t.Errorf("unexpected drop: %s", ev)
					continue
				}
				if ev.Source.Addr() != fam.client || ev.Destination != backend {
					t.Errorf("drop %s: want from %s to %s", ev, fam.client, backend)
				}
				seen = true
			}
			if !seen {
				t.Errorf("no drop event at %s for the client: %v", n.podIf(1), evs)
			}
		})
	}
}

// drain reads drop events in the node namespace until none has come for a
// while.
func drain(t *testing.T, n *bhNode, rd *datapath.EventReader) []datapath.Event {
	t.Helper()
	var out []datapath.Event
	for {
		var ev datapath.Event
		rd.SetDeadline(time.Now().Add(300 * time.Millisecond))
		err := n.tp.Node.Do(func() (err error) { ev, err = rd.Read(); return err })
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatalf("read events: %v", err)
		}
		out = append(out, ev)
	}
}

// Allowed and denied packets are counted per endpoint and direction, and
// every drop is an event naming the endpoint, the peer, the port and the
// reason.
func TestBehaviourCountersAndEvents(t *testing.T) {
	for _, fam := range bhFamilies {
		t.Run(fam.name, func(t *testing.T) {
			n := newBhNode(t, fam, 2)
			be0, be1 := n.tp.Backends[0], n.tp.Backends[1]
			pod0, pod1 := n.pod(0), n.pod(1)
			n.serve(be0, "be0", pod0, 8080)
			n.serve(be1, "be1", pod1, 8080, 8081, 8082, 8083)
			at := netip.AddrPortFrom
			out := func(port uint16, want string) bhProbe { return bhProbe{from: be0, dst: at(pod1, port), want: want} }
			n.run("no policy",
				n.allow(fam.client, at(pod0, 8080), "be0:8080"), n.allow(fam.other, at(pod0, 8080), "be0:8080"),
				n.allow(fam.excepted, at(pod0, 8080), "be0:8080"), out(8082, "be1:8082"), out(8083, "be1:8083"))

			rd, err := n.dp.Events()
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			before, err := n.m.Counters(n.podIf(0))
			if err != nil {
				t.Fatal(err)
			}
			if before.Ingress.AllowedPackets == 0 || before.Egress.AllowedPackets == 0 ||
				before.Ingress.DeniedPackets != 0 || before.Egress.DeniedPackets != 0 {
				t.Errorf("counters with no policy: %+v, want allowed packets both ways and none denied", before)
			}
			dropsBefore, err := n.dp.DropCounters()
			if err != nil {
				t.Fatal(err)
			}

			n.setPolicy(n.podIf(0), Policy{
				Ingress: Rules{Isolated: true, Rules: []Rule{
					{Peers: []Peer{{Prefix: bhHost(fam.client)}}, Ports: []PortRange{{Protocol: TCP, Port: 8080}}},
					{Action: Deny, Peers: []Peer{{Prefix: bhHost(fam.excepted)}}},
				}},
				Egress: Rules{Isolated: true, Rules: []Rule{
					{Peers: []Peer{{Prefix: bhHost(pod1)}}, Ports: []PortRange{{Protocol: TCP, Port: 8080, EndPort: 8082}}},
					{Action: Deny, Peers: []Peer{{Prefix: bhHost(pod1)}}, Ports: []PortRange{{Protocol: TCP, Port: 8082}}},
				}},
			})
			n.run("policy",
				n.allow(fam.client, at(pod0, 8080), "be0:8080"), out(8080, "be1:8080"),
				n.block(fam.other, at(pod0, 8080)), n.block(fam.excepted, at(pod0, 8080)),
				out(8082, ""), out(8083, ""))

			// Drop events, then the counters, then the events that came
			// since: every counted drop is one event, so the count lies
			// between the two totals.
			evs := drain(t, n, rd)
			got, err := n.m.Counters(n.podIf(0))
			if err != nil {
				t.Fatal(err)
			}
			drops, err := n.dp.DropCounters()
			if err != nil {
				t.Fatal(err)
			}
			later := drain(t, n, rd)

			st, err := n.m.Endpoint(n.podIf(0))
			if err != nil {
				t.Fatal(err)
			}
			type key struct {
				dir    Direction
				reason datapath.DropReason
				peer   netip.Addr
				port   uint16
			}
			want := map[key]bool{
				{Ingress, datapath.DropNoRule, fam.other, 8080}:      false,
				{Ingress, datapath.DropDenyRule, fam.excepted, 8080}: false,
				{Egress, datapath.DropNoRule, pod1, 8083}:            false,
				{Egress, datapath.DropDenyRule, pod1, 8082}:          false,
			}
			perDir := map[Direction][2]uint64{}
			for i, ev := range append(evs, later...) {
				if ev.Endpoint != st.ID {
					t.Errorf("drop at endpoint %d, want only %d's (%s): %s", ev.Endpoint, st.ID, n.podIf(0), ev)
					continue
				}
				c := perDir[ev.Direction]
				if i < len(evs) {
					c[0]++
				}
				c[1]++
				perDir[ev.Direction] = c
				if ev.Interface != n.podIf(0) || ev.Ifindex == 0 {
					t.Errorf("drop %s: interface %q (%d), want %s", ev, ev.Interface, ev.Ifindex, n.podIf(0))
				}
				if time.Since(ev.Time).Abs() > time.Minute {
					t.Errorf("drop %s: time %s is not now", ev, ev.Time)
				}
				if ev.Protocol != uint8(TCP) {
					continue // the neighbour discovery or MLD of an isolated pod, say
				}
				k := key{dir: ev.Direction, reason: ev.Reason, peer: ev.Source.Addr(), port: ev.Destination.Port()}
				self := ev.Destination.Addr()
				if ev.Direction == Egress {
					k.peer, self = ev.Destination.Addr(), ev.Source.Addr()
				}
				if self != pod0 || ev.Length == 0 {
					t.Errorf("drop %s: want the pod's address %s on its side, and a length", ev, pod0)
				}
				if _, ok := want[k]; !ok {
					t.Errorf("unexpected drop: %s", ev)
					continue
				}
				want[k] = true
			}
			for k, ok := range want {
				if !ok {
					t.Errorf("no %s drop event (%s) for %s port %d; got %v", k.dir, k.reason, k.peer, k.port, append(evs, later...))
				}
			}

			for _, d := range []struct {
				dir         Direction
				before, got Counters
			}{{Ingress, before.Ingress, got.Ingress}, {Egress, before.Egress, got.Egress}} {
				if d.got.AllowedPackets <= d.before.AllowedPackets || d.got.AllowedBytes <= d.before.AllowedBytes {
					t.Errorf("%s: allowed %d packets %d bytes after the policy, %d %d before: want more", d.dir,
						d.got.AllowedPackets, d.got.AllowedBytes, d.before.AllowedPackets, d.before.AllowedBytes)
				}
				// Two connections refused each way, a SYN at least each.
				if d.got.DeniedPackets < 2 || d.got.DeniedBytes == 0 {
					t.Errorf("%s: denied %d packets %d bytes, want at least 2", d.dir, d.got.DeniedPackets, d.got.DeniedBytes)
				}
				if c := perDir[d.dir]; d.got.DeniedPackets < c[0] || d.got.DeniedPackets > c[1] {
					t.Errorf("%s: %d denied packets counted, but %d events before reading the counter and %d in all", d.dir, d.got.DeniedPackets, c[0], c[1])
				}
			}
			for _, r := range []datapath.DropReason{datapath.DropNoRule, datapath.DropDenyRule} {
				if d := drops.Packets[r] - dropsBefore.Packets[r]; d < 2 {
					t.Errorf("drop counter %s went up by %d, want at least 2 (one each way)", r, d)
				}
			}
			if drops.EventsLost != 0 {
				t.Errorf("%d events lost", drops.EventsLost)
			}
		})
	}
}

// A pod isolated before it has sent or received anything, as a pod is
// when its policy comes with it: the allowed peer still connects, in and
// out. The node and the pod have yet to resolve each other's link
// addresses, so this also needs neighbour discovery (IPv6) and ARP
// (IPv4) to get through the policy.
func TestBehaviourIsolatedFromStart(t *testing.T) {
	for _, fam := range bhFamilies {
		t.Run(fam.name, func(t *testing.T) {
			n := newBhNode(t, fam, 1)
			pod := n.pod(0)
			n.serve(n.tp.Backends[0], "be0", pod, 8080)
			n.serve(n.tp.Client, "client", fam.client, 8080)
			n.setPolicy(n.podIf(0), Policy{
				Ingress: Rules{Isolated: true, Rules: []Rule{
					{Peers: []Peer{{Prefix: bhHost(fam.client)}}, Ports: []PortRange{{Protocol: TCP, Port: 8080}}},
				}},
				Egress: Rules{Isolated: true, Rules: []Rule{
					{Peers: []Peer{{Prefix: bhHost(fam.client)}}, Ports: []PortRange{{Protocol: TCP, Port: 8080}}},
				}},
			})
			rd, err := n.dp.Events()
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			n.run("isolated from the start",
				n.allow(fam.client, netip.AddrPortFrom(pod, 8080), "be0:8080"),
				bhProbe{from: n.tp.Backends[0], dst: netip.AddrPortFrom(fam.client, 8080), want: "client:8080"},
				n.block(fam.other, netip.AddrPortFrom(pod, 8080)))
			// Name the neighbour solicitations the policy dropped, if
			// any: what the allowed connections were missing.
			for _, ev := range drain(t, n, rd) {
				if ev.Protocol == ipprotoICMPv6 && bhSolicitedNode.Contains(ev.Destination.Addr()) {
					t.Errorf("dropped a neighbour solicitation: %s", ev)
				}
			}
		})
	}
}
