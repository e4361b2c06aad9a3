package testutil

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// FloodResult is what one UDP flood counted.
type FloodResult struct {
	Sent     int // datagrams the sender wrote without an error
	Received int // datagrams the receiver read
	// Gaps are the times, of floodGap or more, between the sender's
	// attempts to write: a busy machine's scheduler kept it from
	// sending then. A limit that refills for less than a gap lets
	// through less than its rate over the whole flood.
	Gaps []time.Duration
}

// Missed is how many datagrams a policer of rate a second with a burst
// of burst datagrams would have let through had the sender not paused:
// each gap beyond the time the burst takes to refill, at the rate.
func (r FloodResult) Missed(rate, burst float64) float64 {
	var missed float64
	refill := time.Duration(burst / rate * float64(time.Second))
	for _, g := range r.Gaps {
		if g > refill {
			missed += (g - refill).Seconds() * rate
		}
	}
	return missed
}

// floodGap is the shortest pause of the sender that FloodResult.Gaps
// records.
const floodGap = time.Millisecond

// floodDrain is how long the receiver keeps reading after the sender
// stops, for what is still on its way.
const floodDrain = 200 * time.Millisecond

// floodRcvBuf is the receiver's socket buffer: room for every datagram a
// limit of thousands a second lets through in seconds, so that a receiver
// a busy machine leaves unscheduled for a while loses none of them. What
// did not arrive was dropped on the way.
const floodRcvBuf = 32 << 20

// forceReadBuffer sets c's receive buffer to n bytes, past
// net.core.rmem_max (SO_RCVBUFFORCE, which needs CAP_NET_ADMIN).
func forceReadBuffer(c *net.UDPConn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("SO_RCVBUFFORCE %d: %w", n, serr)
	}
	return nil
}

// FloodUDP sends small UDP datagrams as fast as it can for d, from a
// socket in from (bound to local, or the address routing picks if local
// is the zero Addr) to a receiver it starts in to on addr, and counts what
// was sent and what arrived.
func FloodUDP(from *NS, local netip.Addr, to *NS, addr netip.AddrPort, d time.Duration) (FloodResult, error) {
	var rcv, snd *net.UDPConn
	err := to.Do(func() error {
		c, err := net.ListenUDP(network("udp", addr), net.UDPAddrFromAddrPort(addr))
		rcv = c
		return err
	})
	if err != nil {
		return FloodResult{}, fmt.Errorf("flood receiver: listen on %s in %s: %w", addr, to.Name, err)
	}
	defer rcv.Close()
	if err := forceReadBuffer(rcv, floodRcvBuf); err != nil {
		return FloodResult{}, fmt.Errorf("flood receiver: %w", err)
	}
	err = from.Do(func() error {
		var la *net.UDPAddr
		if local.IsValid() {
			la = net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
		}
		c, err := net.DialUDP(network("udp", addr), la, net.UDPAddrFromAddrPort(addr))
		snd = c
		return err
	})
	if err != nil {
		return FloodResult{}, fmt.Errorf("flood sender: from %s to %s: %w", from.Name, addr, err)
	}
	defer snd.Close()

	var received atomic.Int64
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := rcv.ReadFromUDP(buf); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					err = nil
				}
				done <- err
				return
			}
			received.Add(1)
		}
	}()

	var res FloodResult
	msg := make([]byte, 64)
	last := time.Now()
	for end := last.Add(d); last.Before(end); {
		// A datagram the stack refuses (a full queue) is not sent.
		if _, err := snd.Write(msg); err == nil {
			res.Sent++
		}
		now := time.Now()
		if g := now.Sub(last); g >= floodGap {
			res.Gaps = append(res.Gaps, g)
		}
		last = now
	}
	rcv.SetReadDeadline(time.Now().Add(floodDrain))
	err = <-done
	res.Received = int(received.Load())
	if err != nil {
		return res, fmt.Errorf("flood receiver: %w", err)
	}
	return res, nil
}
