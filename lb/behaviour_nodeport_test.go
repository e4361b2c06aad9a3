package lb_test

import (
	"net/netip"
	"os"
	"testing"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
)

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
