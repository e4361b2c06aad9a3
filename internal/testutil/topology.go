package testutil

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// LBTopology is a client, a load-balancer node and backends, each joined
// to the node by its own veth pair and subnet, in IPv4 and IPv6 at once:
//
//	client 10.0.0.2    ── n-cli 10.0.0.1    [node] n-be<i> 10.0.<i+1>.1    ── backend<i> 10.0.<i+1>.2
//	       fd01::2/64           fd01::1/64             fd00:<i+1>::1/64            fd00:<i+1>::2/64
//
// (<i+1> in hexadecimal in IPv6.) The client's IPv6 subnet is fd01::/64,
// not fd00::/64, so that frontends such as fd00::10 are not on its link:
// the client routes them to the node as it routes 10.96.0.10, instead of
// looking for them with neighbour discovery.
//
// The node forwards both families; client and backends route everything
// through it, so a frontend address needs no route of its own.
type LBTopology struct {
	Client   *NS
	Node     *NS
	Backends []*NS

	ClientAddr   netip.Addr
	BackendAddrs []netip.Addr
	// ClientAddr6 and BackendAddrs6 are the same ends' IPv6 addresses.
	ClientAddr6   netip.Addr
	BackendAddrs6 []netip.Addr
	// NodeInterfaces are the node's ends: the client's first, then one per
	// backend. The load balancer attaches to all of them.
	NodeInterfaces []string
}

// NewLBTopology builds the topology with n backends (at most 254). It
// returns once every address is usable.
func NewLBTopology(t testing.TB, n int) *LBTopology {
	t.Helper()
	if n < 0 || n > 254 {
		t.Fatalf("NewLBTopology: %d backends, want 0 to 254", n)
	}
	g := NewGroup(t)
	tp := &LBTopology{
		Client:      g.NS("client"),
		Node:        g.NS("node"),
		ClientAddr:  netip.MustParseAddr("10.0.0.2"),
		ClientAddr6: netip.MustParseAddr("fd01::2"),
	}
	tp.Node.EnableForwarding()

	Veth(t, tp.Client, "eth0", tp.Node, "n-cli")
	tp.Client.AddAddr("eth0", netip.PrefixFrom(tp.ClientAddr, 24))
	tp.Node.AddAddr("n-cli", netip.MustParsePrefix("10.0.0.1/24"))
	tp.Client.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.0.0.1"))
	tp.Client.AddAddr("eth0", netip.PrefixFrom(tp.ClientAddr6, 64))
	tp.Node.AddAddr("n-cli", netip.MustParsePrefix("fd01::1/64"))
	tp.Client.AddRoute(netip.MustParsePrefix("::/0"), netip.MustParseAddr("fd01::1"))
	tp.NodeInterfaces = append(tp.NodeInterfaces, "n-cli")

	for i := range n {
		be := g.NS(fmt.Sprintf("be%d", i))
		nodeIf := fmt.Sprintf("n-be%d", i)
		Veth(t, be, "eth0", tp.Node, nodeIf)

		addr := netip.AddrFrom4([4]byte{10, 0, byte(i + 1), 2})
		gw := netip.AddrFrom4([4]byte{10, 0, byte(i + 1), 1})
		be.AddAddr("eth0", netip.PrefixFrom(addr, 24))
		tp.Node.AddAddr(nodeIf, netip.PrefixFrom(gw, 24))
		be.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), gw)

		addr6 := netip.AddrFrom16([16]byte{0: 0xfd, 3: byte(i + 1), 15: 2})
		gw6 := netip.AddrFrom16([16]byte{0: 0xfd, 3: byte(i + 1), 15: 1})
		be.AddAddr("eth0", netip.PrefixFrom(addr6, 64))
		tp.Node.AddAddr(nodeIf, netip.PrefixFrom(gw6, 64))
		be.AddRoute(netip.MustParsePrefix("::/0"), gw6)

		tp.Backends = append(tp.Backends, be)
		tp.BackendAddrs = append(tp.BackendAddrs, addr)
		tp.BackendAddrs6 = append(tp.BackendAddrs6, addr6)
		tp.NodeInterfaces = append(tp.NodeInterfaces, nodeIf)
	}
	for _, ns := range append([]*NS{tp.Client, tp.Node}, tp.Backends...) {
		ns.WaitAddrsUsable(10 * time.Second)
	}
	return tp
}

// DisableChecksumOffload turns checksum offload off on every end, so that
// every packet carries a complete checksum and every receiver verifies it:
// needed under XDP on veth, and what catches a checksum bug.
func (tp *LBTopology) DisableChecksumOffload() {
	tp.Client.DisableChecksumOffload("eth0")
	for _, be := range tp.Backends {
		be.DisableChecksumOffload("eth0")
	}
	for _, ifname := range tp.NodeInterfaces {
		tp.Node.DisableChecksumOffload(ifname)
	}
}
