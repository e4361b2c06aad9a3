package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// pinState is what the pin of one attach point records, checked against
// the kernel.
type pinState struct {
	legacy bool
	mode   Mode
	prog   ebpf.ProgramID
	// stale: the pin records an attachment that is no longer in place:
	// a link whose interface has gone (the kernel severs it, and a new
	// interface may reuse the index), or, in the calling thread's network
	// namespace, a cls_bpf record whose filter is gone or runs another
	// program.
	stale bool
	// id identifies what is pinned, for removeStale: the link's ID, or
	// the recorded program's.
	id uint32
}

// inspectPin reads the pin of k; ok is false if there is none. here is
// the calling thread's network namespace: only there can a cls_bpf
// filter be checked, and only there is an XDP mode read.
func inspectPin(dir string, k pinKey, here uint64) (st pinState, ok bool, err error) {
	path := pinPath(dir, k)
	if _, err := os.Lstat(path + legacySuffix); err == nil {
		st.legacy, st.mode = true, ModeTCLegacy
		p, err := ebpf.LoadPinnedProgram(path+legacySuffix, nil)
		if err != nil {
			return st, false, fmt.Errorf("open pinned program %s: %w", k.name()+legacySuffix, err)
		}
		defer p.Close()
		info, err := p.Info()
		if err != nil {
			return st, false, fmt.Errorf("program info of %s: %w", k.name()+legacySuffix, err)
		}
		st.prog, _ = info.ID()
		st.id = uint32(st.prog)
		if k.netns == here {
			running, err := legacyProgram(k.ifindex, k.point)
			if err != nil {
				return st, false, err
			}
			st.stale = running != st.prog
		}
		return st, true, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return st, false, err
	}

	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, fmt.Errorf("open pinned link %s: %w", k.name(), err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return st, false, fmt.Errorf("link info of %s: %w", k.name(), err)
	}
	st.prog, st.id = info.Program, uint32(info.ID)
	ifindex := uint32(0)
	switch {
	case info.XDP() != nil:
		ifindex = info.XDP().Ifindex
		if k.netns == here {
			st.mode = xdpMode(k.ifindex)
		}
	case info.TCX() != nil:
		ifindex = info.TCX().Ifindex
		st.mode = ModeTCX
	}
	// A link on a deleted interface reports index 0: a new interface
	// with the old index is not attached.
	st.stale = ifindex != uint32(k.ifindex)
	return st, true, nil
}

// legacyProgram returns the program of xdplane's cls_bpf filter at point
// on interface ifindex of the calling thread's namespace; 0 if there is
// none, or no such interface.
func legacyProgram(ifindex int, point Point) (ebpf.ProgramID, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) || errors.Is(err, unix.ENODEV) {
			return 0, nil
		}
		return 0, fmt.Errorf("interface %d: %w", ifindex, err)
	}
	want := legacyFilter(ifindex, point, 0)
	filters, err := netlink.FilterList(l, want.Parent)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return 0, nil // no clsact qdisc
		}
		return 0, fmt.Errorf("list filters of interface %d: %w", ifindex, err)
	}
	for _, f := range filters {
		if b, ok := f.(*netlink.BpfFilter); ok && b.Handle == want.Handle && b.Priority == want.Priority {
			return ebpf.ProgramID(b.Id), nil
		}
	}
	return 0, nil
}

const asidePrefix = "stale-"

// removeAside removes what a removeStale that did not finish left aside.
func removeAside(dir string) {
	ents, _ := os.ReadDir(filepath.Join(dir, linksDir))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), asidePrefix) {
			_ = os.Remove(filepath.Join(dir, linksDir, e.Name()))
		}
	}
}

// removeStale removes the pin of k if it still holds what st found there.
// The pin is first moved aside, so that an attachment pinned at the same
// path meanwhile (by an Attach in another process, to an interface that
// took the index) is put back rather than removed.
func removeStale(dir string, k pinKey, st pinState) error {
	path := pinPath(dir, k)
	if st.legacy {
		path += legacySuffix
	}
	// bpffs refuses names with a dot; parsePin, names that start so.
	aside := filepath.Join(dir, linksDir, fmt.Sprintf("%s%d-%s", asidePrefix, os.Getpid(), filepath.Base(path)))
	if err := os.Rename(path, aside); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove stale pin %s: %w", filepath.Base(path), err)
	}
	var id uint32
	if st.legacy {
		if p, err := ebpf.LoadPinnedProgram(aside, nil); err == nil {
			if info, err := p.Info(); err == nil {
				pid, _ := info.ID()
				id = uint32(pid)
			}
			p.Close()
		}
	} else if l, err := link.LoadPinnedLink(aside, nil); err == nil {
		if info, err := l.Info(); err == nil {
			id = uint32(info.ID)
		}
		l.Close()
	}
	if id != st.id {
		if err := unix.Renameat2(unix.AT_FDCWD, aside, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
			return fmt.Errorf("put back pin %s: %w", filepath.Base(path), err)
		}
		return nil
	}
	return os.Remove(aside)
}

// prune removes the stale pins of the datapath in dir for interface
// ifindex of network namespace ns. Errors are collected, not fatal: one
// bad pin must not stop the others.
func prune(dir string, here, ns uint64, ifindex int) error {
	var errs []error
	for _, p := range []Point{PointTCIngress, PointTCEgress, PointXDP} {
		k := pinKey{netns: ns, ifindex: ifindex, point: p}
		st, ok, err := inspectPin(dir, k, here)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok && st.stale {
			errs = append(errs, removeStale(dir, k, st))
		}
	}
	return errors.Join(errs...)
}
