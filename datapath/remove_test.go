package datapath_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
)

// Remove refuses while a writer holds a lock, names the holder, and
// leaves everything as it was; forced, it removes the datapath.
func TestRemoveRefusesWhileLocked(t *testing.T) {
	ns := vethNS(t)
	dir := testutil.BPFFS(t)
	t.Cleanup(func() {
		ns.Do(func() error { return datapath.RemoveWithOptions(dir, datapath.RemoveOptions{Force: true}) })
	})
	dp := open(t, datapath.Options{Dir: dir})
	ns.MustDo(func() error { return dp.Attach("a", datapath.AttachOptions{}) })

	for _, name := range []string{"lb", "endpoints"} {
		held, err := kernel.Hold(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		err = ns.Do(func() error { return datapath.Remove(dir) })
		if !errors.Is(err, datapath.ErrBusy) {
			t.Fatalf("Remove while %q is held: %v, want ErrBusy", name, err)
		}
		for _, want := range []string{
			filepath.Join(dir, "locks", name),
			fmt.Sprintf("by pid %d (", os.Getpid()),
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Remove's error %q does not name %q", err, want)
			}
		}
		if got := attachments(t, ns, dp); len(got) != 2 {
			t.Fatalf("after a refused Remove: attachments %+v, want 2", got)
		}
		if err := dp.Verify(); err != nil {
			t.Fatalf("after a refused Remove: %v", err)
		}
		held.Release()
	}

	held, err := kernel.Hold(dir, "lb")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	if err := ns.Do(func() error { return datapath.RemoveWithOptions(dir, datapath.RemoveOptions{Force: true}) }); err != nil {
		t.Fatalf("forced Remove: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("forced Remove left %s: %v", dir, err)
	}
}

// Verify tells a handle that its datapath was removed, or replaced by
// another in the same directory.
func TestVerify(t *testing.T) {
	dir := testutil.BPFFS(t)
	t.Cleanup(func() { datapath.Remove(dir) })
	dp := open(t, datapath.Options{Dir: dir})
	if err := dp.Verify(); err != nil {
		t.Fatalf("Verify of a fresh datapath: %v", err)
	}
	ro, err := datapath.OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.Verify(); err != nil {
		t.Fatalf("Verify of OpenPinned: %v", err)
	}

	if err := datapath.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := dp.Verify(); !errors.Is(err, datapath.ErrNotPinned) || !strings.Contains(err.Error(), "no longer pinned") {
		t.Fatalf("Verify after Remove: %v, want ErrNotPinned, no longer pinned", err)
	}

	// Another datapath in the same place is not this one.
	open(t, datapath.Options{Dir: dir})
	if err := dp.Verify(); !errors.Is(err, datapath.ErrNotPinned) || !strings.Contains(err.Error(), "another datapath's") {
		t.Fatalf("Verify with another datapath in its place: %v, want ErrNotPinned, another datapath's", err)
	}
}
