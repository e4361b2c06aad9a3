package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/lb"
	"github.com/xdplane/xdplane/prefilter"
)

// fakeDrops plays a script of reads: an event, or an error, each at its
// time on a fake clock.
type fakeDrops struct {
	now   time.Time
	steps []fakeRead
}

type fakeRead struct {
	after time.Duration // the clock moves on this much before the read returns
	ev    datapath.Event
	err   error
}

func (f *fakeDrops) SetDeadline(time.Time) {}

func (f *fakeDrops) Read() (datapath.Event, error) {
	if len(f.steps) == 0 {
		return datapath.Event{}, os.ErrClosed
	}
	s := f.steps[0]
	f.steps = f.steps[1:]
	f.now = f.now.Add(s.after)
	return s.ev, s.err
}

// Drops are logged up to dropLogBurst a second; the others are counted,
// and the count logged once the second is over, also when no drop comes
// to end it.
func TestLogDrops(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ev := datapath.Event{
		Time: start, Interface: "eth0", Reason: datapath.DropPrefilter, Protocol: 6, Length: 74,
		Source:      netip.AddrPortFrom(netip.MustParseAddr("203.0.113.66"), 0),
		Destination: netip.AddrPortFrom(netip.MustParseAddr("10.96.0.10"), 0),
	}
	f := &fakeDrops{now: start}
	for range dropLogBurst + 5 {
		f.steps = append(f.steps, fakeRead{after: time.Millisecond, ev: ev})
	}
	// A quiet second: the deadline passes.
	f.steps = append(f.steps, fakeRead{after: time.Second, err: os.ErrDeadlineExceeded})
	// An old event, read late.
	f.steps = append(f.steps, fakeRead{after: 10 * time.Second, ev: ev})

	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	logDrops(log, f, func() time.Time { return f.now })

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	const drop = "level=INFO msg=dropped reason=prefilter interface=eth0 protocol=tcp source=203.0.113.66 destination=10.96.0.10 bytes=74"
	var want []string
	for range dropLogBurst {
		want = append(want, drop)
	}
	want = append(want,
		`level=WARN msg="drops not logged (more than the log takes a second)" drops=5`,
		drop+" dropped_at=2026-01-02T03:04:05Z")
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("logged:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

// A reload of 65,536 services logs one short line: counts, and the first
// few services of each kind by name and frontend.
func TestLogAppliedSummarises(t *testing.T) {
	var added, removed []lb.Frontend
	names, old := map[lb.Frontend]string{}, map[lb.Frontend]string{}
	for i := range 65536 {
		f := lb.Frontend{Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), 80), Protocol: lb.TCP}
		added = append(added, f)
		names[f] = fmt.Sprintf("service-%d", i)
	}
	gone := lb.Frontend{Address: netip.MustParseAddrPort("10.97.0.1:53"), Protocol: lb.UDP}
	removed = append(removed, gone)
	old[gone] = "dns"

	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	logApplied(log, lb.SyncResult{Added: added, Removed: removed}, prefilter.Change{Added: 2}, 2, names, old)
	line := strings.TrimSuffix(out.String(), "\n")
	if strings.Count(line, "\n") != 0 || len(line) > 1000 {
		t.Errorf("logged %d lines, %d bytes; want one line of at most 1000 bytes", strings.Count(line, "\n")+1, len(line))
	}
	for _, want := range []string{
		`msg="config applied" services=65536 added.count=65536 added.names="[service-0=10.96.0.0:80/tcp service-1=10.96.0.1:80/tcp `,
		` service-9=10.96.0.9:80/tcp (and 65526 more)]" changed.count=0 removed.count=1 removed.names="[dns=10.97.0.1:53/udp]" ` +
			`prefilter.added=2 prefilter.removed=0 prefilter.size=2`,
	} {
		if !strings.Contains(line, want) {
			t.Errorf("log %.2000q does not contain %q", line, want)
		}
	}
}
