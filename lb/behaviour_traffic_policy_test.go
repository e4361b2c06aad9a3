package lb_test

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

// Behavioural tests of traffic policies, set as Kubernetes sets them, over
// real TCP and UDP sockets across namespaces.

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
// flows to the Local frontends are dropped, as kube-proxy drops them ("has
// no local endpoints"), not rejected as a frontend without any usable
// backend is.
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
