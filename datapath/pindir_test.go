package datapath_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
)

// tree describes everything under root but the kernel's *.debug files:
// path, owner and mode, one a line.
func tree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasSuffix(path, ".debug") {
			return nil
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s uid=%d %v\n", path, fi.Sys().(*syscall.Stat_t).Uid, fi.Mode())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func mkdir(t *testing.T, path string, mode os.FileMode, uid int) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
}

// A pin directory another user could change is refused by Open,
// OpenPinned and Remove, with an error naming the path, its owner and its
// mode, and nothing is made or changed. On a bpffs mounted without a mode
// (1777) any user could make the pin directory, or the directories
// xdplane keeps in it, before root does.
func TestUnsafePinDirRefused(t *testing.T) {
	const nobody = 65534
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, root string) (dir string)
		bad   string // the path the error names, relative to root
		want  string // in the error
	}{
		{"made by another user", func(t *testing.T, root string) string {
			mkdir(t, root+"/xdplane", 0o700, nobody)
			return root + "/xdplane"
		}, "xdplane", "owned by uid 65534 with mode 0700, is not owned by uid 0"},
		{"writable by others", func(t *testing.T, root string) string {
			mkdir(t, root+"/xdplane", 0o777, 0)
			return root + "/xdplane"
		}, "xdplane", "owned by uid 0 with mode 0777, is writable by group or others"},
		{"writable by group", func(t *testing.T, root string) string {
			mkdir(t, root+"/xdplane", 0o770, 0)
			return root + "/xdplane"
		}, "xdplane", "owned by uid 0 with mode 0770, is writable by group or others"},
		{"locks made by another user", func(t *testing.T, root string) string {
			mkdir(t, root+"/xdplane", 0o700, 0)
			mkdir(t, root+"/xdplane/locks", 0o700, nobody)
			return root + "/xdplane"
		}, "xdplane/locks", "owned by uid 65534 with mode 0700"},
		{"a lock made by another user", func(t *testing.T, root string) string {
			mkdir(t, root+"/xdplane", 0o700, 0)
			mkdir(t, root+"/xdplane/locks", 0o700, 0)
			mkdir(t, root+"/xdplane/locks/lb", 0o700, nobody)
			return root + "/xdplane"
		}, "xdplane/locks/lb", "owned by uid 65534 with mode 0700"},
		{"links writable by others", func(t *testing.T, root string) string {
			mkdir(t, root+"/xdplane", 0o700, 0)
			mkdir(t, root+"/xdplane/links", 0o777, 0)
			return root + "/xdplane"
		}, "xdplane/links", "owned by uid 0 with mode 0777"},
		{"a symbolic link", func(t *testing.T, root string) string {
			mkdir(t, root+"/real", 0o700, 0)
			if err := os.Symlink(root+"/real", root+"/xdplane"); err != nil {
				t.Fatal(err)
			}
			return root + "/xdplane"
		}, "xdplane", "is a symbolic link"},
		{"a parent made by another user", func(t *testing.T, root string) string {
			mkdir(t, root+"/cluster", 0o755, nobody)
			return root + "/cluster/xdplane"
		}, "cluster", "owned by uid 65534 with mode 0755, is above it and owned by neither root nor uid 0"},
		{"a parent writable by others", func(t *testing.T, root string) string {
			mkdir(t, root+"/cluster", 0o777, 0)
			return root + "/cluster/xdplane"
		}, "cluster", "owned by uid 0 with mode 0777, is above it and writable by group or others without the sticky bit"},
		{"a parent reached through a symbolic link", func(t *testing.T, root string) string {
			mkdir(t, root+"/open", 0o777, 0)
			mkdir(t, root+"/open/real", 0o700, 0)
			if err := os.Symlink(root+"/open/real", root+"/link"); err != nil {
				t.Fatal(err)
			}
			return root + "/link/xdplane"
		}, "open", "owned by uid 0 with mode 0777, is above it and writable"},
		{"a bpffs mounted without a mode", func(t *testing.T, root string) string {
			if err := os.Chmod(root, 0o777|os.ModeSticky); err != nil {
				t.Fatal(err)
			}
			return root
		}, "", "owned by uid 0 with mode 1777, is writable by group or others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Dir(testutil.BPFFS(t))
			dir := tc.setup(t, root)
			bad := filepath.Join(root, tc.bad)
			before := tree(t, root)
			for _, call := range []struct {
				name string
				f    func() error
			}{
				{"Open", func() error {
					dp, err := datapath.Open(datapath.Options{Dir: dir})
					dp.Close()
					return err
				}},
				{"OpenPinned", func() error {
					dp, err := datapath.OpenPinned(dir)
					dp.Close()
					return err
				}},
				{"Remove", func() error { return datapath.Remove(dir) }},
			} {
				err := call.f()
				if !errors.Is(err, datapath.ErrUnsafeDir) {
					t.Fatalf("%s(%s) = %v, want ErrUnsafeDir", call.name, dir, err)
				}
				if msg := err.Error(); !strings.Contains(msg, bad+",") && !strings.Contains(msg, bad+" (for pin directory "+dir+")") ||
					!strings.Contains(msg, tc.want) {
					t.Fatalf("%s(%s) = %q, want it to name %s and say %q", call.name, dir, msg, bad, tc.want)
				}
				if after := tree(t, root); after != before {
					t.Fatalf("%s changed the bpffs although it refused:\nbefore:\n%s\nafter:\n%s", call.name, before, after)
				}
			}
		})
	}
}

// What is safe works: a directory above the pin directory may be
// writable by others if it is sticky (a bpffs mounted without a mode,
// as /sys/fs/bpf often is, or /tmp), and a good directory made before
// is used as it is.
func TestSafePinDirAccepted(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, root string) (dir string)
	}{
		{"on a bpffs mounted without a mode", func(t *testing.T, root string) string {
			if err := os.Chmod(root, 0o777|os.ModeSticky); err != nil {
				t.Fatal(err)
			}
			return root + "/xdplane"
		}},
		{"below a sticky directory", func(t *testing.T, root string) string {
			mkdir(t, root+"/shared", 0o777|os.ModeSticky, 0)
			return root + "/shared/xdplane"
		}},
		{"made before", func(t *testing.T, root string) string {
			mkdir(t, root+"/cluster", 0o755, 0)
			mkdir(t, root+"/cluster/xdplane", 0o700, 0)
			return root + "/cluster/xdplane"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Dir(testutil.BPFFS(t))
			dir := tc.setup(t, root)
			dp, err := datapath.Open(datapath.Options{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			dp.Close()
			if dp, err = datapath.OpenPinned(dir); err != nil {
				t.Fatal(err)
			}
			dp.Close()
			if err := datapath.Remove(dir); err != nil {
				t.Fatal(err)
			}
		})
	}
}
