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
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
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
// deleted when the test ends. IPv6 duplicate address detection is off in
// it (the test owns every address), so that links it creates later get
// usable link-local addresses at once instead of after a second or two
// of "tentative".
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
	ns.MustDo(func() error {
		// "all" and "default" both: the kernel takes the larger of "all"
		// and the device's own value, which a device copies from
		// "default" when it is created.
		for _, conf := range []string{"all", "default"} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/accept_dad", []byte("0"), 0o644); err != nil {
				return fmt.Errorf("turn off IPv6 DAD in %s: %w", full, err)
			}
		}
		return nil
	})
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

// AddAddr assigns prefix (for example 10.0.0.1/24 or fd00:1::1/64) to
// ifname and sets it up. An IPv6 address skips duplicate address
// detection (IFA_F_NODAD), so it is usable at once rather than
// "tentative": a socket can bind it and packets can leave from it.
func (ns *NS) AddAddr(ifname string, prefix netip.Prefix) {
	ns.t.Helper()
	l, err := ns.nl.LinkByName(ifname)
	if err != nil {
		ns.t.Fatalf("%s: %v", ns.Name, err)
	}
	addr, err := netlink.ParseAddr(prefix.String())
	if err != nil {
		ns.t.Fatalf("%s: address %s: %v", ns.Name, prefix, err)
	}
	if prefix.Addr().Is6() {
		addr.Flags |= unix.IFA_F_NODAD
	}
	if err := ns.nl.AddrAdd(l, addr); err != nil {
		ns.t.Fatalf("%s: add %s to %s: %v", ns.Name, prefix, ifname, err)
	}
	if err := ns.nl.LinkSetUp(l); err != nil {
		ns.t.Fatalf("%s: set %s up: %v", ns.Name, ifname, err)
	}
}

// AddRoute routes dst via gw. Both are IPv4 or both IPv6 (for a default
// route, 0.0.0.0/0 or ::/0).
func (ns *NS) AddRoute(dst netip.Prefix, gw netip.Addr) {
	ns.t.Helper()
	if dst.Addr().Is4() != gw.Is4() {
		ns.t.Fatalf("%s: route %s via %s: address families differ", ns.Name, dst, gw)
	}
	family := netlink.FAMILY_V4
	if gw.Is6() {
		family = netlink.FAMILY_V6
	}
	ipnet := &net.IPNet{IP: dst.Masked().Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}
	if err := ns.nl.RouteAdd(&netlink.Route{Dst: ipnet, Gw: gw.AsSlice(), Family: family}); err != nil {
		ns.t.Fatalf("%s: route %s via %s: %v", ns.Name, dst, gw, err)
	}
}

// EnableForwarding turns on IPv4 and IPv6 forwarding in the namespace.
func (ns *NS) EnableForwarding() {
	ns.t.Helper()
	ns.MustDo(func() error {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return err
		}
		return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644)
	})
}

// WaitAddrsUsable waits until no IPv6 address in the namespace is
// tentative (still in duplicate address detection), and fails the test if
// one failed detection or timeout passes first. Addresses made by AddAddr
// never are, and NS turns detection off for link-local ones too: this is
// the check that it worked.
func (ns *NS) WaitAddrsUsable(timeout time.Duration) {
	ns.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		addrs, err := ns.nl.AddrList(nil, netlink.FAMILY_V6)
		if err != nil {
			ns.t.Fatalf("%s: list addresses: %v", ns.Name, err)
		}
		var tentative []string
		for _, a := range addrs {
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				ns.t.Fatalf("%s: duplicate address detection failed for %s", ns.Name, a.IPNet)
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				tentative = append(tentative, a.IPNet.String())
			}
		}
		if len(tentative) == 0 {
			return
		}
		if time.Now().After(deadline) {
			ns.t.Fatalf("%s: addresses still tentative after %v: %v", ns.Name, timeout, tentative)
		}
		time.Sleep(20 * time.Millisecond)
	}
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

// Path is the namespace's file, as a CNI plugin's CNI_NETNS names a pod's.
func (ns *NS) Path() string { return "/var/run/netns/" + ns.Name }

// SendFrame sends frame, a whole Ethernet frame, out of ifname inside ns
// through a packet socket, as it is: for frames no socket of the stack
// would make, such as VLAN-tagged ones on a kernel without VLAN devices.
func (ns *NS) SendFrame(ifname string, frame []byte) error {
	return ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0) // protocol 0: sends only
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6})
	})
}
