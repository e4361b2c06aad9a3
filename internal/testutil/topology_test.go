package testutil

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Without a load balancer, the topology routes both families between the
// client and every backend through the node, and the traffic helpers
// work over either.
func TestLBTopologyDualStack(t *testing.T) {
	tp := NewLBTopology(t, 2)
	if len(tp.BackendAddrs6) != 2 || !tp.ClientAddr6.Is6() {
		t.Fatalf("IPv6 addresses: client %s, backends %v", tp.ClientAddr6, tp.BackendAddrs6)
	}
	for i, be := range tp.Backends {
		for _, addr := range []netip.Addr{tp.BackendAddrs[i], tp.BackendAddrs6[i]} {
			name := fmt.Sprintf("be%d@%s", i, addr)
			ServeTCP(t, be, netip.AddrPortFrom(addr, 8080), name)
			ServeUDP(t, be, netip.AddrPortFrom(addr, 5353), name)
		}
	}
	for i := range tp.Backends {
		for _, addr := range []netip.Addr{tp.BackendAddrs[i], tp.BackendAddrs6[i]} {
			want := fmt.Sprintf("be%d@%s", i, addr)
			conn, err := DialTCP(tp.Client, netip.AddrPortFrom(addr, 8080), 2*time.Second)
			if err != nil {
				t.Fatalf("TCP to %s: %v", addr, err)
			}
			if conn.Server != want {
				t.Errorf("TCP to %s answered by %q, want %q", addr, conn.Server, want)
			}
			local := netip.MustParseAddrPort(conn.LocalAddr().String()).Addr()
			if wantLocal := map[bool]netip.Addr{true: tp.ClientAddr, false: tp.ClientAddr6}[addr.Is4()]; local != wantLocal {
				t.Errorf("TCP to %s left from %s, want %s", addr, local, wantLocal)
			}
			if err := conn.Echo("hello", 2*time.Second); err != nil {
				t.Errorf("echo over TCP to %s: %v", addr, err)
			}
			conn.Close()
			got, err := AskUDP(tp.Client, netip.AddrPortFrom(addr, 5353), 2*time.Second)
			if err != nil || got != want {
				t.Errorf("UDP to %s = %q, %v; want %q", addr, got, err, want)
			}
		}
	}
	// Frontends such as 10.96.0.10 and fd00::10 go to the node, which has
	// no route for them: without a load balancer they fail (IPv4 at once;
	// TCP over IPv6 takes "no route" as a soft error and times out).
	for _, vip := range []string{"10.96.0.10", "fd00::10"} {
		out := tp.Client.Exec("ip", "route", "get", vip)
		if !strings.Contains(out, " via ") {
			t.Errorf("the client does not route %s through the node: %s", vip, out)
		}
		if name, err := AskTCP(tp.Client, netip.AddrPortFrom(netip.MustParseAddr(vip), 80), time.Second); err == nil {
			t.Errorf("TCP to %s without a load balancer reached %s", vip, name)
		}
	}
}
