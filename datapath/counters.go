package datapath

import (
	"fmt"

	"github.com/xdplane/xdplane/internal/bpf"
)

// Counter is a count of packets and their bytes.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// Counters are the datapath's global packet counters, summed over CPUs,
// since the maps were created. Every packet a program sees lands in one of
// them (a packet counted as forwarded is still dropped if rewriting it
// fails, which only a kernel bug could cause). A packet that crosses two
// attached hooks (in at one interface, out at another) is counted at each.
type Counters struct {
	Passed             Counter // neither for a service nor a tracked reply
	ForwardNew         Counter // first packet of a flow; a backend was chosen
	ForwardEstablished Counter // later packets of tracked flows
	Replies            Counter // replies translated back to the frontend
	NoBackend          Counter // no backend takes new flows: rejected (ICMP port unreachable), or dropped under a Local policy
	Malformed          Counter // could not be parsed: passed untouched
	Fragments          Counter // IPv4 fragments: passed untouched
	ConntrackFull      Counter // no conntrack entry could be made: dropped
	SourceDenied       Counter // a source outside the service's ranges: dropped
	UnknownPort        Counter // another port of a virtual IP: rejected
}

// Counters reads the global counters.
func (d *Datapath) Counters() (Counters, error) {
	var c Counters
	fields := map[bpf.XdplaneStat]*Counter{
		bpf.XdplaneStatSTAT_PASS:          &c.Passed,
		bpf.XdplaneStatSTAT_FORWARD_NEW:   &c.ForwardNew,
		bpf.XdplaneStatSTAT_FORWARD_EST:   &c.ForwardEstablished,
		bpf.XdplaneStatSTAT_REPLY:         &c.Replies,
		bpf.XdplaneStatSTAT_NO_BACKEND:    &c.NoBackend,
		bpf.XdplaneStatSTAT_MALFORMED:     &c.Malformed,
		bpf.XdplaneStatSTAT_FRAGMENT:      &c.Fragments,
		bpf.XdplaneStatSTAT_CT_FULL:       &c.ConntrackFull,
		bpf.XdplaneStatSTAT_SOURCE_DENIED: &c.SourceDenied,
		bpf.XdplaneStatSTAT_UNKNOWN_PORT:  &c.UnknownPort,
	}
	for stat, dst := range fields {
		var per []bpf.XdplaneCounter
		if err := d.maps.Stats.Lookup(stat, &per); err != nil {
			return Counters{}, fmt.Errorf("read counter %d: %w", stat, err)
		}
		for _, v := range per {
			dst.Packets += v.Packets
			dst.Bytes += v.Bytes
		}
	}
	return c, nil
}
