package lb_test

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

// Behavioural tests of what issue 3 adds to a service: Maglev and its
// weights, session affinity, traffic policies, backend states and source
// ranges, over real TCP and UDP sockets across namespaces.

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

// sourcePorts returns count local addresses: addr with the ports from
// first on. They lie below the ephemeral range (32768 up), so the kernel
// gives none of them to another socket.
func sourcePorts(addr netip.Addr, first uint16, count int) []netip.AddrPort {
	out := make([]netip.AddrPort, count)
	for i := range out {
		out[i] = netip.AddrPortFrom(addr, first+uint16(i))
	}
	return out
}

// askPorts makes one flow of proto to vip from each of locals (a TCP
// connection, or a UDP datagram and its answer) and returns the answering
// backends' names, in order.
func askPorts(t *testing.T, n *lbNode, proto lb.Protocol, vip netip.AddrPort, locals []netip.AddrPort) []string {
	t.Helper()
	ask := testutil.AskTCPFrom
	if proto == lb.UDP {
		ask = testutil.AskUDPFromEach
	}
	names, err := ask(n.tp.Client, locals, vip, 2*time.Second, 4)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// askFrom makes one new flow of proto from the client's address from (any
// if zero) to vip and returns the backend that answered.
func askFrom(t *testing.T, n *lbNode, proto lb.Protocol, from netip.Addr, vip netip.AddrPort) string {
	t.Helper()
	local := netip.AddrPortFrom(from, n.freshPort(t))
	var (
		name string
		err  error
	)
	if proto == lb.TCP {
		var c *testutil.Conn
		if c, err = testutil.DialTCPFrom(n.tp.Client, local, vip, 2*time.Second); err == nil {
			name = c.Server
			c.Close()
		}
	} else {
		name, err = testutil.AskUDPFrom(n.tp.Client, local, vip, 2*time.Second)
	}
	if err != nil {
		t.Fatalf("%s from %s to %s: %v", proto, from, vip, err)
	}
	return name
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

// flushConntrack deletes every conntrack entry, as if the flows had
// arrived at another node: the next packet of each is a new flow.
func flushConntrack(t *testing.T, dp *datapath.Datapath) {
	t.Helper()
	ct := kernel.Of(dp).Maps.Conntrack
	var (
		keys []bpf.XdplaneCtKey
		k    bpf.XdplaneCtKey
		v    bpf.XdplaneCtValue
	)
	it := ct.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterate conntrack: %v", err)
	}
	for _, k := range keys {
		if err := ct.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatalf("delete conntrack entry: %v", err)
		}
	}
}

// Maglev honours weights: over 12000 new flows, each from a source port
// of its own, backends of weights 1, 2 and 3 get within 10% (of their own
// share) of 1/6, 2/6 and 3/6 of them. A TCP flow is a connection; a UDP
// flow is one datagram and the answer naming its backend. The source
// ports are fixed, so the result is the same on every run; and there are
// enough of them that the sampling error alone (about 2% of the smallest
// share, one standard deviation) would have to reach five deviations to
// fail it.
func TestBehaviourMaglevWeights(t *testing.T) {
	const flows = 12000
	weights := []uint16{1, 2, 3}
	total := 0
	for _, w := range weights {
		total += int(w)
	}
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, len(weights), v)
			for _, fam := range families {
				t.Run(fam.name, func(t *testing.T) {
					for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
						t.Run(proto.String(), func(t *testing.T) {
							vip := fam.vip(proto)
							s := n.service(proto, vip, servePort(proto), 0, 1, 2)
							s.Algorithm = lb.Maglev
							for i := range s.Backends {
								s.Backends[i].Weight = weights[i]
							}
							if _, err := n.mgr.Sync([]lb.Service{s}); err != nil {
								t.Fatal(err)
							}
							start := time.Now()
							names := askPorts(t, n, proto, vip, sourcePorts(n.clientAddr(fam), 20000, flows))
							elapsed := time.Since(start)
							counts := make([]int, len(weights))
							for _, name := range names {
								counts[backendIndex(t, name, fam == ipv6)]++
							}
							var report []string
							for i, w := range weights {
								share, want := float64(counts[i])/flows, float64(w)/float64(total)
								dev := (share - want) / want
								report = append(report, fmt.Sprintf("weight %d: %d (%.3f, want %.3f, %+.1f%%)", w, counts[i], share, want, 100*dev))
								if dev > 0.10 || dev < -0.10 {
									defer t.Errorf("backend %d of weight %d got %d of %d flows, %.3f; want %.3f within 10%%", i, w, counts[i], flows, share, want)
								}
							}
							t.Logf("%d %s flows in %v: %s", flows, proto, elapsed.Round(time.Millisecond), strings.Join(report, "; "))
						})
					}
				})
			}
		})
	}
}

// Maglev moves few flows when a backend goes: new flows (TCP connections,
// UDP datagrams) from the same source ports as before reach the same
// backends as before, except those that were on the removed one, give or
// take 1% of flows. Conntrack is flushed between the rounds, so that the
// choice is Maglev's alone, as on another node with the same backends.
func TestBehaviourMaglevDisruption(t *testing.T) {
	const (
		flows   = 4000
		removed = 2
	)
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 4, v)
			for _, fam := range families {
				t.Run(fam.name, func(t *testing.T) {
					for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
						t.Run(proto.String(), func(t *testing.T) {
							v6 := fam == ipv6
							vip := fam.vip(proto)
							s := n.service(proto, vip, servePort(proto), 0, 1, 2, 3)
							s.Algorithm = lb.Maglev
							if _, err := n.mgr.Sync([]lb.Service{s}); err != nil {
								t.Fatal(err)
							}
							locals := sourcePorts(n.clientAddr(fam), 20000, flows)
							before := askPorts(t, n, proto, vip, locals)
							perBackend := map[string]int{}
							for _, name := range before {
								backendIndex(t, name, v6)
								perBackend[name]++
							}
							onlyFrom(t, "before the removal", perBackend, v6, 0, 1, 2, 3)

							s = n.service(proto, vip, servePort(proto), 0, 1, 3)
							s.Algorithm = lb.Maglev
							if err := n.mgr.Upsert(s); err != nil {
								t.Fatal(err)
							}
							flushConntrack(t, n.dp)
							after := askPorts(t, n, proto, vip, locals)

							gone := backendName(removed, v6)
							var moved, wasOnRemoved int
							for i := range locals {
								backendIndex(t, after[i], v6)
								if after[i] == gone {
									t.Fatalf("from %s: reached the removed %s", locals[i], gone)
								}
								if before[i] == gone {
									wasOnRemoved++
								}
								if after[i] != before[i] {
									moved++
								}
							}
							extra := moved - wasOnRemoved
							t.Logf("%d %s flows: %d (%.1f%%) were on the removed backend (1/4 = 25%%); %d (%.1f%%) moved, %d (%.2f%%) of them from a backend that stayed",
								flows, proto, wasOnRemoved, 100*float64(wasOnRemoved)/flows, moved, 100*float64(moved)/flows, extra, 100*float64(extra)/flows)
							if extra > flows/100 {
								t.Errorf("%d of %d flows moved between backends that stayed, want at most 1%%", extra, flows)
							}
						})
					}
				})
			}
		})
	}
}

// With session affinity, every new flow of a client reaches the backend
// of its first, under both algorithms; when that backend stops taking new
// flows (terminating, with active ones left) or goes, the client sticks to
// its next one; without affinity, new flows spread.
func TestBehaviourSessionAffinity(t *testing.T) {
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 3, v)
			for _, fam := range families {
				for _, alg := range []lb.Algorithm{lb.Random, lb.Maglev} {
					t.Run(fam.name+"/"+alg.String(), func(t *testing.T) {
						v6 := fam == ipv6
						// set installs fam's services over the backends
						// in states, with the affinity timeout.
						set := func(affinity time.Duration, states map[int]lb.BackendState) {
							t.Helper()
							idx := slices.Sorted(maps.Keys(states))
							svcs := n.services(fam, idx...)
							for i := range svcs {
								svcs[i].Algorithm = alg
								svcs[i].SessionAffinity = affinity
								for j, k := range idx {
									svcs[i].Backends[j].State = states[k]
								}
							}
							if _, err := n.mgr.Sync(svcs); err != nil {
								t.Fatal(err)
							}
						}
						sticky := func(when string) int {
							t.Helper()
							name := only(t, fmt.Sprintf("TCP to %s with affinity, %s", fam.tcp, when), askMany(t, n, lb.TCP, fam.tcp, 50))
							return backendIndex(t, name, v6)
						}
						// Start afresh: no affinity left from an earlier run.
						if _, err := n.mgr.Sync(nil); err != nil {
							t.Fatal(err)
						}
						all := map[int]lb.BackendState{0: lb.Active, 1: lb.Active, 2: lb.Active}
						set(lb.DefaultSessionAffinity, all)
						only(t, fmt.Sprintf("UDP to %s with affinity", fam.udp), askMany(t, n, lb.UDP, fam.udp, 50))
						first := sticky("all active")

						states := maps.Clone(all)
						states[first] = lb.Terminating
						set(lb.DefaultSessionAffinity, states)
						second := sticky(fmt.Sprintf("after %s became terminating", backendName(first, v6)))
						if second == first {
							t.Fatalf("new connections went on reaching %s, terminating", backendName(first, v6))
						}

						delete(states, second)
						set(lb.DefaultSessionAffinity, states)
						if third := sticky(fmt.Sprintf("after %s left", backendName(second, v6))); third == first || third == second {
							t.Fatalf("new connections reached %s, want the one active backend left", backendName(third, v6))
						}

						// 60 tries miss one of three backends with
						// probability 3*(2/3)^60, about 1e-10.
						set(0, all)
						for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
							onlyFrom(t, fmt.Sprintf("%s to %s without affinity", proto, fam.vip(proto)), askMany(t, n, proto, fam.vip(proto), 60), v6, 0, 1, 2)
						}
					})
				}
			}
		})
	}
}

// trafficPolicyServices expands a dual-stack Kubernetes service on n's
// backends, with backend local the only one on this node if
// localEndpoints, and installs it: two ports (TCP 80, UDP 53) on the
// cluster IPs 10.96.0.20 and fd00::20, the load balancer IPs 10.96.0.10
// and fd00::10, and as node ports (30080, 30053) on nodeAddrs.
func trafficPolicyServices(t *testing.T, n *lbNode, external, internal lb.TrafficPolicy, local int, localEndpoints bool, nodeAddrs []netip.Addr) []lb.Service {
	t.Helper()
	ks := lb.KubeService{
		ClusterIPs:      clusterIPs,
		LoadBalancerIPs: []netip.Addr{vipTCP.Addr(), vipTCP6.Addr()},
		NodeAddresses:   nodeAddrs,
		Ports: []lb.KubePort{
			{Name: "tcp", Protocol: lb.TCP, Port: 80, NodePort: 30080},
			{Name: "udp", Protocol: lb.UDP, Port: 53, NodePort: 30053},
		},
		ExternalTrafficPolicy: external,
		InternalTrafficPolicy: internal,
	}
	for i := range n.tp.Backends {
		for _, a := range []netip.Addr{n.tp.BackendAddrs[i], n.tp.BackendAddrs6[i]} {
			ks.Endpoints = append(ks.Endpoints, lb.KubeEndpoint{
				Address: a, Ports: map[string]uint16{"tcp": 8080, "udp": 5353},
				Ready: true, Serving: true, Local: localEndpoints && i == local,
			})
		}
	}
	svcs, err := ks.Expand()
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 * (4 + len(nodeAddrs)); len(svcs) != want {
		t.Fatalf("Expand made %d services, want %d (2 ports on %d addresses)", len(svcs), want, 4+len(nodeAddrs))
	}
	for _, s := range svcs {
		want := external
		if slices.Contains(clusterIPs, s.Frontend.Address.Addr()) {
			want = internal
		}
		if s.TrafficPolicy != want {
			t.Fatalf("%s: policy %s, want %s", s.Frontend, s.TrafficPolicy, want)
		}
	}
	if _, err := n.mgr.Sync(svcs); err != nil {
		t.Fatal(err)
	}
	return svcs
}

var (
	clusterIPs = []netip.Addr{netip.MustParseAddr("10.96.0.20"), netip.MustParseAddr("fd00::20")}
	// nodeAddrs are the node's addresses on the client's link.
	nodeAddrs = []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd01::1")}
)

// Traffic policies, set as Kubernetes sets them and expanded by
// KubeService: externalTrafficPolicy Local limits load balancer IP and
// node port frontends (reached on the node's own address) to the local
// backend, internalTrafficPolicy Local the cluster IP; each leaves the
// other frontends alone, and established flows.
func TestBehaviourTrafficPolicy(t *testing.T) {
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 3, v)
			const local = 1
			// Node ports on the node's addresses, except under XDP: there
			// the IPv4 one fails for a reason of its own, which
			// TestBehaviourNodePort shows.
			nodes := nodeAddrs
			if v.opts.Hook == datapath.HookXDP {
				nodes = nil
			}
			check := func(when string, svcs []lb.Service) {
				t.Helper()
				for _, s := range svcs {
					fe := s.Frontend
					v6 := fe.Address.Addr().Is6()
					what := fmt.Sprintf("%s: %s (%s policy)", when, fe, s.TrafficPolicy)
					if s.TrafficPolicy == lb.Local {
						onlyFrom(t, what, askMany(t, n, fe.Protocol, fe.Address, 30), v6, local)
					} else {
						onlyFrom(t, what, askMany(t, n, fe.Protocol, fe.Address, 60), v6, 0, 1, 2)
					}
				}
			}

			check("external Local", trafficPolicyServices(t, n, lb.Local, lb.Cluster, local, true, nodes))

			// An established connection to a backend that is not local
			// outlives a change to Local: policies choose for new flows.
			var conn *testutil.Conn
			for range 30 {
				c, err := testutil.DialTCP(n.tp.Client, netip.AddrPortFrom(clusterIPs[0], 80), 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if c.Server != backendName(local, false) {
					conn = c
					break
				}
				c.Close()
			}
			if conn == nil {
				t.Fatal("30 connections to the cluster IP all reached the local backend")
			}
			defer conn.Close()

			check("internal Local", trafficPolicyServices(t, n, lb.Cluster, lb.Local, local, true, nodes))
			if err := conn.Echo("internal policy now Local", 2*time.Second); err != nil {
				t.Fatalf("connection to %s broke when the cluster IP's policy became Local: %v", conn.Server, err)
			}
		})
	}
}

// With a Local policy and no local backend (but backends elsewhere), new
// flows to the Local frontends are dropped (issue 3, item 5), as
// kube-proxy drops them ("has no local endpoints"), not rejected as a
// frontend without any usable backend is (item 8).
func TestBehaviourTrafficPolicyNoLocalBackend(t *testing.T) {
	for _, v := range []variant{tcxVerified, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 3, v)
			var fes []lb.Frontend
			for _, s := range trafficPolicyServices(t, n, lb.Local, lb.Local, 0, false, nil) {
				fes = append(fes, s.Frontend)
			}
			expectDropped(t, n, "Local policies, no local backend", netip.Addr{}, noBackend, fes...)
		})
	}
}

// A frontend without backends rejects new flows at once, TCP and UDP, in
// both families: the client gets an ICMP (ICMPv6) port unreachable, which
// its kernel reports as "connection refused". So do the other ports of a
// virtual IP (a cluster IP), whose service port keeps serving.
func TestBehaviourNoBackends(t *testing.T) {
	for _, v := range []variant{tcx, tcxVerified, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 1, v)
			var svcs []lb.Service
			var empty, otherPorts []lb.Frontend
			for _, fam := range families {
				for _, s := range n.services(fam) {
					svcs = append(svcs, s)
					empty = append(empty, s.Frontend)
				}
				// A virtual IP with one TCP service port, 80.
				vip := netip.MustParseAddr("10.96.0.30")
				if fam == ipv6 {
					vip = netip.MustParseAddr("fd00::30")
				}
				s := n.service(lb.TCP, netip.AddrPortFrom(vip, 80), 8080, 0)
				s.VirtualIP = true
				svcs = append(svcs, s)
				otherPorts = append(otherPorts,
					lb.Frontend{Address: netip.AddrPortFrom(vip, 81), Protocol: lb.TCP},
					lb.Frontend{Address: netip.AddrPortFrom(vip, 80), Protocol: lb.UDP})
			}
			if _, err := n.mgr.Sync(svcs); err != nil {
				t.Fatal(err)
			}
			expectRejected(t, n, "no backends", netip.Addr{}, noBackend, empty...)
			expectRejected(t, n, "other ports of a virtual IP", netip.Addr{}, unknownPort, otherPorts...)
			for _, s := range svcs {
				if len(s.Backends) > 0 {
					onlyFrom(t, s.Frontend.String(), askMany(t, n, lb.TCP, s.Frontend.Address, 5), s.Frontend.Address.Addr().Is6(), 0)
				}
			}
		})
	}
}

// Terminating backends take new flows only when no active one is left
// (kube-proxy's fallback); maintenance ones never; established flows go on
// whatever their backend's state becomes.
func TestBehaviourTerminatingFallback(t *testing.T) {
	for _, v := range []variant{tcxVerified, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 3, v)
			for _, fam := range families {
				for _, alg := range []lb.Algorithm{lb.Random, lb.Maglev} {
					t.Run(fam.name+"/"+alg.String(), func(t *testing.T) {
						v6 := fam == ipv6
						set := func(states ...lb.BackendState) {
							t.Helper()
							svcs := n.services(fam, 0, 1, 2)
							for i := range svcs {
								svcs[i].Algorithm = alg
								for j := range svcs[i].Backends {
									svcs[i].Backends[j].State = states[j]
								}
							}
							if _, err := n.mgr.Sync(svcs); err != nil {
								t.Fatal(err)
							}
						}
						both := func(when string, count int, idx ...int) {
							t.Helper()
							for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
								onlyFrom(t, fmt.Sprintf("%s: %s", when, proto), askMany(t, n, proto, fam.vip(proto), count), v6, idx...)
							}
						}
						A, T, M := lb.Active, lb.Terminating, lb.Maintenance

						set(A, T, T)
						both("one active, two terminating", 30, 0)
						conn, err := testutil.DialTCP(n.tp.Client, fam.tcp, 2*time.Second)
						if err != nil {
							t.Fatal(err)
						}
						defer conn.Close()
						if conn.Server != backendName(0, v6) {
							t.Fatalf("a new connection reached %s, not the only active backend", conn.Server)
						}
						echo := func(when string) {
							t.Helper()
							if err := conn.Echo(when, 2*time.Second); err != nil {
								t.Fatalf("established connection to %s broke %s: %v", conn.Server, when, err)
							}
						}

						// 60 tries miss one of three with probability
						// about 1e-10, 40 one of two about 2e-12.
						set(T, T, T)
						echo("when its backend became terminating")
						both("all terminating", 60, 0, 1, 2)

						set(M, T, T)
						echo("when its backend went into maintenance")
						both("maintenance, two terminating", 40, 1, 2)

						set(M, A, T)
						both("maintenance, active, terminating", 20, 1)

						// No backend takes new flows: they are rejected
						// (issue 3, item 8), established ones go on.
						set(M, M, M)
						echo("with every backend in maintenance")
						expectRejected(t, n, "all in maintenance", netip.Addr{}, noBackend,
							lb.Frontend{Address: fam.tcp, Protocol: lb.TCP}, lb.Frontend{Address: fam.udp, Protocol: lb.UDP})
					})
				}
			}
		})
	}
}

// Source ranges admit new flows from clients inside them only; flows
// already established go on when the ranges change; prefixes of the other
// family never match; no ranges admit everyone.
func TestBehaviourSourceRanges(t *testing.T) {
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 2, v)
			// A second client address, on the same link.
			other4, other6 := netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("fd01::3")
			n.tp.Client.AddAddr("eth0", netip.PrefixFrom(other4, 24))
			n.tp.Client.AddAddr("eth0", netip.PrefixFrom(other6, 64))
			for _, fam := range families {
				t.Run(fam.name, func(t *testing.T) {
					v6 := fam == ipv6
					me, other := n.tp.ClientAddr, other4
					subnet := netip.MustParsePrefix("10.0.0.0/24")
					if v6 {
						me, other = n.tp.ClientAddr6, other6
						subnet = netip.MustParsePrefix("fd01::/64")
					}
					host := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
					fes := []lb.Frontend{{Address: fam.tcp, Protocol: lb.TCP}, {Address: fam.udp, Protocol: lb.UDP}}
					set := func(ranges ...netip.Prefix) {
						t.Helper()
						svcs := n.services(fam, 0, 1)
						for i := range svcs {
							svcs[i].SourceRanges = ranges
						}
						if _, err := n.mgr.Sync(svcs); err != nil {
							t.Fatal(err)
						}
					}
					admitted := func(when string, from netip.Addr) {
						t.Helper()
						for _, fe := range fes {
							if name := askFrom(t, n, fe.Protocol, from, fe.Address); backendIndex(t, name, v6) > 1 {
								t.Fatalf("%s: %s from %s reached %s", when, fe, from, name)
							}
						}
					}

					set(host(me))
					admitted("ranges hold the client", me)
					expectDropped(t, n, "ranges without the other address", other, sourceDenied, fes...)
					conn, err := testutil.DialTCPFrom(n.tp.Client, netip.AddrPortFrom(me, 0), fam.tcp, 2*time.Second)
					if err != nil {
						t.Fatal(err)
					}
					defer conn.Close()

					set(host(other))
					if err := conn.Echo("its source left the ranges", 2*time.Second); err != nil {
						t.Fatalf("established connection broke when its source left the ranges: %v", err)
					}
					expectDropped(t, n, "ranges without the client", me, sourceDenied, fes...)
					admitted("ranges hold the other address", other)

					set(subnet)
					admitted("ranges hold the subnet", me)
					admitted("ranges hold the subnet", other)

					set()
					admitted("no ranges", me)
					admitted("no ranges", other)
					if err := conn.Echo("the ranges went", 2*time.Second); err != nil {
						t.Fatalf("established connection broke when the ranges went: %v", err)
					}
				})
			}
		})
	}
}

// Source ranges of the other family are refused (an IPv6 prefix such as
// ::/0 would cover IPv4 clients in their v4-mapped form), and the ranges
// in force stay so: the client inside them still connects.
func TestBehaviourSourceRangesOtherFamily(t *testing.T) {
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 2, v)
			for _, fam := range families {
				t.Run(fam.name, func(t *testing.T) {
					v6 := fam == ipv6
					me := n.clientAddr(fam)
					otherFamily := []netip.Prefix{netip.MustParsePrefix("::/0"), netip.MustParsePrefix("::/64"), netip.MustParsePrefix("::/80")}
					mine := netip.MustParsePrefix("10.0.0.0/24")
					if v6 {
						otherFamily = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
						mine = netip.MustParsePrefix("fd01::/64")
					}
					sync := func(ranges ...netip.Prefix) error {
						svcs := n.services(fam, 0, 1)
						for i := range svcs {
							svcs[i].SourceRanges = ranges
						}
						_, err := n.mgr.Sync(svcs)
						return err
					}
					fes := []lb.Frontend{{Address: fam.tcp, Protocol: lb.TCP}, {Address: fam.udp, Protocol: lb.UDP}}
					if err := sync(mine); err != nil {
						t.Fatal(err)
					}
					for _, p := range otherFamily {
						if err := sync(mine, p); !errors.Is(err, lb.ErrInvalid) {
							t.Fatalf("ranges with %s: Sync = %v, want ErrInvalid", p, err)
						}
					}
					for _, fe := range fes {
						backendIndex(t, askFrom(t, n, fe.Protocol, me, fe.Address), v6)
					}
				})
			}
		})
	}
}

// A NodePort frontend on the node's own address (the client's gateway),
// in both families: connections and datagrams reach the backends, and the
// replies come back from the node's address and port.
func TestBehaviourNodePort(t *testing.T) {
	for _, v := range []variant{tcx, tcLegacy, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 2, v)
			if v.opts.Hook == datapath.HookXDP {
				// XDP translates replies as they arrive, before routing:
				// from the node's own address, which the kernel refuses
				// as a martian source unless told to accept it. (tc
				// translates them after routing and needs nothing.)
				n.tp.Node.MustDo(func() error {
					for _, ifname := range append([]string{"all"}, n.tp.NodeInterfaces...) {
						if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+ifname+"/accept_local", []byte("1"), 0o644); err != nil {
							return err
						}
					}
					return nil
				})
			}
			ks := lb.KubeService{
				ClusterIPs:    clusterIPs,
				NodeAddresses: nodeAddrs,
				Ports: []lb.KubePort{
					{Name: "tcp", Protocol: lb.TCP, Port: 80, NodePort: 30080},
					{Name: "udp", Protocol: lb.UDP, Port: 53, NodePort: 30053},
				},
			}
			for i := range n.tp.Backends {
				for _, a := range []netip.Addr{n.tp.BackendAddrs[i], n.tp.BackendAddrs6[i]} {
					ks.Endpoints = append(ks.Endpoints, lb.KubeEndpoint{
						Address: a, Ports: map[string]uint16{"tcp": 8080, "udp": 5353}, Ready: true,
					})
				}
			}
			svcs, err := ks.Expand()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := n.mgr.Sync(svcs); err != nil {
				t.Fatal(err)
			}
			for _, fam := range families {
				t.Run(fam.name, func(t *testing.T) {
					node := nodeAddrs[0]
					if fam == ipv6 {
						node = nodeAddrs[1]
					}
					for _, fe := range []lb.Frontend{
						{Address: netip.AddrPortFrom(node, 30080), Protocol: lb.TCP},
						{Address: netip.AddrPortFrom(node, 30053), Protocol: lb.UDP},
					} {
						// AskUDP checks that the reply comes from fe.
						onlyFrom(t, fe.String(), askMany(t, n, fe.Protocol, fe.Address, 40), fam == ipv6, 0, 1)
					}
				})
			}
		})
	}
}
