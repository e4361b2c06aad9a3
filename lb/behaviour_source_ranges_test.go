package lb_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

// Behavioural tests of source ranges, over real TCP and UDP sockets across
// namespaces.

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
