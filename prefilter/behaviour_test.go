package prefilter

import (
	"net/netip"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/dptest"
	"github.com/xdplane/xdplane/internal/testutil"
)

// The node-wide prefilter at XDP on the node's client-facing interface:
// a client address on the list reaches nothing behind it, another address
// of the same client still does, and taking the address off the list lets
// it through again.
func TestBehaviourPrefilter(t *testing.T) {
	for _, fam := range []struct {
		name  string
		other netip.Addr
		bits  int
		v6    bool
	}{
		{"ipv4", netip.MustParseAddr("10.0.0.3"), 24, false},
		{"ipv6", netip.MustParseAddr("fd01::3"), 64, true},
	} {
		t.Run(fam.name, func(t *testing.T) {
			tp := testutil.NewLBTopology(t, 1)
			tp.Client.AddAddr("eth0", netip.PrefixFrom(fam.other, fam.bits))
			tp.Client.WaitAddrsUsable(10 * time.Second)
			client, server := tp.ClientAddr, tp.BackendAddrs[0]
			if fam.v6 {
				client, server = tp.ClientAddr6, tp.BackendAddrs6[0]
			}
			dst := netip.AddrPortFrom(server, 8080)
			testutil.ServeTCP(t, tp.Backends[0], dst, "be0")

			dp := dptest.Open(t, tp.Node, datapath.Options{})
			// XDP on a veth: the sender's checksums must be complete, as
			// they are on a NIC's receive path.
			tp.DisableChecksumOffload()
			tp.Node.MustDo(func() error {
				return dp.Attach(tp.NodeInterfaces[0], datapath.AttachOptions{Hook: datapath.HookXDP})
			})

			port := uint16(10000) // fresh source ports: no flow is ever reused
			probe := func(what string, src netip.Addr, pass bool) {
				t.Helper()
				port++
				timeout := 5 * time.Second
				if !pass {
					timeout = 500 * time.Millisecond
				}
				c, err := testutil.DialTCPFrom(tp.Client, netip.AddrPortFrom(src, port), dst, timeout)
				switch {
				case pass && err != nil:
					t.Errorf("%s: from %s: %v, want through to be0", what, src, err)
				case pass && c.Server != "be0":
					t.Errorf("%s: from %s: answered by %q, want be0", what, src, c.Server)
				case pass:
					if err := c.Echo("ping", 2*time.Second); err != nil {
						t.Errorf("%s: from %s: no echo: %v", what, src, err)
					}
				case err == nil:
					t.Errorf("%s: from %s: got through to %q, want it dropped", what, src, c.Server)
				case !testutil.ErrTimeout(err):
					t.Errorf("%s: from %s: %v, want a timeout (a drop)", what, src, err)
				}
				if c != nil {
					c.Abort()
				}
			}
			probe("before the prefilter", client, true)
			probe("before the prefilter", fam.other, true)

			list := []netip.Prefix{netip.PrefixFrom(fam.other, fam.other.BitLen()), netip.MustParsePrefix("192.0.2.0/24")}
			if _, err := Set(dp, list); err != nil {
				t.Fatal(err)
			}
			before, err := dp.DropCounters()
			if err != nil {
				t.Fatal(err)
			}
			probe("prefilter", client, true)
			probe("prefilter", fam.other, false)
			after, err := dp.DropCounters()
			if err != nil {
				t.Fatal(err)
			}
			if after.Packets[datapath.DropPrefilter] <= before.Packets[datapath.DropPrefilter] {
				t.Errorf("prefilter drops %d before, %d after a blocked connection",
					before.Packets[datapath.DropPrefilter], after.Packets[datapath.DropPrefilter])
			}

			if _, err := Set(dp, nil); err != nil {
				t.Fatal(err)
			}
			probe("off the list", fam.other, true)
		})
	}
}
