package datapath

import (
	"fmt"
	"time"

	"github.com/xdplane/xdplane/internal/kernel"
)

// ConntrackTimeouts are how long a load-balanced flow may be idle before
// its conntrack entry expires. An expired entry no longer holds the flow's
// 5-tuple: a new connection that reuses it (a TCP SYN, or a UDP datagram)
// is balanced afresh, so that backend states and weights are honoured for
// clients whose ports wrap. A TCP packet other than a SYN keeps its
// connection's backend however long it was idle. User space's garbage
// collector (lb.CollectConntrack) deletes expired entries.
//
// The defaults follow kube-proxy, which sets the kernel's conntrack
// timeouts: its --conntrack-tcp-timeout-established (24 hours) and the
// kernel's UDP timeouts (30 seconds, 120 once the backend has answered).
// Opening and closing TCP flows take Cilium's figures (60 and 10 seconds).
// The programs refresh an entry's time at most once a second, so a timeout
// is met to within a second.
type ConntrackTimeouts struct {
	// TCPEstablished: a TCP flow the backend has answered. Optional.
	// Default: 24h.
	TCPEstablished time.Duration
	// TCPOpening: a TCP flow the backend has not answered yet. Optional.
	// Default: 60s.
	TCPOpening time.Duration
	// TCPClosing: a TCP flow either side reset, or both closed (FIN).
	// Optional. Default: 10s.
	TCPClosing time.Duration
	// UDP: a UDP flow the backend has not answered. Optional. Default:
	// 30s.
	UDP time.Duration
	// UDPStream: a UDP flow the backend has answered. Optional. Default:
	// 120s.
	UDPStream time.Duration
}

// DefaultConntrackTimeouts are the timeouts of a zero ConntrackTimeouts.
var DefaultConntrackTimeouts = ConntrackTimeouts{
	TCPEstablished: 24 * time.Hour,
	TCPOpening:     60 * time.Second,
	TCPClosing:     10 * time.Second,
	UDP:            30 * time.Second,
	UDPStream:      120 * time.Second,
}

// The bounds of a timeout: the programs refresh an entry once a second,
// and a year is longer than any flow a node keeps.
const (
	minTimeout = 2 * time.Second
	maxTimeout = 365 * 24 * time.Hour
)

// resolve fills the zero fields from the defaults and checks the rest.
func (t ConntrackTimeouts) resolve() (ConntrackTimeouts, error) {
	d := DefaultConntrackTimeouts
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"TCPEstablished", &t.TCPEstablished, d.TCPEstablished},
		{"TCPOpening", &t.TCPOpening, d.TCPOpening},
		{"TCPClosing", &t.TCPClosing, d.TCPClosing},
		{"UDP", &t.UDP, d.UDP},
		{"UDPStream", &t.UDPStream, d.UDPStream},
	} {
		if *f.v == 0 {
			*f.v = f.def
			continue
		}
		if *f.v < minTimeout || *f.v > maxTimeout {
			return t, &ValidationError{Field: "Conntrack." + f.name, Value: *f.v,
				Reason: fmt.Sprintf("must be between %s and %s", minTimeout, maxTimeout), Err: ErrInvalid}
		}
	}
	return t, nil
}

// kernel is t as the kernel handle keeps it: the same fields, which
// package kernel cannot import from here.
func (t ConntrackTimeouts) kernel() kernel.CTTimeouts { return kernel.CTTimeouts(t) }

// ConntrackTimeouts returns the timeouts the programs were loaded with;
// zero for a Datapath opened with OpenPinned.
func (d *Datapath) ConntrackTimeouts() ConntrackTimeouts { return ConntrackTimeouts(d.k.Timeouts) }
