package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"
)

// locksDir holds one directory per named lock, beside the pins.
const locksDir = "locks"

var lockName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// Lock takes the datapath's lock called name, exclusive across every
// process that opens this pin directory: packages that write the maps use
// it so that two writers never interleave. With wait, Lock waits for the
// holder to release it; without, it fails with ErrLocked. The lock is
// released by calling the returned function, or when the process ends.
func (d *Datapath) Lock(name string, wait bool) (release func(), err error) {
	if !lockName.MatchString(name) {
		return nil, fmt.Errorf("%w: lock name %q", ErrInvalid, name)
	}
	path := filepath.Join(d.dir, locksDir, name)
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
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// removeLocks deletes the lock directories; Remove calls it.
func removeLocks(dir string) error {
	ents, err := os.ReadDir(filepath.Join(dir, locksDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(dir, locksDir, e.Name())); err != nil {
			return err
		}
	}
	return os.Remove(filepath.Join(dir, locksDir))
}
