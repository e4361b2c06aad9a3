package bandwidth

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket/layers"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/dptest"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/policy"
)

// rig is a datapath on a bpffs of its own and a Manager, in a namespace
// with one veth pair: bw0, the endpoint's host side, and bw1, its pod
// side, in the same namespace (the rig's namespace is the pod's too). The
// golden tests run the datapath's programs through BPF_PROG_TEST_RUN with
// bw0's index in the context, as the kernel would. bw0 is no policy
// endpoint unless a test makes it one (withPolicy).
type rig struct {
	t       testing.TB
	ns      *testutil.NS
	dp      *datapath.Datapath
	m       *Manager
	ifindex uint32 // bw0's
}

const (
	tcActShot  = 2
	tcActUnspc = 0xffffffff // TC_ACT_UNSPEC (-1): on to the next program
)

// hostSide is the rig's endpoint without its namespace: a Manager told
// this alone cannot reach the pod side.
var hostSide = Endpoint{Interface: "bw0"}

func newRig(t testing.TB) *rig {
	t.Helper()
	return newRigWith(t, datapath.Limits{})
}

// newRigWith is newRig with the datapath's maps sized by limits.
func newRigWith(t testing.TB, limits datapath.Limits) *rig {
	t.Helper()
	testutil.RequireRoot(t)
	r := &rig{t: t, ns: testutil.NewGroup(t).NS("bw")}
	testutil.Veth(t, r.ns, "bw0", r.ns, "bw1")
	r.dp = dptest.Open(t, r.ns, datapath.Options{Limits: limits})
	r.ns.MustDo(func() (err error) { r.m, err = NewManager(r.dp); return err })
	t.Cleanup(func() { r.m.Close() })
	r.ns.MustDo(func() error {
		ifc, err := net.InterfaceByName("bw0")
		if err == nil {
			r.ifindex = uint32(ifc.Index)
		}
		return err
	})
	return r
}

// pod is the rig's endpoint with its namespace, which an egress limit's
// queue needs.
func (r *rig) pod() Endpoint { return Endpoint{Interface: "bw0", NetNS: r.ns.Path()} }

// do runs f in the rig's namespace, where the Manager's interfaces are,
// and returns its error.
func (r *rig) do(f func() error) error {
	var err error
	r.ns.MustDo(func() error { err = f(); return nil })
	return err
}

// set sets e's limits, failing the test on error.
func (r *rig) set(e Endpoint, l Limits) {
	r.t.Helper()
	if err := r.do(func() error { return r.m.Set(e, l) }); err != nil {
		r.t.Fatalf("Set(%+v, %+v): %v", e, l, err)
	}
}

// restart closes the rig's Manager and makes a new one, which recovers
// what the old one left in the maps.
func (r *rig) restart() {
	r.t.Helper()
	if err := r.m.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.m = nil
	r.ns.MustDo(func() (err error) { r.m, err = NewManager(r.dp); return })
}

// entry is bw0's entry in the endpoints map, and whether there is one.
func (r *rig) entry() (bpf.XdplaneEndpoint, bool) {
	r.t.Helper()
	return r.entryAt(r.ifindex)
}

// entryAt is the endpoints map's entry of ifindex.
func (r *rig) entryAt(ifindex uint32) (bpf.XdplaneEndpoint, bool) {
	r.t.Helper()
	var e bpf.XdplaneEndpoint
	switch err := kernel.Of(r.dp).Maps.Endpoints.Lookup(ifindex, &e); {
	case err == nil:
		return e, true
	case !errors.Is(err, ebpf.ErrKeyNotExist):
		r.t.Fatal(err)
	}
	return e, false
}

// withPolicy makes bw0 an endpoint of a policy.Manager on the rig's
// datapath too, as an agent that enforces network policy does.
func (r *rig) withPolicy() *policy.Manager {
	r.t.Helper()
	var pm *policy.Manager
	r.ns.MustDo(func() (err error) {
		if pm, err = policy.NewManager(r.dp); err != nil {
			return err
		}
		return pm.AddEndpoint(policy.Endpoint{Interface: "bw0", Addresses: []netip.Addr{pod4}})
	})
	r.t.Cleanup(func() { pm.Close() })
	return pm
}

// pod4 is the endpoint's address in the golden frames.
var pod4 = netip.MustParseAddr("10.0.1.2")

// udp4Payload is a UDP datagram into the pod with size bytes of payload.
func udp4Payload(t testing.TB, size int) []byte {
	t.Helper()
	return packets.Must(packets.IPv4{Src: netip.MustParseAddrPort("10.0.3.4:5000"), Dst: netip.AddrPortFrom(pod4, 53),
		Proto: layers.IPProtocolUDP, Payload: make([]byte, size)}.Build())
}
