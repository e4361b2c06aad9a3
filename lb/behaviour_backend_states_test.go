package lb_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

// Behavioural tests of backend states and of frontends without usable
// backends, over real TCP and UDP sockets across namespaces.

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

						// No backend takes new flows: they are rejected,
						// as by a frontend without backends; established
						// ones go on.
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
