package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/internal/kernel"
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
// bpffs; anywhere else, dir itself becomes the mount point. A bpffs it
// mounts has mode 0700, so that no other user can make directories in it
// (a bpffs mounted without a mode is 1777, like /tmp). undo removes the
// directories it made and unmounts what it mounted, for an Open that
// fails later; it leaves a bpffs that holds anything.
func ensureBPFFS(dir string) (_ func(), err error) {
	var before, after []string // directories made before and after mounting
	mounted := ""
	undo := func() {
		removeDirs(after)
		if mounted != "" && emptyBPFFS(mounted) {
			_ = unix.Unmount(mounted, 0)
		}
		removeDirs(before)
	}
	defer func() {
		if err != nil {
			undo()
		}
	}()

	existing := dir
	for {
		if _, err := os.Stat(existing); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		existing = parent
	}
	ok, err := isBPFFS(existing)
	if err != nil {
		return nil, fmt.Errorf("statfs %s: %w", existing, err)
	}
	if ok {
		after, err = mkdirAll(dir)
		return undo, err
	}

	if private, ref := privateMountNS(); private {
		return nil, fmt.Errorf("%w: %s is not on a bpffs, and this process runs in a mount namespace of its own "+
			"(not that of %s), as under `ip netns exec`: a bpffs mounted here would vanish with the process, "+
			"and the datapath with it; mount a bpffs outside (mount -t bpf -o mode=0700 bpf /sys/fs/bpf) or choose a directory on one",
			ErrBPFFS, dir, ref)
	}
	mountAt := dir
	if dir == bpffsRoot || strings.HasPrefix(dir, bpffsRoot+"/") {
		mountAt = bpffsRoot
	} else if before, err = mkdirAll(dir); err != nil {
		return nil, err
	}
	if err := unix.Mount("bpf", mountAt, "bpf", 0, "mode=0700"); err != nil {
		err = fmt.Errorf("mount bpffs at %s: %w", mountAt, err)
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w: %s is on no bpffs, and mounting one needs CAP_SYS_ADMIN: %w", ErrPermission, dir, err)
		}
		return nil, err
	}
	mounted = mountAt
	after, err = mkdirAll(dir)
	return undo, err
}

// mkdirAll is os.MkdirAll with mode 0700 that returns the directories it
// made, outermost first.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	var made []string
	for i := len(missing) - 1; i >= 0; i-- {
		err := os.Mkdir(missing[i], 0o700)
		if errors.Is(err, os.ErrExist) {
			continue // made by someone else meanwhile: not ours to remove
		}
		if err != nil {
			return made, err
		}
		made = append(made, missing[i])
	}
	return made, nil
}

// removeDirs removes the directories mkdirAll made, innermost first; a
// directory something else has filled meanwhile stays.
func removeDirs(made []string) {
	for i := len(made) - 1; i >= 0; i-- {
		_ = os.Remove(made[i])
	}
}

// emptyBPFFS tells whether the bpffs mounted at dir holds nothing but
// the kernel's own *.debug iterators.
func emptyBPFFS(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".debug") {
			return false
		}
	}
	return true
}

// checkPinDir refuses a pin directory another user could tamper with
// (take its locks, delete or replace its pins, or swap it for another).
// The directory and the ones xdplane keeps in it (links, locks and each
// lock) must be real directories, not symbolic links, owned by this
// process's effective uid and writable by no one else. Every directory
// above it, on the path as given and on the path with symbolic links
// resolved, must be owned by root or by that uid, and writable by group
// or others only if it is sticky (as /tmp, or a bpffs mounted without a
// mode): anyone who can rename an entry of a parent can replace the
// directory. A directory that does not exist yet is fine: Open makes it
// with mode 0700. checkPinDir only reads.
func checkPinDir(dir string) error {
	euid := os.Geteuid()
	parent := filepath.Dir(dir)
	deepest := ""
	for _, p := range prefixes(parent) {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("check pin directory %s: %w", dir, err)
		}
		if err := checkAncestor(dir, p, fi, euid); err != nil {
			return err
		}
		deepest = p
	}
	if deepest != "" {
		resolved, err := filepath.EvalSymlinks(deepest)
		if err != nil {
			return fmt.Errorf("check pin directory %s: %w", dir, err)
		}
		for _, p := range prefixes(resolved) {
			fi, err := os.Lstat(p)
			if err != nil {
				return fmt.Errorf("check pin directory %s: %w", dir, err)
			}
			if err := checkAncestor(dir, p, fi, euid); err != nil {
				return err
			}
		}
	}

	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check pin directory %s: %w", dir, err)
	}
	if err := checkOwn(dir, dir, fi, euid); err != nil {
		return err
	}
	for _, sub := range []string{linksDir, kernel.LocksDir} {
		p := filepath.Join(dir, sub)
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("check pin directory %s: %w", dir, err)
		}
		if err := checkOwn(dir, p, fi, euid); err != nil {
			return err
		}
	}
	locks := filepath.Join(dir, kernel.LocksDir)
	ents, err := os.ReadDir(locks)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("check pin directory %s: %w", dir, err)
	}
	for _, e := range ents {
		p := filepath.Join(locks, e.Name())
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("check pin directory %s: %w", dir, err)
		}
		if err := checkOwn(dir, p, fi, euid); err != nil {
			return err
		}
	}
	return nil
}

// prefixes lists /, /a, /a/b for /a/b.
func prefixes(path string) []string {
	out := []string{"/"}
	p := ""
	for _, part := range strings.Split(path, "/") {
		if part == "" {
			continue
		}
		p += "/" + part
		out = append(out, p)
	}
	return out
}

// checkOwn checks a directory xdplane makes and uses: the pin directory
// or one inside it.
func checkOwn(dir, path string, fi os.FileInfo, euid int) error {
	uid := fi.Sys().(*syscall.Stat_t).Uid
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return unsafeDir(dir, path, fi, "is a symbolic link; give the directory itself")
	case !fi.IsDir():
		return unsafeDir(dir, path, fi, "is not a directory")
	case int(uid) != euid:
		return unsafeDir(dir, path, fi, fmt.Sprintf("is not owned by uid %d, as this process runs", euid))
	case fi.Mode().Perm()&0o022 != 0:
		return unsafeDir(dir, path, fi, "is writable by group or others")
	}
	return nil
}

// checkAncestor checks a directory above the pin directory.
func checkAncestor(dir, path string, fi os.FileInfo, euid int) error {
	uid := fi.Sys().(*syscall.Stat_t).Uid
	switch {
	case uid != 0 && int(uid) != euid:
		return unsafeDir(dir, path, fi, fmt.Sprintf("is above it and owned by neither root nor uid %d, as this process runs", euid))
	case fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0:
		return unsafeDir(dir, path, fi, "is above it and writable by group or others without the sticky bit")
	}
	return nil
}

func unsafeDir(dir, path string, fi os.FileInfo, why string) error {
	mode := uint32(fi.Mode().Perm())
	if fi.Mode()&os.ModeSticky != 0 {
		mode |= 0o1000
	}
	if fi.Mode()&os.ModeSetgid != 0 {
		mode |= 0o2000
	}
	what := path
	if path != dir {
		what = fmt.Sprintf("%s (for pin directory %s)", path, dir)
	}
	return fmt.Errorf("%w: %s, owned by uid %d with mode %04o, %s: another user could take its locks or "+
		"change its pins. Remove it or fix its owner and mode; a bpffs mounted with -o mode=0700 lets no one else "+
		"make directories in it", ErrUnsafeDir, what, fi.Sys().(*syscall.Stat_t).Uid, mode, why)
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
