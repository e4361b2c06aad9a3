package testutil

import (
	"math"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A bulk transfer over a bare veth: what it reports adds up.
func TestBulkTCP(t *testing.T) {
	g := NewGroup(t)
	snd, rcv := g.NS("snd"), g.NS("rcv")
	Veth(t, snd, "eth0", rcv, "eth0")
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	snd.AddAddr("eth0", netip.PrefixFrom(src, 24))
	rcv.AddAddr("eth0", netip.PrefixFrom(dst, 24))

	const d, interval = time.Second, 100 * time.Millisecond
	res, err := BulkTCP(snd, src, rcv, netip.AddrPortFrom(dst, 5001), 200*time.Millisecond, d, interval)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("goodput %.0f Mbit/s, %d segments, %d retransmitted, MSS %d, path MTU %d, RTT %v", res.Goodput/1e6, res.SegsOut, res.Retrans, res.MSS, res.PathMTU, res.RTT)
	if res.Bytes <= 0 || res.Duration < d || res.Goodput != float64(res.Bytes)*8/res.Duration.Seconds() {
		t.Errorf("%d bytes in %v, goodput %.0f: want bytes, at least %v, and goodput their quotient", res.Bytes, res.Duration, res.Goodput, d)
	}
	// A veth's MTU is 1500: 1448 bytes of payload a segment with TCP
	// timestamps.
	if res.PathMTU != 1500 || res.MSS != 1448 || res.SegsOut == 0 {
		t.Errorf("path MTU %d, MSS %d, %d segments; want 1500, 1448 and some", res.PathMTU, res.MSS, res.SegsOut)
	}
	if got, want := res.L2Rate(), res.Goodput*1514/1448; math.Abs(got-want) > 1 {
		t.Errorf("L2Rate %.0f, want %.0f", got, want)
	}
	// The samples cover the window, and add up to about the whole.
	if n := len(res.Samples); n < 9 || n > 10 {
		t.Fatalf("%d samples of %v over %v, want 9 or 10", n, interval, d)
	}
	all, n := res.Mean(res.Start, d)
	if n != len(res.Samples) || math.Abs(all/res.Goodput-1) > 0.2 {
		t.Errorf("mean of %d samples %.0f, want all %d samples, near the goodput %.0f", n, all, len(res.Samples), res.Goodput)
	}
	if _, n := res.Mean(res.Start.Add(interval/2), 3*interval); n != 2 {
		t.Errorf("Mean over [%v, %v) from the start took %d samples, want the 2 wholly inside", interval/2, 3*interval+interval/2, n)
	}
}

// Options: the congestion control asked for is the sender's, and the
// probe is read at the start and with every sample.
func TestBulkTCPWith(t *testing.T) {
	g := NewGroup(t)
	snd, rcv := g.NS("snd"), g.NS("rcv")
	Veth(t, snd, "eth0", rcv, "eth0")
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	snd.AddAddr("eth0", netip.PrefixFrom(src, 24))
	rcv.AddAddr("eth0", netip.PrefixFrom(dst, 24))

	var reads atomic.Int64
	probe := func() (int64, error) { return reads.Add(1), nil }
	const interval = 100 * time.Millisecond
	b, err := StartBulkTCPWith(snd, src, rcv, netip.AddrPortFrom(dst, 5001), 200*time.Millisecond, interval, BulkOptions{Congestion: "reno", Probe: probe})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	time.Sleep(5 * interval)
	info, err := b.SenderInfo()
	if err != nil {
		t.Fatal(err)
	}
	samples, probes := b.Samples(), b.Probes()
	if len(samples) == 0 || len(probes) != len(samples)+1 {
		t.Errorf("%d samples, %d probe readings: want some, and one more reading", len(samples), len(probes))
	}
	for i, p := range probes {
		if p != int64(i+1) {
			t.Errorf("probe reading %d is %d, want %d: read once at the start and once a sample, in order", i, p, i+1)
		}
	}
	if info.Rtt == 0 || info.Segs_out == 0 {
		t.Errorf("sender's TCP_INFO: RTT %d µs, %d segments: want some", info.Rtt, info.Segs_out)
	}
	// The sender's congestion control, as its socket reports it.
	rc, err := b.snd.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cc string
	var serr error
	if err := rc.Control(func(fd uintptr) { cc, serr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if cc != "reno" {
		t.Errorf("sender's congestion control %q, want reno", cc)
	}
	if _, err := b.Stop(); err != nil {
		t.Fatal(err)
	}

	// One it does not know is refused, by name.
	if _, err := StartBulkTCPWith(snd, src, rcv, netip.AddrPortFrom(dst, 5002), 0, interval, BulkOptions{Congestion: "nope"}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("congestion control nope: %v, want an error naming it", err)
	}
}
