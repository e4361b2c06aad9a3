package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const bpffsRoot = "/sys/fs/bpf"

func isBPFFS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, err
	}
	return st.Type == unix.BPF_FS_MAGIC, nil
}

// ensureBPFFS makes dir a directory on a bpffs. If dir is under
// /sys/fs/bpf and nothing is mounted there, the standard mount point gets a
// bpffs; anywhere else, dir itself becomes the mount point.
func ensureBPFFS(dir string) error {
	existing := dir
	for {
		if _, err := os.Stat(existing); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		existing = parent
	}
	ok, err := isBPFFS(existing)
	if err != nil {
		return fmt.Errorf("statfs %s: %w", existing, err)
	}
	if ok {
		return os.MkdirAll(dir, 0o700)
	}

	if private, ref := privateMountNS(); private {
		return fmt.Errorf("%w: %s is not on a bpffs, and this process runs in a mount namespace of its own "+
			"(not that of %s), as under `ip netns exec`: a bpffs mounted here would vanish with the process, "+
			"and the datapath with it; mount a bpffs outside (mount -t bpf bpf /sys/fs/bpf) or choose a directory on one",
			ErrBPFFS, dir, ref)
	}
	mountAt := dir
	if dir == bpffsRoot || strings.HasPrefix(dir, bpffsRoot+"/") {
		mountAt = bpffsRoot
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("bpf", mountAt, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", mountAt, err)
	}
	return os.MkdirAll(dir, 0o700)
}

// privateMountNS reports whether this process's mount namespace differs
// from that of init (or, where init's cannot be read, of the parent), and
// which it compared with. A mount made in such a namespace is gone when
// the namespace's last process exits.
func privateMountNS() (bool, string) {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return false, ""
	}
	for _, ref := range []string{"/proc/1", fmt.Sprintf("/proc/%d", os.Getppid())} {
		if other, err := os.Readlink(ref + "/ns/mnt"); err == nil {
			return other != self, ref
		}
	}
	return false, ""
}
