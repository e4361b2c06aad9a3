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
