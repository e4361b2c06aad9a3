package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// The topology every implementation is measured on, made afresh for each
// run so that no run sees another's rules, conntrack entries or sockets:
//
//	client 10.1.0.2 ── n-cli 10.1.0.1 [node] n-be 10.2.0.1 ── 10.2.0.2 backend
//
// The client routes everything through the node, which forwards. Cluster
// IPs are in serviceCIDR; endpoints are in endpointCIDR, which the node
// routes to the backend namespace, where a local route makes every address
// of it the namespace's own: one set of echo servers answers for all the
// endpoints of all the services.
var (
	clientAddr   = netip.MustParseAddr("10.1.0.2")
	nodeCliAddr  = netip.MustParseAddr("10.1.0.1")
	nodeBeAddr   = netip.MustParseAddr("10.2.0.1")
	backendAddr  = netip.MustParseAddr("10.2.0.2")
	serviceCIDR  = netip.MustParsePrefix("10.96.0.0/16")
	endpointCIDR = netip.MustParsePrefix("10.128.0.0/15")
)

// Interface names in the node namespace, where the implementations attach.
const (
	nodeClientIf  = "n-cli"
	nodeBackendIf = "n-be"
)

// topology is one client, node and backend namespace.
type topology struct {
	prefix                string
	client, node, backend string // namespace names
}

// newTopology builds the namespaces, links, addresses and routes. The
// names start with prefix, which names this process, so that a run never
// touches another's namespaces and cleanup finds its own.
func newTopology(prefix string) (*topology, error) {
	t := &topology{
		prefix:  prefix,
		client:  prefix + "-cli",
		node:    prefix + "-node",
		backend: prefix + "-be",
	}
	var script []string
	for _, ns := range []string{t.client, t.node, t.backend} {
		script = append(script, "netns add "+ns)
	}
	script = append(script,
		fmt.Sprintf("link add eth0 netns %s type veth peer name %s netns %s", t.client, nodeClientIf, t.node),
		fmt.Sprintf("link add eth0 netns %s type veth peer name %s netns %s", t.backend, nodeBackendIf, t.node),
	)
	if err := ipBatch("", script); err != nil {
		t.delete()
		return nil, err
	}
	steps := []struct {
		ns    string
		lines []string
	}{
		{t.client, []string{
			"link set lo up",
			"link set eth0 up",
			"addr add " + clientAddr.String() + "/24 dev eth0",
			"route add default via " + nodeCliAddr.String(),
		}},
		{t.node, []string{
			"link set lo up",
			"link set " + nodeClientIf + " up",
			"link set " + nodeBackendIf + " up",
			"addr add " + nodeCliAddr.String() + "/24 dev " + nodeClientIf,
			"addr add " + nodeBeAddr.String() + "/24 dev " + nodeBackendIf,
			"route add " + endpointCIDR.String() + " via " + backendAddr.String(),
		}},
		{t.backend, []string{
			"link set lo up",
			"link set eth0 up",
			"addr add " + backendAddr.String() + "/24 dev eth0",
			"route add default via " + nodeBeAddr.String(),
			"route add local " + endpointCIDR.String() + " dev lo table local",
		}},
	}
	for _, s := range steps {
		if err := ipBatch(s.ns, s.lines); err != nil {
			t.delete()
			return nil, err
		}
	}
	if err := run("ip", "netns", "exec", t.node, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		t.delete()
		return nil, err
	}
	return t, nil
}

// delete removes the namespaces; what lived in them (links, rules,
// attached programs) goes with them.
func (t *topology) delete() {
	for _, ns := range []string{t.client, t.node, t.backend} {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			_ = run("ip", "netns", "delete", ns)
		}
	}
}

// deleteStale removes namespaces that an earlier, interrupted run of this
// program left behind.
func deleteStale(base string) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for line := range strings.Lines(string(out)) {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if strings.HasPrefix(name, base) {
			_ = run("ip", "netns", "delete", name)
		}
	}
}

// ipBatch runs ip commands, one a line, in namespace ns ("" for this one).
func ipBatch(ns string, lines []string) error {
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func run(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// inNS runs f on a thread that is in namespace name for f's duration.
// Sockets f creates stay in that namespace when f returns, and may be used
// from any goroutine.
func inNS(name string, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	h, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// The thread cannot go back: leave it locked so that it dies with
		// the goroutine instead of running other goroutines in name.
		runtime.LockOSThread()
		return fmt.Errorf("leave netns %s: %w", name, err)
	}
	return ferr
}
