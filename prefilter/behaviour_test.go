package prefilter

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/xdplane/xdplane/datapath"
)

// The node-wide prefilter at XDP on the node's client-facing interface:
// a client address on the list reaches nothing behind it, another address
// of the same client still does, and taking the address off the list lets
// it through again.
func TestBehaviourPrefilter(t *testing.T) {
	for _, fam := range bhFamilies {
		t.Run(fam.name, func(t *testing.T) {
			n := newBhNode(t, fam, 1)
			n.serve(n.tp.Backends[0], "be0", n.pod(0), 8080)
			dst := netip.AddrPortFrom(n.pod(0), 8080)
			n.run("before the prefilter", n.allow(fam.client, dst, "be0:8080"), n.allow(fam.other, dst, "be0:8080"))

			// XDP on a veth: the sender's checksums must be complete, as
			// they are on a NIC's receive path.
			n.tp.DisableChecksumOffload()
			n.tp.Node.MustDo(func() error {
				return n.dp.Attach(n.tp.NodeInterfaces[0], datapath.AttachOptions{Hook: datapath.HookXDP})
			})
			if _, err := SetPrefilter(n.dp, []netip.Prefix{bhHost(fam.other), netip.MustParsePrefix("192.0.2.0/24")}); err != nil {
				t.Fatal(err)
			}
			before, err := ReadDropCounters(n.dp)
			if err != nil {
				t.Fatal(err)
			}
			n.run("prefilter", n.allow(fam.client, dst, "be0:8080"), n.block(fam.other, dst))
			after, err := ReadDropCounters(n.dp)
			if err != nil {
				t.Fatal(err)
			}
			if after.Packets[ReasonPrefilter] <= before.Packets[ReasonPrefilter] {
				t.Errorf("prefilter drops %d before, %d after a blocked connection", before.Packets[ReasonPrefilter], after.Packets[ReasonPrefilter])
			}

			if _, err := SetPrefilter(n.dp, nil); err != nil {
				t.Fatal(err)
			}
			n.run(fmt.Sprintf("%s off the list", fam.other), n.allow(fam.other, dst, "be0:8080"))
		})
	}
}
