package bandwidth

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/endpoint"
	"github.com/xdplane/xdplane/internal/kernel"
)

// ShapeCounters are one direction's shaped traffic.
type ShapeCounters struct {
	// Shaped counts the packets held to the limit: stamped or classified
	// by the datapath, or (egress) queued in the pod side's HTB class.
	// Bytes are as on the wire, a GSO packet's headers once per segment.
	ShapedPackets, ShapedBytes uint64
	// Dropped counts packets dropped at the EDT horizon, by the
	// packet-rate limit, and (HTB) by the class's queue.
	DroppedPackets, DroppedBytes uint64
}

// Counters are an endpoint's shaping counters in both directions.
type Counters struct {
	Ingress, Egress ShapeCounters
}

// Datapath constants mirrored from bpf/include/xdplane.h.
const (
	bwEDT = 1
	bwHTB = 2
	// edtHorizon: EDT drops a packet with more than this queued ahead
	// of it (2 s, as Cilium's bandwidth manager).
	edtHorizon = 2_000_000_000
	// htbHandle is the major number of the qdiscs the library installs
	// ("xd", so that it removes only its own), and htbClass the
	// endpoint's class in an HTB one.
	htbHandle = 0x7864
	htbClass  = 0x1
)

// limitValue is the bandwidth map entry that holds direction dir to l
// under mode, with its clocks at zero; ok is false if nothing is left for
// the datapath to do or remember (a zero Limit).
func limitValue(mode Mode, dir datapath.Direction, l Limit) (v bpf.XdplaneBwValue, ok bool) {
	if l.IsZero() {
		return v, false
	}
	v = bpf.XdplaneBwValue{
		HorizonNs: edtHorizon,
		SetRate:   l.Rate, SetBurst: l.Burst, SetPacketRate: l.PacketRate, SetPacketBurst: l.PacketBurst,
	}
	if l.Rate != 0 {
		switch {
		case dir == datapath.Egress:
			// In either mode the pod side's HTB queue takes all the
			// pod sends: nothing to classify, and no priority on
			// forwarded packets.
			v.Mode = bwHTB
		case mode == ModeEDT:
			v.Mode = bwEDT
			v.Rate = l.rateBytes()
			v.BurstNs = l.burstBytes() * 1_000_000_000 / v.Rate
		default:
			// The host side's egress queue: the datapath classifies.
			v.Mode = bwHTB
			v.Rate = l.rateBytes()
			v.Priority = netlink.MakeHandle(htbHandle, htbClass)
		}
	}
	if l.PacketRate != 0 {
		v.PpsIntervalNs = 1_000_000_000 / l.PacketRate
		v.PpsBurstNs = (l.packetBurst() - 1) * v.PpsIntervalNs
	}
	return v, true
}

// carryClocks keeps the clocks of the entry in force, have, in its
// replacement v, so that a changed limit applies from the next packet
// without a fresh burst. A clock ahead of now is the backlog already
// stamped, which leaves on its stamps: a lower rate queues after it, but a
// higher one starts now, so that it is not held up by the old rate.
func carryClocks(v *bpf.XdplaneBwValue, have bpf.XdplaneBwValue, now uint64) {
	v.ClockNs = have.ClockNs
	if v.Rate > have.Rate {
		v.ClockNs = min(v.ClockNs, now)
	}
	v.PpsClockNs = have.PpsClockNs
	if have.PpsIntervalNs == 0 || v.PpsIntervalNs < have.PpsIntervalNs {
		v.PpsClockNs = min(v.PpsClockNs, now)
	}
}

func (m *Manager) applyLimit(ep *entry, mode Mode, dir datapath.Direction, l Limit) error {
	key := bwKey(ep.ifindex, dir)
	v, ok := limitValue(mode, dir, l)
	shape := l.Rate != 0

	// Queues first, so that no packet is classified into a class that
	// is not there yet; on removal, the entry goes first.
	var qerr error
	switch {
	case shape && (mode == ModeHTB || dir == datapath.Egress):
		qerr = m.ensureHTB(ep, dir, l)
	case shape:
		qerr = m.ensureFQ(ep)
	}
	if qerr != nil {
		return qerr
	}
	// The endpoint's flag sends its packets to the bandwidth entry: set
	// once the entry is written, cleared before it is deleted, and only
	// while the datapath has something to do there.
	flag := uint8(endpoint.IngressBw)
	if dir == datapath.Egress {
		flag = endpoint.EgressBw
	}
	active := ok && (v.Rate != 0 || v.PpsIntervalNs != 0)
	if !active {
		if err := m.setFlag(ep, flag, false); err != nil {
			return err
		}
	}
	if !ok {
		if err := kernel.IgnoreMissing(m.k.Maps.Bandwidth.Delete(key)); err != nil {
			return fmt.Errorf("delete from bandwidth: %w", err)
		}
		if err := kernel.IgnoreMissing(m.k.Maps.BwStats.Delete(key)); err != nil {
			return fmt.Errorf("delete from bw_stats: %w", err)
		}
	} else {
		var have bpf.XdplaneBwValue
		err := m.k.Maps.Bandwidth.Lookup(key, &have)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			zero := make([]bpf.XdplaneBwCounter, ebpf.MustPossibleCPU())
			if err := m.k.Maps.BwStats.Update(key, zero, ebpf.UpdateAny); err != nil {
				return fmt.Errorf("write bw_stats: %w", err)
			}
		case err != nil:
			return fmt.Errorf("read bandwidth: %w", err)
		default:
			now, err := monotonicNow()
			if err != nil {
				return err
			}
			carryClocks(&v, have, now)
		}
		if err := m.k.Maps.Bandwidth.Update(key, v, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("write bandwidth: %w", err)
		}
	}
	if active {
		if err := m.setFlag(ep, flag, true); err != nil {
			return err
		}
	}
	if !shape {
		// What an earlier rate installed goes.
		return m.removeQdisc(ep, dir)
	}
	return nil
}

// monotonicNow reads the clock of bpf_ktime_get_ns.
func monotonicNow() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read the monotonic clock: %w", err)
	}
	return uint64(ts.Nano()), nil
}

// bwKey is the bandwidth map key of direction dir at the interface with
// index ifindex. Direction's values are enum policy_dir's.
func bwKey(ifindex uint32, dir datapath.Direction) bpf.XdplaneBwKey {
	return bpf.XdplaneBwKey{Ifindex: ifindex, Dir: uint8(dir)}
}

// queueLink returns a netlink handle and the link whose egress queue
// shapes direction dir of ep: the host side for Ingress, the pod side
// (in Endpoint.NetNS) for Egress. Close the handle.
func (m *Manager) queueLink(ep *entry, dir datapath.Direction) (*netlink.Handle, netlink.Link, error) {
	if dir == datapath.Ingress {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, nil, err
		}
		l, err := h.LinkByIndex(int(ep.ifindex))
		if err != nil {
			h.Close()
			return nil, nil, err
		}
		return h, l, nil
	}
	host, err := netlink.LinkByIndex(int(ep.ifindex))
	if err != nil {
		return nil, nil, err
	}
	veth, ok := host.(*netlink.Veth)
	if !ok {
		return nil, nil, fmt.Errorf("%s is a %s, not a veth: no pod side to shape on", host.Attrs().Name, host.Type())
	}
	peer, err := netlink.VethPeerIndex(veth)
	if err != nil {
		return nil, nil, fmt.Errorf("find the pod side of %s: %w", host.Attrs().Name, err)
	}
	ns, err := netns.GetFromPath(ep.status.NetNS)
	if err != nil {
		return nil, nil, fmt.Errorf("open network namespace %s: %w", ep.status.NetNS, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, nil, err
	}
	l, err := h.LinkByIndex(peer)
	if err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("the pod side of %s in %s: %w", host.Attrs().Name, ep.status.NetNS, err)
	}
	// An interface of that index in another namespace is not the pod
	// side: its link must point back at the host side.
	if l.Attrs().ParentIndex != int(ep.ifindex) {
		h.Close()
		return nil, nil, fmt.Errorf("%s in %s is not the pod side of %s", l.Attrs().Name, ep.status.NetNS, host.Attrs().Name)
	}
	return h, l, nil
}

// ensureHTB installs or changes the HTB qdisc and class that shape
// direction dir of ep at limit l. The qdisc's default class is the
// endpoint's on the pod side (all it sends), none on the host side
// (unclassified traffic passes unshaped).
func (m *Manager) ensureHTB(ep *entry, dir datapath.Direction, l Limit) error {
	h, link, err := m.queueLink(ep, dir)
	if err != nil {
		return err
	}
	defer h.Close()
	idx := link.Attrs().Index
	qs, err := h.QdiscList(link)
	if err != nil {
		return fmt.Errorf("list qdiscs of %s: %w", link.Attrs().Name, err)
	}
	have := false
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT {
			if q.Type() == "htb" && q.Attrs().Handle == netlink.MakeHandle(htbHandle, 0) {
				have = true
			}
		}
	}
	if !have {
		q := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: idx, Parent: netlink.HANDLE_ROOT, Handle: netlink.MakeHandle(htbHandle, 0)})
		if dir == datapath.Egress {
			q.Defcls = htbClass
		}
		if err := h.QdiscReplace(q); err != nil {
			return fmt.Errorf("install an HTB qdisc on %s: %w", link.Attrs().Name, err)
		}
		if dir == datapath.Egress {
			for _, f := range plumbingFilters(idx) {
				if err := h.FilterAdd(f); err != nil {
					return errors.Join(fmt.Errorf("install a filter on %s: %w", link.Attrs().Name, err), h.QdiscDel(q))
				}
			}
		}
	}
	c := htbClassFor(idx, l)
	if err := h.ClassReplace(c); err != nil {
		return fmt.Errorf("install an HTB class on %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// plumbingFilters are the u32 filters that send ARP and IPv6 neighbour
// discovery from the link past the pod side's HTB class, which takes
// everything else: classid major:0 is HTB's unshaped direct queue. The
// datapath exempts the same packets on the host side (bw_exempt).
func plumbingFilters(idx int) []netlink.Filter {
	direct := netlink.MakeHandle(htbHandle, 0)
	attrs := func(proto uint16, prio uint16) netlink.FilterAttrs {
		return netlink.FilterAttrs{LinkIndex: idx, Parent: direct, Protocol: proto, Priority: prio}
	}
	fs := []netlink.Filter{&netlink.U32{
		FilterAttrs: attrs(unix.ETH_P_ARP, 1),
		ClassId:     direct,
		Sel:         &netlink.TcU32Sel{Flags: nl.TC_U32_TERMINAL, Keys: []netlink.TcU32Key{{}}},
	}}
	for typ := uint32(133); typ <= 137; typ++ {
		fs = append(fs, &netlink.U32{
			FilterAttrs: attrs(unix.ETH_P_IPV6, 2),
			ClassId:     direct,
			Sel: &netlink.TcU32Sel{Flags: nl.TC_U32_TERMINAL, Keys: []netlink.TcU32Key{
				// IPv6 bytes 6 and 7: next header ICMPv6, hop limit 255.
				{Off: 4, Mask: 0x0000ffff, Val: unix.IPPROTO_ICMPV6<<8 | 255},
				// The ICMPv6 type, right after the fixed header.
				{Off: 40, Mask: 0xff000000, Val: typ << 24},
			}},
		})
	}
	return fs
}

// htbClassFor is the endpoint's HTB class on the link with index idx.
// Its burst lets a whole GSO segment (64 KiB) through at once, and at
// least a jiffy's worth of the rate (HTB refills once a tick).
func htbClassFor(idx int, l Limit) *netlink.HtbClass {
	rate := l.Rate
	burst := uint32(min(l.burstBytes(), 1<<31))
	return netlink.NewHtbClass(netlink.ClassAttrs{
		LinkIndex: idx,
		Parent:    netlink.MakeHandle(htbHandle, 0),
		Handle:    netlink.MakeHandle(htbHandle, htbClass),
	}, netlink.HtbClassAttrs{Rate: rate, Ceil: rate, Buffer: burst, Cbuffer: burst})
}

// removeQdisc removes the root qdisc the library installed for direction
// dir of ep (HTB, or fq for EDT), if there is one. A link or namespace
// that is gone took its qdiscs with it.
func (m *Manager) removeQdisc(ep *entry, dir datapath.Direction) error {
	if dir == datapath.Egress && ep.status.NetNS == "" {
		return nil
	}
	h, link, err := m.queueLink(ep, dir)
	switch {
	case gone(err):
		return nil
	case err != nil:
		return err
	}
	defer h.Close()
	qs, err := h.QdiscList(link)
	if err != nil {
		return fmt.Errorf("list qdiscs of %s: %w", link.Attrs().Name, err)
	}
	for _, q := range qs {
		a := q.Attrs()
		if a.Parent == netlink.HANDLE_ROOT && a.Handle == netlink.MakeHandle(htbHandle, 0) && (q.Type() == "htb" || q.Type() == "fq") {
			if err := h.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("remove the %s qdisc of %s: %w", q.Type(), link.Attrs().Name, err)
			}
		}
	}
	return nil
}

// gone reports whether err says an interface or a network namespace is no
// more.
func gone(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, os.ErrNotExist)
}

// ensureFQ gives the endpoint's host-side interface an fq root qdisc, for
// EDT.
func (m *Manager) ensureFQ(ep *entry) error {
	h, link, err := m.queueLink(ep, datapath.Ingress)
	if err != nil {
		return err
	}
	defer h.Close()
	q := &netlink.Fq{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Parent: netlink.HANDLE_ROOT, Handle: netlink.MakeHandle(htbHandle, 0)}}
	if err := h.QdiscReplace(q); err != nil {
		return fmt.Errorf("install an fq qdisc on %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// sumShape adds up bw_stats' per-CPU counters.
func sumShape(per []bpf.XdplaneBwCounter) ShapeCounters {
	var c ShapeCounters
	for _, p := range per {
		c.ShapedPackets += p.ShapedPackets
		c.ShapedBytes += p.ShapedBytes
		c.DroppedPackets += p.DroppedPackets
		c.DroppedBytes += p.DroppedBytes
	}
	return c
}

// htbStats reads the statistics of the endpoint's HTB class for dir.
func (m *Manager) htbStats(ep *entry, dir datapath.Direction) (netlink.ClassStatistics, error) {
	h, link, err := m.queueLink(ep, dir)
	if err != nil {
		return netlink.ClassStatistics{}, err
	}
	defer h.Close()
	cs, err := h.ClassList(link, netlink.MakeHandle(htbHandle, 0))
	if err != nil {
		return netlink.ClassStatistics{}, fmt.Errorf("list HTB classes of %s: %w", link.Attrs().Name, err)
	}
	for _, c := range cs {
		if c.Attrs().Handle == netlink.MakeHandle(htbHandle, htbClass) && c.Attrs().Statistics != nil {
			return *c.Attrs().Statistics, nil
		}
	}
	return netlink.ClassStatistics{}, nil
}
