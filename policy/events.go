package policy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// Reason says why a packet was dropped.
type Reason uint8

// Drop reasons (enum drop_reason).
const (
	// ReasonDenyRule: a Deny rule matched.
	ReasonDenyRule Reason = 1
	// ReasonNoRule: the direction is isolated and no Allow rule matched.
	ReasonNoRule Reason = 2
	// ReasonFragment: a later fragment of a datagram whose first
	// fragment did not pass (or was not seen).
	ReasonFragment Reason = 3
	// ReasonMalformed: headers the policy cannot judge, on a direction
	// with rules that could deny.
	ReasonMalformed Reason = 4
	// ReasonPrefilter: the source is in the node-wide prefilter.
	ReasonPrefilter Reason = 5
)

func (r Reason) String() string {
	switch r {
	case ReasonDenyRule:
		return "deny-rule"
	case ReasonNoRule:
		return "no-allow-rule"
	case ReasonFragment:
		return "fragment"
	case ReasonMalformed:
		return "malformed"
	case ReasonPrefilter:
		return "prefilter"
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// Event is one dropped packet.
type Event struct {
	// Time is when the datapath dropped it.
	Time time.Time
	// Endpoint is the endpoint's id (EndpointStatus.ID); 0 for the
	// prefilter.
	Endpoint uint32
	// Interface is where it was dropped: the endpoint's interface, or
	// for the prefilter the interface it arrived on, named in the network
	// namespace of the thread that calls Read. Empty if it is gone.
	Interface string
	Ifindex   int
	Direction Direction
	Reason    Reason
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

// NewEventReader opens the datapath's drop events. Close it when done.
func NewEventReader(dp *datapath.Datapath) (*EventReader, error) {
	rd, err := ringbuf.NewReader(kernel.Of(dp).Maps.Events)
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
	port := func(p uint16) uint16 { return p>>8 | p<<8 } // network order, read little-endian
	out := Event{
		Time:        time.Unix(0, int64(ev.Timestamp)).Add(r.bootOffset),
		Endpoint:    ev.Endpoint,
		Ifindex:     int(ev.Ifindex),
		Direction:   Direction(ev.Dir),
		Reason:      Reason(ev.Reason),
		Protocol:    ev.Proto,
		Source:      netip.AddrPortFrom(addr(ev.Saddr), port(ev.Sport)),
		Destination: netip.AddrPortFrom(addr(ev.Daddr), port(ev.Dport)),
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

// DropCounters are the datapath's policy drops by reason, summed over
// CPUs and endpoints, and the events lost to a full ring buffer.
type DropCounters struct {
	Packets    map[Reason]uint64
	Bytes      map[Reason]uint64
	EventsLost uint64
}

// ReadDropCounters reads the datapath's drop counters.
func ReadDropCounters(dp *datapath.Datapath) (DropCounters, error) {
	out := DropCounters{Packets: make(map[Reason]uint64), Bytes: make(map[Reason]uint64)}
	for r := range uint32(bpf.XdplaneDropReasonDROP_MAX) {
		var per []bpf.XdplaneCounter
		if err := kernel.Of(dp).Maps.DropStats.Lookup(r, &per); err != nil {
			return DropCounters{}, fmt.Errorf("read drop_stats: %w", err)
		}
		for _, c := range per {
			if r == uint32(bpf.XdplaneDropReasonDROP_EVENTS_LOST) {
				out.EventsLost += c.Packets
				continue
			}
			out.Packets[Reason(r)] += c.Packets
			out.Bytes[Reason(r)] += c.Bytes
		}
	}
	return out, nil
}
