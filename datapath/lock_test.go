package datapath_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
)

func TestLock(t *testing.T) {
	dir := testutil.BPFFS(t)
	dp := open(t, datapath.Options{Dir: dir})
	release, err := dp.Lock("policy", false)
	if err != nil {
		t.Fatal(err)
	}
	// A second holder, through another open file: refused while held.
	if _, err := dp.Lock("policy", false); !errors.Is(err, datapath.ErrLocked) {
		t.Fatalf("second Lock: %v, want ErrLocked", err)
	}
	// Another name is another lock.
	other, err := dp.Lock("prefilter", false)
	if err != nil {
		t.Fatal(err)
	}
	other()
	done := make(chan error)
	go func() {
		r, err := dp.Lock("policy", true)
		if err == nil {
			r()
		}
		done <- err
	}()
	release()
	if err := <-done; err != nil {
		t.Fatalf("waiting Lock: %v", err)
	}
	if _, err := dp.Lock("../x", false); !errors.Is(err, datapath.ErrInvalid) {
		t.Errorf("Lock with a path for a name: %v", err)
	}
	dp.Close()
	if err := datapath.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "locks")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("locks left after Remove: %v", err)
	}
}
