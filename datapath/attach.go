package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/internal/enum"
	"github.com/xdplane/xdplane/internal/kernel"
)

// Hook is where on an interface the load balancer runs.
type Hook uint8

const (
	// HookTC attaches at tc ingress (load balancing, then an endpoint's
	// egress policy) and tc egress (an endpoint's ingress policy, then
	// reverse NAT). Right for veths and for any interface whose traffic
	// may originate on this host.
	HookTC Hook = iota
	// HookXDP attaches at XDP on ingress (the prefilter, load balancing
	// and reverse NAT): fastest on a physical NIC's receive path.
	HookXDP
)

var hookNames = enum.New[Hook]("hook", "tc", "xdp")

// ParseHook parses "tc" or "xdp", in any case.
func ParseHook(s string) (Hook, error) { return hookNames.Parse(s, ErrInvalid) }

// String returns "tc" or "xdp".
func (h Hook) String() string { return hookNames.String(h) }

// MarshalText implements encoding.TextMarshaler.
func (h Hook) MarshalText() ([]byte, error) { return hookNames.Marshal(h, ErrInvalid) }

// UnmarshalText implements encoding.TextUnmarshaler, as ParseHook.
func (h *Hook) UnmarshalText(b []byte) error { return hookNames.Unmarshal(h, b, ErrInvalid) }

// Mode is the kernel mechanism behind an attachment.
type Mode uint8

const (
	// ModeAuto picks the best the kernel offers. For HookTC: TCX, else a
	// clsact qdisc with a cls_bpf filter. For HookXDP: native XDP, else,
	// where the driver has none, generic XDP; the attachment then reports
	// ModeXDPGeneric.
	//
	// Warning: generic XDP sees locally sent packets with partial
	// checksums, which XDP cannot rewrite correctly. On an interface whose
	// incoming traffic may be generated on this host (a veth, or a device
	// without native XDP that local senders reach) use HookTC instead.
	ModeAuto Mode = iota
	// ModeTCX is a TCX link (Linux 6.6).
	ModeTCX
	// ModeTCLegacy is a cls_bpf filter on a clsact qdisc.
	ModeTCLegacy
	// ModeXDPNative is XDP in the driver; Attach fails where the driver
	// has none.
	ModeXDPNative
	// ModeXDPGeneric is XDP in the kernel's generic receive path, for any
	// driver; slower than native.
	ModeXDPGeneric
)

var modeNames = enum.New[Mode]("mode", "auto", "tcx", "tc-legacy", "xdp-native", "xdp-generic")

// ParseMode parses a mode's name, as String returns it, in any case.
func ParseMode(s string) (Mode, error) { return modeNames.Parse(s, ErrInvalid) }

// String returns "auto", "tcx", "tc-legacy", "xdp-native" or
// "xdp-generic".
func (m Mode) String() string { return modeNames.String(m) }

// MarshalText implements encoding.TextMarshaler.
func (m Mode) MarshalText() ([]byte, error) { return modeNames.Marshal(m, ErrInvalid) }

// UnmarshalText implements encoding.TextUnmarshaler, as ParseMode.
func (m *Mode) UnmarshalText(b []byte) error { return modeNames.Unmarshal(m, b, ErrInvalid) }

// AttachOptions configure Attach. The zero value attaches at tc with the
// best mechanism available.
type AttachOptions struct {
	// Hook is where to attach. Optional. Default: HookTC.
	Hook Hook
	// Mode forces one mechanism; it must belong to Hook. An interface
	// already attached with another mechanism is re-attached with this one.
	// Optional. Default: ModeAuto.
	Mode Mode
}

// Attachment is one program attached to one interface.
type Attachment struct {
	// NetNS identifies the network namespace of the interface (the inode
	// number of its nsfs file, as `ls -i /proc/self/ns/net` shows).
	NetNS uint64
	// Ifindex is the interface's index in that namespace.
	Ifindex int
	// Interface is the interface's name, resolved when NetNS is the
	// caller's; empty otherwise, or if the interface is gone.
	Interface string
	Point     Point
	Mode      Mode
	ProgramID ebpf.ProgramID
}

// Point is one of the hooks a program attaches to on an interface.
type Point uint8

const (
	PointTCIngress Point = iota // tc (TCX or clsact) ingress
	PointTCEgress               // tc (TCX or clsact) egress
	PointXDP                    // XDP
)

var pointNames = enum.New[Point]("attach point", "tc-ingress", "tc-egress", "xdp")

// ParsePoint parses "tc-ingress", "tc-egress" or "xdp", in any case.
func ParsePoint(s string) (Point, error) { return pointNames.Parse(s, ErrInvalid) }

// String returns "tc-ingress", "tc-egress" or "xdp".
func (p Point) String() string { return pointNames.String(p) }

// MarshalText implements encoding.TextMarshaler.
func (p Point) MarshalText() ([]byte, error) { return pointNames.Marshal(p, ErrInvalid) }

// UnmarshalText implements encoding.TextUnmarshaler, as ParsePoint.
func (p *Point) UnmarshalText(b []byte) error { return pointNames.Unmarshal(p, b, ErrInvalid) }

// pinName is p as it appears in pin names ("tc_ingress"), which older
// versions wrote and a restarted process must find again.
func (p Point) pinName() string { return strings.ReplaceAll(p.String(), "-", "_") }

const (
	legacySuffix = "_legacy"
	linksDir     = "links"
	// legacyPriority is the cls_bpf filter priority and handle xdplane
	// uses on clsact, so that it can find its own filter again.
	legacyPriority = 0x7864
)

// pinKey names one attach point: the network namespace, the interface
// index in it, and the point. Interface indexes repeat across namespaces,
// so the namespace is part of the name.
type pinKey struct {
	netns   uint64
	ifindex int
	point   Point
}

func (k pinKey) name() string { return fmt.Sprintf("%d_%d_%s", k.netns, k.ifindex, k.point.pinName()) }

// parsePin reads a pin's file name back into its key.
func parsePin(name string) (k pinKey, legacy bool, ok bool) {
	legacy = strings.HasSuffix(name, legacySuffix)
	parts := strings.SplitN(strings.TrimSuffix(name, legacySuffix), "_", 3)
	if len(parts) != 3 {
		return pinKey{}, false, false
	}
	ns, err1 := strconv.ParseUint(parts[0], 10, 64)
	idx, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return pinKey{}, false, false
	}
	point, err := ParsePoint(strings.ReplaceAll(parts[2], "_", "-"))
	if err != nil {
		return pinKey{}, false, false
	}
	return pinKey{netns: ns, ifindex: idx, point: point}, legacy, true
}

func pinPath(dir string, k pinKey) string { return filepath.Join(dir, linksDir, k.name()) }

// currentNetNS identifies the calling thread's network namespace.
func currentNetNS() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("identify network namespace: %w", err)
	}
	return st.Ino, nil
}

func (d *Datapath) program(point Point) *ebpf.Program {
	switch point {
	case PointTCIngress:
		return d.k.Programs.XdplaneTcIngress
	case PointTCEgress:
		return d.k.Programs.XdplaneTcEgress
	default:
		return d.k.Programs.XdplaneXdp
	}
}

// Attach runs the load balancer on the interface named ifname, in the
// network namespace of the calling OS thread. The attachment is pinned, so
// it outlives this process. If xdplane is already attached there at the
// same hook, the programs inside the existing attachment are replaced with
// this Datapath's, without a moment of detachment; if it is attached at the
// other hook, that attachment is removed once the new one is in place. If
// Attach fails, what it attached is detached again. A kernel that lacks
// what the hook and mode need gives an error wrapping ErrNotSupported.
//
// xdplane programs on the interface that this datapath did not attach
// (see ForeignAttachments: another datapath's, typically one whose
// bpffs was unmounted, so that its pins are out of sight) are detached:
// at tc once this datapath's programs are in place, so that no packet
// meets an interface without a load balancer; at XDP, which holds one
// program, when the kernel refuses this datapath's because another holds
// the hook, and this datapath's is attached at once in its place. A
// failure to detach another's leaves this datapath's programs in place.
// Without the
// privilege to read programs by ID (CAP_SYS_ADMIN) Attach cannot tell
// them from other programs, and leaves them.
func (d *Datapath) Attach(ifname string, opts AttachOptions) error {
	if d.k.Programs == nil {
		return ErrNoPrograms
	}
	if err := checkMode(opts); err != nil {
		return err
	}
	iface, err := attachableLink(ifname)
	if err != nil {
		return err
	}
	ifindex := iface.Attrs().Index
	ns, err := currentNetNS()
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.MkdirAll(filepath.Join(d.k.Dir, linksDir), 0o700); err != nil {
		return err
	}
	// A pin of an interface that had this index before is not an
	// attachment to this one. (Attachments prunes the others.) Best
	// effort: attachPoint replaces a severed link all the same.
	_ = prune(d.k.Dir, ns, ns, ifindex)

	names := d.ownNames()
	points, others := []Point{PointTCIngress, PointTCEgress}, []Point{PointXDP}
	if opts.Hook == HookXDP {
		points, others = others, points
	}
	var created []pinKey
	undo := func(err error) error {
		for _, c := range created {
			err = errors.Join(err, detachPin(d.k.Dir, c, ns))
		}
		return err
	}
	for _, p := range points {
		k := pinKey{netns: ns, ifindex: ifindex, point: p}
		fresh, err := d.attachPoint(k, opts.Mode, true)
		if p == PointXDP && errors.Is(err, unix.EBUSY) {
			// XDP holds one program, and another has it: if another
			// datapath's, it is detached and this one attached in its
			// place; until then the interface keeps it.
			if terr := takeOver(d.k.Dir, ns, iface, names, PointXDP); terr != nil {
				err = errors.Join(err, terr)
			} else {
				fresh, err = d.attachPoint(k, opts.Mode, true)
			}
		}
		if err != nil {
			return fmt.Errorf("attach %s to %s: %w", p, ifname, undo(err))
		}
		if fresh {
			created = append(created, k)
		}
	}
	for _, p := range others {
		if err := detachPin(d.k.Dir, pinKey{netns: ns, ifindex: ifindex, point: p}, ns); err != nil {
			return fmt.Errorf("detach %s from %s: %w", p, ifname, err)
		}
	}
	// Read the interface again: its XDP state has changed.
	if iface, err = netlink.LinkByIndex(ifindex); err != nil {
		return fmt.Errorf("attach to %s: %w", ifname, undo(err))
	}
	// This datapath's programs are in place and stay, whatever happens to
	// another's.
	if err := takeOver(d.k.Dir, ns, iface, names, PointTCIngress, PointTCEgress, PointXDP); err != nil {
		return fmt.Errorf("attach to %s: %w", ifname, err)
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

func linkByName(ifname string) (netlink.Link, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("%w: interface %q: %w", ErrInvalid, ifname, err)
	}
	return l, nil
}

func ifindexOf(ifname string) (int, error) {
	l, err := linkByName(ifname)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, nil
}

// attachableLink is linkByName for Attach: the programs parse Ethernet
// frames, so an interface without an Ethernet header (tun, wireguard,
// loopback) is refused rather than misparsed.
func attachableLink(ifname string) (netlink.Link, error) {
	l, err := linkByName(ifname)
	if err != nil {
		return nil, err
	}
	if enc := l.Attrs().EncapType; enc != "ether" {
		return nil, fmt.Errorf("%w: interface %q has link type %q; xdplane attaches to Ethernet interfaces only", ErrInvalid, ifname, enc)
	}
	return l, nil
}

// errSevered: a pinned link whose interface has gone.
var errSevered = errors.New("link severed: its interface is gone")

// pinnedMode says how the point k is attached now, from its pins; ok is
// false if it is not.
func pinnedMode(dir string, k pinKey) (mode Mode, ok bool) {
	pin := pinPath(dir, k)
	if _, err := os.Stat(pin + legacySuffix); err == nil {
		return ModeTCLegacy, true
	}
	if _, err := os.Stat(pin); err != nil {
		return ModeAuto, false
	}
	if k.point != PointXDP {
		return ModeTCX, true
	}
	return xdpMode(k.ifindex), true
}

// attachPoint attaches the program for k, or replaces the program in the
// attachment that is there. It reports whether it made a new attachment.
// A pinned link whose interface has gone is unpinned; with fresh set, the
// point is then attached afresh, else errSevered is returned.
func (d *Datapath) attachPoint(k pinKey, mode Mode, fresh bool) (bool, error) {
	prog := d.program(k.point)
	pin := pinPath(d.k.Dir, k)

	if have, ok := pinnedMode(d.k.Dir, k); ok {
		switch {
		case mode != ModeAuto && have != mode:
			// Another mechanism was asked for: start over with it.
			if err := detachPin(d.k.Dir, k, k.netns); err != nil {
				return false, err
			}
		case have == ModeTCLegacy:
			return false, d.attachLegacy(k, prog)
		default:
			err := updateLink(pin, prog)
			if err == nil {
				return false, nil
			}
			if !errors.Is(err, errSevered) || !fresh {
				return false, err
			}
		}
	}

	var (
		l   link.Link
		err error
	)
	switch k.point {
	case PointXDP:
		l, err = attachXDP(prog, k.ifindex, mode)
	default:
		attach := ebpf.AttachTCXIngress
		if k.point == PointTCEgress {
			attach = ebpf.AttachTCXEgress
		}
		if mode != ModeTCLegacy {
			l, err = link.AttachTCX(link.TCXOptions{Program: prog, Interface: k.ifindex, Attach: attach})
			if err == nil || mode == ModeTCX || !errors.Is(err, ebpf.ErrNotSupported) {
				err = missingFeature(err, featureTCX)
				break
			}
		}
		return true, d.attachLegacy(k, prog)
	}
	if err != nil {
		return false, err
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return false, errors.Join(fmt.Errorf("pin link: %w", err), l.Detach())
	}
	return true, nil
}

// attachXDP attaches prog at XDP on ifindex in the given mode. With
// ModeAuto it tries native XDP first; the kernel answers EOPNOTSUPP where
// the driver has no native XDP (it lacks ndo_bpf, or refuses XDP in its
// present configuration), and generic XDP is attached instead.
func attachXDP(prog *ebpf.Program, ifindex int, mode Mode) (link.Link, error) {
	flags := link.XDPDriverMode
	if mode == ModeXDPGeneric {
		flags = link.XDPGenericMode
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
	switch {
	case err == nil:
		return l, nil
	case mode == ModeAuto && errors.Is(err, unix.EOPNOTSUPP):
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPGenericMode})
		if err != nil {
			return nil, missingFeature(fmt.Errorf("no native XDP in the driver, and generic XDP failed: %w", err), featureXDPLink)
		}
		return l, nil
	case mode == ModeXDPNative && errors.Is(err, unix.EOPNOTSUPP):
		return nil, fmt.Errorf("no native XDP in the driver (ModeAuto would fall back to generic XDP): %w", err)
	}
	return nil, missingFeature(err, featureXDPLink)
}

// updateLink swaps prog into the link pinned at pin. A link whose
// interface has gone is unpinned, and errSevered returned.
func updateLink(pin string, prog *ebpf.Program) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return fmt.Errorf("open pinned link: %w", err)
	}
	defer l.Close()
	uerr := l.Update(prog)
	if uerr == nil {
		return nil
	}
	if severed(l) {
		return errors.Join(errSevered, l.Unpin())
	}
	return fmt.Errorf("replace program: %w", uerr)
}

// severed reports whether a link's interface has gone.
func severed(l link.Link) bool {
	info, err := l.Info()
	if err != nil {
		return true
	}
	if x := info.XDP(); x != nil {
		return x.Ifindex == 0
	}
	if t := info.TCX(); t != nil {
		return t.Ifindex == 0
	}
	return false
}

func legacyFilter(ifindex int, point Point, fd int) *netlink.BpfFilter {
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if point == PointTCEgress {
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
		Name:         "xdplane_" + point.pinName(),
		DirectAction: true,
	}
}

// attachLegacy installs (or replaces) a cls_bpf filter on a clsact qdisc,
// in the calling thread's network namespace. Such a filter has no link to
// pin; a clone of the program is pinned instead, one per point, as the
// record that xdplane owns the filter. (A clone, because a Program
// remembers where it was pinned and would move that one pin around.)
func (d *Datapath) attachLegacy(k pinKey, prog *ebpf.Program) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: k.ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	if err := netlink.FilterReplace(legacyFilter(k.ifindex, k.point, prog.FD())); err != nil {
		return fmt.Errorf("add cls_bpf filter: %w", err)
	}
	record, err := prog.Clone()
	if err != nil {
		return err
	}
	defer record.Close()
	path := pinPath(d.k.Dir, k) + legacySuffix
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := record.Pin(path); err != nil {
		return fmt.Errorf("pin program: %w", err)
	}
	return nil
}

// detachPin detaches and unpins whatever is pinned for k, be it a link or
// a legacy filter. A link detaches from any namespace; a cls_bpf filter
// only from its own, here. Nothing pinned is not an error.
func detachPin(dir string, k pinKey, here uint64) error {
	pin := pinPath(dir, k)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		defer l.Close()
		// Detach rather than rely on unpinning: another process may hold
		// the link open.
		if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) && !severed(l) {
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
	if k.netns != here {
		return fmt.Errorf("cls_bpf filter on interface %d of network namespace %d: remove it from there", k.ifindex, k.netns)
	}
	err := netlink.FilterDel(legacyFilter(k.ifindex, k.point, 0))
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete cls_bpf filter: %w", err)
	}
	return os.Remove(legacy)
}

// pins lists the attach points pinned in dir.
func pins(dir string) ([]pinKey, error) {
	entries, err := os.ReadDir(filepath.Join(dir, linksDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []pinKey
	for _, e := range entries {
		if k, _, ok := parsePin(e.Name()); ok {
			out = append(out, k)
		}
	}
	return out, nil
}

// Detach removes xdplane from the interface named ifname (every hook), in
// the network namespace of the calling OS thread.
func (d *Datapath) Detach(ifname string) error {
	ifindex, err := ifindexOf(ifname)
	if err != nil {
		return err
	}
	ns, err := currentNetNS()
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range []Point{PointTCIngress, PointTCEgress, PointXDP} {
		if err := detachPin(d.k.Dir, pinKey{netns: ns, ifindex: ifindex, point: p}, ns); err != nil {
			return fmt.Errorf("detach %s from %s: %w", p, ifname, err)
		}
	}
	return nil
}

// AttachedHook reports whether xdplane is attached to the interface named
// ifname, in the network namespace of the calling OS thread, and at which
// hook. A pin left by an interface that had the same index before is not
// an attachment.
func (d *Datapath) AttachedHook(ifname string) (hook Hook, attached bool, err error) {
	ifindex, err := ifindexOf(ifname)
	if err != nil {
		return 0, false, err
	}
	ns, err := currentNetNS()
	if err != nil {
		return 0, false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range []Point{PointTCIngress, PointXDP} {
		st, ok, err := inspectPin(d.k.Dir, pinKey{netns: ns, ifindex: ifindex, point: p}, ns)
		if err != nil {
			return 0, false, err
		}
		if ok && !st.stale {
			if p == PointXDP {
				return HookXDP, true, nil
			}
			return HookTC, true, nil
		}
	}
	return 0, false, nil
}

// Attachments lists what this datapath has attached, in every network
// namespace, from its pins, sorted by namespace, interface index and
// point. Pins of attachments that are gone are left out, and removed: a
// link whose interface was deleted (even if a new interface took its
// index), and, in the calling thread's network namespace, the record of
// a cls_bpf filter that is gone.
func (d *Datapath) Attachments() ([]Attachment, error) {
	here, err := currentNetNS()
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	keys, err := pins(d.k.Dir)
	if err != nil {
		return nil, err
	}
	var out []Attachment
	for _, k := range keys {
		st, ok, err := inspectPin(d.k.Dir, k, here)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if st.stale {
			// Best effort: a reader without the right to unpin
			// leaves the pin out all the same.
			_ = removeStale(d.k.Dir, k, st)
			continue
		}
		a := Attachment{NetNS: k.netns, Ifindex: k.ifindex, Point: k.point, Mode: st.mode, ProgramID: st.prog}
		if k.netns == here {
			if l, err := netlink.LinkByIndex(k.ifindex); err == nil {
				a.Interface = l.Attrs().Name
			}
		}
		out = append(out, a)
	}
	sortAttachments(out)
	return out, nil
}

func sortAttachments(out []Attachment) {
	sort.Slice(out, func(i, j int) bool {
		if out[i].NetNS != out[j].NetNS {
			return out[i].NetNS < out[j].NetNS
		}
		if out[i].Ifindex != out[j].Ifindex {
			return out[i].Ifindex < out[j].Ifindex
		}
		return out[i].Point < out[j].Point
	})
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
// packet meets a detached interface. Links work from any network
// namespace; cls_bpf filters are replaced in the calling thread's only.
// Links whose interface has gone are unpinned.
func (d *Datapath) Upgrade() error {
	if d.k.Programs == nil {
		return ErrNoPrograms
	}
	here, err := currentNetNS()
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	keys, err := pins(d.k.Dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range keys {
		if mode, _ := pinnedMode(d.k.Dir, k); mode == ModeTCLegacy && k.netns != here {
			errs = append(errs, fmt.Errorf("upgrade %s: a cls_bpf filter in another network namespace", k.name()))
			continue
		}
		if _, err := d.attachPoint(k, ModeAuto, false); err != nil && !errors.Is(err, errSevered) {
			errs = append(errs, fmt.Errorf("upgrade %s: %w", k.name(), err))
		}
	}
	return errors.Join(errs...)
}

// RemoveOptions configure RemoveWithOptions. The zero value is what
// Remove does.
type RemoveOptions struct {
	// Force removes the datapath even while a writer holds one of its
	// locks: a process with an lb, policy or bandwidth Manager open on it,
	// such as a running xdplane-lb. That process is left writing maps
	// that nothing reads any more (Datapath.Verify tells it so), and
	// whatever it attached is detached. Optional. Default: false, and
	// Remove fails with ErrBusy.
	Force bool
}

// Remove tears down the datapath pinned in dir (DefaultDir if empty):
// detaches every program it attached, then removes the pinned links and
// maps, and the directory. If dir is itself the mount point of a bpffs (as
// Open makes when dir is not on one), that bpffs is unmounted. Conntrack
// and services are lost. Links are detached in whatever network namespace
// they are; cls_bpf filters only in the calling thread's, so a datapath
// with filters elsewhere must be removed from there. A directory that
// holds nothing is not an error.
//
// While a writer (a Manager of package lb, policy or bandwidth, in this
// process or another, or a change to endpoints or the prefilter) holds
// one of the datapath's locks, Remove changes nothing and fails with an
// error wrapping ErrBusy that names the lock and the process holding
// it: close the Manager, or stop the process, first. RemoveWithOptions
// can force it.
func Remove(dir string) error { return RemoveWithOptions(dir, RemoveOptions{}) }

// RemoveWithOptions is Remove with options.
func RemoveWithOptions(dir string, opts RemoveOptions) error {
	dir, err := cleanDir(dir)
	if err != nil {
		return err
	}
	unlock := func() {}
	if !opts.Force {
		// Held until the locks are deleted, so that no writer starts in
		// between, and released before the bpffs is unmounted, which an
		// open lock directory would keep busy.
		release, err := kernel.LockAll(dir)
		if err != nil {
			return fmt.Errorf("remove the datapath in %s: %w", dir, err)
		}
		var once sync.Once
		unlock = func() { once.Do(release) }
		defer unlock()
	}
	keys, err := pins(dir)
	if err != nil {
		return err
	}
	here, err := currentNetNS()
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range keys {
		if err := detachPin(dir, k, here); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	removeAside(dir)
	_ = os.Remove(filepath.Join(dir, linksDir))
	if err := kernel.RemoveLocks(dir); err != nil {
		return fmt.Errorf("remove locks: %w", err)
	}
	unlock()
	names, err := mapNames()
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
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
