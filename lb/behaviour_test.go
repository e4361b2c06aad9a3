package lb_test

import (
	"fmt"
	"net/netip"
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

func newLBNode(t *testing.T, backends int, hook datapath.Hook) *lbNode {
	t.Helper()
	n := &lbNode{tp: testutil.NewLBTopology(t, backends), dir: testutil.BPFFS(t)}
	if hook == datapath.HookXDP {
		n.tp.DisableChecksumOffload()
	}
	n.open(t)
	t.Cleanup(func() {
		n.tp.Node.MustDo(func() error { return datapath.Remove(n.dir) })
	})
	n.tp.Node.MustDo(func() error {
		for _, ifname := range n.tp.NodeInterfaces {
			if err := n.dp.Attach(ifname, datapath.AttachOptions{Hook: hook}); err != nil {
				return err
			}
		}
		return nil
	})
	for i, be := range n.tp.Backends {
		name := fmt.Sprintf("backend%d", i)
		testutil.ServeTCP(t, be, netip.AddrPortFrom(n.tp.BackendAddrs[i], 8080), name)
		testutil.ServeUDP(t, be, netip.AddrPortFrom(n.tp.BackendAddrs[i], 5353), name)
	}
	return n
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
	t.Cleanup(func() { dp.Close() })
}

func (n *lbNode) service(proto lb.Protocol, vip netip.AddrPort, port uint16, idx ...int) lb.Service {
	s := lb.Service{Frontend: lb.Frontend{Address: vip, Protocol: proto}}
	for _, i := range idx {
		s.Backends = append(s.Backends, lb.Backend{Address: netip.AddrPortFrom(n.tp.BackendAddrs[i], port)})
	}
	return s
}

func TestBehaviourSmoke(t *testing.T) {
	for _, hook := range []datapath.Hook{datapath.HookTC, datapath.HookXDP} {
		t.Run(hook.String(), func(t *testing.T) {
			n := newLBNode(t, 3, hook)
			if err := n.mgr.Upsert(n.service(lb.TCP, vipTCP, 8080, 0, 1, 2)); err != nil {
				t.Fatal(err)
			}
			if err := n.mgr.Upsert(n.service(lb.UDP, vipUDP, 5353, 0, 1, 2)); err != nil {
				t.Fatal(err)
			}
			seen := map[string]int{}
			for range 30 {
				name, err := testutil.AskTCP(n.tp.Client, vipTCP, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				seen[name]++
				name, err = testutil.AskUDP(n.tp.Client, vipUDP, 2*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				seen["udp-"+name]++
			}
			t.Log(seen)
		})
	}
}
