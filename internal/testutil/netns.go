package testutil

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NS is a named network namespace made for one test.
type NS struct {
	Name   string // full name, as `ip netns` shows it
	handle netns.NsHandle
	nl     *netlink.Handle
	t      testing.TB
}

// Group makes namespaces that share one random prefix.
type Group struct {
	prefix string
	t      testing.TB
}

// NewGroup starts a set of namespaces for t.
func NewGroup(t testing.TB) *Group {
	RequireRoot(t)
	return &Group{prefix: uniquePrefix(), t: t}
}

// NS creates the namespace "<prefix>-<name>" with loopback up; it is
// deleted when the test ends.
func (g *Group) NS(name string) *NS {
	t := g.t
	t.Helper()
	full := g.prefix + "-" + name

	h, err := newNamed(full)
	if err != nil {
		t.Fatalf("create netns %s: %v", full, err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		netns.DeleteNamed(full)
		t.Fatalf("netlink handle in %s: %v", full, err)
	}
	ns := &NS{Name: full, handle: h, nl: nl, t: t}
	t.Cleanup(func() {
		nl.Close()
		h.Close()
		if err := netns.DeleteNamed(full); err != nil {
			t.Errorf("delete netns %s: %v", full, err)
		}
	})
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("loopback up in %s: %v", full, err)
	}
	return ns
}

// newNamed creates a named namespace without leaving the calling thread in
// it: netns.NewNamed switches the thread, so the thread switches back, and
// a thread that cannot is never returned to the Go scheduler.
func newNamed(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return 0, err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if serr := netns.Set(orig); serr != nil {
		return 0, fmt.Errorf("return to original netns: %w", serr) // thread stays locked and dies
	}
	runtime.UnlockOSThread()
	return h, err
}

// Do runs fn on an OS thread inside the namespace. Sockets fn creates stay
// in the namespace and may be used from any goroutine afterwards.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns.handle); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", ns.Name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: Go ends it with the goroutine.
			errc <- fmt.Errorf("leave netns %s: %w", ns.Name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// MustDo is Do that fails the test on error.
func (ns *NS) MustDo(fn func() error) {
	ns.t.Helper()
	if err := ns.Do(fn); err != nil {
		ns.t.Fatal(err)
	}
}

// Exec runs a command inside the namespace (through `ip netns exec`) and
// fails the test if it fails. It returns the combined output.
func (ns *NS) Exec(args ...string) string {
	ns.t.Helper()
	out, err := ns.Command(args...).CombinedOutput()
	if err != nil {
		ns.t.Fatalf("%s in %s: %v\n%s", strings.Join(args, " "), ns.Name, err, out)
	}
	return string(out)
}

// Command returns an unstarted command that will run inside the namespace.
func (ns *NS) Command(args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	cmd.Env = os.Environ()
	return cmd
}

// Netlink returns a netlink handle bound to the namespace.
func (ns *NS) Netlink() *netlink.Handle { return ns.nl }

// AddAddr assigns prefix (for example 10.0.0.1/24) to ifname and sets it up.
func (ns *NS) AddAddr(ifname string, prefix netip.Prefix) {
	ns.t.Helper()
	l, err := ns.nl.LinkByName(ifname)
	if err != nil {
		ns.t.Fatalf("%s: %v", ns.Name, err)
	}
	addr, _ := netlink.ParseAddr(prefix.String())
	if err := ns.nl.AddrAdd(l, addr); err != nil {
		ns.t.Fatalf("%s: add %s to %s: %v", ns.Name, prefix, ifname, err)
	}
	if err := ns.nl.LinkSetUp(l); err != nil {
		ns.t.Fatalf("%s: set %s up: %v", ns.Name, ifname, err)
	}
}

// AddRoute routes dst via gw.
func (ns *NS) AddRoute(dst netip.Prefix, gw netip.Addr) {
	ns.t.Helper()
	_, ipnet, _ := net.ParseCIDR(dst.String())
	if err := ns.nl.RouteAdd(&netlink.Route{Dst: ipnet, Gw: gw.AsSlice()}); err != nil {
		ns.t.Fatalf("%s: route %s via %s: %v", ns.Name, dst, gw, err)
	}
}

// EnableForwarding turns on IPv4 forwarding in the namespace.
func (ns *NS) EnableForwarding() {
	ns.t.Helper()
	ns.MustDo(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
}

// SetChecksumOffload turns tx and rx checksum offload on ifname on or off.
// With tx on, a local sender leaves the checksum for the device
// (CHECKSUM_PARTIAL); with tx off, the kernel completes it in software on
// the way out. With rx off, the receiver verifies every checksum.
func (ns *NS) SetChecksumOffload(ifname string, tx, rx bool) {
	ns.t.Helper()
	onOff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	ns.Exec("ethtool", "-K", ifname, "tx", onOff(tx), "rx", onOff(rx))
}

// DisableChecksumOffload turns off tx and rx checksum offload on ifname, so
// that packets leave with complete checksums and arrive verified: what a
// physical NIC's receive path gives XDP, and what a checksum test needs.
func (ns *NS) DisableChecksumOffload(ifname string) {
	ns.t.Helper()
	ns.SetChecksumOffload(ifname, false, false)
}

// Veth joins two namespaces with a veth pair named aName in a and bName in
// b. Both ends are left down; AddAddr brings them up.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName, Namespace: netlink.NsFd(a.handle)},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(b.handle),
	}
	if err := a.nl.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s - %s/%s: %v", a.Name, aName, b.Name, bName, err)
	}
}
