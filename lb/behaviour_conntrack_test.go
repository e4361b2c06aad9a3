package lb_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

// The port at which every backend serves a connection its name and then
// closes it first (testutil.ServeTCPClosing).
const closingPort = 8081

// serveAndClose serves closingPort in the backends of n.
func serveAndClose(t *testing.T, n *lbNode) {
	t.Helper()
	for i, be := range n.tp.Backends {
		testutil.ServeTCPClosing(t, be, netip.AddrPortFrom(n.tp.BackendAddrs[i], closingPort), backendName(i, false))
	}
}

// askClosing connects from each of ports to vip, reads the backend's name
// and waits for its FIN before closing, and returns the names.
func askClosing(t *testing.T, n *lbNode, vip netip.AddrPort, ports []uint16) []string {
	t.Helper()
	names := make([]string, len(ports))
	err := n.tp.Client.Do(func() error {
		for i, p := range ports {
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{Port: int(p)}}
			c, err := d.Dial("tcp4", vip.String())
			if err != nil {
				return fmt.Errorf("from port %d: %w", p, err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			r := bufio.NewReader(c)
			name, err := r.ReadString('\n')
			if err == nil {
				_, err = r.ReadByte() // the backend's FIN
				if err == io.EOF {
					err = nil
				}
			}
			c.Close()
			if err != nil {
				return fmt.Errorf("from port %d: %w", p, err)
			}
			names[i] = strings.TrimSpace(name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// A client whose ports wrap (a proxy, a NAT gateway, a busy client with a
// narrow port range) connects from the same 1,000 ports again and again.
// Each new connection is balanced afresh however the last one on its port
// ended (a reset, or a FIN each way): none reaches a backend put in
// maintenance, and a weight change holds within a few percent. Before
// conntrack knew TCP state, 25.7% still reached the maintenance backend
// and the split after the weight change stayed nearly even.
func TestBehaviourPortReuse(t *testing.T) {
	for _, v := range []variant{tcx, xdpNative} {
		t.Run(v.name, func(t *testing.T) {
			n := newLBNode(t, 3, v)
			serveAndClose(t, n)
			ports := make([]uint16, 1000)
			for i := range ports {
				ports[i] = uint16(20000 + i)
			}
			vipReset, vipFIN := vipTCP, netip.AddrPortFrom(vipTCP.Addr(), 81)
			sync := func(states [3]lb.BackendState, weights [3]uint16) {
				t.Helper()
				a, b := n.service(lb.TCP, vipReset, servePort(lb.TCP), 0, 1, 2), n.service(lb.TCP, vipFIN, closingPort, 0, 1, 2)
				for i := range 3 {
					a.Backends[i].State, a.Backends[i].Weight = states[i], weights[i]
					b.Backends[i].State, b.Backends[i].Weight = states[i], weights[i]
				}
				if _, err := n.mgr.Sync([]lb.Service{a, b}); err != nil {
					t.Fatal(err)
				}
			}
			round := func(what string) map[string][2]int {
				t.Helper()
				locals := make([]netip.AddrPort, len(ports))
				for i, p := range ports {
					locals[i] = netip.AddrPortFrom(n.clientAddr(ipv4), p)
				}
				reset, err := testutil.AskTCPFrom(n.tp.Client, locals, vipReset, 5*time.Second, 8)
				if err != nil {
					t.Fatalf("%s, closed by reset: %v", what, err)
				}
				seen := map[string][2]int{}
				for _, name := range reset {
					c := seen[name]
					c[0]++
					seen[name] = c
				}
				for _, name := range askClosing(t, n, vipFIN, ports) {
					c := seen[name]
					c[1]++
					seen[name] = c
				}
				t.Logf("%s: %v", what, seen)
				return seen
			}
			sync([3]lb.BackendState{lb.Active, lb.Active, lb.Active}, [3]uint16{1, 1, 1})
			first := round("all active")
			for i := range 3 {
				if c := first[backendName(i, false)]; c[0] == 0 || c[1] == 0 {
					t.Fatalf("backend %d took no flows: %v", i, first)
				}
			}
			sync([3]lb.BackendState{lb.Maintenance, lb.Active, lb.Active}, [3]uint16{1, 1, 1})
			if c := round("backend0 in maintenance")[backendName(0, false)]; c != [2]int{} {
				t.Fatalf("%d connections after a reset and %d after FINs reached the backend in maintenance, want none", c[0], c[1])
			}
			sync([3]lb.BackendState{lb.Active, lb.Active, lb.Active}, [3]uint16{10, 1, 1})
			seen := round("weights 10, 1, 1")
			for i, share := range []float64{10.0 / 12, 1.0 / 12, 1.0 / 12} {
				for mode, how := range []string{"a reset", "FINs"} {
					got := float64(seen[backendName(i, false)][mode]) / float64(len(ports))
					// 5 points: over 4 standard deviations of the
					// binomial for the largest share.
					if got < share-0.05 || got > share+0.05 {
						t.Errorf("after %s, backend %d took %.1f%% of new connections, want %.1f%% within 5 points", how, i, 100*got, 100*share)
					}
				}
			}
		})
	}
}
