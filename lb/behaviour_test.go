package lb_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

var (
	vipTCP = netip.MustParseAddrPort("10.96.0.10:80")
	vipUDP = netip.MustParseAddrPort("10.96.0.10:53")
)

// lbNode is a topology with the load balancer attached on the node.
type lbNode struct {
	tp  *testutil.LBTopology
	dir string
	dp  *datapath.Datapath
	mgr *lb.Manager
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
	n.open(t)
	t.Cleanup(func() {
		n.tp.Node.MustDo(func() error { return datapath.Remove(n.dir) })
	})
	n.attach(t, opts)
	for i, be := range n.tp.Backends {
		name := fmt.Sprintf("backend%d", i)
		testutil.ServeTCP(t, be, netip.AddrPortFrom(n.tp.BackendAddrs[i], 8080), name)
		testutil.ServeUDP(t, be, netip.AddrPortFrom(n.tp.BackendAddrs[i], 5353), name)
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

func (n *lbNode) service(proto lb.Protocol, vip netip.AddrPort, port uint16, idx ...int) lb.Service {
	s := lb.Service{Frontend: lb.Frontend{Address: vip, Protocol: proto}}
	for _, i := range idx {
		s.Backends = append(s.Backends, lb.Backend{Address: netip.AddrPortFrom(n.tp.BackendAddrs[i], port)})
	}
	return s
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
	xdpNative      = variant{name: "xdp-native", opts: datapath.AttachOptions{Hook: datapath.HookXDP, Mode: datapath.ModeXDPNative}, checksums: true}
	attachVariants = []variant{
		tcx,
		{name: "tcx-checksums-verified", opts: tcOpts, checksums: true},
		{name: "tcx-partial-checksums-verified", opts: tcOpts, partial: true},
		{name: "tc-legacy", opts: legacyOpts},
		{name: "tc-legacy-partial-checksums-verified", opts: legacyOpts, partial: true},
		xdpNative,
		{name: "xdp-generic", opts: datapath.AttachOptions{Hook: datapath.HookXDP, Mode: datapath.ModeXDPGeneric}, checksums: true},
	}
)

// askMany opens n connections (TCP) or sends n datagrams from fresh ports
// (UDP) to vip and counts the answering backends.
func askMany(t *testing.T, n *lbNode, proto lb.Protocol, vip netip.AddrPort, count int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range count {
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
			t.Fatalf("%s to %s: %v (answers so far: %v)", proto, vip, err, seen)
		}
		seen[name]++
	}
	return seen
}

func TestBehaviourAllBackendsServe(t *testing.T) {
	for _, v := range attachVariants {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 3, v)
			if _, err := n.mgr.Sync([]lb.Service{
				n.service(lb.TCP, vipTCP, 8080, 0, 1, 2),
				n.service(lb.UDP, vipUDP, 5353, 0, 1, 2),
			}); err != nil {
				t.Fatal(err)
			}
			// With a uniform pick, 60 tries miss one of three backends
			// with probability 3*(2/3)^60, about 1e-10.
			for _, proto := range []lb.Protocol{lb.TCP, lb.UDP} {
				vip := map[lb.Protocol]netip.AddrPort{lb.TCP: vipTCP, lb.UDP: vipUDP}[proto]
				seen := askMany(t, n, proto, vip, 60)
				for i := range 3 {
					if seen[fmt.Sprintf("backend%d", i)] == 0 {
						t.Fatalf("%s: backend%d got nothing: %v", proto, i, seen)
					}
				}
			}
			// Every flow was counted against a backend.
			st, err := lb.ReadStatus(n.dp)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range st {
				for _, b := range s.Backends {
					if b.Packets == 0 {
						t.Fatalf("%s backend %s: no packets counted", s.Frontend, b.Address)
					}
				}
			}
		})
	}
}

// An established connection keeps its backend while the others go, and a
// removed backend gets no new connection.
func TestBehaviourBackendRemoval(t *testing.T) {
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 3, v)
			if err := n.mgr.Upsert(n.service(lb.TCP, vipTCP, 8080, 0, 1, 2)); err != nil {
				t.Fatal(err)
			}
			conn, err := testutil.DialTCP(n.tp.Client, vipTCP, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var kept int
			if _, err := fmt.Sscanf(conn.Server, "backend%d", &kept); err != nil {
				t.Fatalf("server name %q: %v", conn.Server, err)
			}

			// Keep only the connection's backend.
			if err := n.mgr.Upsert(n.service(lb.TCP, vipTCP, 8080, kept)); err != nil {
				t.Fatal(err)
			}
			if err := conn.Echo("still here", 2*time.Second); err != nil {
				t.Fatalf("established connection broke when other backends left: %v", err)
			}
			seen := askMany(t, n, lb.TCP, vipTCP, 20)
			if seen[conn.Server] != 20 {
				t.Fatalf("new connections went to removed backends: %v", seen)
			}

			// Now swap to the two others: the kept one must get nothing new.
			var others []int
			for i := range 3 {
				if i != kept {
					others = append(others, i)
				}
			}
			if err := n.mgr.Upsert(n.service(lb.TCP, vipTCP, 8080, others...)); err != nil {
				t.Fatal(err)
			}
			seen = askMany(t, n, lb.TCP, vipTCP, 30)
			if seen[conn.Server] != 0 || len(seen) != 2 {
				t.Fatalf("after removing %s: %v", conn.Server, seen)
			}
		})
	}
}

// State lives in the kernel, not in the process: a new datapath handle
// and manager (a restarted agent) take over without breaking a flow.
func TestBehaviourRestart(t *testing.T) {
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 3, v)
			svcs := []lb.Service{n.service(lb.TCP, vipTCP, 8080, 0, 1, 2), n.service(lb.UDP, vipUDP, 5353, 0, 1, 2)}
			if _, err := n.mgr.Sync(svcs); err != nil {
				t.Fatal(err)
			}
			conn, err := testutil.DialTCP(n.tp.Client, vipTCP, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()

			// The process goes away: only the kernel state remains.
			if err := errors.Join(n.mgr.Close(), n.dp.Close()); err != nil {
				t.Fatal(err)
			}
			if err := conn.Echo("while no process holds the datapath", 2*time.Second); err != nil {
				t.Fatalf("connection broke with the process gone: %v", err)
			}

			n.open(t)
			if got := n.mgr.List(); len(got) != 2 {
				t.Fatalf("restarted manager recovered %v", got)
			}
			n.attach(t, v.opts) // the upgrade path: programs swapped in place
			res, err := n.mgr.Sync(svcs)
			if err != nil || len(res.Added)+len(res.Changed)+len(res.Removed) != 0 {
				t.Fatalf("Sync after restart = %+v, %v; want no change", res, err)
			}
			if err := conn.Echo("after the restart", 2*time.Second); err != nil {
				t.Fatalf("connection broke across the restart: %v", err)
			}
			if seen := askMany(t, n, lb.UDP, vipUDP, 10); len(seen) == 0 {
				t.Fatal("no UDP answers after restart")
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
