package policy

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/dptest"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/packets"
	"github.com/xdplane/xdplane/internal/testutil"
)

// rig is a datapath with one endpoint, "pol0", in a namespace of its own,
// whose programs the golden tests run through BPF_PROG_TEST_RUN with the
// endpoint's interface index in the context, as the kernel would.
type rig struct {
	t       testing.TB
	ns      *testutil.NS
	dp      *datapath.Datapath
	m       *Manager
	ifindex uint32
}

const (
	tcActShot  = 2
	tcActUnspc = 0xffffffff // TC_ACT_UNSPEC (-1): on to the next program
)

func newRig(t testing.TB, limits datapath.Limits) *rig {
	t.Helper()
	return newRigWith(t, datapath.Options{Limits: limits})
}

// newRigWith is newRig with the datapath opened with opts; its Dir is
// always a bpffs of the rig's own.
func newRigWith(t testing.TB, opts datapath.Options) *rig {
	t.Helper()
	testutil.RequireRoot(t)
	g := testutil.NewGroup(t)
	r := &rig{t: t, ns: g.NS("pol")}
	testutil.Veth(t, r.ns, "pol0", r.ns, "pol1")
	r.dp = dptest.Open(t, r.ns, opts)
	r.ns.MustDo(func() (err error) {
		if r.m, err = NewManager(r.dp); err != nil {
			return err
		}
		return r.m.AddEndpoint(Endpoint{Interface: "pol0", Addresses: []netip.Addr{pod4, pod6}})
	})
	t.Cleanup(func() { r.m.Close() })
	r.ifindex = r.ifindexOf("pol0")
	return r
}

// run sends frame through the program that judges direction dir of the
// endpoint: tc ingress of its interface for Egress (what the pod sends),
// tc egress for Ingress. It returns the verdict and the bytes after.
func (r *rig) run(dir Direction, frame []byte) (uint32, []byte) {
	r.t.Helper()
	return r.runOn(r.ifindex, dir, frame)
}

// runOn is run at the interface with index ifindex.
func (r *rig) runOn(ifindex uint32, dir Direction, frame []byte) (uint32, []byte) {
	r.t.Helper()
	ret, out, err := r.tryRun(ifindex, dir, frame)
	if err != nil {
		r.t.Fatal(err)
	}
	return ret, out
}

// tryRun is runOn that returns the error of BPF_PROG_TEST_RUN, which
// refuses some frames (an IPv4 frame without a whole IPv4 header) before
// any program runs.
func (r *rig) tryRun(ifindex uint32, dir Direction, frame []byte) (uint32, []byte, error) {
	prog := kernel.Of(r.dp).Programs.XdplaneTcEgress
	if dir == Egress {
		prog = kernel.Of(r.dp).Programs.XdplaneTcIngress
	}
	out := make([]byte, len(frame)+256)
	ctx := testutil.SKBContext{Ifindex: ifindex}
	opts := ebpf.RunOptions{Data: frame, DataOut: out, Context: ctx}
	var ret uint32
	err := r.ns.Do(func() (err error) {
		ret, err = prog.Run(&opts)
		return err
	})
	return ret, opts.DataOut, err
}

// expect runs frame and checks the verdict: a passed packet must come out
// byte for byte as it went in.
func (r *rig) expect(name string, dir Direction, frame []byte, pass bool) {
	r.t.Helper()
	ret, out := r.run(dir, frame)
	switch {
	case pass && ret != tcActUnspc:
		r.t.Errorf("%s: verdict %d, want pass (TC_ACT_UNSPEC)", name, int32(ret))
	case pass && string(out) != string(frame):
		r.t.Errorf("%s: passed but changed:\n got %x\nwant %x", name, out, frame)
	case !pass && ret != tcActShot:
		r.t.Errorf("%s: verdict %d, want drop (TC_ACT_SHOT)", name, int32(ret))
	}
}

// expectTranslated runs frame at the interface with index ifindex and
// checks that it passes changed into want, as the load balancer
// translates it.
func (r *rig) expectTranslated(name string, ifindex uint32, dir Direction, frame, want []byte) {
	r.t.Helper()
	if ret, out := r.runOn(ifindex, dir, frame); ret != tcActUnspc || string(out) != string(want) {
		r.t.Errorf("%s: verdict %d\n got %x\nwant %x", name, int32(ret), out, want)
	}
}

// expectCase is expect for a golden case that also reads the drop
// counters: a dropped packet counts once, under the case's reason, and a
// passed one nowhere.
func (r *rig) expectCase(c goldenCase) {
	r.t.Helper()
	before := r.dropCounters()
	r.expect(c.name, c.dir, c.frame, c.pass)
	after := r.dropCounters()
	for reason := range after.Packets {
		want := uint64(0)
		if !c.pass && reason == c.reason {
			want = 1
		}
		if got := after.Packets[reason] - before.Packets[reason]; got != want {
			r.t.Errorf("%s: drop counter %s went up by %d, want %d", c.name, reason, got, want)
		}
	}
}

func (r *rig) dropCounters() datapath.DropCounters {
	r.t.Helper()
	dc, err := r.dp.DropCounters()
	if err != nil {
		r.t.Fatal(err)
	}
	return dc
}

// ifindexOf is the index of the rig's interface name.
func (r *rig) ifindexOf(name string) uint32 {
	r.t.Helper()
	var index uint32
	r.ns.MustDo(func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		index = uint32(ifc.Index)
		return nil
	})
	return index
}

func (r *rig) setPolicy(p Policy) {
	r.t.Helper()
	r.ns.MustDo(func() error { return r.m.SetPolicy("pol0", p) })
}

// The endpoint's addresses in every golden test.
var (
	pod4 = netip.MustParseAddr("10.0.1.2")
	pod6 = netip.MustParseAddr("fd00:1::2")
)

// hostPort joins addr and port as netip.AddrPort writes them.
func hostPort(addr string, port uint16) string {
	return netip.AddrPortFrom(netip.MustParseAddr(addr), port).String()
}

// ipPacket strips the Ethernet header: what an ICMP error quotes.
func ipPacket(frame []byte) []byte { return frame[packets.EthLen:] }

// dumpPolicyMaps renders every policy map that SetPolicy writes, sorted:
// what the kernel holds, for before-and-after comparisons.
func dumpPolicyMaps(t testing.TB, r *rig) string {
	t.Helper()
	var lines []string
	for _, mp := range []*ebpf.Map{kernel.Of(r.dp).Maps.Endpoints, kernel.Of(r.dp).Maps.PolicyPeers, kernel.Of(r.dp).Maps.PolicyPeerHash,
		kernel.Of(r.dp).Maps.PolicyLens, kernel.Of(r.dp).Maps.PolicyPorts, kernel.Of(r.dp).Maps.PolicyPortHash} {
		var k, v []byte
		it := mp.Iterate()
		for it.Next(&k, &v) {
			lines = append(lines, fmt.Sprintf("%s %x=%x", mp, k, v))
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
