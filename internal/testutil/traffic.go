package testutil

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// network returns "tcp4" or "tcp6" (for base "tcp"; likewise "udp"),
// after addr's family: a socket of the other family must never serve or
// reach it by accident (an IPv6 socket would take IPv4 too, v4-mapped).
func network(base string, addr netip.AddrPort) string {
	if addr.Addr().Unmap().Is4() {
		return base + "4"
	}
	return base + "6"
}

// ServeTCP listens on addr (IPv4 or IPv6) inside ns until the test ends.
// Each connection first receives name and a newline, then gets back every
// byte it sends.
func ServeTCP(t testing.TB, ns *NS, addr netip.AddrPort, name string) {
	t.Helper()
	var ln net.Listener
	ns.MustDo(func() (err error) {
		ln, err = net.Listen(network("tcp", addr), addr.String())
		return err
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if _, err := io.WriteString(c, name+"\n"); err != nil {
					return
				}
				io.Copy(c, c)
			}()
		}
	}()
}

// ServeUDP listens on addr (IPv4 or IPv6) inside ns until the test ends
// and answers every datagram with name.
func ServeUDP(t testing.TB, ns *NS, addr netip.AddrPort, name string) {
	t.Helper()
	var pc net.PacketConn
	ns.MustDo(func() (err error) {
		pc, err = net.ListenPacket(network("udp", addr), addr.String())
		return err
	})
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(name), from)
		}
	}()
}

// Conn is a TCP connection made with DialTCP: it has read the server's name
// and can check that the connection still echoes.
type Conn struct {
	net.Conn
	Server string
	r      *bufio.Reader
}

// DialTCP connects from inside ns to addr (IPv4 or IPv6) and reads the
// serving backend's name.
func DialTCP(ns *NS, addr netip.AddrPort, timeout time.Duration) (*Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.DialTimeout(network("tcp", addr), addr.String(), timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read server name: %w", err)
	}
	c.SetDeadline(time.Time{})
	return &Conn{Conn: c, Server: strings.TrimSuffix(name, "\n"), r: r}, nil
}

// Echo sends msg and expects it back within timeout.
func (c *Conn) Echo(msg string, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg+"\n" {
		return fmt.Errorf("echo: sent %q, got %q", msg, got)
	}
	return nil
}

// AskTCP opens a connection to addr (IPv4 or IPv6) from inside ns and
// returns the name of the backend that answered.
func AskTCP(ns *NS, addr netip.AddrPort, timeout time.Duration) (string, error) {
	c, err := DialTCP(ns, addr, timeout)
	if err != nil {
		return "", err
	}
	c.Close()
	return c.Server, nil
}

// AskUDP sends one datagram to addr (IPv4 or IPv6) from a fresh socket
// inside ns (so from a fresh source port) and returns the answer, after
// checking it came from addr: the reply must carry the frontend's address,
// not the backend's.
func AskUDP(ns *NS, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var c *net.UDPConn
	err := ns.Do(func() (err error) {
		c, err = net.ListenUDP(network("udp", addr), nil)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.WriteToUDPAddrPort([]byte("?"), addr); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return "", err
	}
	if from.Addr().Unmap() != addr.Addr().Unmap() || from.Port() != addr.Port() {
		return "", fmt.Errorf("reply came from %s, want %s", from, addr)
	}
	return string(buf[:n]), nil
}

// ErrTimeout reports whether err is a network timeout.
func ErrTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
