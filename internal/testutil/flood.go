package testutil

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"
)

// FloodResult is what one UDP flood counted.
type FloodResult struct {
	Sent     int // datagrams the sender wrote without an error
	Received int // datagrams the receiver read
}

// floodDrain is how long the receiver keeps reading after the sender
// stops, for what is still on its way.
const floodDrain = 200 * time.Millisecond

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
	for end := time.Now().Add(d); time.Now().Before(end); {
		// A datagram the stack refuses (a full queue) is not sent.
		if _, err := snd.Write(msg); err == nil {
			res.Sent++
		}
	}
	rcv.SetReadDeadline(time.Now().Add(floodDrain))
	err = <-done
	res.Received = int(received.Load())
	if err != nil {
		return res, fmt.Errorf("flood receiver: %w", err)
	}
	return res, nil
}
