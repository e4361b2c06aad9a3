package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/enum"
	"github.com/xdplane/xdplane/internal/kernel"
)

// Direction is the way a packet crosses an endpoint (a pod's host-side
// interface), as the policy types of a Kubernetes NetworkPolicy name it.
// Package policy uses it for rules, and drop events for where a packet
// was dropped.
type Direction uint8

const (
	// Ingress is traffic entering the endpoint (the pod); its peer is the
	// flow's source.
	Ingress Direction = iota
	// Egress is traffic leaving the endpoint; its peer is the flow's
	// destination.
	Egress
)

var directionNames = enum.New[Direction]("direction", "ingress", "egress")

// ParseDirection parses "ingress" or "egress", in any case.
func ParseDirection(s string) (Direction, error) { return directionNames.Parse(s, ErrInvalid) }

// String returns "ingress" or "egress".
func (d Direction) String() string { return directionNames.String(d) }

// MarshalText implements encoding.TextMarshaler.
func (d Direction) MarshalText() ([]byte, error) { return directionNames.Marshal(d, ErrInvalid) }

// UnmarshalText implements encoding.TextUnmarshaler, as ParseDirection.
func (d *Direction) UnmarshalText(b []byte) error { return directionNames.Unmarshal(d, b, ErrInvalid) }

// DropReason says why the datapath dropped a packet, in drop events and
// DropCounters. The values are enum drop_reason's.
type DropReason uint8

const (
	// DropDenyRule: a network policy's Deny rule matched.
	DropDenyRule DropReason = 1
	// DropNoRule: the direction is isolated and no Allow rule matched.
	DropNoRule DropReason = 2
	// DropFragment: a later fragment of a datagram whose first fragment
	// did not pass policy (or was not seen).
	DropFragment DropReason = 3
	// DropMalformed: headers network policy cannot judge, on a direction
	// with rules that could deny.
	DropMalformed DropReason = 4
	// DropPrefilter: the source is in the node-wide prefilter.
	DropPrefilter DropReason = 5
)

// dropReasonNames names the reasons by value; 0 (events lost) is no
// reason.
var dropReasonNames = enum.New[DropReason]("drop reason", "", "deny-rule", "no-allow-rule", "fragment", "malformed", "prefilter")

// ParseDropReason parses a reason's name, as String returns it, in any
// case.
func ParseDropReason(s string) (DropReason, error) { return dropReasonNames.Parse(s, ErrInvalid) }

// String returns "deny-rule", "no-allow-rule", "fragment", "malformed" or
// "prefilter".
func (r DropReason) String() string { return dropReasonNames.String(r) }

// MarshalText implements encoding.TextMarshaler.
func (r DropReason) MarshalText() ([]byte, error) { return dropReasonNames.Marshal(r, ErrInvalid) }

// UnmarshalText implements encoding.TextUnmarshaler, as ParseDropReason.
func (r *DropReason) UnmarshalText(b []byte) error {
	return dropReasonNames.Unmarshal(r, b, ErrInvalid)
}

// Event is one dropped packet.
type Event struct {
	// Time is when the datapath dropped it.
	Time time.Time
	// Endpoint is the endpoint's id (policy.EndpointStatus.ID); 0 for
	// the prefilter.
	Endpoint uint32
	// Interface is where it was dropped: the endpoint's interface, or
	// for the prefilter the interface it arrived on, named in the network
	// namespace of the thread that calls Read. Empty if it is gone.
	Interface string
	Ifindex   int
	Direction Direction
	Reason    DropReason
	// Protocol is the IP protocol number (ICMPv6 is 58).
	Protocol uint8
	// Source and Destination carry the ports of TCP, UDP and SCTP; for
	// an ICMP echo, the identifier as the requester's port and 0 as the
	// other; 0 otherwise (the prefilter reads no ports).
	Source, Destination netip.AddrPort
	// Fragment: a later fragment, whose ports come from its first one.
	Fragment bool
	// Length is the packet's length in bytes, with its Ethernet header.
	Length uint32
}

func (e Event) String() string {
	frag := ""
	if e.Fragment {
		frag = " fragment"
	}
	return fmt.Sprintf("drop %s %s ep=%d if=%s proto=%d %s -> %s len=%d%s",
		e.Reason, e.Direction, e.Endpoint, e.Interface, e.Protocol, e.Source, e.Destination, e.Length, frag)
}

// Drop event flags (enum event_flags).
const (
	evIPv6     = 1
	evFragment = 2
)

// EventReader reads drop events from the datapath's ring buffer. One
// reader per datapath: events are consumed as they are read. Events the
// buffer had no room for are counted (DropCounters' EventsLost).
type EventReader struct {
	rd *ringbuf.Reader
	// bootOffset turns the kernel's monotonic nanoseconds into wall
	// time.
	bootOffset time.Duration
	names      map[int]string
}

// Events opens the datapath's drop events. Close the reader when done.
func (d *Datapath) Events() (*EventReader, error) {
	rd, err := ringbuf.NewReader(d.maps.Events)
	if err != nil {
		return nil, fmt.Errorf("open events: %w", err)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		rd.Close()
		return nil, fmt.Errorf("read the monotonic clock: %w", err)
	}
	off := time.Duration(time.Now().UnixNano() - ts.Nano())
	return &EventReader{rd: rd, bootOffset: off, names: make(map[int]string)}, nil
}

// SetDeadline makes Read return os.ErrDeadlineExceeded after t; the zero
// time waits for ever.
func (r *EventReader) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Read waits for the next event. After Close it returns os.ErrClosed.
func (r *EventReader) Read() (Event, error) {
	rec, err := r.rd.Read()
	if errors.Is(err, ringbuf.ErrClosed) {
		return Event{}, os.ErrClosed
	}
	if err != nil {
		return Event{}, err
	}
	return r.decode(rec.RawSample)
}

func (r *EventReader) decode(raw []byte) (Event, error) {
	var ev bpf.XdplaneDropEvent
	if len(raw) < int(unsafe.Sizeof(ev)) {
		return Event{}, fmt.Errorf("drop event of %d bytes, want %d", len(raw), unsafe.Sizeof(ev))
	}
	if _, err := binary.Decode(raw, binary.NativeEndian, &ev); err != nil {
		return Event{}, fmt.Errorf("decode drop event: %w", err)
	}
	addr := func(b [16]uint8) netip.Addr {
		a := netip.AddrFrom16(b)
		if ev.Flags&evIPv6 == 0 {
			return a.Unmap()
		}
		return a
	}
	out := Event{
		Time:        time.Unix(0, int64(ev.Timestamp)).Add(r.bootOffset),
		Endpoint:    ev.Endpoint,
		Ifindex:     int(ev.Ifindex),
		Direction:   Direction(ev.Dir),
		Reason:      DropReason(ev.Reason),
		Protocol:    ev.Proto,
		Source:      netip.AddrPortFrom(addr(ev.Saddr), kernel.Ntohs(ev.Sport)),
		Destination: netip.AddrPortFrom(addr(ev.Daddr), kernel.Ntohs(ev.Dport)),
		Fragment:    ev.Flags&evFragment != 0,
		Length:      ev.Len,
	}
	out.Interface = r.name(out.Ifindex)
	return out, nil
}

func (r *EventReader) name(ifindex int) string {
	if n, ok := r.names[ifindex]; ok {
		return n
	}
	n := ""
	if ifc, err := net.InterfaceByIndex(ifindex); err == nil {
		n = ifc.Name
	}
	r.names[ifindex] = n
	return n
}

// Close stops the reader; a Read waiting returns os.ErrClosed.
func (r *EventReader) Close() error { return r.rd.Close() }

// DropCounters are the datapath's drops by reason, summed over CPUs and
// endpoints, and the events lost to a full ring buffer.
type DropCounters struct {
	Packets    map[DropReason]uint64
	Bytes      map[DropReason]uint64
	EventsLost uint64
}

// DropCounters reads the datapath's drop counters.
func (d *Datapath) DropCounters() (DropCounters, error) {
	out := DropCounters{Packets: make(map[DropReason]uint64), Bytes: make(map[DropReason]uint64)}
	for r := range uint32(bpf.XdplaneDropReasonDROP_MAX) {
		var per []bpf.XdplaneCounter
		if err := d.maps.DropStats.Lookup(r, &per); err != nil {
			return DropCounters{}, fmt.Errorf("read drop_stats: %w", err)
		}
		for _, c := range per {
			if r == uint32(bpf.XdplaneDropReasonDROP_EVENTS_LOST) {
				out.EventsLost += c.Packets
				continue
			}
			out.Packets[DropReason(r)] += c.Packets
			out.Bytes[DropReason(r)] += c.Bytes
		}
	}
	return out, nil
}
