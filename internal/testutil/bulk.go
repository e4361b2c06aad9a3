package testutil

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// bulkBufSize is the size of each write and each read of a bulk transfer:
// large enough that the Go side is never what limits the rate.
const bulkBufSize = 256 << 10

// bulkDialTimeout bounds connecting and accepting.
const bulkDialTimeout = 5 * time.Second

// BulkResult is what one bulk transfer measured.
type BulkResult struct {
	// Bytes is the payload the receiver's TCP took in during the
	// measured window (tcpi_bytes_received), whether or not the
	// receiver had read it yet: what crossed the path then, not when a
	// receiver a busy machine left unscheduled got round to reading it.
	Bytes    int64
	Duration time.Duration // the measured window
	Goodput  float64       // bits per second = Bytes*8/Duration
	SegsOut  uint64        // TCP segments the sender sent (tcpi_segs_out), over the whole transfer
	Retrans  uint64        // segments retransmitted (tcpi_total_retrans), over the whole transfer
	// Samples is the goodput (bits/s) of each interval of the measured
	// window, in order: sample i covers about [Start+i*Interval,
	// Start+(i+1)*Interval) and is computed over the time that actually
	// passed between its two readings. A last, shorter interval is left
	// out.
	Samples []float64
	// Stalls is, for each sample, how long of its interval the sender
	// stood still for want of the machine: with nothing left to send
	// because its writer was not running, or with the receiver's
	// window closed because its reader was not (TCP_INFO's chrono
	// statistics: the time neither busy nor limited by the send
	// buffer). A limit that holds the sender back keeps it busy or
	// limited by its send buffer, never stalled.
	Stalls []time.Duration
	// Stalled is the sum of Stalls over the whole window, the last,
	// shorter interval included.
	Stalled  time.Duration
	Start    time.Time     // start of the measured window (the end of the warm-up)
	Interval time.Duration // the sampling interval

	MSS     uint32        // sender's MSS (tcpi_snd_mss): payload bytes of a full segment
	PathMTU uint32        // sender's path MTU (tcpi_pmtu): IP bytes of a full segment
	RTT     time.Duration // sender's smoothed round-trip time at the end (tcpi_rtt)
}

// RetransRatio is Retrans/SegsOut, or 0 if nothing was sent.
func (r BulkResult) RetransRatio() float64 {
	if r.SegsOut == 0 {
		return 0
	}
	return float64(r.Retrans) / float64(r.SegsOut)
}

// L2Rate is Goodput converted to the rate of the Ethernet frames that
// carried it, headers included (no preamble or FCS), assuming full-size
// segments: the bytes a qdisc such as HTB or TBF counts (skb->len, and for
// a GSO packet the headers of every segment). Each MSS bytes of payload
// travel in PathMTU + 14 bytes. It returns 0 if the sizes are unknown.
func (r BulkResult) L2Rate() float64 {
	if r.MSS == 0 || r.PathMTU == 0 {
		return 0
	}
	return r.Goodput * float64(r.PathMTU+14) / float64(r.MSS)
}

// Mean is the mean goodput (bits/s) of the samples whose intervals lie
// within [from, from+d), and how many there were: after a change made at
// c, Mean(c.Add(time.Second), time.Second) is what "takes effect within
// one second" must hold for.
func (r BulkResult) Mean(from time.Time, d time.Duration) (float64, int) {
	mean, _, n := r.Window(from, d)
	return mean, n
}

// Window is Mean, with the sender's stalls (Stalls) in the same samples.
func (r BulkResult) Window(from time.Time, d time.Duration) (mean float64, stalled time.Duration, n int) {
	var sum float64
	for i, s := range r.Samples {
		st := r.Start.Add(time.Duration(i) * r.Interval)
		if !st.Before(from) && !st.Add(r.Interval).After(from.Add(d)) {
			sum += s
			if i < len(r.Stalls) {
				stalled += r.Stalls[i]
			}
			n++
		}
	}
	if n == 0 {
		return 0, 0, 0
	}
	return sum / float64(n), stalled, n
}

// BulkTCP sends as fast as it can over one TCP connection from a socket in
// from (bound to the source address local, or the one routing picks if
// local is the zero Addr) to a receiver it starts in to, listening on addr
// (port 0 picks a free port). The first warmup of the transfer (slow
// start, queues filling) is excluded; the result covers the d after it,
// sampled every interval. Sender and receiver are torn down before it
// returns.
func BulkTCP(from *NS, local netip.Addr, to *NS, addr netip.AddrPort, warmup, d, interval time.Duration) (BulkResult, error) {
	b, err := StartBulkTCP(from, local, to, addr, warmup, interval)
	if err != nil {
		return BulkResult{}, err
	}
	time.Sleep(d)
	return b.Stop()
}

// Bulk is a bulk TCP transfer running in the background, started by
// StartBulkTCP; the caller may change the path (a qdisc, a limit) while it
// runs and watch the effect in Samples. Stop ends it.
type Bulk struct {
	snd, rcv *net.TCPConn
	interval time.Duration
	start    time.Time // start of the measured window

	stopping atomic.Bool
	base     meter                 // at start
	probe    func() (int64, error) // BulkOptions.Probe

	mu      sync.Mutex
	samples []float64
	stalls  []time.Duration
	probes  []int64 // the probe's readings: at start, then with each sample
	last    meter   // at the last sample
	err     error   // first failure of the sender or receiver

	quit chan struct{} // closed by Stop to end the sampler
	wg   sync.WaitGroup

	once   sync.Once
	result BulkResult
	resErr error
}

// BulkOptions are the choices StartBulkTCPWith adds to StartBulkTCP's.
type BulkOptions struct {
	// Congestion is the sender's congestion control (TCP_CONGESTION:
	// "cubic", "reno", "bbr"), or "" for the namespace's default.
	Congestion string
	// Probe, if set, is read at the start of the measured window and
	// with each sample, right after the transfer's counters: something
	// of the path the transfer crosses, such as the backlog of a queue
	// on it (Bulk.Probes).
	Probe func() (int64, error)
}

// StartBulkTCP starts the transfer BulkTCP makes and returns once warmup
// has passed: the measured window starts then. Samples reports it while it
// runs; Stop ends it.
func StartBulkTCP(from *NS, local netip.Addr, to *NS, addr netip.AddrPort, warmup, interval time.Duration) (*Bulk, error) {
	return StartBulkTCPWith(from, local, to, addr, warmup, interval, BulkOptions{})
}

// StartBulkTCPWith is StartBulkTCP with options.
func StartBulkTCPWith(from *NS, local netip.Addr, to *NS, addr netip.AddrPort, warmup, interval time.Duration, o BulkOptions) (*Bulk, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("bulk transfer: interval %v, want > 0", interval)
	}
	if local.IsValid() && local.Unmap().Is4() != addr.Addr().Unmap().Is4() {
		return nil, fmt.Errorf("bulk transfer: source %s and destination %s: address families differ", local, addr)
	}
	snd, rcv, err := bulkConnect(from, local, to, addr)
	if err != nil {
		return nil, err
	}
	if o.Congestion != "" {
		if err := setCongestion(snd, o.Congestion); err != nil {
			snd.Close()
			rcv.Close()
			return nil, fmt.Errorf("bulk sender: congestion control %q: %w", o.Congestion, err)
		}
	}
	b := &Bulk{snd: snd, rcv: rcv, interval: interval, probe: o.Probe, quit: make(chan struct{})}
	b.wg.Add(2)
	go b.send()
	go b.receive()

	time.Sleep(warmup)
	m, err := b.read()
	if err != nil {
		_, serr := b.Stop()
		return nil, errors.Join(err, serr)
	}
	b.start, b.base, b.last = m.at, m, m
	if b.probe != nil {
		p, err := b.probe()
		if err != nil {
			_, serr := b.Stop()
			return nil, errors.Join(fmt.Errorf("bulk probe: %w", err), serr)
		}
		b.probes = append(b.probes, p)
	}
	b.wg.Add(1)
	go b.sample()
	if err := b.failure(); err != nil {
		_, serr := b.Stop()
		return nil, errors.Join(err, serr)
	}
	return b, nil
}

// bulkConnect listens in to, dials from from and returns both ends of the
// one connection.
func bulkConnect(from *NS, local netip.Addr, to *NS, addr netip.AddrPort) (snd, rcv *net.TCPConn, err error) {
	var ln *net.TCPListener
	err = to.Do(func() error {
		l, err := net.Listen(network("tcp", addr), addr.String())
		if err != nil {
			return err
		}
		ln = l.(*net.TCPListener)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bulk receiver: listen on %s in %s: %w", addr, to.Name, err)
	}
	defer ln.Close() // one connection is all it takes
	dst := ln.Addr().(*net.TCPAddr).AddrPort()
	dst = netip.AddrPortFrom(addr.Addr(), dst.Port())

	err = from.Do(func() error {
		d := net.Dialer{Timeout: bulkDialTimeout}
		if local.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
		}
		c, err := d.Dial(network("tcp", dst), dst.String())
		if err != nil {
			return err
		}
		snd = c.(*net.TCPConn)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("bulk sender: connect from %s to %s: %w", from.Name, dst, err)
	}
	want := snd.LocalAddr().(*net.TCPAddr).AddrPort()

	ln.SetDeadline(time.Now().Add(bulkDialTimeout))
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			snd.Close()
			return nil, nil, fmt.Errorf("bulk receiver: accept on %s in %s: %w", dst, to.Name, err)
		}
		// Through NAT the peer may show another address; the port of a
		// fresh namespace's only connection is enough to tell.
		if c.RemoteAddr().(*net.TCPAddr).AddrPort().Port() == want.Port() {
			return snd, c, nil
		}
		c.Close()
	}
}

// send writes until the connection is closed.
func (b *Bulk) send() {
	defer b.wg.Done()
	buf := make([]byte, bulkBufSize)
	for {
		if _, err := b.snd.Write(buf); err != nil {
			if !b.stopping.Load() {
				b.fail(fmt.Errorf("bulk sender: write: %w", err))
			}
			return
		}
	}
}

// receive reads and counts until the connection ends.
func (b *Bulk) receive() {
	defer b.wg.Done()
	buf := make([]byte, bulkBufSize)
	for {
		_, err := b.rcv.Read(buf)
		if err != nil {
			if !b.stopping.Load() {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				b.fail(fmt.Errorf("bulk receiver: read: %w", err))
			}
			return
		}
	}
}

// sample records the goodput of each interval of the measured window.
// It sleeps until each nominal boundary (rather than using a Ticker, which
// drops ticks when late) so that sample i stays the i-th interval.
func (b *Bulk) sample() {
	defer b.wg.Done()
	for i := 1; ; i++ {
		t := time.NewTimer(time.Until(b.start.Add(time.Duration(i) * b.interval)))
		select {
		case <-b.quit:
			t.Stop()
			return
		case <-t.C:
		}
		m, err := b.read()
		var p int64
		if err == nil && b.probe != nil {
			if p, err = b.probe(); err != nil {
				err = fmt.Errorf("bulk probe: %w", err)
			}
		}
		if err != nil {
			if !b.stopping.Load() {
				b.fail(err)
			}
			return
		}
		b.mu.Lock()
		rate, stalled := m.since(b.last)
		b.samples = append(b.samples, rate)
		b.stalls = append(b.stalls, stalled)
		if b.probe != nil {
			b.probes = append(b.probes, p)
		}
		b.last = m
		b.mu.Unlock()
	}
}

// meter is one reading of a transfer's kernel counters.
type meter struct {
	at       time.Time
	received uint64        // receiver's tcpi_bytes_received
	moving   time.Duration // sender's tcpi_busy_time + tcpi_sndbuf_limited
}

// read reads the transfer's meter now.
func (b *Bulk) read() (meter, error) {
	ri, err := tcpInfo(b.rcv)
	if err != nil {
		return meter{}, fmt.Errorf("bulk receiver: read TCP_INFO: %w", err)
	}
	si, err := tcpInfo(b.snd)
	if err != nil {
		return meter{}, fmt.Errorf("bulk sender: read TCP_INFO: %w", err)
	}
	return meter{
		at:       time.Now(),
		received: ri.Bytes_received,
		moving:   time.Duration(si.Busy_time+si.Sndbuf_limited) * time.Microsecond,
	}, nil
}

// since is the goodput (bits/s) from p to m, and how long of it the
// sender stood still.
func (m meter) since(p meter) (float64, time.Duration) {
	d := m.at.Sub(p.at)
	if d <= 0 {
		return 0, 0
	}
	stalled := max(d-(m.moving-p.moving), 0)
	return float64(m.received-p.received) * 8 / d.Seconds(), stalled
}

func (b *Bulk) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
}

func (b *Bulk) failure() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// Samples returns the per-interval goodput (bits/s) measured so far, as in
// BulkResult.Samples.
func (b *Bulk) Samples() []float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]float64(nil), b.samples...)
}

// Probes returns the readings of BulkOptions.Probe so far: the first at
// Start, then one with each sample, so that sample i lies between
// readings i and i+1. It is empty without a probe.
func (b *Bulk) Probes() []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int64(nil), b.probes...)
}

// SenderInfo returns the sender's TCP_INFO now: its smoothed round-trip
// time (Rtt, µs), segments sent and retransmitted so far (Segs_out,
// Total_retrans), and the like.
func (b *Bulk) SenderInfo() (*unix.TCPInfo, error) {
	info, err := tcpInfo(b.snd)
	if err != nil {
		return nil, fmt.Errorf("bulk sender: read TCP_INFO: %w", err)
	}
	return info, nil
}

// Start returns the start of the measured window.
func (b *Bulk) Start() time.Time { return b.start }

// Mean is BulkResult.Mean over the samples so far.
func (b *Bulk) Mean(from time.Time, d time.Duration) (float64, int) {
	mean, _, n := b.Window(from, d)
	return mean, n
}

// Window is BulkResult.Window over the samples so far.
func (b *Bulk) Window(from time.Time, d time.Duration) (float64, time.Duration, int) {
	b.mu.Lock()
	r := BulkResult{Samples: append([]float64(nil), b.samples...), Stalls: append([]time.Duration(nil), b.stalls...), Start: b.start, Interval: b.interval}
	b.mu.Unlock()
	return r.Window(from, d)
}

// Stop ends the transfer, tears sender and receiver down and returns what
// was measured; a failure of either end during the transfer is returned
// as the error, with what was measured up to then. Later calls return the
// same.
func (b *Bulk) Stop() (BulkResult, error) {
	b.once.Do(func() { b.result, b.resErr = b.stop() })
	return b.result, b.resErr
}

func (b *Bulk) stop() (BulkResult, error) {
	end, merr := b.read()
	b.stopping.Store(true)
	info, ierr := tcpInfo(b.snd)
	// An abort (RST) rather than a FIN: nothing left queued behind a
	// slow limit keeps the namespaces busy after the test.
	b.snd.SetLinger(0)
	b.snd.Close()
	b.rcv.Close()
	close(b.quit)
	b.wg.Wait()

	r := BulkResult{
		Bytes:    int64(end.received - b.base.received),
		Duration: end.at.Sub(b.start),
		Start:    b.start,
		Interval: b.interval,
	}
	b.mu.Lock()
	r.Samples = append([]float64(nil), b.samples...)
	r.Stalls = append([]time.Duration(nil), b.stalls...)
	b.mu.Unlock()
	if merr == nil {
		r.Goodput, r.Stalled = end.since(b.base)
	}
	if info != nil {
		r.SegsOut = uint64(info.Segs_out)
		r.Retrans = uint64(info.Total_retrans)
		r.MSS = info.Snd_mss
		r.PathMTU = info.Pmtu
		r.RTT = time.Duration(info.Rtt) * time.Microsecond
	}
	if ierr != nil {
		ierr = fmt.Errorf("bulk sender: read TCP_INFO: %w", ierr)
	}
	return r, errors.Join(b.failure(), merr, ierr)
}

// setCongestion sets c's congestion control.
func setCongestion(c *net.TCPConn, name string) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, name)
	})
	return errors.Join(err, serr)
}

// tcpInfo reads TCP_INFO from c.
func tcpInfo(c *net.TCPConn) (*unix.TCPInfo, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	var ierr error
	err = rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	return info, errors.Join(err, ierr)
}

// FloorMargin is how many times a rate a path must carry unshaped, in the
// same run, before a transfer through it may be held to that rate from
// below.
const FloorMargin = 2

// FloorJudged reports whether a floor of want bit/s can be asked of a
// transfer over a path whose unshaped capacity, measured with the same
// namespaces, links, generator and duration in the same run, is capacity
// bit/s: only when want is at most 1/FloorMargin of it. A busy machine
// may not reach a rate near its capacity, shaped or not, and a rate it
// cannot reach says nothing about a limit. A ceiling needs no capacity:
// assert it always.
func FloorJudged(want, capacity float64) bool {
	return want > 0 && want*FloorMargin <= capacity
}
