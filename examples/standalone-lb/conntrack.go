package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
)

// conntrackFlags are run's settings of the load balancer's conntrack.
type conntrackFlags struct {
	size     uint
	timeouts datapath.ConntrackTimeouts
	every    time.Duration
}

func addConntrackFlags(fs *flag.FlagSet) *conntrackFlags {
	f := &conntrackFlags{}
	d := datapath.DefaultConntrackTimeouts
	fs.UintVar(&f.size, "conntrack-size", 0, fmt.Sprintf("conntrack entries, two a flow, fixed when first created (default: what is pinned, else %d)", datapath.DefaultConntrackSize))
	fs.DurationVar(&f.timeouts.TCPEstablished, "conntrack-tcp-established", d.TCPEstablished, "idle timeout of a TCP flow the backend has answered")
	fs.DurationVar(&f.timeouts.TCPOpening, "conntrack-tcp-opening", d.TCPOpening, "idle timeout of a TCP flow the backend has not answered")
	fs.DurationVar(&f.timeouts.TCPClosing, "conntrack-tcp-closing", d.TCPClosing, "idle timeout of a TCP flow reset, or closed by both sides")
	fs.DurationVar(&f.timeouts.UDP, "conntrack-udp", d.UDP, "idle timeout of a UDP flow the backend has not answered")
	fs.DurationVar(&f.timeouts.UDPStream, "conntrack-udp-stream", d.UDPStream, "idle timeout of a UDP flow the backend has answered")
	fs.DurationVar(&f.every, "conntrack-gc-interval", 30*time.Second, "how often expired and stale conntrack entries are removed")
	return f
}

// check refuses what the datapath would, before anything is touched.
func (f *conntrackFlags) check() error {
	if f.size > 1<<26 {
		return usagef("--conntrack-size %d: at most %d", f.size, 1<<26)
	}
	if f.every < time.Second {
		return usagef("--conntrack-gc-interval %s: at least 1s", f.every)
	}
	return nil
}

// conntrackReporter logs what each collection removed, and a warning
// while the map evicts live flows.
func conntrackReporter(log *slog.Logger) func(lb.CollectResult, error) {
	var evicted uint64
	return func(res lb.CollectResult, err error) {
		if err != nil {
			log.Warn("conntrack collection failed", "error", err)
			return
		}
		s := res.Stats
		if res.Expired+res.Stale > 0 {
			log.Debug("conntrack collected", "expired", res.Expired, "stale", res.Stale, "entries", s.Entries, "limit", s.Limit)
		}
		if s.Evicted > evicted && evicted != 0 {
			log.Warn("conntrack is full: live flows were evicted (raise --conntrack-size)",
				"evicted", s.Evicted-evicted, "entries", s.Entries, "limit", s.Limit)
		}
		evicted = s.Evicted
	}
}

// printConntrack writes status's conntrack lines, after the counters.
func printConntrack(w io.Writer, dp *datapath.Datapath) error {
	s, err := lb.ReadConntrackStats(dp)
	if err != nil {
		return fmt.Errorf("read conntrack: %w", err)
	}
	fmt.Fprintf(w, "\nConntrack: %d of %d entries in use (%.1f%%); made %d, reopened %d, expired %d, stale %d, evicted %d\n",
		s.Entries, s.Limit, 100*float64(s.Entries)/float64(max(s.Limit, 1)), s.Created, s.Reopened, s.Expired, s.Stale, s.Evicted)
	return nil
}
