package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
)

var (
	webVIP  = netip.MustParseAddrPort("10.96.0.10:80")
	dnsVIP  = netip.MustParseAddrPort("10.96.0.10:53")
	web6VIP = netip.MustParseAddrPort("[fd00::10]:80")
	dns6VIP = netip.MustParseAddrPort("[fd00::10]:53")
)

// e2eService is one of the services writeConfig writes: TCP and UDP, in
// IPv4 and IPv6, the IPv6 ones on the same ports as the IPv4 ones.
type e2eService struct {
	name  string
	proto string // tcp or udp
	vip   netip.AddrPort
	port  uint16 // the backends'
}

var e2eServices = []e2eService{
	{"web", "tcp", webVIP, webPort},
	{"dns", "udp", dnsVIP, dnsPort},
	{"web6", "tcp", web6VIP, webPort},
	{"dns6", "udp", dns6VIP, dnsPort},
}

func (s e2eService) v6() bool { return s.vip.Addr().Is6() }

// ask sends one request to the service from a fresh socket: a new TCP
// connection, or a UDP datagram from a new port whose answer must come
// from the frontend.
func (s e2eService) ask(ns *testutil.NS) (string, error) {
	if s.proto == "tcp" {
		return testutil.AskTCP(ns, s.vip, askWait)
	}
	return testutil.AskUDP(ns, s.vip, askWait)
}

const (
	webPort = 8080
	dnsPort = 5353
	askWait = 2 * time.Second
)

// buildBinary builds xdplane-lb the way the Makefile does.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "xdplane-lb")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// lbEnv is a topology with servers on every backend, a bpffs, a built
// binary and a configuration file: everything `xdplane-lb run` needs.
type lbEnv struct {
	t       *testing.T
	bin     string
	tp      *testutil.LBTopology
	dir     string
	cfgPath string
}

func newLBEnv(t *testing.T, hook datapath.Hook) *lbEnv {
	t.Helper()
	testutil.RequireRoot(t)
	e := &lbEnv{t: t, bin: buildBinary(t), cfgPath: filepath.Join(t.TempDir(), "lb.yaml")}
	e.tp = testutil.NewLBTopology(t, 3)
	if hook == datapath.HookXDP {
		e.tp.DisableChecksumOffload()
	}
	e.dir = testutil.BPFFS(t)
	// Whatever the test did, take the datapath down before the bpffs and
	// namespaces go (cleanups run last-registered first).
	t.Cleanup(func() {
		e.tp.Node.Do(func() error { return datapath.Remove(e.dir) })
	})
	for i, be := range e.tp.Backends {
		for _, v6 := range []bool{false, true} {
			name := backendName(i, v6)
			testutil.ServeTCP(t, be, netip.AddrPortFrom(e.backendAddr(i, v6), webPort), name)
			testutil.ServeUDP(t, be, netip.AddrPortFrom(e.backendAddr(i, v6), dnsPort), name)
		}
	}
	return e
}

// backendName is what backend i's servers answer: "backend<i>" over IPv4,
// "backend<i>-v6" over IPv6.
func backendName(i int, v6 bool) string {
	if v6 {
		return fmt.Sprintf("backend%d-v6", i)
	}
	return fmt.Sprintf("backend%d", i)
}

// backendAddr is backend i's IPv4 or IPv6 address.
func (e *lbEnv) backendAddr(i int, v6 bool) netip.Addr {
	if v6 {
		return e.tp.BackendAddrs6[i]
	}
	return e.tp.BackendAddrs[i]
}

// writeConfig writes a configuration with the e2eServices, web (TCP) and
// dns (UDP) in IPv4 and IPv6, over the backends given by index. Addresses
// are quoted, as IPv6 ones must be. It renames a finished file into
// place, as an operator's tooling should.
func (e *lbEnv) writeConfig(backends ...int) {
	e.t.Helper()
	e.writeConfigPrefilter(nil, backends...)
}

// writeConfigPrefilter is writeConfig with a prefilter of the given
// prefixes or addresses (none: no prefilter key).
func (e *lbEnv) writeConfigPrefilter(prefilter []string, backends ...int) {
	e.t.Helper()
	var b strings.Builder
	if len(prefilter) > 0 {
		b.WriteString("prefilter:\n")
		for _, p := range prefilter {
			fmt.Fprintf(&b, "  - %q\n", p)
		}
	}
	b.WriteString("services:\n")
	for _, svc := range e2eServices {
		fmt.Fprintf(&b, "  - name: %s\n    frontend: %q\n    protocol: %s\n    backends:\n", svc.name, svc.vip, svc.proto)
		for _, i := range backends {
			fmt.Fprintf(&b, "      - address: %q\n", netip.AddrPortFrom(e.backendAddr(i, svc.v6()), svc.port).String())
		}
	}
	e.writeRaw(b.String())
}

func (e *lbEnv) writeRaw(content string) {
	e.t.Helper()
	tmp := e.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.cfgPath); err != nil {
		e.t.Fatal(err)
	}
}

// run starts `xdplane-lb run` on the node and waits until it says it is
// running.
func (e *lbEnv) run(hook datapath.Hook) *lbProc {
	e.t.Helper()
	args := []string{e.bin, "run", "--config", e.cfgPath, "--hook", hook.String(), "--bpffs", e.dir}
	for _, ifname := range e.tp.NodeInterfaces {
		args = append(args, "--interface", ifname)
	}
	p := startProc(e.t, e.tp.Node.Command(args...))
	p.waitLog(`msg=running`)
	return p
}

// cli runs a short xdplane-lb command on the node and returns its output
// and exit code.
func (e *lbEnv) cli(args ...string) (string, int) {
	e.t.Helper()
	out, err := e.tp.Node.Command(append([]string{e.bin}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	e.t.Fatalf("xdplane-lb %s: %v", strings.Join(args, " "), err)
	return "", -1
}

// lbProc is a running xdplane-lb whose log the test reads line by line.
type lbProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // Wait's result, once done

	mu      sync.Mutex
	lines   []string
	next    int           // the first line waitLog has not consumed
	newLine chan struct{} // closed and replaced at every line
}

func startProc(t *testing.T, cmd *exec.Cmd) *lbProc {
	t.Helper()
	p := &lbProc{t: t, cmd: cmd, done: make(chan struct{}), newLine: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", strings.Join(cmd.Args, " "), err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.newLine)
			p.newLine = make(chan struct{})
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("log of %s:\n%s", strings.Join(cmd.Args, " "), p.log())
		}
	})
	return p
}

func (p *lbProc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLog waits for a log line, after the last one waited for, that
// contains every part, and returns it.
func (p *lbProc) waitLog(parts ...string) string {
	p.t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		p.mu.Lock()
		for i := p.next; i < len(p.lines); i++ {
			if containsAll(p.lines[i], parts) {
				p.next = i + 1
				line := p.lines[i]
				p.mu.Unlock()
				return line
			}
		}
		p.next = len(p.lines)
		wake := p.newLine
		p.mu.Unlock()
		select {
		case <-wake:
		case <-p.done:
			// The reader has read every line before done closes.
			p.mu.Lock()
			more := p.next < len(p.lines)
			p.mu.Unlock()
			if !more {
				p.t.Fatalf("xdplane-lb exited (%v) before logging %q", p.err, parts)
			}
		case <-deadline:
			p.t.Fatalf("xdplane-lb did not log %q within 15s", parts)
		}
	}
}

// logged reports whether any line so far contains every part.
func (p *lbProc) logged(parts ...string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if containsAll(l, parts) {
			return true
		}
	}
	return false
}

func containsAll(s string, parts []string) bool {
	for _, part := range parts {
		if !strings.Contains(s, part) {
			return false
		}
	}
	return true
}

func (p *lbProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("send %v: %v", sig, err)
	}
}

func (p *lbProc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends sig and expects a clean exit.
func (p *lbProc) stop(sig syscall.Signal) {
	p.t.Helper()
	p.signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("xdplane-lb still running 10s after %v", sig)
	}
	if p.err != nil {
		p.t.Fatalf("xdplane-lb exit after %v: %v, want status 0", sig, p.err)
	}
}

// reach asks every service (TCP and UDP, IPv4 and IPv6), with fresh
// connections and source ports, until every backend in want has answered
// each, on its server of the service's family. Any answer from a backend
// outside want, or any failed request, fails the test.
func (e *lbEnv) reach(want ...int) {
	e.t.Helper()
	for _, svc := range e2eServices {
		wantNames := map[string]bool{}
		for _, i := range want {
			wantNames[backendName(i, svc.v6())] = true
		}
		seen := map[string]int{}
		const maxAsks = 100
		for n := 0; n < maxAsks && len(seen) < len(wantNames); n++ {
			name, err := svc.ask(e.tp.Client)
			if err != nil {
				e.t.Fatalf("%s (%s) request %d: %v (answers so far: %v)", svc.name, svc.vip, n, err, seen)
			}
			if !wantNames[name] {
				e.t.Fatalf("%s (%s) request %d reached %s; only backends %v should answer", svc.name, svc.vip, n, name, want)
			}
			seen[name]++
		}
		if len(seen) < len(wantNames) {
			e.t.Fatalf("%s (%s): after %d requests only %v answered, want all of backends %v", svc.name, svc.vip, maxAsks, seen, want)
		}
	}
}

// notReached sends n more requests to every service and fails if any
// reaches backend i or fails.
func (e *lbEnv) notReached(i, n int) {
	e.t.Helper()
	for k := range n {
		for _, svc := range e2eServices {
			gone := backendName(i, svc.v6())
			name, err := svc.ask(e.tp.Client)
			if err != nil {
				e.t.Fatalf("%s (%s) request %d: %v", svc.name, svc.vip, k, err)
			}
			if name == gone {
				e.t.Fatalf("%s (%s) request %d reached removed %s", svc.name, svc.vip, k, gone)
			}
		}
	}
}

// dialNot opens a TCP connection through the frontend vip that lands on
// any backend but `not`.
func (e *lbEnv) dialNot(vip netip.AddrPort, not int) *testutil.Conn {
	e.t.Helper()
	notName := backendName(not, vip.Addr().Is6())
	for range 100 {
		c, err := testutil.DialTCP(e.tp.Client, vip, askWait)
		if err != nil {
			e.t.Fatal(err)
		}
		if c.Server != notName {
			e.t.Cleanup(func() { c.Close() })
			return c
		}
		c.Close()
	}
	e.t.Fatalf("100 connections to %s all reached %s", vip, notName)
	return nil
}

// echo checks that every connection still carries data.
func echo(t *testing.T, conns []*testutil.Conn, when string) {
	t.Helper()
	for _, c := range conns {
		if err := c.Echo("hello "+when, askWait); err != nil {
			t.Fatalf("established connection %s to %s %s: %v", c.RemoteAddr(), c.Server, when, err)
		}
	}
}

// statusPackets parses the status's backend table into backend address
// → packets.
func statusPackets(t *testing.T, out string) map[string]uint64 {
	t.Helper()
	got := map[string]uint64{}
	inBackends := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) > 1 && f[0] == "SERVICE" && f[1] == "BACKEND":
			inBackends = true
			continue
		case len(f) == 0:
			inBackends = false
		}
		if !inBackends {
			continue
		}
		// A backend row ends in address, weight, state, local, packets,
		// bytes.
		if len(f) < 6 {
			t.Fatalf("status row %q: too few columns", line)
		}
		f = f[len(f)-6:]
		if f[0] == "(none)" {
			continue
		}
		n, err := strconv.ParseUint(f[4], 10, 64)
		if err != nil {
			t.Fatalf("status row %q: packets %q: %v", line, f[4], err)
		}
		got[f[0]] = n
	}
	return got
}

// checkStatus runs status and checks that exactly the given backends are
// listed for every service, in its family, each with packets counted.
func (e *lbEnv) checkStatus(backends []int, args ...string) string {
	e.t.Helper()
	out, code := e.cli(append([]string{"status", "--bpffs", e.dir}, args...)...)
	if code != 0 {
		e.t.Fatalf("status exited %d:\n%s", code, out)
	}
	got := statusPackets(e.t, out)
	var want []string
	for _, svc := range e2eServices {
		if !strings.Contains(out, svc.vip.String()+"/"+svc.proto+" ") {
			e.t.Errorf("status does not list the service %s/%s:\n%s", svc.vip, svc.proto, out)
		}
		for _, i := range backends {
			want = append(want, netip.AddrPortFrom(e.backendAddr(i, svc.v6()), svc.port).String())
		}
	}
	for _, a := range want {
		if got[a] == 0 {
			e.t.Errorf("status: backend %s has no packets counted (or is missing):\n%s", a, out)
		}
	}
	if len(got) != len(want) {
		e.t.Errorf("status lists backends %v, want exactly %v:\n%s", got, want, out)
	}
	for _, ifname := range e.tp.NodeInterfaces {
		if !strings.Contains(out, ifname+" ") {
			e.t.Errorf("status does not list the attachment on %s:\n%s", ifname, out)
		}
	}
	return out
}

// checkGone checks that cleanup left no pins, no attachment and no load
// balancing.
func (e *lbEnv) checkGone() {
	e.t.Helper()
	entries, err := os.ReadDir(e.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.t.Fatal(err)
	}
	if len(entries) > 0 {
		e.t.Errorf("cleanup left %d entries in %s", len(entries), e.dir)
	}
	for _, ifname := range e.tp.NodeInterfaces {
		for _, dir := range []string{"ingress", "egress"} {
			if out := e.tp.Node.Exec("tc", "filter", "show", "dev", ifname, dir); strings.TrimSpace(out) != "" {
				e.t.Errorf("tc %s filters left on %s:\n%s", dir, ifname, out)
			}
		}
		if out := e.tp.Node.Exec("ip", "link", "show", "dev", ifname); strings.Contains(out, "xdp") {
			e.t.Errorf("XDP program left on %s:\n%s", ifname, out)
		}
	}
	for _, ifname := range e.tp.NodeInterfaces {
		if n := e.tcxPrograms(ifname); n > 0 {
			e.t.Errorf("%d TCX programs left on %s", n, ifname)
		}
	}
	// Nothing translates the frontends any more: the node has no route
	// for them (an IPv6 connection times out rather than being refused).
	for _, vip := range []netip.AddrPort{webVIP, web6VIP} {
		if name, err := testutil.AskTCP(e.tp.Client, vip, time.Second); err == nil {
			e.t.Errorf("after cleanup, a connection to %s still reached %s", vip, name)
		}
	}
}

// tcxPrograms counts the TCX programs on the node's interface ifname.
// TCX attachments show in neither tc nor this iproute2: ask the kernel.
func (e *lbEnv) tcxPrograms(ifname string) int {
	e.t.Helper()
	n := 0
	e.tp.Node.MustDo(func() error {
		l, err := e.tp.Node.Netlink().LinkByName(ifname)
		if err != nil {
			return err
		}
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
			if err != nil {
				return fmt.Errorf("query %s on %s: %w", at, ifname, err)
			}
			n += len(res.Programs)
		}
		return nil
	})
	return n
}

// TestRun drives `xdplane-lb run` at tc through a configuration's life:
// start, remove a backend, refuse a bad file, restart, status, cleanup.
func TestRun(t *testing.T) {
	e := newLBEnv(t, datapath.HookTC)
	e.writeConfig(0, 1, 2)
	p := e.run(datapath.HookTC)
	e.reach(0, 1, 2)

	// Long-lived connections, IPv4 and IPv6, that must survive
	// everything below.
	conns := []*testutil.Conn{e.dialNot(webVIP, 2), e.dialNot(web6VIP, 2)}
	echo(t, conns, "before any reload")

	// Remove backend 2.
	e.writeConfig(0, 1)
	p.signal(syscall.SIGHUP)
	line := p.waitLog(`msg="config applied"`)
	for _, svc := range e2eServices {
		if want := svc.name + "=" + svc.vip.String() + "/" + svc.proto; !strings.Contains(line, want) {
			t.Errorf("reload log %q does not name the changed service %s", line, want)
		}
	}
	e.reach(0, 1)
	e.notReached(2, 30)
	echo(t, conns, "after removing a backend")

	// An invalid file changes nothing: a backend without a port, one of
	// the other family than its service's frontend, or a prefilter, which
	// tc would not consult.
	for _, bad := range []struct{ config, want string }{
		{
			"prefilter: [10.0.0.3]\nservices: []\n",
			`prefilter: the prefilter drops at XDP only, and --hook is tc: run with --hook xdp`,
		},
		{
			"services:\n  - name: web\n    frontend: 10.96.0.10:80\n    backends:\n      - address: 10.0.1.2\n",
			`services[0] \"web\": backends[0].address \"10.0.1.2\": missing port`,
		},
		{
			"services:\n  - name: web6\n    frontend: \"[fd00::10]:80\"\n    backends:\n      - address: 10.0.1.2:8080\n",
			`services[0] \"web6\": backends[0].address \"10.0.1.2:8080\": not of the frontend's address family`,
		},
	} {
		e.writeRaw(bad.config)
		p.signal(syscall.SIGHUP)
		line = p.waitLog(`msg="config rejected`)
		if !strings.Contains(line, bad.want) {
			t.Errorf("rejection log %q does not contain %q", line, bad.want)
		}
		if !p.alive() {
			t.Fatalf("xdplane-lb exited on an invalid config: %v", p.err)
		}
	}
	e.reach(0, 1)
	e.notReached(2, 10)
	echo(t, conns, "after an invalid config")

	// Restart: the datapath and the connection carry on while no process
	// runs, and the new process adopts the state without changing it.
	e.writeConfig(0, 1)
	p.stop(syscall.SIGTERM)
	echo(t, conns, "with no xdplane-lb running")
	e.reach(0, 1)
	e.checkStatus([]int{0, 1})

	p = e.run(datapath.HookTC)
	if !p.logged(`msg="config applied: no change"`) {
		t.Errorf("the restarted process changed the services it adopted:\n%s", p.log())
	}
	echo(t, conns, "after a restart")
	e.reach(0, 1)
	out := e.checkStatus([]int{0, 1}, "--config", e.cfgPath)
	for _, want := range []string{" web ", " dns ", " web6 ", " dns6 ", "tc-ingress", "tc-egress"} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not show %q:\n%s", want, out)
		}
	}
	t.Logf("status:\n%s", out)

	p.stop(syscall.SIGINT)
	echo(t, conns, "after a SIGINT")
	for _, ifname := range e.tp.NodeInterfaces {
		if n := e.tcxPrograms(ifname); n != 2 {
			t.Errorf("%s has %d TCX programs before cleanup, want 2 (ingress and egress)", ifname, n)
		}
	}

	if out, code := e.cli("cleanup", "--bpffs", e.dir); code != 0 {
		t.Fatalf("cleanup exited %d:\n%s", code, out)
	}
	e.checkGone()
	out, code := e.cli("status", "--bpffs", e.dir)
	if code == 0 || !strings.Contains(out, "no load balancer is pinned in "+e.dir) {
		t.Errorf("status after cleanup exited %d with:\n%s\nwant non-zero and \"no load balancer is pinned\"", code, out)
	}
}

// TestRunXDP checks the same connectivity at XDP.
func TestRunXDP(t *testing.T) {
	e := newLBEnv(t, datapath.HookXDP)
	e.writeConfig(0, 1, 2)
	p := e.run(datapath.HookXDP)
	e.reach(0, 1, 2)
	out := e.checkStatus([]int{0, 1, 2})
	if !strings.Contains(out, "xdp") || strings.Contains(out, "tc-ingress") {
		t.Errorf("status does not show XDP attachments only:\n%s", out)
	}
	p.stop(syscall.SIGTERM)
	if out, code := e.cli("cleanup", "--bpffs", e.dir); code != 0 {
		t.Fatalf("cleanup exited %d:\n%s", code, out)
	}
	e.checkGone()
}

// TestRunRefusesInvalidConfig: a bad file at start is refused before
// anything is created, with the service and field named.
func TestRunRefusesInvalidConfig(t *testing.T) {
	bin := buildBinary(t)
	dir := filepath.Join(t.TempDir(), "bpffs")
	cfg := filepath.Join(t.TempDir(), "lb.yaml")
	os.WriteFile(cfg, []byte(`
services:
  - name: web
    frontend: 10.96.0.10:80
    backends: [{address: 10.0.1.2:8080}]
  - name: dns
    frontend: 10.96.0.10:53
    protocol: udp
    backends:
      - address: 10.0.1.2
`), 0o600)
	out, err := exec.Command(bin, "run", "--config", cfg, "--interface", "lo", "--bpffs", dir).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitError {
		t.Fatalf("run with an invalid config: %v, want exit status %d\n%s", err, exitError, out)
	}
	want := cfg + `:10: services[1] "dns": backends[0].address "10.0.1.2": missing port`
	if !strings.Contains(string(out), want) {
		t.Errorf("output %q does not contain %q", out, want)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run created %s although the config was invalid", dir)
	}
}

// TestRunRefusesTransientBPFFS: under `ip netns exec`, /sys/fs/bpf is
// hidden, and a bpffs run mounted there itself would die with it, taking
// the load balancer along. run refuses and says what to do instead.
func TestRunRefusesTransientBPFFS(t *testing.T) {
	testutil.RequireRoot(t)
	bin := buildBinary(t)
	ns := testutil.NewGroup(t).NS("node")
	cfg := filepath.Join(t.TempDir(), "lb.yaml")
	if err := os.WriteFile(cfg, []byte("services: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, ns.Command(bin, "run", "--config", cfg, "--interface", "lo"))
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("run kept running with a bpffs that dies with it")
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != exitError {
		t.Fatalf("run: %v, want exit status %d\n%s", p.err, exitError, p.log())
	}
	if want := "--bpffs " + datapath.DefaultDir + ": no usable bpffs"; !strings.Contains(p.log(), want) {
		t.Errorf("output %q does not contain %q", p.log(), want)
	}
}

// TestRunMaglevAffinityMaintenance runs a Kubernetes-shaped service
// (cluster IPs in both families and a node port on the node's client-side
// addresses) with Maglev and ClientIP session affinity: every new
// connection of a client reaches the same backend, which Maglev alone,
// hashing source ports too, would not do. A SIGHUP then puts that backend
// in maintenance: new connections go elsewhere (and stick there), while
// an established one keeps working.
func TestRunMaglevAffinityMaintenance(t *testing.T) {
	e := newLBEnv(t, datapath.HookTC)
	// A second client address, unused until the backend is in
	// maintenance, so that it has no affinity yet.
	fresh := netip.MustParseAddr("10.0.0.3")
	e.tp.Client.AddAddr("eth0", netip.PrefixFrom(fresh, 24))
	clusterIP := netip.MustParseAddrPort("10.96.0.20:80")
	clusterIP6 := netip.MustParseAddrPort("[fd00::20]:80")
	nodePort := netip.MustParseAddrPort("10.0.0.1:30080")
	nodePort6 := netip.MustParseAddrPort("[fd01::1]:30080")
	write := func(maintenance netip.Addr) {
		var b strings.Builder
		b.WriteString(`nodeAddresses: [10.0.0.1, "fd01::1"]
services:
  - name: sticky
    clusterIPs: [10.96.0.20, "fd00::20"]
    ports:
      - {name: http, port: 80, targetPort: 8080, nodePort: 30080}
    algorithm: maglev
    sessionAffinity: clientIP
    endpoints:
`)
		for i := range e.tp.Backends {
			for _, v6 := range []bool{false, true} {
				a := e.backendAddr(i, v6)
				state := "active"
				if a == maintenance {
					state = "maintenance"
				}
				fmt.Fprintf(&b, "      - {address: %q, state: %s}\n", a, state)
			}
		}
		e.writeRaw(b.String())
	}
	// asks makes n new connections to vip from the client's address from
	// (the zero Addr: the one routing picks) and returns who answered.
	asks := func(from netip.Addr, vip netip.AddrPort, n int) []string {
		t.Helper()
		var names []string
		for k := range n {
			name, err := askFrom(e.tp.Client, from, vip)
			if err != nil {
				t.Fatalf("%s connection %d from %v: %v", vip, k, from, err)
			}
			names = append(names, name)
		}
		return names
	}
	// sticky checks that every name is the same one, and returns it.
	sticky := func(what string, names []string) string {
		t.Helper()
		for k, n := range names {
			if n != names[0] {
				t.Fatalf("%s: connection %d reached %s, the first %s: no session affinity (all: %v)", what, k, n, names[0], names)
			}
		}
		return names[0]
	}

	write(netip.Addr{})
	p := e.run(datapath.HookTC)
	chosen := sticky("cluster IP", asks(netip.Addr{}, clusterIP, 30))
	sticky("IPv6 cluster IP", asks(netip.Addr{}, clusterIP6, 10))
	sticky("node port", asks(netip.Addr{}, nodePort, 10))
	sticky("IPv6 node port", asks(netip.Addr{}, nodePort6, 10))

	conn, err := testutil.DialTCP(e.tp.Client, clusterIP, askWait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if conn.Server != chosen {
		t.Fatalf("a new connection reached %s, the client's earlier ones %s", conn.Server, chosen)
	}
	echo(t, []*testutil.Conn{conn}, "before maintenance")

	var idx int
	if _, err := fmt.Sscanf(chosen, "backend%d", &idx); err != nil {
		t.Fatalf("backend name %q: %v", chosen, err)
	}
	write(e.backendAddr(idx, false))
	p.signal(syscall.SIGHUP)
	line := p.waitLog(`msg="config applied"`)
	if want := "sticky:http=" + clusterIP.String() + "/tcp"; !strings.Contains(line, want) {
		t.Errorf("reload log %q does not name the changed frontend %s", line, want)
	}
	echo(t, []*testutil.Conn{conn}, "after its backend went into maintenance")

	// A client new to the service never reaches the backend in
	// maintenance, and sticks to the one it gets.
	for _, vip := range []netip.AddrPort{clusterIP, nodePort} {
		got := sticky("a fresh client after maintenance", asks(fresh, vip, 20))
		if got == chosen {
			t.Fatalf("%s: a fresh client reached %s, which is in maintenance", vip, chosen)
		}
	}

	// The client whose affine backend went into maintenance must move,
	// and stick to its new backend.
	var stale int
	names := asks(netip.Addr{}, clusterIP, 30)
	for _, n := range names {
		if n == chosen {
			stale++
		}
	}
	if stale == 0 {
		t.Logf("the client stuck to %s, then after maintenance to %s", chosen, sticky("after maintenance", names))
	}
	echo(t, []*testutil.Conn{conn}, "after the new connections")

	out, code := e.cli("status", "--bpffs", e.dir, "--config", e.cfgPath)
	if code != 0 {
		t.Fatalf("status exited %d:\n%s", code, out)
	}
	// Rows with their columns one space apart, for widths that vary.
	var rows []string
	for line := range strings.Lines(out) {
		rows = append(rows, strings.Join(strings.Fields(line), " "))
	}
	for _, want := range []string{
		"10.96.0.20:80/tcp sticky:http ClusterIP maglev(16381) 3h0m0s cluster all",
		"10.0.0.1:30080/tcp sticky:http NodePort maglev(16381) 3h0m0s cluster all",
		"[fd00::20]:80/tcp sticky:http ClusterIP maglev(16381) 3h0m0s cluster all",
		"[fd01::1]:30080/tcp sticky:http NodePort maglev(16381) 3h0m0s cluster all",
		e.backendAddr(idx, false).String() + ":8080 1 maintenance no",
	} {
		if !slices.ContainsFunc(rows, func(r string) bool { return strings.Contains(r, want) }) {
			t.Errorf("status does not show %q:\n%s", want, out)
		}
	}
	if got := statusPackets(t, out)[netip.AddrPortFrom(e.backendAddr(idx, false), webPort).String()]; got == 0 {
		t.Errorf("status counts no packets for the backend in maintenance, which carried connections:\n%s", out)
	}
	p.stop(syscall.SIGTERM)
	echo(t, []*testutil.Conn{conn}, "after xdplane-lb exited")

	if stale > 0 {
		t.Fatalf("%d of %d new connections of a client with session affinity still reached %s after it went into maintenance",
			stale, len(names), chosen)
	}
}

// askFrom connects from inside ns, from the address from (the zero Addr:
// the one routing picks), to vip, and returns the name the backend
// answers with.
func askFrom(ns *testutil.NS, from netip.Addr, vip netip.AddrPort) (string, error) {
	var name string
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: askWait}
		if from.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
		}
		c, err := d.Dial("tcp", vip.String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(askWait))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("read server name: %w", err)
		}
		name = strings.TrimSuffix(line, "\n")
		return nil
	})
	return name, err
}

// TestRunPrefilter runs a prefilter at XDP: a client address in it reaches
// no service, in either family and over TCP or UDP, while the client's
// other address reaches every one; its drops are counted in status and
// logged. A SIGHUP that adds an address cuts that address's established
// connection; one that removes it lets it in again; an invalid prefilter
// changes nothing.
func TestRunPrefilter(t *testing.T) {
	e := newLBEnv(t, datapath.HookXDP)
	// The denied IPv6 address is off the client's link, fd01::/64: the
	// prefilter drops neighbour discovery from a denied source too, and
	// the client would sign its solicitations for the node's fd01::1 with
	// fd01::3 as readily as with fd01::2, leaving both without a
	// neighbour. (ARP is not IP: an on-link IPv4 address is fine.)
	denied := netip.MustParseAddr("10.0.0.3")
	denied6 := netip.MustParseAddr("fd02::3")
	e.tp.Client.AddAddr("eth0", netip.PrefixFrom(denied, 24))
	e.tp.Client.AddAddr("eth0", netip.PrefixFrom(denied6, 64))
	e.tp.Node.AddRoute(netip.MustParsePrefix("fd02::/64"), e.tp.ClientAddr6)

	// from asks svc from the address a; blocked checks that no answer
	// comes, reached that one does.
	from := func(svc e2eService, a netip.Addr, wait time.Duration) (string, error) {
		local := netip.AddrPortFrom(a, 0)
		if svc.proto == "tcp" {
			c, err := testutil.DialTCPFrom(e.tp.Client, local, svc.vip, wait)
			if err != nil {
				return "", err
			}
			c.Close()
			return c.Server, nil
		}
		return testutil.AskUDPFrom(e.tp.Client, local, svc.vip, wait)
	}
	// An answer takes a millisecond here: one that has not come in
	// blockedWait is not coming.
	const blockedWait = 300 * time.Millisecond
	blocked := func(a netip.Addr, when string) {
		t.Helper()
		for _, svc := range e2eServices {
			if svc.v6() != a.Is6() {
				continue
			}
			name, err := from(svc, a, blockedWait)
			if err == nil {
				t.Fatalf("%s: %s (%s) from %s reached %s", when, svc.name, svc.vip, a, name)
			}
			if !testutil.ErrTimeout(err) {
				t.Fatalf("%s: %s (%s) from %s: %v, want a timeout (a drop, not a refusal)", when, svc.name, svc.vip, a, err)
			}
		}
	}
	reached := func(a netip.Addr, when string) {
		t.Helper()
		for _, svc := range e2eServices {
			if svc.v6() != a.Is6() {
				continue
			}
			if _, err := from(svc, a, askWait); err != nil {
				t.Fatalf("%s: %s (%s) from %s: %v", when, svc.name, svc.vip, a, err)
			}
		}
	}
	// prefilterDrops reads the prefilter's packet counter from status,
	// and checks the prefilter's size.
	prefilterDrops := func(size int) uint64 {
		t.Helper()
		out, code := e.cli("status", "--bpffs", e.dir)
		if code != 0 {
			t.Fatalf("status exited %d:\n%s", code, out)
		}
		want := "Prefilter: empty."
		if size > 0 {
			want = fmt.Sprintf("Prefilter: %d source %s,", size, plural(size, "prefix", "prefixes"))
		}
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
		for line := range strings.Lines(out) {
			if rest, ok := strings.CutPrefix(line, "dropped, prefilter"); ok {
				f := strings.Fields(rest)
				n, err := strconv.ParseUint(f[0], 10, 64)
				if err != nil {
					t.Fatalf("status row %q: %v", line, err)
				}
				return n
			}
		}
		t.Fatalf("status has no prefilter counter:\n%s", out)
		return 0
	}

	// The IPv6 address is denied from the start; the IPv4 one connects
	// first and is denied by a SIGHUP.
	e.writeConfigPrefilter([]string{denied6.String() + "/128"}, 0, 1, 2)
	p := e.run(datapath.HookXDP)
	if !p.logged("msg=running", "prefilter=1") {
		t.Errorf("the running log line does not count the prefilter:\n%s", p.log())
	}
	e.reach(0, 1, 2)
	blocked(denied6, "at start")
	p.waitLog("msg=dropped", "reason=prefilter", "interface=n-cli", "source="+denied6.String(), "destination=fd00::10")
	reached(denied, "at start")
	conn := e.dialFromNot(denied, webVIP)
	echo(t, []*testutil.Conn{conn}, "before its source was denied")
	if n := prefilterDrops(1); n == 0 {
		t.Errorf("status counts no prefilter drops after %s was refused", denied6)
	}

	e.writeConfigPrefilter([]string{denied6.String() + "/128", denied.String()}, 0, 1, 2)
	p.signal(syscall.SIGHUP)
	p.waitLog(`msg="config applied"`, "prefilter.added=1", "prefilter.removed=0", "prefilter.size=2")
	if err := conn.Echo("after its source was denied", 500*time.Millisecond); err == nil {
		t.Errorf("an established connection from %s still carries data after %s was added to the prefilter", denied, denied)
	}
	before := prefilterDrops(2)
	blocked(denied, "after a SIGHUP added it")
	blocked(denied6, "after a SIGHUP kept it")
	p.waitLog("msg=dropped", "reason=prefilter", "source="+denied.String(), "destination="+webVIP.Addr().String())
	e.reach(0, 1, 2)
	if after := prefilterDrops(2); after <= before {
		t.Errorf("the prefilter counter went from %d to %d while %s was refused", before, after, denied)
	}

	// Refused, and nothing changes: a prefilter that is not one, one that
	// contains a backend, one at tc's hook cannot happen here (run is at
	// XDP).
	for _, bad := range []struct{ config, want string }{
		{"prefilter: [10.0.0.3, 10.0.0.300/8]\nservices: []\n", `prefilter[1] \"10.0.0.300/8\": want a prefix`},
		{
			"prefilter: [10.0.0.0/16]\nservices:\n  - {name: web, frontend: 10.96.0.10:80, backends: [{address: 10.0.1.2:8080}]}\n",
			`prefilter[0] \"10.0.0.0/16\": contains 10.0.1.2, a backend of services[0] \"web\"`,
		},
	} {
		e.writeRaw(bad.config)
		p.signal(syscall.SIGHUP)
		if line := p.waitLog(`msg="config rejected`); !strings.Contains(line, bad.want) {
			t.Errorf("rejection log %q does not contain %q", line, bad.want)
		}
	}
	blocked(denied, "after invalid configurations")
	reached(e.tp.ClientAddr, "after invalid configurations")

	// Removing an address lets it in again.
	e.writeConfigPrefilter([]string{denied6.String() + "/128"}, 0, 1, 2)
	p.signal(syscall.SIGHUP)
	p.waitLog(`msg="config applied"`, "prefilter.added=0", "prefilter.removed=1", "prefilter.size=1")
	reached(denied, "after a SIGHUP removed it")
	blocked(denied6, "after a SIGHUP removed the other")

	// A restart keeps the prefilter; a configuration without one removes it.
	p.stop(syscall.SIGTERM)
	blocked(denied6, "with no xdplane-lb running")
	e.writeConfig(0, 1, 2)
	p = e.run(datapath.HookXDP)
	if !p.logged(`msg="config applied"`, "prefilter.removed=1", "prefilter.size=0") {
		t.Errorf("a restart without a prefilter did not remove it:\n%s", p.log())
	}
	reached(denied6, "after a restart without a prefilter")
	prefilterDrops(0)
	p.stop(syscall.SIGTERM)

	if out, code := e.cli("cleanup", "--bpffs", e.dir); code != 0 {
		t.Fatalf("cleanup exited %d:\n%s", code, out)
	}
	e.checkGone()
}

// dialFromNot opens a TCP connection from the client's address a to vip.
func (e *lbEnv) dialFromNot(a netip.Addr, vip netip.AddrPort) *testutil.Conn {
	e.t.Helper()
	c, err := testutil.DialTCPFrom(e.tp.Client, netip.AddrPortFrom(a, 0), vip, askWait)
	if err != nil {
		e.t.Fatalf("connect from %s to %s: %v", a, vip, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}
