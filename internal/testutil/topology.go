package testutil

import (
	"fmt"
	"net/netip"
	"testing"
)

// LBTopology is a client, a load-balancer node and backends, each joined
// to the node by its own veth pair and subnet:
//
//	client 10.0.0.2 ── n-cli 10.0.0.1 [node] n-be<i> 10.0.<i+1>.1 ── backend<i> 10.0.<i+1>.2
//
// The node forwards; client and backends route everything through it, so a
// frontend address needs no route of its own.
type LBTopology struct {
	Client   *NS
	Node     *NS
	Backends []*NS

	ClientAddr   netip.Addr
	BackendAddrs []netip.Addr
	// NodeInterfaces are the node's ends: the client's first, then one per
	// backend. The load balancer attaches to all of them.
	NodeInterfaces []string
}

// NewLBTopology builds the topology with n backends.
func NewLBTopology(t testing.TB, n int) *LBTopology {
	t.Helper()
	g := NewGroup(t)
	tp := &LBTopology{
		Client:     g.NS("client"),
		Node:       g.NS("node"),
		ClientAddr: netip.MustParseAddr("10.0.0.2"),
	}
	tp.Node.EnableForwarding()

	Veth(t, tp.Client, "eth0", tp.Node, "n-cli")
	tp.Client.AddAddr("eth0", netip.MustParsePrefix("10.0.0.2/24"))
	tp.Node.AddAddr("n-cli", netip.MustParsePrefix("10.0.0.1/24"))
	tp.Client.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("10.0.0.1"))
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
		tp.Backends = append(tp.Backends, be)
		tp.BackendAddrs = append(tp.BackendAddrs, addr)
		tp.NodeInterfaces = append(tp.NodeInterfaces, nodeIf)
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
