package lb_test

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

var (
	vipTCP  = netip.MustParseAddrPort("10.96.0.10:80")
	vipUDP  = netip.MustParseAddrPort("10.96.0.10:53")
	vipTCP6 = netip.MustParseAddrPort("[fd00::10]:80")
	vipUDP6 = netip.MustParseAddrPort("[fd00::10]:53")
)

// family is one address family's pair of frontends, a TCP one and a UDP
// one, on the same address.
type family struct {
	name     string
	tcp, udp netip.AddrPort
}

var (
	ipv4     = family{"ipv4", vipTCP, vipUDP}
	ipv6     = family{"ipv6", vipTCP6, vipUDP6}
	families = []family{ipv4, ipv6}
)

func (f family) vip(proto lb.Protocol) netip.AddrPort {
	if proto == lb.TCP {
		return f.tcp
	}
	return f.udp
}

// backendName is what backend i's servers answer: its IPv4 servers with
// "backend<i>", its IPv6 ones with "backend<i>-v6", so that every answer
// tells which family's server it reached.
func backendName(i int, v6 bool) string {
	if v6 {
		return fmt.Sprintf("backend%d-v6", i)
	}
	return fmt.Sprintf("backend%d", i)
}

// lbNode is a topology with the load balancer attached on the node.
type lbNode struct {
	tp  *testutil.LBTopology
	dir string
	dp  *datapath.Datapath
	mgr *lb.Manager
	// asked counts the source ports freshPort has handed out.
	asked atomic.Uint32
}

// Client source ports that freshPort hands out: below the ephemeral range
// (32768 up), so the kernel gives none of them to another socket, and
// below the ports tests choose themselves (20000 up).
const (
	firstFreshPort = 10000
	lastFreshPort  = 19999
)

// freshPort returns a client source port that no earlier flow on n has
// used, so that a flow from it is new to the load balancer. A port the
// kernel picks may not be: a UDP socket can get the port of an earlier
// one whose flow is still in conntrack, and its datagram then goes where
// that flow went, whatever the service's backends, states or ranges say
// of new flows now.
func (n *lbNode) freshPort(t *testing.T) uint16 {
	t.Helper()
	p := firstFreshPort + n.asked.Add(1) - 1
	if p > lastFreshPort {
		t.Fatalf("out of fresh client source ports: %d used", p-firstFreshPort)
	}
	return uint16(p)
}

func newLBNode(t *testing.T, backends int, v variant) *lbNode {
	t.Helper()
	opts := v.opts
	n := &lbNode{tp: testutil.NewLBTopology(t, backends), dir: testutil.BPFFS(t)}
	if v.checksums {
		n.tp.DisableChecksumOffload()
	}
	if v.partial {
		n.tp.Client.SetChecksumOffload("eth0", true, false)
		for _, be := range n.tp.Backends {
			be.SetChecksumOffload("eth0", true, false)
		}
		for _, ifname := range n.tp.NodeInterfaces {
			n.tp.Node.SetChecksumOffload(ifname, false, false)
		}
	}
	if v.opts.Hook == datapath.HookXDP {
		// A reject leaves by XDP_TX, back to the client's end, which
		// must be able to take it: a NIC can; a veth takes XDP frames
		// reliably only with an XDP program of its own.
		n.tp.Client.AttachXDPPass("eth0")
	}
	// Removed after the manager is closed (cleanups run last-registered
	// first): Remove refuses while a writer holds the datapath.
	t.Cleanup(func() {
		n.tp.Node.MustDo(func() error { return datapath.Remove(n.dir) })
	})
	n.open(t)
	n.attach(t, opts)
	for i, be := range n.tp.Backends {
		for _, addr := range []netip.Addr{n.tp.BackendAddrs[i], n.tp.BackendAddrs6[i]} {
			name := backendName(i, addr.Is6())
			testutil.ServeTCP(t, be, netip.AddrPortFrom(addr, servePort(lb.TCP)), name)
			testutil.ServeUDP(t, be, netip.AddrPortFrom(addr, servePort(lb.UDP)), name)
		}
	}
	return n
}

func (n *lbNode) attach(t *testing.T, opts datapath.AttachOptions) {
	t.Helper()
	n.tp.Node.MustDo(func() error {
		for _, ifname := range n.tp.NodeInterfaces {
			if err := n.dp.Attach(ifname, opts); err != nil {
				return err
			}
		}
		return nil
	})
}

// open (re)opens the datapath and a manager, as a restarted process would.
func (n *lbNode) open(t *testing.T) {
	t.Helper()
	dp, err := datapath.Open(datapath.Options{Dir: n.dir})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := lb.NewManager(dp)
	if err != nil {
		dp.Close()
		t.Fatal(err)
	}
	n.dp, n.mgr = dp, mgr
	t.Cleanup(func() {
		mgr.Close()
		dp.Close()
	})
}

// service is a service at vip over the backends idx, on their addresses
// of vip's family.
func (n *lbNode) service(proto lb.Protocol, vip netip.AddrPort, port uint16, idx ...int) lb.Service {
	s := lb.Service{Frontend: lb.Frontend{Address: vip, Protocol: proto}}
	addrs := n.tp.BackendAddrs
	if vip.Addr().Is6() {
		addrs = n.tp.BackendAddrs6
	}
	for _, i := range idx {
		s.Backends = append(s.Backends, lb.Backend{Address: netip.AddrPortFrom(addrs[i], port)})
	}
	return s
}

// services is f's TCP service (to port 8080) and UDP service (to port
// 5353) over the backends idx.
func (n *lbNode) services(f family, idx ...int) []lb.Service {
	return []lb.Service{n.service(lb.TCP, f.tcp, servePort(lb.TCP), idx...), n.service(lb.UDP, f.udp, servePort(lb.UDP), idx...)}
}

// servePort is the port on which every backend serves proto: 8080 for
// TCP, 5353 for UDP (see newLBNode).
func servePort(proto lb.Protocol) uint16 {
	if proto == lb.TCP {
		return 8080
	}
	return 5353
}

// variant is one way of attaching. With checksums set, checksum offload is
// off on every veth end: senders write complete checksums and receivers
// verify them in software, so a wrong checksum shows up as lost traffic.
// XDP on veth needs it (it cannot handle the partial checksums of local
// senders; a NIC's receive path has complete ones, see DESIGN.md).
//
// With partial set, senders keep tx offload (their packets reach the node
// as CHECKSUM_PARTIAL skbs, which the tc helpers must update as such), the
// node completes checksums in software as it sends, and receivers verify:
// a wrong update of a partial checksum shows up as lost traffic.
type variant struct {
	name      string
	opts      datapath.AttachOptions
	checksums bool
	partial   bool
}

var (
	tcOpts         = datapath.AttachOptions{Hook: datapath.HookTC, Mode: datapath.ModeTCX}
	legacyOpts     = datapath.AttachOptions{Hook: datapath.HookTC, Mode: datapath.ModeTCLegacy}
	tcx            = variant{name: "tcx", opts: tcOpts}
	tcxVerified    = variant{name: "tcx-checksums-verified", opts: tcOpts, checksums: true}
	tcLegacy       = variant{name: "tc-legacy", opts: legacyOpts}
	xdpNative      = variant{name: "xdp-native", opts: datapath.AttachOptions{Hook: datapath.HookXDP, Mode: datapath.ModeXDPNative}, checksums: true}
	attachVariants = []variant{
		tcx,
		tcxVerified,
		{name: "tcx-partial-checksums-verified", opts: tcOpts, partial: true},
		tcLegacy,
		{name: "tc-legacy-partial-checksums-verified", opts: legacyOpts, partial: true},
		xdpNative,
		{name: "xdp-generic", opts: datapath.AttachOptions{Hook: datapath.HookXDP, Mode: datapath.ModeXDPGeneric}, checksums: true},
	}
)

// askMany opens n connections (TCP) or sends n datagrams (UDP) to vip,
// each a new flow from a fresh source port (see freshPort), and counts the
// answering backends.
func askMany(t *testing.T, n *lbNode, proto lb.Protocol, vip netip.AddrPort, count int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range count {
		name, err := ask(n, proto, netip.AddrPortFrom(netip.Addr{}, n.freshPort(t)), vip)
		if err != nil {
			t.Fatalf("%s to %s: %v (answers so far: %v)", proto, vip, err, seen)
		}
		seen[name]++
	}
	return seen
}

// onlyFrom fails t unless the answers in seen came from exactly backends
// idx, on their servers of one family (IPv6 if v6), each at least once.
func onlyFrom(t *testing.T, what string, seen map[string]int, v6 bool, idx ...int) {
	t.Helper()
	want := map[string]bool{}
	for _, i := range idx {
		want[backendName(i, v6)] = true
	}
	for name := range seen {
		if !want[name] {
			t.Fatalf("%s: answered by %s, want only %v: %v", what, name, slices.Sorted(maps.Keys(want)), seen)
		}
	}
	for name := range want {
		if seen[name] == 0 {
			t.Fatalf("%s: %s got nothing: %v", what, name, seen)
		}
	}
}

// dropWait is how long a flow that must be dropped is given to get an
// answer. An admitted flow is answered in a millisecond or two over veth;
// each drop check also confirms in the datapath's counters that the load
// balancer dropped the packets, so a short wait cannot pass by luck.
const dropWait = 300 * time.Millisecond

// clientAddr is the client's address of fam's family.
func (n *lbNode) clientAddr(fam family) netip.Addr {
	if fam == ipv6 {
		return n.tp.ClientAddr6
	}
	return n.tp.ClientAddr
}

// askFrom makes one new flow of proto from the client's address from (any
// if zero) to vip and returns the backend that answered.
func askFrom(t *testing.T, n *lbNode, proto lb.Protocol, from netip.Addr, vip netip.AddrPort) string {
	t.Helper()
	name, err := ask(n, proto, netip.AddrPortFrom(from, n.freshPort(t)), vip)
	if err != nil {
		t.Fatalf("%s from %s to %s: %v", proto, from, vip, err)
	}
	return name
}

// ask makes one new flow of proto from the client's local to vip, a TCP
// connection or a UDP request, and returns the backend that answered.
func ask(n *lbNode, proto lb.Protocol, local, vip netip.AddrPort) (string, error) {
	if proto == lb.UDP {
		return testutil.AskUDPFrom(n.tp.Client, local, vip, 2*time.Second)
	}
	c, err := testutil.DialTCPFrom(n.tp.Client, local, vip, 2*time.Second)
	if err != nil {
		return "", err
	}
	c.Close()
	return c.Server, nil
}

// backendIndex is the index of the backend whose server answered name,
// checking that it is a server of the family v6 says.
func backendIndex(t *testing.T, name string, v6 bool) int {
	t.Helper()
	var i int
	if _, err := fmt.Sscanf(name, "backend%d", &i); err != nil || backendName(i, v6) != name {
		t.Fatalf("answer %q: not a backend's server of the expected family (IPv6: %v)", name, v6)
	}
	return i
}

// only returns the single backend seen answered, and fails t if there
// were more.
func only(t *testing.T, what string, seen map[string]int) string {
	t.Helper()
	if len(seen) != 1 {
		t.Fatalf("%s: answered by %d backends, want one: %v", what, len(seen), seen)
	}
	for name := range seen {
		return name
	}
	return ""
}

// expectDropped makes one new flow from the client's address from (any if
// zero) to each frontend, all at once, and fails t unless every one goes
// unanswered (times out: not refused, not reset) and the datapath counter
// that counter picks grew by at least one packet per frontend: the load
// balancer dropped them, for that reason.
func expectDropped(t *testing.T, n *lbNode, what string, from netip.Addr, counter func(datapath.Counters) datapath.Counter, fes ...lb.Frontend) {
	t.Helper()
	expectUnanswered(t, n, what, from, false, counter, fes...)
}

// expectRejected is expectDropped for flows that must be refused at once:
// a TCP connection attempt and a UDP datagram get an ICMP (ICMPv6) port
// unreachable, which the client's kernel reports as a refusal.
func expectRejected(t *testing.T, n *lbNode, what string, from netip.Addr, counter func(datapath.Counters) datapath.Counter, fes ...lb.Frontend) {
	t.Helper()
	expectUnanswered(t, n, what, from, true, counter, fes...)
}

func expectUnanswered(t *testing.T, n *lbNode, what string, from netip.Addr, rejected bool, counter func(datapath.Counters) datapath.Counter, fes ...lb.Frontend) {
	t.Helper()
	before, err := n.dp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	// A refusal comes in a millisecond or two; a drop check waits
	// dropWait, and a refusal check longer, so that a flow dropped
	// instead shows as a timeout, not as a refusal that came late.
	// Except TCP over IPv6, whose refusal comes after a second over
	// veth: the client's kernel ignores the first ICMPv6 error, which
	// arrives while connect still holds the socket
	// (TcpExtLockDroppedIcmps), and takes the one for the retransmitted
	// SYN. So a drop check cannot tell a TCP over IPv6 refusal from a
	// drop; its IPv4 and UDP flows can.
	wait, want := dropWait, "a timeout (a drop)"
	if rejected {
		wait, want = 2*time.Second, "a refusal (an ICMP port unreachable)"
	}
	errs := make([]error, len(fes))
	var wg sync.WaitGroup
	for i, fe := range fes {
		local := netip.AddrPortFrom(from, n.freshPort(t))
		src := local.String()
		if !from.IsValid() {
			src = fmt.Sprintf("port %d", local.Port())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var (
				name string
				err  error
			)
			if fe.Protocol == lb.TCP {
				var c *testutil.Conn
				if c, err = testutil.DialTCPFrom(n.tp.Client, local, fe.Address, wait); err == nil {
					name = c.Server
					c.Close()
				}
			} else {
				// Connected, so that a port unreachable shows.
				name, err = testutil.AskUDPConnected(n.tp.Client, local, fe.Address, wait)
			}
			switch {
			case err == nil:
				errs[i] = fmt.Errorf("%s from %s reached %s", fe, src, name)
			case rejected && !testutil.ErrRefused(err), !rejected && !testutil.ErrTimeout(err):
				errs[i] = fmt.Errorf("%s from %s: %v, want %s", fe, src, err, want)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Errorf("%s: %v", what, err)
	}
	after, err := n.dp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got := counter(after).Packets - counter(before).Packets; got < uint64(len(fes)) {
		t.Errorf("%s: the counter of the reason grew by %d packets, want at least %d (one per frontend)", what, got, len(fes))
	}
}

func noBackend(c datapath.Counters) datapath.Counter    { return c.NoBackend }
func sourceDenied(c datapath.Counters) datapath.Counter { return c.SourceDenied }
func unknownPort(c datapath.Counters) datapath.Counter  { return c.UnknownPort }

func TestBehaviourAllBackendsServe(t *testing.T) {
	for _, v := range attachVariants {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 3, v)
			for _, fam := range families {
				t.Run(fam.name, func(t *testing.T) {
					// Sync replaces the other family's services.
					if _, err := n.mgr.Sync(n.services(fam, 0, 1, 2)); err != nil {
						t.Fatal(err)
					}
					// With a uniform pick, 60 tries miss one of three
					// backends with probability 3*(2/3)^60, about 1e-10.
					// UDP answers must come from the frontend (AskUDP
					// checks): the reply was translated back.
					for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
						seen := askMany(t, n, proto, fam.vip(proto), 60)
						onlyFrom(t, fmt.Sprintf("%s to %s", proto, fam.vip(proto)), seen, fam == ipv6, 0, 1, 2)
					}
					// Every flow was counted against a backend.
					st, err := lb.ReadStatus(n.dp)
					if err != nil {
						t.Fatal(err)
					}
					if len(st) != 2 {
						t.Fatalf("status lists %d services, want 2: %+v", len(st), st)
					}
					for _, s := range st {
						if s.Frontend.Address.Addr().Is6() != (fam == ipv6) {
							t.Fatalf("status lists %s, not an %s service", s.Frontend, fam.name)
						}
						for _, b := range s.Backends {
							if b.Packets == 0 {
								t.Fatalf("%s backend %s: no packets counted", s.Frontend, b.Address)
							}
						}
					}
				})
			}
		})
	}
}

// An IPv4 and an IPv6 service on the same port, at the same time: each
// reaches only its own backends (a different set per family, so that a
// mix-up shows), and removing one family's services leaves the other's
// flows and new connections alone.
func TestBehaviourDualStack(t *testing.T) {
	for _, v := range []variant{tcx, tcLegacy, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 3, v)
			v4, v6 := n.services(ipv4, 0, 1), n.services(ipv6, 1, 2)
			if _, err := n.mgr.Sync(append(slices.Clone(v4), v6...)); err != nil {
				t.Fatal(err)
			}
			// Interleaved, so that both families' flows are in conntrack
			// at once. 40 tries miss one of two backends with
			// probability 2*(1/2)^40.
			seen := map[netip.AddrPort]map[string]int{}
			for k := range 40 {
				for _, fam := range families {
					for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
						vip := fam.vip(proto)
						var (
							name string
							err  error
						)
						if proto == lb.TCP {
							name, err = testutil.AskTCP(n.tp.Client, vip, 2*time.Second)
						} else {
							name, err = testutil.AskUDP(n.tp.Client, vip, 2*time.Second)
						}
						if err != nil {
							t.Fatalf("request %d, %s to %s: %v (answers so far: %v)", k, proto, vip, err, seen)
						}
						if seen[vip] == nil {
							seen[vip] = map[string]int{}
						}
						seen[vip][name]++
					}
				}
			}
			for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
				onlyFrom(t, fmt.Sprintf("%s to %s", proto, ipv4.vip(proto)), seen[ipv4.vip(proto)], false, 0, 1)
				onlyFrom(t, fmt.Sprintf("%s to %s", proto, ipv6.vip(proto)), seen[ipv6.vip(proto)], true, 1, 2)
			}

			// Removing the IPv4 services leaves an IPv6 connection and
			// new IPv6 flows alone, and the IPv4 frontend answers no more.
			conn, err := testutil.DialTCP(n.tp.Client, vipTCP6, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := n.mgr.Sync(v6); err != nil {
				t.Fatal(err)
			}
			if err := conn.Echo("the IPv4 services went", 2*time.Second); err != nil {
				t.Fatalf("IPv6 connection broke when the IPv4 services on its port went: %v", err)
			}
			for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
				onlyFrom(t, fmt.Sprintf("%s to %s", proto, ipv6.vip(proto)), askMany(t, n, proto, ipv6.vip(proto), 40), true, 1, 2)
			}
			if name, err := testutil.AskTCP(n.tp.Client, vipTCP, 500*time.Millisecond); err == nil {
				t.Fatalf("the removed %s still reached %s", vipTCP, name)
			}

			// And the other way round.
			if _, err := n.mgr.Sync(v4); err != nil {
				t.Fatal(err)
			}
			for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
				onlyFrom(t, fmt.Sprintf("%s to %s", proto, ipv4.vip(proto)), askMany(t, n, proto, ipv4.vip(proto), 40), false, 0, 1)
			}
			if name, err := testutil.AskTCP(n.tp.Client, vipTCP6, 500*time.Millisecond); err == nil {
				t.Fatalf("the removed %s still reached %s", vipTCP6, name)
			}
		})
	}
}

// An established connection keeps its backend while the others go, and a
// removed backend gets no new connection.
func TestBehaviourBackendRemoval(t *testing.T) {
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			for _, fam := range families {
				t.Run(fam.name, func(t *testing.T) {
					n := newLBNode(t, 3, v)
					vip := fam.tcp
					if err := n.mgr.Upsert(n.service(lb.TCP, vip, 8080, 0, 1, 2)); err != nil {
						t.Fatal(err)
					}
					conn, err := testutil.DialTCP(n.tp.Client, vip, 2*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					defer conn.Close()
					var kept int
					if _, err := fmt.Sscanf(conn.Server, "backend%d", &kept); err != nil {
						t.Fatalf("server name %q: %v", conn.Server, err)
					}
					if conn.Server != backendName(kept, fam == ipv6) {
						t.Fatalf("a connection to %s reached %s, a server of the other family", vip, conn.Server)
					}

					// Keep only the connection's backend.
					if err := n.mgr.Upsert(n.service(lb.TCP, vip, 8080, kept)); err != nil {
						t.Fatal(err)
					}
					if err := conn.Echo("still here", 2*time.Second); err != nil {
						t.Fatalf("established connection broke when other backends left: %v", err)
					}
					seen := askMany(t, n, lb.TCP, vip, 20)
					if seen[conn.Server] != 20 {
						t.Fatalf("new connections went to removed backends: %v", seen)
					}

					// Now swap to the two others: the kept one must get
					// nothing new (nor old: by design its flows are
					// balanced afresh, see docs/architecture.md).
					var others []int
					for i := range 3 {
						if i != kept {
							others = append(others, i)
						}
					}
					if err := n.mgr.Upsert(n.service(lb.TCP, vip, 8080, others...)); err != nil {
						t.Fatal(err)
					}
					onlyFrom(t, "after removing "+conn.Server, askMany(t, n, lb.TCP, vip, 30), fam == ipv6, others...)
				})
			}
		})
	}
}

// State lives in the kernel, not in the process: a new datapath handle
// and manager (a restarted agent) take over without breaking a flow of
// either family.
func TestBehaviourRestart(t *testing.T) {
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 3, v)
			svcs := append(n.services(ipv4, 0, 1, 2), n.services(ipv6, 0, 1, 2)...)
			if _, err := n.mgr.Sync(svcs); err != nil {
				t.Fatal(err)
			}
			var conns []*testutil.Conn
			for _, fam := range families {
				conn, err := testutil.DialTCP(n.tp.Client, fam.tcp, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conns = append(conns, conn)
			}
			echo := func(when string) {
				t.Helper()
				for i, conn := range conns {
					if err := conn.Echo(when, 2*time.Second); err != nil {
						t.Fatalf("%s connection to %s broke %s: %v", families[i].name, conn.Server, when, err)
					}
				}
			}

			// The process goes away: only the kernel state remains.
			if err := errors.Join(n.mgr.Close(), n.dp.Close()); err != nil {
				t.Fatal(err)
			}
			echo("while no process holds the datapath")

			n.open(t)
			if got := n.mgr.List(); len(got) != len(svcs) {
				t.Fatalf("restarted manager recovered %v", got)
			}
			n.attach(t, v.opts) // the upgrade path: programs swapped in place
			res, err := n.mgr.Sync(svcs)
			if err != nil || len(res.Added)+len(res.Changed)+len(res.Removed) != 0 {
				t.Fatalf("Sync after restart = %+v, %v; want no change", res, err)
			}
			echo("across the restart")
			for _, fam := range families {
				onlyFrom(t, "UDP to "+fam.udp.String()+" after the restart", askMany(t, n, lb.UDP, fam.udp, 30), fam == ipv6, 0, 1, 2)
			}
		})
	}
}

// With strict reverse-path filtering on the node (RHEL's default), a reply
// whose source were rewritten before routing would arrive from the VIP on
// a backend's interface and be dropped. tc translates replies at egress,
// after routing, so it works; the node routes everything (the VIP too) to
// the client side, as a real node's default route would.
func TestBehaviourStrictRPFilter(t *testing.T) {
	n := newLBNode(t, 2, tcx)
	n.tp.Node.MustDo(func() error {
		for _, ifname := range append([]string{"all", "default"}, n.tp.NodeInterfaces...) {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+ifname+"/rp_filter", []byte("1"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	n.tp.Node.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), n.tp.ClientAddr)
	if _, err := n.mgr.Sync([]lb.Service{
		n.service(lb.TCP, vipTCP, 8080, 0, 1),
		n.service(lb.UDP, vipUDP, 5353, 0, 1),
	}); err != nil {
		t.Fatal(err)
	}
	if seen := askMany(t, n, lb.TCP, vipTCP, 10); len(seen) == 0 {
		t.Fatal("no TCP answers")
	}
	if seen := askMany(t, n, lb.UDP, vipUDP, 10); len(seen) == 0 {
		t.Fatal("no UDP answers")
	}
}
