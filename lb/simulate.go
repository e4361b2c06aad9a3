package lb

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// Flow is a connection as a client opens it: from Source to Destination.
type Flow struct {
	Source      netip.AddrPort
	Destination netip.AddrPort
	Protocol    Protocol
}

// Outcome is what the datapath does with a flow's packet.
type Outcome uint8

const (
	// Passed: not for a service; the packet goes on with its
	// destination unchanged (a reply of a tracked flow passes too, its
	// source turned into the frontend's).
	Passed Outcome = iota
	// Forwarded: sent to Backend.
	Forwarded
	// Rejected: the frontend has no backend that takes new flows, or the
	// destination is another port of a virtual IP; the client gets an
	// ICMP port unreachable.
	Rejected
	// Dropped: a source outside the service's ranges or in the node-wide
	// prefilter, or a Local policy with no local backend where other
	// nodes have some.
	Dropped
)

var outcomeNames = [...]string{"passed", "forwarded", "rejected", "dropped"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Simulation is the answer of Simulate.
type Simulation struct {
	Outcome Outcome
	// Backend is where a Forwarded flow goes.
	Backend netip.AddrPort
	// Established: the flow is tracked and stays with the backend it has
	// (see Simulate); false for a new flow, and for one whose backend has
	// gone.
	Established bool
}

// Simulate answers which backend a flow would reach, for a user
// debugging a service, by running the flow's first packet through the
// datapath's XDP program (BPF_PROG_TEST_RUN). It changes nothing: the
// program runs as a copy loaded for the call, which reads the datapath's
// services, backends and prefilter, and writes private maps in place of
// conntrack, session affinity, the counters and drop events; those are
// seeded with the flow's own conntrack and affinity entries. So a real
// flow's entries, a client's affinity timestamp and the datapath's
// counters stay as they were, and a real packet of the same flow at the
// same moment is not disturbed. The copy is loaded and verified anew each
// call (about a tenth of a second).
//
// Established is true for a flow the program keeps on its backend: its
// conntrack entry names a backend of the service that still exists with
// the cookie it had when chosen. A flow whose backend has gone is balanced
// afresh, and reported so. For a service with the Random algorithm the
// answer is one draw, as a real new flow's.
//
// dp must have programs; for one from datapath.OpenPinned Simulate
// returns datapath.ErrNoPrograms. The copy is loaded from the object built
// into this process, which is what dp's programs were loaded from; a
// datapath opened without programs may run another version's.
func Simulate(dp *datapath.Datapath, f Flow) (Simulation, error) {
	k := kernel.Of(dp)
	if k.Programs == nil {
		return Simulation{}, datapath.ErrNoPrograms
	}
	// simFrame checks the flow: two addresses of one family, TCP or UDP.
	src := netip.AddrPortFrom(f.Source.Addr().Unmap(), f.Source.Port())
	dst := netip.AddrPortFrom(f.Destination.Addr().Unmap(), f.Destination.Port())
	frame, err := simFrame(src, dst, f.Protocol)
	if err != nil {
		return Simulation{}, err
	}

	sb, err := newSandbox(k.Maps, k.Timeouts)
	if err != nil {
		return Simulation{}, err
	}
	defer sb.close()
	if err := sb.seed(k.Maps, src, dst, f.Protocol); err != nil {
		return Simulation{}, err
	}
	out := make([]byte, len(frame)+256)
	opts := ebpf.RunOptions{Data: frame, DataOut: out}
	ret, err := sb.prog.Run(&opts)
	if err != nil {
		return Simulation{}, fmt.Errorf("run the XDP program: %w", err)
	}
	fresh, err := sb.counted(bpf.XdplaneStatSTAT_FORWARD_NEW)
	if err != nil {
		return Simulation{}, err
	}
	kept, err := sb.counted(bpf.XdplaneStatSTAT_FORWARD_EST)
	if err != nil {
		return Simulation{}, err
	}

	var sim Simulation
	const xdpDrop, xdpPass, xdpTX = 1, 2, 3
	switch ret {
	case xdpDrop:
		sim.Outcome = Dropped
	case xdpTX:
		sim.Outcome = Rejected
	case xdpPass:
		// The program counts a packet it forwards as the first of a new
		// flow or one of an established flow, and nothing else so.
		if fresh || kept {
			be, err := simDestination(opts.DataOut)
			if err != nil {
				return Simulation{}, err
			}
			sim = Simulation{Outcome: Forwarded, Backend: be, Established: kept}
		}
	default:
		return Simulation{}, fmt.Errorf("the XDP program returned %d", ret)
	}
	return sim, nil
}

// sandbox is a copy of the XDP program that shares with the datapath only
// the maps the program reads (simShared), and writes maps of its own.
type sandbox struct {
	prog *ebpf.Program
	// The private maps that Simulate seeds and reads.
	conntrack, affinity, stats *ebpf.Map
}

// simShared are the maps the XDP program only reads: a sandbox uses the
// datapath's own. Every other map the program uses is private to it.
func simShared(m *bpf.XdplaneMaps) map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		bpf.XdplaneMapServices:     m.Services,
		bpf.XdplaneMapBackends:     m.Backends,
		bpf.XdplaneMapBackendSlots: m.BackendSlots,
		bpf.XdplaneMapMaglev:       m.Maglev,
		bpf.XdplaneMapRevnat:       m.Revnat,
		bpf.XdplaneMapSourceRanges: m.SourceRanges,
		bpf.XdplaneMapVips:         m.Vips,
		bpf.XdplaneMapPrefilter:    m.Prefilter,
	}
}

// The sizes of a sandbox's conntrack and affinity maps: room for what
// seed copies and the run writes (the flow's two entries, and the reply
// entry of the backend it had, which the program may put back; one
// client's affinity), with some to spare, so that no write fails for want
// of room.
const (
	simCTSize       = 8
	simAffinitySize = 2
)

func newSandbox(m *bpf.XdplaneMaps, timeouts kernel.CTTimeouts) (*sandbox, error) {
	spec, err := bpf.LoadXdplane()
	if err != nil {
		return nil, fmt.Errorf("load object: %w", err)
	}
	// The datapath's timeouts, so that a flow's entry expires here as it
	// does there.
	if err := timeouts.Set(spec); err != nil {
		return nil, err
	}
	shared := simShared(m)
	for name, ms := range spec.Maps {
		if sm := shared[name]; sm != nil {
			ms.MaxEntries = sm.MaxEntries() // as the datapath made them
			continue
		}
		ms.Pinning = ebpf.PinNone
	}
	// Small plain hashes for the LRU maps: a few entries are written, and
	// an LRU map evicts before it is full, when another CPU holds its free
	// entries.
	for name, size := range map[string]uint32{bpf.XdplaneMapConntrack: simCTSize, bpf.XdplaneMapAffinity: simAffinitySize} {
		spec.Maps[name].Type = ebpf.Hash
		spec.Maps[name].MaxEntries = size
		spec.Maps[name].Flags = unix.BPF_F_NO_PREALLOC
	}
	// One counter, not one per backend id: the backends' counters are
	// not read back.
	spec.Maps[bpf.XdplaneMapBackendStats].MaxEntries = 1
	spec.Maps[bpf.XdplaneMapEvents].MaxEntries = uint32(os.Getpagesize())
	var objs struct {
		Prog      *ebpf.Program `ebpf:"xdplane_xdp"`
		Conntrack *ebpf.Map     `ebpf:"conntrack"`
		Affinity  *ebpf.Map     `ebpf:"affinity"`
		Stats     *ebpf.Map     `ebpf:"stats"`
	}
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: shared}); err != nil {
		return nil, fmt.Errorf("load a copy of the XDP program: %w", err)
	}
	return &sandbox{prog: objs.Prog, conntrack: objs.Conntrack, affinity: objs.Affinity, stats: objs.Stats}, nil
}

func (sb *sandbox) close() {
	sb.prog.Close()
	sb.conntrack.Close()
	sb.affinity.Close()
	sb.stats.Close()
}

// seed copies into the sandbox every entry of the datapath's conntrack
// and affinity maps that the flow's packet can read: its forward entry,
// the reply entry of the same addresses (the packet may be a reply), and
// its client's affinity to the service.
func (sb *sandbox) seed(m *bpf.XdplaneMaps, src, dst netip.AddrPort, proto Protocol) error {
	for _, key := range []bpf.XdplaneCtKey{ctKey(src, dst, proto, 0), ctKey(src, dst, proto, 1)} {
		var v bpf.XdplaneCtValue
		if err := copyEntry(m.Conntrack, sb.conntrack, key, &v); err != nil {
			return err
		}
	}
	svc, ok := lookupService(m, dst, proto)
	if !ok {
		return nil
	}
	var v bpf.XdplaneAffinityValue
	return copyEntry(m.Affinity, sb.affinity, bpf.XdplaneAffinityKey{Client: src.Addr().As16(), SvcId: svc.Id}, &v)
}

// copyEntry copies key, if present, from one map to the other; v is
// where its value is read.
func copyEntry(from, to *ebpf.Map, key, v any) error {
	err := from.Lookup(key, v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", from, err)
	}
	if err := to.Put(key, v); err != nil {
		return fmt.Errorf("copy an entry of %s: %w", from, err)
	}
	return nil
}

// counted reports whether the sandbox's program counted a packet under
// stat.
func (sb *sandbox) counted(stat bpf.XdplaneStat) (bool, error) {
	var per []bpf.XdplaneCounter
	if err := sb.stats.Lookup(stat, &per); err != nil {
		return false, fmt.Errorf("read the simulated packet's counter %d: %w", stat, err)
	}
	for _, c := range per {
		if c.Packets > 0 {
			return true, nil
		}
	}
	return false, nil
}

func ctKey(src, dst netip.AddrPort, proto Protocol, dir uint8) bpf.XdplaneCtKey {
	return bpf.XdplaneCtKey{
		Saddr: src.Addr().As16(), Daddr: dst.Addr().As16(),
		Sport: kernel.Htons(src.Port()), Dport: kernel.Htons(dst.Port()),
		Proto: uint8(proto), Dir: dir,
	}
}

func lookupService(maps *bpf.XdplaneMaps, dst netip.AddrPort, proto Protocol) (bpf.XdplaneSvcValue, bool) {
	var v bpf.XdplaneSvcValue
	err := maps.Services.Lookup(svcKey(Frontend{Address: dst, Protocol: proto}), &v)
	return v, err == nil
}
