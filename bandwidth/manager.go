package bandwidth

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/endpoint"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/verr"
)

// Endpoint is a pod as its limits see it: the host side of its link,
// where the datapath shapes what enters the pod, and the pod's network
// namespace, where an egress limit's queue is.
type Endpoint struct {
	// Interface is the name of the pod's host-side interface (a veth),
	// in the network namespace the Manager runs in. Required.
	Interface string
	// NetNS is the path of the pod's network namespace (a CNI plugin's
	// CNI_NETNS). Optional, but an egress Rate needs it: its queue is on
	// the pod's side of its link. Empty keeps the one the Manager knows.
	NetNS string
}

// Status is an endpoint's limits as the Manager holds them.
type Status struct {
	Endpoint
	// Limits are what Set last installed, or what an earlier process
	// left in the maps.
	Limits Limits
	// Recovered is true for limits found in the maps when the Manager
	// started: their NetNS is unknown until a Set or Remove names it.
	Recovered bool
}

// Manager sets endpoints' bandwidth limits. A limit applies at once to
// flows already running; a change that fails leaves the limits in force
// before it.
//
// A Manager is safe for concurrent use. It holds the datapath's
// "bandwidth" lock until Close, so a second Manager on the same datapath,
// in this process or another, fails with ErrBusy. It shares the
// endpoints' datapath entries with package policy's Manager, each writing
// its own fields.
type Manager struct {
	dp   *datapath.Datapath
	k    *kernel.Handle
	held *kernel.Held // the datapath's "bandwidth" lock, until Close

	mu   sync.Mutex
	eps  map[string]*entry // by interface name
	mode Mode
}

// entry is one endpoint with limits.
type entry struct {
	status  Status
	ifindex uint32
}

// NewManager returns a Manager for dp's bandwidth limits. Limits a
// previous process set stay in force and are listed as Recovered, with
// the mode they were set in; entries of interfaces that are gone are
// deleted. It runs in the network namespace of the endpoints' host-side
// interfaces, and fails with ErrNetNS elsewhere. Close releases the lock.
func NewManager(dp *datapath.Datapath) (*Manager, error) {
	k := kernel.Of(dp)
	held, err := kernel.Hold(k.Dir, kernel.LockBandwidth)
	if err != nil {
		return nil, fmt.Errorf("bandwidth.Manager: %w", err)
	}
	m := &Manager{dp: dp, k: k, held: held, eps: make(map[string]*entry)}
	if err := m.recover(); err != nil {
		held.Release()
		return nil, err
	}
	return m, nil
}

// Close releases the Manager's lock. The limits stay in force. Calls that
// write return ErrClosed after Close; reads go on answering from the
// Manager's copy.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held.Release()
	return nil
}

func (m *Manager) begin() error {
	return m.held.Check(ErrClosed)
}

func (e Endpoint) validate() error {
	if e.Interface == "" {
		return verr.Invalid("interface", e.Interface, "required")
	}
	if e.NetNS != "" {
		if _, err := os.Stat(e.NetNS); err != nil {
			return verr.Invalid("netns", e.NetNS, err.Error())
		}
	}
	return nil
}

// Set makes l the limits of the endpoint e, replacing the ones before; a
// zero Limit removes a direction's, and zero Limits remove the endpoint
// from the Manager, as Remove does. It attaches the datapath's tc
// programs to the interface if they are not there (the load balancer and
// network policy share them). A change applies to flows already running,
// from their next packet. On error the previous limits stay in force.
//
// An endpoint whose interface was re-created under the same name (a
// restarted pod's new veth) takes the new limits on the new interface,
// in the namespace e names.
func (m *Manager) Set(e Endpoint, l Limits) error {
	if err := errors.Join(e.validate(), l.Validate()); err != nil {
		return verr.Named(e.Interface, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(); err != nil {
		return err
	}
	ifindex, err := endpoint.Ifindex(e.Interface)
	if err != nil {
		return err
	}
	ep := m.eps[e.Interface]
	if ep != nil && ep.ifindex != ifindex {
		// The old interface is gone, and its queues with it.
		if err := m.apply(ep, resolveMode(m.mode), Limits{}); err != nil {
			return fmt.Errorf("endpoint %s: remove the limits of its old interface: %w", e.Interface, err)
		}
		delete(m.eps, e.Interface)
		ep = nil
	}
	if ep == nil {
		if l == (Limits{}) {
			return nil
		}
		undo, err := endpoint.Attach(m.k, m.dp, e.Interface, ifindex, "bandwidth")
		if err != nil {
			return err
		}
		ep = &entry{status: Status{Endpoint: e}, ifindex: ifindex}
		if err := m.change(ep, l); err != nil {
			return errors.Join(err, undo())
		}
		m.eps[e.Interface] = ep
		return nil
	}
	known := ep.status.NetNS
	if e.NetNS != "" {
		ep.status.NetNS = e.NetNS
	}
	if err := m.change(ep, l); err != nil {
		ep.status.NetNS = known
		return err
	}
	return nil
}

// change applies l to ep, or puts back what was in force.
func (m *Manager) change(ep *entry, l Limits) error {
	name := ep.status.Interface
	if err := ep.needsNetNS(l.Egress.Rate); err != nil {
		return verr.Named(name, err)
	}
	if err := m.reachPodSide(ep, l.Egress.Rate); err != nil {
		return fmt.Errorf("endpoint %s: %w", name, err)
	}
	mode := resolveMode(m.mode)
	old := ep.status.Limits
	if err := m.apply(ep, mode, l); err != nil {
		// Put back what was in force; a second failure is reported too.
		return errors.Join(fmt.Errorf("endpoint %s: %w", name, err), m.apply(ep, mode, old))
	}
	ep.status.Limits, ep.status.Recovered = l, false
	if l == (Limits{}) {
		delete(m.eps, name)
	} else {
		// The first limit fixes the mode: a probe that answers otherwise
		// later must not mix EDT and HTB (SetMode is refused meanwhile).
		m.mode = mode
	}
	return nil
}

// needsNetNS refuses to set an egress rate, or to touch the one in force,
// when the endpoint's network namespace is unknown: the queue is on the
// pod's side of its link.
func (ep *entry) needsNetNS(rate uint64) error {
	if ep.status.NetNS != "" || (rate == 0 && ep.status.Limits.Egress.Rate == 0) {
		return nil
	}
	reason := "shaping what the pod sends needs its network namespace (Endpoint.NetNS): the queue is on the pod's side of its link"
	if ep.status.Recovered {
		reason += "; a restarted Manager does not know it: name it in Set or Remove"
	}
	return verr.Invalid("egress.rate", rate, reason)
}

// reachPodSide checks, before anything changes, that the pod's side of
// ep's link is in the namespace the Manager has for it, where an egress
// rate is in force or is to be: elsewhere a change would fail half-way,
// and a removal would take the limit off the books while the pod side's
// queue went on shaping. A host side that is gone took the pod side with
// it.
func (m *Manager) reachPodSide(ep *entry, rate uint64) error {
	if rate == 0 && ep.status.Limits.Egress.Rate == 0 {
		return nil
	}
	h, _, err := m.queueLink(ep, datapath.Egress)
	if err == nil {
		h.Close()
		return nil
	}
	if _, lerr := netlink.LinkByIndex(int(ep.ifindex)); gone(lerr) {
		return nil
	}
	return err
}

// Remove takes the endpoint's limits away, its queues with them. e.NetNS
// is needed where an egress limit is in force and the Manager does not
// know the namespace (Recovered), unless the pod's link is gone; a
// namespace that does not hold the pod's side of the link is refused, and
// the limits stay in force. The tc programs stay attached, for the load
// balancer and policy.
func (m *Manager) Remove(e Endpoint) error {
	if err := e.validate(); err != nil {
		return verr.Named(e.Interface, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(); err != nil {
		return err
	}
	ep, ok := m.eps[e.Interface]
	if !ok {
		return fmt.Errorf("endpoint %s: %w", e.Interface, ErrNotFound)
	}
	known := ep.status.NetNS
	if e.NetNS != "" {
		ep.status.NetNS = e.NetNS
	}
	if err := m.remove(ep); err != nil {
		ep.status.NetNS = known
		return err
	}
	delete(m.eps, e.Interface)
	return nil
}

// remove takes ep's limits away, for Remove.
func (m *Manager) remove(ep *entry) error {
	name := ep.status.Interface
	// An egress queue in a namespace this Manager has not been told
	// would be left shaping, unless the pod's link is gone and the queue
	// with it.
	if err := ep.needsNetNS(0); err != nil {
		if _, lerr := netlink.LinkByIndex(int(ep.ifindex)); !gone(lerr) {
			return verr.Named(name, err)
		}
	}
	if err := m.reachPodSide(ep, 0); err != nil {
		return fmt.Errorf("endpoint %s: %w", name, err)
	}
	if err := m.apply(ep, resolveMode(m.mode), Limits{}); err != nil {
		return fmt.Errorf("endpoint %s: remove its limits: %w", name, err)
	}
	return nil
}

// Status returns one endpoint's limits.
func (m *Manager) Status(ifname string) (Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep, ok := m.eps[ifname]
	if !ok {
		return Status{}, fmt.Errorf("endpoint %s: %w", ifname, ErrNotFound)
	}
	return ep.status, nil
}

// List returns every endpoint with limits, sorted by interface.
func (m *Manager) List() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.eps))
	for _, ep := range m.eps {
		out = append(out, ep.status)
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Interface, b.Interface) })
	return out
}

// Mode returns how ingress limits are enforced: ModeEDT or ModeHTB. The
// first limit set fixes it; until then, it is what detection answers.
func (m *Manager) Mode() Mode {
	m.mu.Lock()
	defer m.mu.Unlock()
	return resolveMode(m.mode)
}

// SetMode chooses how ingress limits are enforced, overriding the
// detection. It is refused while any endpoint has a limit; ModeEDT needs
// the fq qdisc (ErrNotSupported without).
func (m *Manager) SetMode(mode Mode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(); err != nil {
		return err
	}
	if mode > ModeHTB {
		return verr.Invalid("mode", mode, "want auto, edt or htb")
	}
	for name := range m.eps {
		return verr.Invalid("mode", mode, "endpoint "+name+" has a limit: remove the limits first")
	}
	if mode == ModeEDT {
		switch have, err := haveFQ(); {
		case err != nil:
			return err
		case !have:
			return fmt.Errorf("%w: bandwidth mode edt: the fq qdisc", ErrNotSupported)
		}
	}
	m.mode = mode
	return nil
}

// Counters reads an endpoint's shaping counters, summed over CPUs, since
// its limits were set; with HTB, the drops of its classes' queues are
// added. The queue of a recovered egress limit is in a namespace the
// Manager does not know until a Set or Remove names it: until then its
// egress counters are the datapath's alone (the packet-rate policer).
func (m *Manager) Counters(ifname string) (Counters, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ep, ok := m.eps[ifname]
	if !ok {
		return Counters{}, fmt.Errorf("endpoint %s: %w", ifname, ErrNotFound)
	}
	var out Counters
	for _, d := range []struct {
		dir datapath.Direction
		c   *ShapeCounters
		l   Limit
	}{{datapath.Ingress, &out.Ingress, ep.status.Limits.Ingress}, {datapath.Egress, &out.Egress, ep.status.Limits.Egress}} {
		var per []bpf.XdplaneBwCounter
		err := m.k.Maps.BwStats.Lookup(bwKey(ep.ifindex, d.dir), &per)
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return Counters{}, fmt.Errorf("read bw_stats: %w", err)
		}
		*d.c = sumShape(per)
		switch {
		case d.l.Rate == 0, d.dir == datapath.Ingress && resolveMode(m.mode) != ModeHTB:
			continue
		case d.dir == datapath.Egress && ep.status.NetNS == "":
			continue // a recovered limit's queue, in a namespace not yet named
		}
		c, err := m.htbStats(ep, d.dir)
		if err != nil {
			return Counters{}, err
		}
		if d.dir == datapath.Egress {
			// The pod side's class takes all the pod sends; the
			// datapath only polices.
			d.c.ShapedPackets, d.c.ShapedBytes = uint64(c.Basic.Packets), c.Basic.Bytes
		}
		d.c.DroppedPackets += uint64(c.Queue.Drops)
	}
	return out, nil
}

// apply writes b's datapath entries and qdiscs for ep.
func (m *Manager) apply(ep *entry, mode Mode, b Limits) error {
	for _, d := range []struct {
		dir datapath.Direction
		l   Limit
	}{{datapath.Ingress, b.Ingress}, {datapath.Egress, b.Egress}} {
		if err := m.applyLimit(ep, mode, d.dir, d.l); err != nil {
			return fmt.Errorf("%s: %w", d.dir, err)
		}
	}
	return nil
}

// setFlag sets or clears one of the bandwidth flags of ep's entry in the
// endpoints map, which sends its packets to the bandwidth entry.
func (m *Manager) setFlag(ep *entry, flag uint8, on bool) error {
	return endpoint.Update(m.k, ep.ifindex, func(e *bpf.XdplaneEndpoint) {
		e.Flags &^= flag
		if on {
			e.Flags |= flag
		}
	})
}

// recover reads back the limits an earlier process set, and the mode it
// used. Entries of interfaces that are gone are deleted, and the
// endpoints' bandwidth flags are set to what the entries say.
func (m *Manager) recover() error {
	var (
		stale   []bpf.XdplaneBwKey
		goneIdx []uint32
	)
	flags := make(map[uint32]uint8) // by ifindex, as the entries want them
	err := kernel.Scan(m.k.Maps.Bandwidth, func(k bpf.XdplaneBwKey, v bpf.XdplaneBwValue) error {
		ifc, err := net.InterfaceByIndex(int(k.Ifindex))
		if err != nil || k.Dir > uint8(datapath.Egress) {
			stale = append(stale, k)
			if err != nil {
				goneIdx = append(goneIdx, k.Ifindex)
			}
			return nil
		}
		ep := m.eps[ifc.Name]
		if ep == nil {
			ep = &entry{status: Status{Endpoint: Endpoint{Interface: ifc.Name}, Recovered: true}, ifindex: k.Ifindex}
			m.eps[ifc.Name] = ep
		}
		l := Limit{Rate: v.SetRate, Burst: v.SetBurst, PacketRate: v.SetPacketRate, PacketBurst: v.SetPacketBurst}
		flag := uint8(endpoint.IngressBw)
		if datapath.Direction(k.Dir) == datapath.Ingress {
			ep.status.Limits.Ingress = l
		} else {
			ep.status.Limits.Egress = l
			flag = endpoint.EgressBw
		}
		if v.Rate != 0 || v.PpsIntervalNs != 0 {
			flags[k.Ifindex] |= flag
		}
		if datapath.Direction(k.Dir) == datapath.Egress || v.Rate == 0 {
			return nil // the pod side's HTB in either mode
		}
		switch v.Mode {
		case bwEDT:
			m.mode = ModeEDT
		case bwHTB:
			m.mode = ModeHTB
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := endpoint.RefuseOtherNetNS(m.dp, goneIdx); err != nil {
		return err
	}
	limited := make(map[uint32]bool, len(m.eps))
	for _, ep := range m.eps {
		limited[ep.ifindex] = true
	}
	valid := func(k bpf.XdplaneBwKey) bool { return k.Dir <= uint8(datapath.Egress) && limited[k.Ifindex] }
	orphans, err := kernel.Keys(m.k.Maps.BwStats, func(k bpf.XdplaneBwKey, _ []bpf.XdplaneBwCounter) bool { return !valid(k) })
	if err != nil {
		return err
	}
	if err := errors.Join(kernel.DeleteAll(m.k.Maps.Bandwidth, stale), kernel.DeleteAll(m.k.Maps.BwStats, orphans)); err != nil {
		return fmt.Errorf("delete the limits of gone interfaces: %w", err)
	}
	// A crash between a flag and its entry leaves them apart.
	wrong := make(map[uint32]bool)
	for ifindex := range flags {
		wrong[ifindex] = true
	}
	err = kernel.Scan(m.k.Maps.Endpoints, func(ifindex uint32, e bpf.XdplaneEndpoint) error {
		wrong[ifindex] = e.Flags&endpoint.BandwidthFlags != flags[ifindex]
		return nil
	})
	if err != nil {
		return err
	}
	for ifindex, w := range wrong {
		if !w {
			continue
		}
		err := endpoint.Update(m.k, ifindex, func(e *bpf.XdplaneEndpoint) {
			e.Flags = e.Flags&^endpoint.BandwidthFlags | flags[ifindex]
		})
		if err != nil {
			return err
		}
	}
	return nil
}
