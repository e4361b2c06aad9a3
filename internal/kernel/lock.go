package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"
)

// LocksDir is the directory, in the pin directory, that holds one
// directory per named lock.
const LocksDir = "locks"

var lockName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// Lock takes the lock called name of the datapath pinned in dir,
// exclusive across every process that opens the directory. Every writer
// of the maps takes one: a Manager holds its own ("lb", "policy",
// "bandwidth") for its lifetime, so that two never write the same maps;
// writers of state that several share ("endpoints", "prefilter") hold
// theirs for one change. With wait, Lock waits for the holder to release
// it; without, it fails with an error wrapping datapath.ErrBusy. The lock is
// released by calling the returned function, or when the process ends.
func Lock(dir, name string, wait bool) (release func(), err error) {
	if !lockName.MatchString(name) {
		return nil, fmt.Errorf("lock name %q: want lower-case letters, digits and dashes", name)
	}
	path := filepath.Join(dir, LocksDir, name)
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("make lock %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	if err := unix.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked", errBusy, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// RemoveLocks deletes the lock directories of the datapath pinned in dir;
// datapath.Remove calls it.
func RemoveLocks(dir string) error {
	ents, err := os.ReadDir(filepath.Join(dir, LocksDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, LocksDir, e.Name())); err != nil {
			return err
		}
	}
	return os.Remove(filepath.Join(dir, LocksDir))
}

// Held is a lock a Manager holds from its creation to its Close. Its
// methods are not synchronised: the Manager calls them under its own
// mutex.
type Held struct {
	release func() // nil once released
}

// Hold takes the lock called name without waiting, for the lifetime of
// a Manager (what Lock's doc says of lifetime locks).
func Hold(dir, name string) (*Held, error) {
	release, err := Lock(dir, name, false)
	if err != nil {
		return nil, err
	}
	return &Held{release: release}, nil
}

// Release releases the lock; a second call does nothing.
func (h *Held) Release() {
	if h.release != nil {
		h.release()
		h.release = nil
	}
}

// Check returns closed once the lock is released, else nil: the
// Manager's calls after Close fail with it.
func (h *Held) Check(closed error) error {
	if h.release == nil {
		return closed
	}
	return nil
}
