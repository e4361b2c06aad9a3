package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// bulkMarker, as a connection's first byte, makes the backend's TCP
// server swallow the stream and answer with its length; any other first
// byte is echoed, and the server closes.
const bulkMarker = 'B'

// Every request and every server below uses blocking system calls on a
// thread of its own, so that a wake-up is the kernel's, not the Go
// scheduler's: what is timed is the network path, with as little else
// as a real client and server add.

// backends are the echo servers in the backend namespace. They listen on
// the wildcard address, so they answer on every endpoint address.
type backends struct {
	tcp, udp int // sockets
	wg       sync.WaitGroup
}

func startBackends(ns string) (*backends, error) {
	b := &backends{tcp: -1, udp: -1}
	err := inNS(ns, func() error {
		var err error
		if b.tcp, err = listenSocket(unix.SOCK_STREAM, tcpTargetPort); err != nil {
			return err
		}
		if err := unix.Listen(b.tcp, 1024); err != nil {
			return err
		}
		if b.udp, err = listenSocket(unix.SOCK_DGRAM, udpTargetPort); err != nil {
			return err
		}
		// A reply must leave from the address the request came to (an
		// endpoint's, not the namespace's own): ask for it with each request.
		return unix.SetsockoptInt(b.udp, unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	})
	if err != nil {
		b.close()
		return nil, fmt.Errorf("backend servers: %w", err)
	}
	b.wg.Add(2)
	go func() {
		defer b.wg.Done()
		runtime.LockOSThread()
		pinThread(serverCPU)
		for {
			c, _, err := unix.Accept4(b.tcp, unix.SOCK_CLOEXEC)
			if err == unix.EINTR || err == unix.ECONNABORTED {
				continue
			}
			if err != nil {
				return
			}
			serveTCP(c)
		}
	}()
	go func() {
		defer b.wg.Done()
		runtime.LockOSThread()
		pinThread(serverCPU)
		buf := make([]byte, 2048)
		oob := make([]byte, 128)
		for {
			n, oobn, _, from, err := unix.Recvmsg(b.udp, buf, oob, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil || from == nil {
				return
			}
			var reply []byte
			if dst, ok := pktinfoDst(oob[:oobn]); ok {
				reply = unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: dst})
			}
			_ = unix.Sendmsg(b.udp, buf[:n], reply, from, 0)
		}
	}()
	return b, nil
}

// Client and servers share one CPU, the same in every run: whether two
// threads share a CPU changes a request's latency by more than the
// differences measured here, and sharing one gives the steadiest figures.
var clientCPU, serverCPU = 0, 0

// bulkSenderCPU is the other CPU, where there is one.
var bulkSenderCPU = min(1, runtime.NumCPU()-1)

// pinThread binds the calling thread, which must be locked, to cpu.
func pinThread(cpu int) {
	var set unix.CPUSet
	set.Set(cpu)
	_ = unix.SchedSetaffinity(0, &set)
}

// unpinThread lets the calling thread run anywhere again.
func unpinThread() {
	var set unix.CPUSet
	for i := range runtime.NumCPU() {
		set.Set(i)
	}
	_ = unix.SchedSetaffinity(0, &set)
}

func listenSocket(typ, port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// pktinfoDst is the destination address of a datagram, from its
// IP_PKTINFO control message.
func pktinfoDst(oob []byte) ([4]byte, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return [4]byte{}, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo {
			var dst [4]byte
			copy(dst[:], m.Data[8:12]) // struct in_pktinfo: ifindex, spec_dst, addr
			return dst, true
		}
	}
	return [4]byte{}, false
}

// serveTCP answers one connection and closes it.
func serveTCP(fd int) {
	defer unix.Close(fd)
	setTimeouts(fd, 10*time.Second)
	buf := make([]byte, 256<<10)
	n, err := unix.Read(fd, buf[:1])
	if err != nil || n != 1 {
		return
	}
	if buf[0] != bulkMarker {
		_, _ = unix.Write(fd, buf[:1])
		return
	}
	var total uint64
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		if n == 0 {
			break
		}
		total += uint64(n)
	}
	_, _ = unix.Write(fd, binary.BigEndian.AppendUint64(nil, total))
}

func setTimeouts(fd int, d time.Duration) {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
}

// close shuts the servers down: shutdown wakes the threads blocked in
// accept and recvmsg.
func (b *backends) close() {
	for _, fd := range []int{b.tcp, b.udp} {
		if fd >= 0 {
			_ = unix.Shutdown(fd, unix.SHUT_RDWR)
		}
	}
	b.wg.Wait()
	for _, fd := range []int{b.tcp, b.udp} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// latency is a sample's percentiles, in microseconds.
type latency struct {
	P50    float64 `json:"p50_us"`
	P99    float64 `json:"p99_us"`
	Count  int     `json:"count"`
	Errors int     `json:"errors"`
}

func summarize(samples []time.Duration, errs int) latency {
	l := latency{Count: len(samples), Errors: errs}
	if len(samples) == 0 {
		return l
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	l.P50 = micros(percentile(s, 0.50))
	l.P99 = micros(percentile(s, 0.99))
	return l
}

// percentile is the nearest-rank percentile of sorted s.
func percentile(s []time.Duration, p float64) time.Duration {
	rank := int(p*float64(len(s)) + 0.999999999) // ceil
	rank = max(1, min(rank, len(s)))
	return s[rank-1]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// tcpRequest opens a connection, sends one byte and waits for its echo:
// the cost of a new connection through the node. The server closes first,
// so the client's ports do not linger in TIME_WAIT.
func tcpRequest(dst netip.AddrPort) (time.Duration, error) {
	return request(unix.SOCK_STREAM, dst, 2*time.Second)
}

// udpRequest sends one datagram from a new socket and waits for the
// reply, as a DNS client does: each request is a new flow.
func udpRequest(dst netip.AddrPort) (time.Duration, error) {
	return request(unix.SOCK_DGRAM, dst, time.Second)
}

// requestBuf is the one byte every request sends and receives; requests
// run one at a time.
var requestBuf = []byte{'x'}

// request returns how long it took, or, on error, how long it waited
// with the error.
func request(typ int, dst netip.AddrPort, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	d, err := exchange(typ, dst, timeout)
	if err != nil {
		return time.Since(start), err
	}
	return d, nil
}

func exchange(typ int, dst netip.AddrPort, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	setTimeouts(fd, timeout) // SO_SNDTIMEO bounds connect too
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}); err != nil {
		return 0, fmt.Errorf("connect %s: %w", dst, err)
	}
	b := requestBuf
	if _, err := unix.Write(fd, b); err != nil {
		return 0, fmt.Errorf("send to %s: %w", dst, err)
	}
	if n, err := unix.Read(fd, b); err != nil || n != 1 {
		return 0, fmt.Errorf("reply from %s: %d bytes, %v", dst, n, err)
	}
	return time.Since(start), nil
}

// measure makes count requests to each of the destination choices in
// nexts, from the client namespace, one at a time and in turn, so that
// the choices share whatever the machine was doing meanwhile.
func measure(clientNS string, count int, req func(netip.AddrPort) (time.Duration, error), nexts ...func() netip.AddrPort) ([]latency, error) {
	samples := make([][]time.Duration, len(nexts))
	for i := range samples {
		samples[i] = make([]time.Duration, 0, count)
	}
	errs := make([]int, len(nexts))
	var lastErr error
	defer quietGC()()
	err := inNS(clientNS, func() error {
		pinThread(clientCPU)
		defer unpinThread()
		for range count {
			for i, next := range nexts {
				d, err := req(next())
				if err != nil {
					// A failed request counts as long as it waited, so
					// that losses show in the high percentiles.
					errs[i]++
					lastErr = err
				}
				samples[i] = append(samples[i], d)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]latency, len(nexts))
	for i := range nexts {
		out[i] = summarize(samples[i], errs[i])
		// A lost request or two on a busy machine is noise; more is a
		// broken path, and its percentiles would mean nothing.
		if errs[i] > count/100 {
			return out, fmt.Errorf("%d of %d requests failed, the last: %w", errs[i], count, lastErr)
		}
	}
	return out, nil
}

// bulkTCP streams to dst for d and returns the goodput the backend
// counted, in Gbit/s. The sender runs on the CPU the servers do not, so
// that sender and receiver each have one, the same in every run.
func bulkTCP(clientNS string, dst netip.AddrPort, d time.Duration) (float64, error) {
	var gbps float64
	defer quietGC()()
	err := inNS(clientNS, func() error {
		pinThread(bulkSenderCPU)
		defer unpinThread()
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		setTimeouts(fd, 10*time.Second)
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}); err != nil {
			return fmt.Errorf("connect %s: %w", dst, err)
		}
		buf := make([]byte, 256<<10)
		buf[0] = bulkMarker
		start := time.Now()
		for time.Since(start) < d {
			if _, err := unix.Write(fd, buf); err != nil && err != unix.EINTR {
				return fmt.Errorf("send: %w", err)
			}
			buf[0] = 0
		}
		if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
			return err
		}
		reply := make([]byte, 8)
		if n, err := unix.Read(fd, reply); err != nil || n != 8 {
			return fmt.Errorf("read the byte count: %d bytes, %v", n, err)
		}
		elapsed := time.Since(start)
		got := binary.BigEndian.Uint64(reply)
		if got == 0 {
			return errors.New("the backend received nothing")
		}
		gbps = float64(got) * 8 / elapsed.Seconds() / 1e9
		return nil
	})
	return gbps, err
}

// quietGC collects now and then holds the garbage collector off until the
// returned function runs: this binary carries all of kube-proxy, whose
// globals make each collection scan megabytes, on the CPUs the
// measurement runs on.
func quietGC() (restore func()) {
	runtime.GC()
	old := debug.SetGCPercent(-1)
	return func() { debug.SetGCPercent(old) }
}

// picker chooses destinations for one protocol: at random among the
// services, or always the first or the last.
type picker struct {
	dests []netip.AddrPort // in rule order
	rng   *rand.Rand
}

func (p picker) random() netip.AddrPort { return p.dests[p.rng.IntN(len(p.dests))] }
func (p picker) first() netip.AddrPort  { return p.dests[0] }
func (p picker) last() netip.AddrPort   { return p.dests[len(p.dests)-1] }
