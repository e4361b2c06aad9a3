package policy

// Connection latency through network policy: one allowed client opening
// TCP connections, one after another, to a pod behind a forwarding node,
// with no filtering, with iptables holding one rule per allowed prefix,
// and (through xdplaneConnCase) with xdplane's policy, all in one run.
//
// Only a connection's first packet, the SYN, walks an iptables chain: the
// chain's first rule accepts every packet conntrack has already seen
// (ESTABLISHED, and every reply, SYN-ACK included), as the iptables
// modes of kube-router and Calico do. So a chain of n rules costs about n
// rule evaluations per connection, not per packet, and per-connection
// latency is where it shows. The allowed client's prefix is the chain's
// last rule: the worst case for a linear chain, where xdplane's lookup
// costs the same wherever the prefix sits. (kube-router and Calico put a
// policy's CIDRs in an ipset, matched by one rule through a hash; the
// chain here is iptables without one, as the issue asked for.)
//
// Both ends make blocking system calls on a thread of their own, rather
// than going through Go's netpoller, so that the figures are the kernel's
// path (connect, accept, one byte, close) and not goroutine wake-ups.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/internal/benchrand"
	"github.com/xdplane/xdplane/internal/testutil"
)

// xdplaneConnCase is the hook for the xdplane side of BenchmarkConnPolicy.
// When non-nil, BenchmarkConnPolicy also runs "xdplane/rules=<n>" for each
// rule count: it builds the topology, starts the server at dst (in
// tp.Backends[0]) and draws peers (the same as the iptables cases at the
// same count, the allowed client tp.ClientAddr last), then calls the hook,
// which must install a policy allowing TCP to dst from peers only on
// tp.NodeInterfaces[1] (the node's end of the pod's link) and then call
// measureConnLatency(b, tp.Client, dst). After it returns, the benchmark
// checks that the client still connects and that connOtherClient, which
// no peer covers, is dropped. The hook may report its install time as
// "install-ms", after measureConnLatency (b.Loop's first call drops
// metrics reported before it).
//
// bench_test.go sets it, in an init function.
var xdplaneConnCase func(b *testing.B, tp *testutil.LBTopology, peers []netip.Prefix, dst netip.AddrPort)

const (
	connBenchPort = 8080
	// connTimeout bounds every connection of a measurement and of the
	// positive checks; a SYN retransmit (after 1 s) fits in it.
	connTimeout = 5 * time.Second
	// connDropTimeout bounds the dial that must be dropped: it has to time
	// out, as a dropped SYN does, rather than be refused.
	connDropTimeout = 500 * time.Millisecond
	// connBenchChain is the chain installIptables fills; FORWARD jumps to
	// it.
	connBenchChain = "XDPLANE-CONNBENCH"
)

// connOtherClient is a second address of the client namespace that no
// rule allows: a dial from it must be dropped wherever policy is on.
var connOtherClient = netip.MustParseAddr("10.0.0.3")

// connRuleCounts are the rule counts measured: 10 and 10000, or 10 and
// 1000 with -short, so that CI's quick pass stays quick.
func connRuleCounts() []int {
	if testing.Short() {
		return []int{10, 1000}
	}
	return []int{10, 10000}
}

// iptablesVariants are the iptables commands measured. "iptables" is
// whatever the system's alternatives point at: on Debian 12 that is
// iptables-nft (iptables 1.8.9, rules in nf_tables, interpreted
// expression by expression). iptables-legacy (x_tables) works on these
// machines' kernel too (CONFIG_IP_NF_IPTABLES_LEGACY=y), and many
// clusters still run it, so it is measured beside the default.
var iptablesVariants = []string{"iptables", "iptables-legacy"}

// BenchmarkConnPolicy reports the mean time per TCP connection ("ns/conn",
// with its median and 99th percentile) from an allowed client to a pod
// through a forwarding node: with no filtering ("none", the baseline),
// with an iptables chain of one rule per allowed prefix (and the time
// iptables-restore took to load it, "install-ms"), and with xdplane's
// policy when xdplaneConnCase is set. Each case builds its own topology,
// once: measureConnLatency uses b.Loop, so the framework calls each case
// once per -count.
func BenchmarkConnPolicy(b *testing.B) {
	testutil.RequireRoot(b)
	benchrand.Seed(b) // prints the run's seed before any result
	counts := connRuleCounts()

	b.Run("none", func(b *testing.B) {
		tp, dst := newConnTopology(b)
		// Nothing filters: the address every policy case drops connects
		// here, so a drop there is the policy's doing.
		checkConnPolicy(b, tp, dst, true)
		measureConnLatency(b, tp.Client, dst)
	})

	for _, ipt := range iptablesVariants {
		for _, n := range counts {
			b.Run(fmt.Sprintf("%s/rules=%d", ipt, n), func(b *testing.B) {
				requireIptables(b, ipt)
				tp, dst := newConnTopology(b)
				peers := connPeers(b, tp, n)
				start := time.Now()
				installIptablesWith(b, ipt, tp.Node, peers, dst)
				install := time.Since(start)
				checkConnPolicy(b, tp, dst, false)
				conns := measureConnLatency(b, tp.Client, dst)
				checkIptablesCounters(b, ipt, tp.Node, peers, conns)
				// After the loop: b.Loop's first call resets the timer,
				// which drops metrics reported before it.
				b.ReportMetric(install.Seconds()*1e3, "install-ms")
			})
		}
	}

	if xdplaneConnCase == nil {
		return
	}
	for _, n := range counts {
		b.Run(fmt.Sprintf("xdplane/rules=%d", n), func(b *testing.B) {
			tp, dst := newConnTopology(b)
			xdplaneConnCase(b, tp, connPeers(b, tp, n), dst)
			checkConnPolicy(b, tp, dst, false)
		})
	}
}

// newConnTopology builds a client and one pod behind a forwarding node
// (testutil.NewLBTopology), gives the client connOtherClient as a second
// address, and starts serveOneByte on the pod. It returns the server's
// address.
func newConnTopology(b *testing.B) (*testutil.LBTopology, netip.AddrPort) {
	b.Helper()
	tp := testutil.NewLBTopology(b, 1)
	// Same subnet as ClientAddr, added after it: a secondary address, so
	// routing keeps picking ClientAddr as the source of the measured
	// connections.
	tp.Client.AddAddr("eth0", netip.PrefixFrom(connOtherClient, 24))
	dst := netip.AddrPortFrom(tp.BackendAddrs[0], connBenchPort)
	serveOneByte(b, tp.Backends[0], dst)
	return tp, dst
}

// connPeers draws n allowed prefixes, the client's /32 last, from the
// run's seed and n: every variant at one count gets the same list.
func connPeers(b *testing.B, tp *testutil.LBTopology, n int) []netip.Prefix {
	rng := benchrand.New(b, "conn-peers/"+strconv.Itoa(n))
	return randomPeers(rng, n, netip.PrefixFrom(tp.ClientAddr, 32))
}

// checkConnPolicy checks, before or after a measurement, that the client's
// own address connects to dst, and that connOtherClient connects too if
// otherAllowed, or else is dropped: its dial times out, as a SYN that
// nothing answers does.
func checkConnPolicy(b *testing.B, tp *testutil.LBTopology, dst netip.AddrPort, otherAllowed bool) {
	b.Helper()
	c, err := testutil.DialTCPFrom(tp.Client, netip.AddrPortFrom(tp.ClientAddr, 0), dst, connTimeout)
	if err != nil {
		b.Fatalf("allowed client %s to %s: %v", tp.ClientAddr, dst, err)
	}
	c.Abort()

	c, err = testutil.DialTCPFrom(tp.Client, netip.AddrPortFrom(connOtherClient, 0), dst, connDropTimeout)
	switch {
	case otherAllowed && err != nil:
		b.Fatalf("%s to %s with no policy: %v", connOtherClient, dst, err)
	case otherAllowed:
		c.Abort()
	case err == nil:
		c.Abort()
		b.Fatalf("%s to %s connected; no rule allows it", connOtherClient, dst)
	case !testutil.ErrTimeout(err):
		b.Fatalf("%s to %s: %v; want a timeout (the SYN dropped)", connOtherClient, dst, err)
	}
}

// randomPeers returns n distinct prefixes: n-1 random IPv4 ones, half /32
// and half /24, with first octets from 11 to 99, so that none overlaps
// 10.0.0.0/8, where the test topologies live; then must (masked), LAST.
// Last is the worst case for a linear chain such as iptables', which
// evaluates every rule before the one that matches; a lookup (xdplane's
// LPM trie) costs the same wherever the prefix sits.
func randomPeers(rng *rand.Rand, n int, must netip.Prefix) []netip.Prefix {
	if n < 1 {
		panic(fmt.Sprintf("randomPeers: n = %d, want at least 1 (must is always in the list)", n))
	}
	must = must.Masked()
	seen := map[netip.Prefix]bool{must: true}
	peers := make([]netip.Prefix, 0, n)
	for len(peers) < n-1 {
		a := [4]byte{byte(11 + rng.IntN(89)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))}
		bits := 32
		if rng.IntN(2) == 0 {
			bits = 24
		}
		p := netip.PrefixFrom(netip.AddrFrom4(a), bits).Masked()
		if seen[p] {
			continue
		}
		seen[p] = true
		peers = append(peers, p)
	}
	return append(peers, must)
}

// installIptablesWith installs, in node's filter table, the chain
// connBenchChain, jumped to from FORWARD:
//
//	-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//	-s <peer> -d <dst ip>/32 -p tcp -m tcp --dport <dst port> -j ACCEPT   (one per peer, in order)
//	-d <dst ip>/32 -j DROP
//
// with one call of "<ipt>-restore --noflush" (ipt is "iptables",
// "iptables-nft" or "iptables-legacy"): 10k rules load in about 130 ms
// with iptables-nft, 40 ms with iptables-legacy. The chain goes when tb
// ends. dst and peers are IPv4.
func installIptablesWith(tb testing.TB, ipt string, node *testutil.NS, peers []netip.Prefix, dst netip.AddrPort) {
	tb.Helper()
	if !dst.Addr().Is4() {
		tb.Fatalf("installIptables: destination %s: IPv4 only", dst)
	}
	d := netip.PrefixFrom(dst.Addr(), 32).String()
	var rules strings.Builder
	fmt.Fprintf(&rules, "*filter\n:%s - [0:0]\n-A FORWARD -j %[1]s\n", connBenchChain)
	fmt.Fprintf(&rules, "-A %s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n", connBenchChain)
	for _, p := range peers {
		if !p.Addr().Is4() {
			tb.Fatalf("installIptables: peer %s: IPv4 only", p)
		}
		fmt.Fprintf(&rules, "-A %s -s %s -d %s -p tcp -m tcp --dport %d -j ACCEPT\n", connBenchChain, p.Masked(), d, dst.Port())
	}
	fmt.Fprintf(&rules, "-A %s -d %s -j DROP\nCOMMIT\n", connBenchChain, d)

	if err := iptablesRestore(node, ipt, rules.String()); err != nil {
		tb.Fatalf("install %d rules: %v", len(peers)+2, err)
	}
	tb.Cleanup(func() {
		remove := fmt.Sprintf("*filter\n-D FORWARD -j %s\n-F %[1]s\n-X %[1]s\nCOMMIT\n", connBenchChain)
		if err := iptablesRestore(node, ipt, remove); err != nil {
			tb.Errorf("remove chain %s: %v", connBenchChain, err)
		}
	})
}

// iptablesRestore feeds rules to "<ipt>-restore --noflush" inside ns.
// --wait: iptables-legacy takes a lock shared by every namespace of the
// machine (/run/xtables.lock), so another test's iptables may hold it for
// a moment; iptables-nft takes no lock and ignores the flag.
func iptablesRestore(ns *testutil.NS, ipt, rules string) error {
	cmd := ns.Command(ipt+"-restore", "--noflush", "--wait=10")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore in %s: %w\n%s", ipt, ns.Name, err, out)
	}
	return nil
}

// requireIptables skips b unless ipt and its -restore and -save commands
// are installed (`make deps` installs them), or under CI=true fails, as
// testutil.RequireRoot does. It logs the backend ipt uses.
func requireIptables(b *testing.B, ipt string) {
	b.Helper()
	for _, cmd := range []string{ipt, ipt + "-restore", ipt + "-save"} {
		if _, err := exec.LookPath(cmd); err != nil {
			if os.Getenv("CI") == "true" {
				b.Fatalf("%s not found, and CI=true forbids skipping; run `make deps`", cmd)
			}
			b.Skipf("skipped: %s not found; `make deps` installs it", cmd)
		}
	}
	out, err := exec.Command(ipt, "-V").CombinedOutput()
	if err != nil {
		b.Fatalf("%s -V: %v\n%s", ipt, err, out)
	}
	b.Logf("%s", strings.TrimSpace(string(out))) // "iptables v1.8.9 (nf_tables)" or "(legacy)"
}

// checkIptablesCounters reads the packet counters of installIptablesWith's
// chain and checks what the measurement of conns connections, after
// checkConnPolicy, must have left there: the chain as installed; every
// SYN (conns, and the positive check's) accepted by the client's rule,
// the last, after walking all before it; no packet accepted by another
// peer's rule; every other packet of those connections accepted by the
// conntrack rule; and the dropped dial's SYN counted by the DROP.
func checkIptablesCounters(b *testing.B, ipt string, node *testutil.NS, peers []netip.Prefix, conns int) {
	b.Helper()
	out := node.Exec(ipt+"-save", "-c", "-t", "filter")
	type rule struct {
		packets uint64
		text    string
	}
	var chain []rule
	for line := range strings.Lines(out) {
		// "[packets:bytes] -A CHAIN ..."
		counters, text, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || !strings.HasPrefix(text, "-A "+connBenchChain+" ") || !strings.HasPrefix(counters, "[") {
			continue
		}
		pkts, _, _ := strings.Cut(strings.TrimPrefix(counters, "["), ":")
		n, err := strconv.ParseUint(pkts, 10, 64)
		if err != nil {
			b.Fatalf("%s-save: counters of %q: %v", ipt, line, err)
		}
		chain = append(chain, rule{n, text})
	}
	if len(chain) != len(peers)+2 {
		b.Fatalf("%s-save: chain %s has %d rules, want %d", ipt, connBenchChain, len(chain), len(peers)+2)
	}
	established, drop := chain[0], chain[len(chain)-1]
	if !strings.Contains(established.text, "ESTABLISHED") || !strings.Contains(drop.text, "-j DROP") {
		b.Fatalf("%s-save: chain %s does not start with the conntrack rule and end with the DROP:\n%s\n...\n%s", ipt, connBenchChain, established.text, drop.text)
	}
	for i, p := range peers {
		r := chain[i+1]
		if !strings.Contains(r.text, "-s "+p.String()+" ") {
			b.Fatalf("%s-save: rule %d is %q, want the one for %s", ipt, i+1, r.text, p)
		}
		switch last := i == len(peers)-1; {
		case last && r.packets < uint64(conns)+1:
			b.Errorf("rule for the client %s accepted %d packets, want at least %d (every SYN)", p, r.packets, conns+1)
		case !last && r.packets != 0:
			b.Errorf("rule for %s accepted %d packets; no client has that address", p, r.packets)
		}
	}
	if established.packets < uint64(conns) {
		b.Errorf("conntrack rule accepted %d packets, want at least %d (a SYN-ACK per connection)", established.packets, conns)
	}
	if drop.packets < 1 {
		b.Errorf("DROP counted no packet; the dial from %s should have met it", connOtherClient)
	}
}

// measureConnLatency opens TCP connections from client to dst one after
// another, as many as b.Loop asks for: each connects, reads the one byte
// the server writes, and closes with a reset. It reports the mean time per
// connection ("ns/conn"), the median ("p50-ns") and the 99th percentile
// ("p99-ns"), and returns how many connections it made. It fails b at the
// first connection that fails.
//
// It enters client's namespace once and runs the whole loop on that
// thread; b.Loop resets the timer on its first call, so setup done before
// (topology, rules, checks) is not counted. b.Loop runs on another
// goroutine than the benchmark's, which is safe because client.Do waits
// for it, and nothing inside calls b.Fatal.
//
// Closing with a reset (SO_LINGER 0), as a client that aborts does, leaves
// no TIME_WAIT at either end (the server's FIN crosses the reset or meets
// it), so the ~28k ephemeral ports can serve any number of connections,
// and the node's conntrack entries close in 10 s instead of 2 min.
func measureConnLatency(b *testing.B, client *testutil.NS, dst netip.AddrPort) int {
	b.Helper()
	family, sa := connSockaddr(dst)
	var samples []time.Duration
	err := client.Do(func() error {
		unpin, err := pinThread()
		if err != nil {
			return err
		}
		defer unpin()
		buf := make([]byte, 1)
		for b.Loop() {
			start := time.Now()
			if err := connOnce(family, sa, buf); err != nil {
				return fmt.Errorf("connection %d to %s: %w", len(samples)+1, dst, err)
			}
			samples = append(samples, time.Since(start))
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if len(samples) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range samples {
		sum += d
	}
	slices.Sort(samples)
	b.ReportMetric(float64(sum.Nanoseconds())/float64(len(samples)), "ns/conn")
	b.ReportMetric(float64(samples[len(samples)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(samples[len(samples)*99/100].Nanoseconds()), "p99-ns")
	return len(samples)
}

// connOnce makes one connection of measureConnLatency, with blocking
// calls on the current thread.
func connOnce(family int, sa unix.Sockaddr, buf []byte) (err error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer func() {
		lerr := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		cerr := unix.Close(fd)
		if err == nil && lerr != nil {
			err = fmt.Errorf("SO_LINGER: %w", lerr)
		}
		if err == nil && cerr != nil {
			err = fmt.Errorf("close: %w", cerr)
		}
	}()
	// Bound connect by SYN retries (one: it gives up after 3 s), not by
	// SO_SNDTIMEO: with a send timeout, a signal would end connect with
	// EINTR, where without one the kernel restarts it.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_SYNCNT, 1); err != nil {
		return fmt.Errorf("TCP_SYNCNT: %w", err)
	}
	tv := unix.NsecToTimeval(connTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	if err := unix.Connect(fd, sa); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return fmt.Errorf("read: no byte within %v", connTimeout)
		case err != nil:
			return fmt.Errorf("read: %w", err)
		case n == 0:
			return errors.New("read: the server closed without writing")
		}
		return nil
	}
}

// serveOneByte listens on addr (IPv4 or IPv6) inside ns until tb ends, and
// answers every connection with one byte, a newline, then closes it. The
// newline makes it a server testutil.DialTCP can talk to (it reads the
// server's name up to a newline: here an empty one). It accepts with
// blocking calls on a goroutine of its own, one connection at a time,
// which is all measureConnLatency needs.
func serveOneByte(tb testing.TB, ns *testutil.NS, addr netip.AddrPort) {
	tb.Helper()
	family, sa := connSockaddr(addr)
	var fd int
	ns.MustDo(func() (err error) {
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket for %s: %w", addr, err)
		}
		if err = unix.Bind(fd, sa); err == nil {
			err = unix.Listen(fd, 128)
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		return nil
	})
	pinned := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Locked and never unlocked: the thread ends with the goroutine,
		// so its affinity needs no restoring.
		runtime.LockOSThread()
		if _, err := pinThread(); err != nil {
			pinned <- err
			return
		}
		pinned <- nil
		answer := []byte{'\n'}
		for {
			c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
			switch {
			case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
				continue
			case err != nil:
				return // shut down
			}
			// A client that has already reset makes Write fail; nothing
			// to do about it here, the client reports its side.
			unix.Write(c, answer)
			unix.Close(c)
		}
	}()
	if err := <-pinned; err != nil {
		unix.Close(fd)
		tb.Fatalf("server on %s: %v", addr, err)
	}
	tb.Cleanup(func() {
		// Closing the descriptor would not wake a blocked accept;
		// shutting the listener down does (EINVAL).
		if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil {
			tb.Errorf("shut down listener on %s: %v", addr, err)
		} else {
			<-done
		}
		unix.Close(fd)
	})
}

// connCPU is the CPU that both ends of measureConnLatency run on: the
// last one the process may use.
var connCPU = sync.OnceValues(func() (int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0, fmt.Errorf("CPU affinity: %w", err)
	}
	for cpu := len(set)*64 - 1; cpu >= 0; cpu-- {
		if set.IsSet(cpu) {
			return cpu, nil
		}
	}
	return 0, errors.New("CPU affinity: empty set")
})

// pinThread binds the current thread, which the caller has locked, to
// connCPU, and returns the function that restores its affinity. Client
// and server on one CPU make every step of a connection run there,
// packets included (veth hands a packet to the CPU that sent it), so
// that a connection costs the CPU time of its path, without wake-ups
// across CPUs, whose latency varies by tens of microseconds on a virtual
// machine.
func pinThread() (restore func(), err error) {
	cpu, err := connCPU()
	if err != nil {
		return nil, err
	}
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, fmt.Errorf("CPU affinity: %w", err)
	}
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		return nil, fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	return func() { unix.SchedSetaffinity(0, &old) }, nil
}

// connSockaddr returns the socket family and address for addr.
func connSockaddr(addr netip.AddrPort) (int, unix.Sockaddr) {
	a := addr.Addr().Unmap()
	if a.Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: a.As4()}
	}
	return unix.AF_INET6, &unix.SockaddrInet6{Port: int(addr.Port()), Addr: a.As16()}
}
