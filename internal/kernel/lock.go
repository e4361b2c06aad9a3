package kernel

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LocksDir is the directory, in the pin directory, that holds one
// directory per named lock.
const LocksDir = "locks"

// The names of the locks, one per writer of the maps: every Lock names
// one of them, so that LockAll, taking them all, leaves no writer out,
// even one whose lock directory does not exist yet.
const (
	LockLB        = "lb"           // an lb.Manager, for its lifetime
	LockPolicy    = "policy"       // a policy.Manager, for its lifetime
	LockBandwidth = "bandwidth"    // a bandwidth.Manager, for its lifetime
	LockEndpoints = "endpoints"    // one change of the shared endpoints entries
	LockPrefilter = "prefilter"    // one change of the prefilter
	LockConntrack = "conntrack-gc" // one pass of the conntrack collector
)

var lockNames = []string{LockLB, LockPolicy, LockBandwidth, LockEndpoints, LockPrefilter, LockConntrack}

// Lock takes the lock called name (one of the Lock constants) of the
// datapath pinned in dir, exclusive across every process that opens the
// directory. A Manager holds its own for its lifetime, so that two never
// write the same maps; writers of state that several share hold theirs
// for one change. With wait, Lock waits for the holder to release it;
// without, it fails with an error wrapping datapath.ErrBusy. The lock is
// released by calling the returned function, or when the process ends.
func Lock(dir, name string, wait bool) (release func(), err error) {
	if !slices.Contains(lockNames, name) {
		return nil, fmt.Errorf("lock name %q: not one of %v", name, lockNames)
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
			return nil, fmt.Errorf("%w: %s is locked%s", errBusy, path, holder(path))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// LockAll takes, without waiting, every lock of the datapath pinned in
// dir (making those no writer has made yet), so that no writer holds one,
// or starts, while the caller tears the datapath down. If one is held it
// releases what it took and fails with an error wrapping datapath.ErrBusy
// that names the lock and, where /proc/locks tells, the process holding
// it.
func LockAll(dir string) (release func(), err error) {
	var releases []func()
	release = func() {
		for _, r := range releases {
			r()
		}
	}
	for _, name := range lockNames {
		r, err := Lock(dir, name, false)
		if err != nil {
			release()
			return nil, err
		}
		releases = append(releases, r)
	}
	return release, nil
}

// holder describes the process holding the flock on path, as
// " by pid N (command)", from /proc/locks; empty if it cannot tell.
func holder(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ""
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return ""
	}
	defer f.Close()
	// "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF": the holder's pid,
	// then the device (major and minor in hex) and inode of the file.
	// Waiters' lines have a "->" after the number, and are skipped.
	want := fmt.Sprintf("%x:%x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" {
			continue
		}
		if normalDevIno(fields[5]) != want {
			continue
		}
		pid, err := strconv.Atoi(fields[4])
		if err != nil || pid <= 0 {
			return ""
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			return fmt.Sprintf(" by pid %d", pid)
		}
		return fmt.Sprintf(" by pid %d (%s)", pid, strings.TrimSpace(string(comm)))
	}
	return ""
}

// normalDevIno rewrites /proc/locks' "fe:00:1234" without leading zeros,
// as "fe:0:1234".
func normalDevIno(s string) string {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return ""
	}
	major, err1 := strconv.ParseUint(parts[0], 16, 32)
	minor, err2 := strconv.ParseUint(parts[1], 16, 32)
	if err1 != nil || err2 != nil {
		return ""
	}
	return fmt.Sprintf("%x:%x:%s", major, minor, parts[2])
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
