package main

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
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
