package kernel_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/kernel"
)

func TestLock(t *testing.T) {
	dir := t.TempDir()
	release, err := kernel.Lock(dir, "policy", false)
	if err != nil {
		t.Fatal(err)
	}
	// A second holder, through another open file: refused while held.
	if _, err := kernel.Lock(dir, "policy", false); !errors.Is(err, datapath.ErrBusy) {
		t.Fatalf("second Lock: %v, want ErrBusy", err)
	}
	// Another name is another lock.
	other, err := kernel.Lock(dir, "prefilter", false)
	if err != nil {
		t.Fatal(err)
	}
	other()
	done := make(chan error)
	go func() {
		r, err := kernel.Lock(dir, "policy", true)
		if err == nil {
			r()
		}
		done <- err
	}()
	release()
	if err := <-done; err != nil {
		t.Fatalf("waiting Lock: %v", err)
	}
	if _, err := kernel.Lock(dir, "../x", false); err == nil {
		t.Errorf("Lock with a path for a name: nil error")
	}
	if err := kernel.RemoveLocks(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "locks")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("locks left after RemoveLocks: %v", err)
	}
}

// A held lock refuses a second holder until released; Release twice is
// harmless, and Check reports the release.
func TestHold(t *testing.T) {
	dir := t.TempDir()
	closed := errors.New("closed")
	h, err := kernel.Hold(dir, "lb")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Check(closed); err != nil {
		t.Errorf("Check while held = %v", err)
	}
	if _, err := kernel.Hold(dir, "lb"); !errors.Is(err, datapath.ErrBusy) {
		t.Errorf("second Hold = %v, want ErrBusy", err)
	}
	h.Release()
	h.Release()
	if err := h.Check(closed); err != closed {
		t.Errorf("Check after Release = %v, want the closed error", err)
	}
	h2, err := kernel.Hold(dir, "lb")
	if err != nil {
		t.Fatalf("Hold after Release: %v", err)
	}
	h2.Release()
}

// LockAll takes every lock a writer made, and refuses, naming the lock
// and its holder, while one is held.
func TestLockAll(t *testing.T) {
	dir := t.TempDir()
	release, err := kernel.LockAll(dir)
	if err != nil {
		t.Fatalf("LockAll with no locks: %v", err)
	}
	// It holds even the locks no writer had made: a writer that starts
	// now waits, or is refused.
	if _, err := kernel.Lock(dir, kernel.LockBandwidth, false); !errors.Is(err, datapath.ErrBusy) {
		t.Errorf("a writer's first Lock while LockAll holds every lock: %v, want ErrBusy", err)
	}
	release()
	for _, name := range []string{"lb", "policy"} {
		r, err := kernel.Lock(dir, name, false)
		if err != nil {
			t.Fatal(err)
		}
		r()
	}
	h, err := kernel.Hold(dir, "policy")
	if err != nil {
		t.Fatal(err)
	}
	_, err = kernel.LockAll(dir)
	if !errors.Is(err, datapath.ErrBusy) {
		t.Fatalf("LockAll while policy is held: %v, want ErrBusy", err)
	}
	want := fmt.Sprintf("%s is locked by pid %d (", filepath.Join(dir, "locks", "policy"), os.Getpid())
	if !strings.Contains(err.Error(), want) {
		t.Errorf("LockAll's error %q does not say %q", err, want)
	}
	// What it took before the held one is released again.
	if r, err := kernel.Lock(dir, "lb", false); err != nil {
		t.Fatalf("lb after a refused LockAll: %v", err)
	} else {
		r()
	}
	h.Release()

	release, err = kernel.LockAll(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kernel.Lock(dir, "lb", false); !errors.Is(err, datapath.ErrBusy) {
		t.Errorf("Lock while LockAll holds every lock: %v, want ErrBusy", err)
	}
	release()
}
