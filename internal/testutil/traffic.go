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
	"sync/atomic"
	"syscall"
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
	serveTCP(t, ns, addr, func(c net.Conn) {
		if _, err := io.WriteString(c, name+"\n"); err != nil {
			return
		}
		io.Copy(c, c)
	})
}

// ServeTCPClosing is ServeTCP for connections the server closes first:
// each receives name and a newline, then the server's FIN. The client's
// end then closes passively and leaves no TIME_WAIT, so its port can
// connect again at once, after a FIN each way.
func ServeTCPClosing(t testing.TB, ns *NS, addr netip.AddrPort, name string) {
	t.Helper()
	serveTCP(t, ns, addr, func(c net.Conn) { io.WriteString(c, name+"\n") })
}

// serveTCP listens on addr inside ns until the test ends and calls handle
// with each connection, which it closes when handle returns.
func serveTCP(t testing.TB, ns *NS, addr netip.AddrPort, handle func(net.Conn)) {
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
				handle(c)
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
	return DialTCPFrom(ns, netip.AddrPort{}, addr, timeout)
}

// DialTCPFrom is DialTCP from the local address local: a source address
// of ns, or the zero Addr for the one routing picks, and a source port,
// or 0 for a fresh one.
func DialTCPFrom(ns *NS, local, addr netip.AddrPort, timeout time.Duration) (*Conn, error) {
	var c *Conn
	err := ns.Do(func() (err error) {
		c, err = dialTCP(local, addr, timeout)
		return err
	})
	return c, err
}

// dialTCP connects from the current thread's namespace.
func dialTCP(local, addr netip.AddrPort, timeout time.Duration) (*Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if local.Addr().IsValid() || local.Port() != 0 {
		d.LocalAddr = net.TCPAddrFromAddrPort(local)
	}
	c, err := d.Dial(network("tcp", addr), addr.String())
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

// Abort closes c with a reset (SO_LINGER 0) instead of a FIN: the client
// end leaves no TIME_WAIT behind, so its address and port can connect to
// the same destination again at once.
func (c *Conn) Abort() error {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	return c.Close()
}

// AskTCPFrom opens one connection to addr (IPv4 or IPv6) from each of the
// local addresses (see DialTCPFrom; typically one address with many
// chosen ports) inside ns, workers connections at a time, and returns the
// name of the backend that answered each, in the order of locals. Each
// connection is aborted (see Conn.Abort) once it has the name, so the same
// source ports can ask again straight away. It stops at the first error.
//
// It enters the namespace once per worker rather than once per
// connection: thousands of connections take a second or two.
func AskTCPFrom(ns *NS, locals []netip.AddrPort, addr netip.AddrPort, timeout time.Duration, workers int) ([]string, error) {
	return askEach(ns, locals, addr, workers, func(local netip.AddrPort) (string, error) {
		c, err := dialTCP(local, addr, timeout)
		if err != nil {
			return "", err
		}
		c.Abort()
		return c.Server, nil
	})
}

// AskUDPFromEach is AskTCPFrom for UDP: from each of locals it sends one
// datagram to addr from a socket of its own (see AskUDPFrom) and returns
// the answers, in the order of locals. A closed UDP socket leaves nothing
// behind, so the same source ports can ask again straight away.
func AskUDPFromEach(ns *NS, locals []netip.AddrPort, addr netip.AddrPort, timeout time.Duration, workers int) ([]string, error) {
	return askEach(ns, locals, addr, workers, func(local netip.AddrPort) (string, error) {
		return askUDP(local, addr, timeout)
	})
}

// askEach calls ask for each of locals inside ns, workers calls at a time,
// and returns the answers in the order of locals. It stops at the first
// error.
func askEach(ns *NS, locals []netip.AddrPort, addr netip.AddrPort, workers int, ask func(local netip.AddrPort) (string, error)) ([]string, error) {
	names := make([]string, len(locals))
	workers = max(1, min(workers, len(locals)))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = ns.Do(func() error {
				for i := w; i < len(locals) && !failed.Load(); i += workers {
					name, err := ask(locals[i])
					if err != nil {
						failed.Store(true)
						return fmt.Errorf("from %s to %s: %w", locals[i], addr, err)
					}
					names[i] = name
				}
				return nil
			})
		}()
	}
	wg.Wait()
	return names, errors.Join(errs...)
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
	return AskUDPFrom(ns, netip.AddrPort{}, addr, timeout)
}

// AskUDPFrom is AskUDP from the local address local: a source address of
// ns, or the zero Addr for any, and a source port, or 0 for a fresh one.
func AskUDPFrom(ns *NS, local, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var name string
	err := ns.Do(func() (err error) {
		name, err = askUDP(local, addr, timeout)
		return err
	})
	return name, err
}

// askUDP is AskUDPFrom from the current thread's namespace.
func askUDP(local, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var laddr *net.UDPAddr
	if local.Addr().IsValid() || local.Port() != 0 {
		laddr = net.UDPAddrFromAddrPort(local)
	}
	c, err := net.ListenUDP(network("udp", addr), laddr)
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

// AskUDPConnected is AskUDPFrom from a socket connected to addr: the
// kernel takes answers from addr only, and reports an ICMP or ICMPv6 port
// unreachable for the datagram as an error that ErrRefused recognises,
// where an unconnected socket would wait for its timeout.
func AskUDPConnected(ns *NS, local, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var laddr *net.UDPAddr
	if local.Addr().IsValid() || local.Port() != 0 {
		laddr = net.UDPAddrFromAddrPort(local)
	}
	var c *net.UDPConn
	err := ns.Do(func() (err error) {
		c, err = net.DialUDP(network("udp", addr), laddr, net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("?")); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// ErrRefused reports whether err is a refusal: a TCP reset in answer to a
// connection attempt, or an ICMP or ICMPv6 port unreachable.
func ErrRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}

// ErrTimeout reports whether err is a network timeout.
func ErrTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
