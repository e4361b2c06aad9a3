package datapath

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// programNames are the names xdplane's programs have in the kernel, by
// attach point: the C functions' names, and the same cut to the 15
// characters the kernel keeps where BTF does not give the whole.
var programNames = map[string]Point{
	"xdplane_xdp": PointXDP, "xdplane_tc_ingress": PointTCIngress, "xdplane_tc_egress": PointTCEgress,
	"xdplane_tc_ingr": PointTCIngress, "xdplane_tc_egre": PointTCEgress,
}

// errNoPrivilege: reading a program by its ID needs CAP_SYS_ADMIN. It
// wraps EPERM, so errors.Is(err, os.ErrPermission) holds.
var errNoPrivilege = fmt.Errorf("telling xdplane's programs from others needs CAP_SYS_ADMIN, to read programs by ID: %w", unix.EPERM)

// onInterface is one xdplane program attached to an interface.
type onInterface struct {
	iface  netlink.Link // the interface
	point  Point
	mode   Mode
	prog   ebpf.ProgramID
	link   link.ID            // the TCX link holding it, if any
	attach ebpf.AttachType    // for TCX
	filter *netlink.BpfFilter // the cls_bpf filter running it, for ModeTCLegacy
	xdp    *netlink.LinkXdp   // for PointXDP
}

// programName returns the kernel's name of program id.
func programName(id ebpf.ProgramID) (string, error) {
	p, err := ebpf.NewProgramFromID(id)
	if errors.Is(err, unix.EPERM) {
		return "", errNoPrivilege
	}
	if errors.Is(err, os.ErrNotExist) {
		return "", nil // gone meanwhile
	}
	if err != nil {
		return "", fmt.Errorf("program %d: %w", id, err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return "", fmt.Errorf("program %d: %w", id, err)
	}
	return info.Name, nil
}

// programNamer reads programs' names, each once: every interface runs
// the same few programs, and reading a name whose kernel copy is cut
// short loads the program's BTF.
type programNamer map[ebpf.ProgramID]string

// ownNames is a programNamer that knows d's own programs already: the
// usual interface, which runs only those, needs no program read by ID
// (nor the privilege that takes).
func (d *Datapath) ownNames() programNamer {
	n := programNamer{}
	if d.k.Programs == nil {
		return n // OpenPinned: the attached programs are another process's
	}
	for name, prog := range map[string]*ebpf.Program{
		"xdplane_xdp": d.k.Programs.XdplaneXdp, "xdplane_tc_ingress": d.k.Programs.XdplaneTcIngress,
		"xdplane_tc_egress": d.k.Programs.XdplaneTcEgress,
	} {
		if info, err := prog.Info(); err == nil {
			if id, ok := info.ID(); ok {
				n[id] = name
			}
		}
	}
	return n
}

// isXdplane reports whether program id is one of xdplane's programs for
// point, by its name.
func (n programNamer) isXdplane(id ebpf.ProgramID, point Point) (bool, error) {
	name, ok := n[id]
	if !ok {
		var err error
		if name, err = programName(id); err != nil {
			return false, err
		}
		n[id] = name
	}
	p, ok := programNames[name]
	return ok && p == point, nil
}

// xdplanePrograms lists the xdplane programs (any datapath's) attached to
// l, an interface of the calling thread's network namespace, at XDP, at
// TCX ingress and egress, and in cls_bpf filters on clsact. Programs it
// may not read (without CAP_SYS_ADMIN) are left out, and the error is
// then errNoPrivilege, with the others returned all the same; cls_bpf
// filters need no such privilege, their names come with them.
func xdplanePrograms(l netlink.Link, names programNamer) ([]onInterface, error) {
	var (
		out        []onInterface
		unreadable bool
	)
	ifindex := l.Attrs().Index
	// ours says whether program id at point is xdplane's, noting the
	// programs it may not read.
	ours := func(id ebpf.ProgramID, point Point) (bool, error) {
		ok, err := names.isXdplane(id, point)
		if errors.Is(err, errNoPrivilege) {
			unreadable = true
			return false, nil
		}
		return ok, err
	}
	const xdpAttachedMulti = 4 // XDP_ATTACHED_MULTI, linux/if_link.h
	// With programs in both driver and generic mode, netlink names
	// neither (and xdplane never attaches both): they are not looked at.
	if x := l.Attrs().Xdp; x != nil && x.Attached && x.AttachMode != xdpAttachedMulti {
		ok, err := ours(ebpf.ProgramID(x.ProgId), PointXDP)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, onInterface{point: PointXDP, mode: xdpMode(ifindex), prog: ebpf.ProgramID(x.ProgId), xdp: x, iface: l})
		}
	}
	for _, point := range []Point{PointTCIngress, PointTCEgress} {
		attach := ebpf.AttachTCXIngress
		if point == PointTCEgress {
			attach = ebpf.AttachTCXEgress
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: attach})
		switch {
		case errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL):
			// No TCX in this kernel: nothing can be attached there.
		case err != nil:
			return nil, fmt.Errorf("query TCX programs of %s: %w", l.Attrs().Name, err)
		default:
			for _, ap := range res.Programs {
				ok, err := ours(ap.ID, point)
				if err != nil {
					return nil, err
				}
				if ok {
					id, _ := ap.LinkID()
					out = append(out, onInterface{point: point, mode: ModeTCX, prog: ap.ID, link: id, iface: l, attach: attach})
				}
			}
		}

		parent := legacyFilter(ifindex, point, 0).Parent
		filters, err := netlink.FilterList(l, parent)
		if err != nil {
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				continue // no clsact qdisc
			}
			return nil, fmt.Errorf("list tc filters of %s: %w", l.Attrs().Name, err)
		}
		for _, f := range filters {
			b, ok := f.(*netlink.BpfFilter)
			if !ok {
				continue
			}
			if p, named := programNames[b.Name]; !named || p != point {
				continue
			}
			out = append(out, onInterface{point: point, mode: ModeTCLegacy, prog: ebpf.ProgramID(b.Id), filter: b, iface: l})
		}
	}
	if unreadable {
		return out, errNoPrivilege
	}
	return out, nil
}

// foreignOn lists the xdplane programs attached to l (in the calling
// thread's network namespace, here) that the datapath pinned in dir did
// not attach: another datapath's, on another bpffs or one whose pins are
// lost, or ones a crashed Attach left unpinned. Like xdplanePrograms, it
// returns what it found with errNoPrivilege.
func foreignOn(dir string, here uint64, l netlink.Link, names programNamer) ([]onInterface, error) {
	all, perr := xdplanePrograms(l, names)
	if perr != nil && !errors.Is(perr, errNoPrivilege) {
		return nil, perr
	}
	var out []onInterface
	for _, a := range all {
		st, ok, err := inspectPin(dir, pinKey{netns: here, ifindex: l.Attrs().Index, point: a.point}, here)
		if err != nil {
			return nil, err
		}
		if ok && !st.stale && st.prog == a.prog && (a.mode == ModeTCLegacy) == st.legacy {
			continue // ours
		}
		out = append(out, a)
	}
	return out, perr
}

// detach removes a from its interface.
func (a onInterface) detach() error {
	ifindex := a.iface.Attrs().Index
	switch {
	case a.filter != nil:
		err := netlink.FilterDel(a.filter)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete cls_bpf filter: %w", err)
		}
		return nil
	case a.point == PointXDP:
		return detachXDPProgram(a.iface, a.prog, a.xdp)
	case a.link != 0:
		l, err := link.NewFromID(a.link)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("open TCX link %d: %w", a.link, err)
		}
		defer l.Close()
		return l.Detach()
	default:
		p, err := ebpf.NewProgramFromID(a.prog)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		defer p.Close()
		return link.RawDetachProgram(link.RawDetachProgramOptions{Target: ifindex, Program: p, Attach: a.attach})
	}
}

// detachXDPProgram detaches program id from XDP on l: through its link
// where it has one (the kernel refuses to detach a link's program by
// netlink), else by netlink.
func detachXDPProgram(l netlink.Link, id ebpf.ProgramID, x *netlink.LinkXdp) error {
	ifindex := uint32(l.Attrs().Index)
	var found []link.Link
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil || info.Program != id || info.XDP() == nil || info.XDP().Ifindex != ifindex {
			continue
		}
		found = append(found, it.Take())
	}
	defer func() {
		for _, f := range found {
			f.Close()
		}
	}()
	if err := it.Err(); err != nil {
		return err
	}
	switch len(found) {
	case 0:
		flags := int(x.Flags)
		const xdpAttachedSKB, xdpFlagsSKB, xdpFlagsDrv = 2, 1 << 1, 1 << 2
		if x.AttachMode == xdpAttachedSKB {
			flags |= xdpFlagsSKB
		} else {
			flags |= xdpFlagsDrv
		}
		return netlink.LinkSetXdpFdWithFlags(l, -1, flags)
	case 1:
		return found[0].Detach()
	}
	// The same program on the same index in several network
	// namespaces: link info does not say which is this one's.
	return fmt.Errorf("program %d runs at XDP on interface index %d in %d network namespaces; cannot tell which link is %s's",
		id, ifindex, len(found), l.Attrs().Name)
}

// takeOver detaches, from the interface l, the xdplane programs that
// this datapath did not attach, at points. It cannot tell xdplane's from
// other programs without the privilege to read them by ID
// (CAP_SYS_ADMIN), and then leaves them alone.
func takeOver(dir string, here uint64, l netlink.Link, names programNamer, points ...Point) error {
	foreign, err := foreignOn(dir, here, l, names)
	if err != nil && !errors.Is(err, errNoPrivilege) {
		return err
	}
	var errs []error
	for _, f := range foreign {
		for _, p := range points {
			if f.point == p {
				if err := f.detach(); err != nil {
					errs = append(errs, fmt.Errorf("detach another datapath's %s program %d (%s): %w", f.point, f.prog, f.mode, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// ForeignAttachments lists xdplane programs attached to interfaces of the
// calling thread's network namespace that are not this datapath's: those
// of a datapath pinned on another bpffs or in another directory, or of
// one whose pins were lost (its bpffs unmounted while other mount
// namespaces kept it). Such a program runs before or instead of this
// datapath's, with maps this datapath does not write. Attach detaches
// them from the interfaces it attaches to; Remove leaves them.
//
// Telling them apart by name needs the privilege to read programs by ID
// (CAP_SYS_ADMIN). Without it, the list holds the cls_bpf filters, whose
// names come with them, and the error (which wraps os.ErrPermission)
// says what could not be read.
func (d *Datapath) ForeignAttachments() ([]Attachment, error) {
	here, err := currentNetNS()
	if err != nil {
		return nil, err
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var (
		out        []Attachment
		unreadable error
		names      = d.ownNames()
	)
	for _, l := range links {
		foreign, err := foreignOn(d.k.Dir, here, l, names)
		if errors.Is(err, errNoPrivilege) {
			unreadable = err
		} else if err != nil {
			return nil, fmt.Errorf("interface %s: %w", l.Attrs().Name, err)
		}
		for _, f := range foreign {
			out = append(out, Attachment{NetNS: here, Ifindex: l.Attrs().Index, Interface: l.Attrs().Name,
				Point: f.point, Mode: f.mode, ProgramID: f.prog})
		}
	}
	sortAttachments(out)
	return out, unreadable
}
