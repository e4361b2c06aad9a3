package datapath_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
)

// programGone waits until no program has the id: the kernel frees a
// program once its last reference goes, some time after.
func programGone(t *testing.T, id ebpf.ProgramID) bool {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		p, err := ebpf.NewProgramFromID(id)
		if errors.Is(err, os.ErrNotExist) {
			return true
		}
		if err != nil {
			t.Fatalf("program %d: %v", id, err)
		}
		p.Close()
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An interface deleted under an attachment leaves a pin behind; a new
// interface that takes its index is not attached: Attachments and
// AttachedHook say so, the stale pins are removed, and their programs
// freed. Through a handle without programs, as status opens one, so that
// only the pins hold the programs.
func TestStalePinsOfReusedIndex(t *testing.T) {
	for _, mode := range []datapath.Mode{datapath.ModeTCX, datapath.ModeTCLegacy} {
		t.Run(mode.String(), func(t *testing.T) {
			ns := vethNS(t)
			dir := testutil.BPFFS(t)
			t.Cleanup(func() { ns.Do(func() error { return datapath.Remove(dir) }) })
			dp := open(t, datapath.Options{Dir: dir})
			ns.MustDo(func() error { return dp.Attach("a", datapath.AttachOptions{Mode: mode}) })
			before := attachments(t, ns, dp)
			if len(before) != 2 {
				t.Fatalf("attachments %+v, want 2", before)
			}
			dp.Close()

			l, err := ns.Netlink().LinkByName("a")
			if err != nil {
				t.Fatal(err)
			}
			idx := l.Attrs().Index
			if err := ns.Netlink().LinkDel(l); err != nil {
				t.Fatal(err)
			}
			if err := ns.Netlink().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "d0", Index: idx}, PeerName: "d1"}); err != nil {
				t.Fatal(err)
			}
			if l, err := ns.Netlink().LinkByName("d0"); err != nil || l.Attrs().Index != idx {
				t.Fatalf("d0 did not take index %d: %v", idx, err)
			}

			ro, err := datapath.OpenPinned(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			if got := attachments(t, ns, ro); len(got) != 0 {
				t.Fatalf("attachments after the interface went: %+v, want none (d0 only took the index)", got)
			}
			var attached bool
			ns.MustDo(func() (err error) { _, attached, err = ro.AttachedHook("d0"); return err })
			if attached {
				t.Error("AttachedHook: d0 attached, but only took the index of a deleted interface")
			}
			if ents, err := os.ReadDir(filepath.Join(dir, "links")); err != nil || len(ents) != 0 {
				t.Errorf("pins left in links/: %v, %v", ents, err)
			}
			for _, a := range before {
				if !programGone(t, a.ProgramID) {
					t.Errorf("program %d of a deleted interface is still loaded", a.ProgramID)
				}
			}
		})
	}
}
