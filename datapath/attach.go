package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Hook is where on an interface the load balancer runs.
type Hook uint8

const (
	// HookTC attaches at tc ingress (load balancing and reverse NAT) and
	// tc egress (reverse NAT). Right for veths and for any interface
	// whose traffic may originate on this host.
	HookTC Hook = iota
	// HookXDP attaches at XDP on ingress (load balancing and reverse
	// NAT): fastest on a physical NIC's receive path.
	HookXDP
)

func (h Hook) String() string {
	switch h {
	case HookTC:
		return "tc"
	case HookXDP:
		return "xdp"
	}
	return "hook(" + strconv.Itoa(int(h)) + ")"
}

// ParseHook parses "tc" or "xdp".
func ParseHook(s string) (Hook, error) {
	switch s {
	case "tc":
		return HookTC, nil
	case "xdp":
		return HookXDP, nil
	}
	return 0, fmt.Errorf("%w: hook %q: want tc or xdp", ErrInvalid, s)
}

// Mode is the kernel mechanism behind an attachment.
type Mode uint8

const (
	// ModeAuto picks the best the kernel offers: TCX, else a clsact
	// qdisc with a cls_bpf filter, for HookTC; native XDP, else generic,
	// for HookXDP.
	ModeAuto Mode = iota
	ModeTCX
	ModeTCLegacy
	ModeXDPNative
	ModeXDPGeneric
)

var modeNames = [...]string{"auto", "tcx", "tc-legacy", "xdp-native", "xdp-generic"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// AttachOptions configure Attach. The zero value attaches at tc with the
// best mechanism available.
type AttachOptions struct {
	// Hook is where to attach. Optional. Default: HookTC.
	Hook Hook
	// Mode forces one mechanism; it must belong to Hook. Optional.
	// Default: ModeAuto.
	Mode Mode
}

// Attachment is one program attached to one interface.
type Attachment struct {
	Ifindex   int
	Interface string // resolved in the caller's network namespace; empty if gone
	Point     string // "tc-ingress", "tc-egress" or "xdp"
	Mode      Mode
	ProgramID ebpf.ProgramID
}

// attach points, as they appear in pin names (bpffs forbids dots).
const (
	pointTCIngress = "tc_ingress"
	pointTCEgress  = "tc_egress"
	pointXDP       = "xdp"
	legacySuffix   = "_legacy"
	linksDir       = "links"
	// legacyPriority is the cls_bpf filter priority and handle xdplane
	// uses on clsact, so that it can find its own filter again.
	legacyPriority = 0x7864
)

func (d *Datapath) linkPin(ifindex int, point string) string {
	return filepath.Join(d.dir, linksDir, strconv.Itoa(ifindex)+"_"+point)
}

func (d *Datapath) program(point string) *ebpf.Program {
	switch point {
	case pointTCIngress:
		return d.progs.XdplaneTcIngress
	case pointTCEgress:
		return d.progs.XdplaneTcEgress
	default:
		return d.progs.XdplaneXdp
	}
}

// Attach runs the load balancer on the interface named ifname, in the
// network namespace of the calling OS thread. The attachment is pinned, so
// it outlives this process. If xdplane is already attached there at the
// same hook, the programs inside the existing attachment are replaced with
// this Datapath's, without a moment of detachment; if it is attached at the
// other hook, that attachment is removed once the new one is in place.
func (d *Datapath) Attach(ifname string, opts AttachOptions) error {
	if d.progs == nil {
		return ErrNoPrograms
	}
	if err := checkMode(opts); err != nil {
		return err
	}
	ifindex, err := attachableIfindex(ifname)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.MkdirAll(filepath.Join(d.dir, linksDir), 0o700); err != nil {
		return err
	}

	points, others := []string{pointTCIngress, pointTCEgress}, []string{pointXDP}
	if opts.Hook == HookXDP {
		points, others = others, points
	}
	for _, p := range points {
		if err := d.attachPoint(ifindex, p, opts.Mode); err != nil {
			return fmt.Errorf("attach %s to %s: %w", p, ifname, err)
		}
	}
	for _, p := range others {
		if err := d.detachPoint(ifindex, p); err != nil {
			return fmt.Errorf("detach %s from %s: %w", p, ifname, err)
		}
	}
	return nil
}

func checkMode(opts AttachOptions) error {
	switch {
	case opts.Hook > HookXDP:
		return fmt.Errorf("%w: hook %d", ErrInvalid, opts.Hook)
	case opts.Mode == ModeAuto:
		return nil
	case opts.Hook == HookTC && (opts.Mode == ModeTCX || opts.Mode == ModeTCLegacy):
		return nil
	case opts.Hook == HookXDP && (opts.Mode == ModeXDPNative || opts.Mode == ModeXDPGeneric):
		return nil
	}
	return fmt.Errorf("%w: mode %s does not belong to hook %s", ErrInvalid, opts.Mode, opts.Hook)
}

func ifindexOf(ifname string) (int, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("%w: interface %q: %w", ErrInvalid, ifname, err)
	}
	return l.Attrs().Index, nil
}

// attachableIfindex is ifindexOf for Attach: the programs parse Ethernet
// frames, so an interface without an Ethernet header (tun, wireguard,
// loopback) is refused rather than misparsed.
func attachableIfindex(ifname string) (int, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("%w: interface %q: %w", ErrInvalid, ifname, err)
	}
	if enc := l.Attrs().EncapType; enc != "ether" {
		return 0, fmt.Errorf("%w: interface %q has link type %q; xdplane attaches to Ethernet interfaces only", ErrInvalid, ifname, enc)
	}
	return l.Attrs().Index, nil
}

func (d *Datapath) attachPoint(ifindex int, point string, mode Mode) error {
	prog := d.program(point)
	pin := d.linkPin(ifindex, point)

	// Already attached by us: replace the program in place.
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		defer l.Close()
		if err := l.Update(prog); err != nil {
			return fmt.Errorf("replace program: %w", err)
		}
		return nil
	}
	if _, err := os.Stat(pin + legacySuffix); err == nil {
		return d.attachLegacy(ifindex, point, prog, pin)
	}

	var (
		l   link.Link
		err error
	)
	switch point {
	case pointXDP:
		if mode != ModeXDPGeneric {
			l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
		}
		if mode == ModeXDPGeneric || (mode == ModeAuto && err != nil) {
			l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPGenericMode})
		}
	default:
		attach := ebpf.AttachTCXIngress
		if point == pointTCEgress {
			attach = ebpf.AttachTCXEgress
		}
		if mode != ModeTCLegacy {
			l, err = link.AttachTCX(link.TCXOptions{Program: prog, Interface: ifindex, Attach: attach})
			if err == nil || mode == ModeTCX || !errors.Is(err, ebpf.ErrNotSupported) {
				break
			}
		}
		return d.attachLegacy(ifindex, point, prog, pin)
	}
	if err != nil {
		return err
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return errors.Join(fmt.Errorf("pin link: %w", err), l.Unpin())
	}
	return nil
}

func legacyFilter(ifindex int, point string, fd int) *netlink.BpfFilter {
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if point == pointTCEgress {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    parent,
			Handle:    legacyPriority,
			Priority:  legacyPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           fd,
		Name:         "xdplane_" + point,
		DirectAction: true,
	}
}

// attachLegacy installs (or replaces) a cls_bpf filter on a clsact qdisc.
// Such a filter has no link to pin; the program is pinned instead, as the
// record that xdplane owns the filter.
func (d *Datapath) attachLegacy(ifindex int, point string, prog *ebpf.Program, pin string) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	if err := netlink.FilterReplace(legacyFilter(ifindex, point, prog.FD())); err != nil {
		return fmt.Errorf("add cls_bpf filter: %w", err)
	}
	// Re-pinning the same path needs the old pin gone first.
	_ = os.Remove(pin + legacySuffix)
	if err := prog.Pin(pin + legacySuffix); err != nil {
		return fmt.Errorf("pin program: %w", err)
	}
	// The Program object must not keep the pin: it is shared by every
	// interface this program is attached to.
	return nil
}

func (d *Datapath) detachPoint(ifindex int, point string) error {
	return detachPin(d.linkPin(ifindex, point))
}

// detachPin detaches and unpins whatever the pin path records, be it a
// link or a legacy filter. A missing pin is not an error.
func detachPin(pin string) error {
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		defer l.Close()
		// Detach rather than rely on unpinning: another process may hold
		// the link open.
		if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("detach link: %w", err)
		}
		return l.Unpin()
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("open pinned link %s: %w", pin, err)
	}
	legacy := pin + legacySuffix
	if _, err := os.Stat(legacy); err != nil {
		return nil
	}
	ifindex, point, ok := parsePin(filepath.Base(pin))
	if ok {
		err := netlink.FilterDel(legacyFilter(ifindex, point, 0))
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("delete cls_bpf filter: %w", err)
		}
	}
	return os.Remove(legacy)
}

func parsePin(name string) (ifindex int, point string, ok bool) {
	name = strings.TrimSuffix(name, legacySuffix)
	idx, point, found := strings.Cut(name, "_")
	if !found {
		return 0, "", false
	}
	n, err := strconv.Atoi(idx)
	if err != nil {
		return 0, "", false
	}
	return n, point, true
}

// Detach removes xdplane from the interface named ifname (every hook), in
// the network namespace of the calling OS thread.
func (d *Datapath) Detach(ifname string) error {
	ifindex, err := ifindexOf(ifname)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range []string{pointTCIngress, pointTCEgress, pointXDP} {
		if err := d.detachPoint(ifindex, p); err != nil {
			return fmt.Errorf("detach %s from %s: %w", p, ifname, err)
		}
	}
	return nil
}

// Attachments lists what this datapath has attached, from its pins.
func (d *Datapath) Attachments() ([]Attachment, error) {
	entries, err := os.ReadDir(filepath.Join(d.dir, linksDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Attachment
	for _, e := range entries {
		ifindex, point, ok := parsePin(e.Name())
		if !ok {
			continue
		}
		a := Attachment{Ifindex: ifindex, Point: strings.ReplaceAll(point, "_", "-")}
		if l, err := netlink.LinkByIndex(ifindex); err == nil {
			a.Interface = l.Attrs().Name
		}
		path := filepath.Join(d.dir, linksDir, e.Name())
		if strings.HasSuffix(e.Name(), legacySuffix) {
			a.Mode = ModeTCLegacy
			if p, err := ebpf.LoadPinnedProgram(path, nil); err == nil {
				if info, err := p.Info(); err == nil {
					a.ProgramID, _ = info.ID()
				}
				p.Close()
			}
		} else {
			l, err := link.LoadPinnedLink(path, nil)
			if err != nil {
				return nil, fmt.Errorf("open pinned link %s: %w", e.Name(), err)
			}
			if info, err := l.Info(); err == nil {
				a.ProgramID = info.Program
				switch {
				case point != pointXDP:
					a.Mode = ModeTCX
				case info.XDP() != nil:
					a.Mode = xdpMode(ifindex)
				}
			}
			l.Close()
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Ifindex != out[j].Ifindex {
			return out[i].Ifindex < out[j].Ifindex
		}
		return out[i].Point < out[j].Point
	})
	return out, nil
}

// xdpMode tells native from generic XDP by asking netlink.
func xdpMode(ifindex int) Mode {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil {
		return ModeAuto
	}
	const xdpAttachedSKB = 2 // XDP_ATTACHED_SKB, linux/if_link.h
	if l.Attrs().Xdp.AttachMode == xdpAttachedSKB {
		return ModeXDPGeneric
	}
	return ModeXDPNative
}

// Upgrade moves every attachment pinned in this datapath's directory to the
// programs this Datapath loaded, each with one atomic replacement: no
// packet meets a detached interface.
func (d *Datapath) Upgrade() error {
	if d.progs == nil {
		return ErrNoPrograms
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	entries, err := os.ReadDir(filepath.Join(d.dir, linksDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		ifindex, point, ok := parsePin(e.Name())
		if !ok {
			continue
		}
		if err := d.attachPoint(ifindex, point, ModeAuto); err != nil {
			errs = append(errs, fmt.Errorf("upgrade %s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// Remove tears down the datapath pinned in dir (DefaultDir if empty):
// detaches every program it attached, then removes the pinned links and
// maps, and the directory itself. Conntrack and services are lost. Remove
// detaches interfaces by index in the calling thread's network namespace.
// A directory that holds nothing is not an error.
func Remove(dir string) error {
	dir, err := cleanDir(dir)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(filepath.Join(dir, linksDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var errs []error
	for _, e := range entries {
		pin := filepath.Join(dir, linksDir, strings.TrimSuffix(e.Name(), legacySuffix))
		if err := detachPin(pin); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	_ = os.Remove(filepath.Join(dir, linksDir))
	for _, name := range mapNames() {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// A bpffs that Open mounted on dir itself goes too.
	if onFS, _ := isBPFFS(dir); onFS {
		if parentOnFS, _ := isBPFFS(filepath.Dir(dir)); !parentOnFS {
			if err := unix.Unmount(dir, 0); err != nil {
				return fmt.Errorf("unmount bpffs at %s: %w", dir, err)
			}
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}
