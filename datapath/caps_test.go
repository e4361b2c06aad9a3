package datapath_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

// capsHelperEnv, when set to "DIR [TC XDP]", makes the test binary a
// small program that opens a datapath in DIR and attaches it to the
// interface TC at tc and to XDP at XDP. It prints "ok" and the points it
// attached, or the first error (after "ErrPermission: " if it wraps that
// sentinel). Run under setpriv, it shows what a
// process with a given set of capabilities can do.
const capsHelperEnv = "XDPLANE_CAPS_HELPER"

func TestMain(m *testing.M) {
	if arg, ok := os.LookupEnv(capsHelperEnv); ok {
		os.Exit(capsHelper(arg))
	}
	os.Exit(m.Run())
}

func capsHelper(arg string) int {
	args := strings.Fields(arg)
	dir := args[0]
	fail := func(err error) int {
		if errors.Is(err, datapath.ErrPermission) {
			fmt.Print("ErrPermission: ")
		}
		fmt.Println(err)
		return 1
	}
	dp, err := datapath.Open(datapath.Options{Dir: dir})
	if err != nil {
		return fail(err)
	}
	defer dp.Close()
	if len(args) < 3 {
		fmt.Println("ok")
		return 0
	}
	if err := dp.Attach(args[1], datapath.AttachOptions{Hook: datapath.HookTC}); err != nil {
		return fail(fmt.Errorf("attach tc: %w", err))
	}
	if err := dp.Attach(args[2], datapath.AttachOptions{Hook: datapath.HookXDP}); err != nil {
		return fail(fmt.Errorf("attach xdp: %w", err))
	}
	as, err := dp.Attachments()
	if err != nil {
		return fail(err)
	}
	if err := lbChanges(dp); err != nil {
		return fail(fmt.Errorf("lb: %w", err))
	}
	fmt.Println("ok" + attachedPoints(as) + " lb")
	return 0
}

// lbChanges makes the load balancer's kinds of change: a Random and a
// Maglev service added, each changed (the Maglev table rewritten in
// place), and removed.
func lbChanges(dp *datapath.Datapath) error {
	m, err := lb.NewManager(dp)
	if err != nil {
		return err
	}
	defer m.Close()
	be := func(addr string) lb.Backend { return lb.Backend{Address: netip.MustParseAddrPort(addr)} }
	random := lb.Service{Frontend: lb.Frontend{Address: netip.MustParseAddrPort("10.96.0.1:80"), Protocol: lb.TCP},
		Backends: []lb.Backend{be("10.0.1.2:8080"), be("10.0.1.3:8080")}}
	maglev := lb.Service{Frontend: lb.Frontend{Address: netip.MustParseAddrPort("10.96.0.2:80"), Protocol: lb.TCP},
		Algorithm: lb.Maglev, Backends: []lb.Backend{be("10.0.1.2:8080"), be("10.0.1.3:8080")}}
	if _, err := m.Sync([]lb.Service{random, maglev}); err != nil {
		return fmt.Errorf("add: %w", err)
	}
	random.Backends[1].State, maglev.Backends[1].State = lb.Maintenance, lb.Maintenance
	if _, err := m.Sync([]lb.Service{random, maglev}); err != nil {
		return fmt.Errorf("change: %w", err)
	}
	if _, err := m.Sync(nil); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return nil
}

// attachedPoints lists " interface:point" for each attachment.
func attachedPoints(as []datapath.Attachment) string {
	var out []string
	for _, a := range as {
		out = append(out, " "+a.Interface+":"+a.Point.String())
	}
	sort.Strings(out)
	return strings.Join(out, "")
}

// attachedOK is what the helper prints when it attached to a and b and
// made the load balancer's changes.
const attachedOK = "ok" + attachedAB + " lb"

// attachedAB are the attachments to a and b, as attachedPoints lists them.
const attachedAB = " a:tc-egress a:tc-ingress b:xdp"

// helperBinary copies this test binary where any user may run it (the
// go tool's build directory is root's alone).
func helperBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "xdplane-caps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	bin := filepath.Join(dir, "helper")
	out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// setpriv returns the arguments that run the helper with exactly caps
// (names as setpriv spells them: bpf, perfmon, net_admin), as uid 0
// unless uid says otherwise.
func setpriv(t *testing.T, bin string, caps []string, uid int) []string {
	if _, err := exec.LookPath("setpriv"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("setpriv (util-linux) is not installed, and CI=true forbids skipping")
		}
		t.Skip("setpriv (util-linux) is not installed")
	}
	set := "-all"
	for _, c := range caps {
		set += ",+" + c
	}
	args := []string{"setpriv", "--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set}
	if uid != 0 {
		args = append(args, fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups")
	}
	return append(args, bin)
}

func runHelper(t *testing.T, cmd *exec.Cmd, arg string) string {
	t.Helper()
	cmd.Env = append(cmd.Env, capsHelperEnv+"="+arg)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return strings.TrimSpace(string(out))
}

// pinsUnder lists everything under root except the kernel's own *.debug
// files: pins, and the directories that hold them.
func pinsUnder(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != root && !strings.HasSuffix(path, ".debug") {
			out = append(out, strings.TrimPrefix(path, root+"/"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The capabilities Open and Attach need are exactly CAP_BPF, CAP_PERFMON
// and CAP_NET_ADMIN: with the three, a process opens the datapath and
// attaches it at tc and XDP; without any one of them, Open names what is
// missing and leaves nothing pinned.
func TestOpenCapabilities(t *testing.T) {
	bin := helperBinary(t)
	ns := vethNS(t)
	full := []string{"bpf", "perfmon", "net_admin"}

	for _, tc := range []struct {
		caps    []string
		missing string // empty: must work
	}{
		{full, ""},
		{[]string{"perfmon", "net_admin"}, "CAP_BPF"},
		{[]string{"bpf", "net_admin"}, "CAP_PERFMON"},
		{[]string{"bpf", "perfmon"}, "CAP_NET_ADMIN"},
		{nil, "CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN"},
		// The kernel takes CAP_SYS_ADMIN for each of the three.
		{[]string{"sys_admin"}, ""},
	} {
		t.Run(strings.Join(append([]string{"caps"}, tc.caps...), "-"), func(t *testing.T) {
			dir := testutil.BPFFS(t)
			root := filepath.Dir(dir)
			out := runHelper(t, ns.Command(setpriv(t, bin, tc.caps, 0)...), dir+" a b")
			if tc.missing == "" {
				t.Cleanup(func() {
					if err := ns.Do(func() error { return datapath.Remove(dir) }); err != nil {
						t.Errorf("remove: %v", err)
					}
				})
				if out != attachedOK {
					t.Fatalf("with %v: %s, want %s", tc.caps, out, attachedOK)
				}
				checkAttached(t, ns, dir)
				return
			}
			want := "ErrPermission: insufficient privilege: Open needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN " +
				"(or CAP_SYS_ADMIN in place of any); this process lacks " + tc.missing
			if out != want {
				t.Fatalf("with %v:\n got %s\nwant %s", tc.caps, out, want)
			}
			if left := pinsUnder(t, root); len(left) > 0 {
				t.Fatalf("the failed Open left %d pins: %v", len(left), left)
			}
		})
	}

	// A user other than root with the three capabilities, on a bpffs it
	// owns (the uid= mount option, Linux 6.9), does the same.
	t.Run("uid-65534", func(t *testing.T) {
		root, err := os.MkdirTemp("", "xdplane-bpffs-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(root) })
		if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700,uid=65534,gid=65534"); err != nil {
			t.Skipf("bpffs with uid=: %v", err)
		}
		// Unmounting removes the pins and so the attachments: root may
		// not Remove a datapath below a directory of another user's.
		t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
		var st unix.Stat_t
		if err := unix.Stat(root, &st); err != nil || st.Uid != 65534 {
			t.Skipf("this kernel ignores the bpffs uid= option (owner %d, %v)", st.Uid, err)
		}
		dir := filepath.Join(root, "xdplane")
		out := runHelper(t, ns.Command(setpriv(t, bin, full, 65534)...), dir+" a b")
		if out != attachedOK {
			t.Fatalf("as uid 65534 with %v: %s, want %s", full, out, attachedOK)
		}
	})

	// Mounting a bpffs needs CAP_SYS_ADMIN besides; without it Open says
	// so and removes the directory it made for the mount.
	t.Run("mount", func(t *testing.T) {
		base := t.TempDir()
		dir := filepath.Join(base, "pins")
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
		// Not in the test's namespace: `ip netns exec` makes a mount
		// namespace of its own, where Open refuses to mount.
		args := setpriv(t, bin, full, 0)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = os.Environ()
		out := runHelper(t, cmd, dir)
		if !strings.HasPrefix(out, "ErrPermission: insufficient privilege: ") || !strings.Contains(out, "needs CAP_SYS_ADMIN") ||
			!strings.Contains(out, dir) {
			t.Fatalf("Open with %v on no bpffs: %s; want an insufficient privilege error naming CAP_SYS_ADMIN and %s",
				full, out, dir)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the failed Open left %s: %v", dir, err)
		}
	})
}

// checkAttached asserts, as root, that the datapath in dir is attached as
// the helper says.
func checkAttached(t *testing.T, ns *testutil.NS, dir string) {
	t.Helper()
	dp, err := datapath.OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	if got := attachedPoints(attachments(t, ns, dp)); got != attachedAB {
		t.Fatalf("attached:%s, want%s", got, attachedAB)
	}
}

// lastPinned is the map Open pins last.
func lastPinned(t *testing.T) string {
	t.Helper()
	spec, err := bpf.LoadXdplane()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name, ms := range spec.Maps {
		if ms.Pinning == ebpf.PinByName {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names[len(names)-1]
}

// pinIDs maps each pinned map under dir to its kernel id.
func pinIDs(t *testing.T, dir string) map[string]ebpf.MapID {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := make(map[string]ebpf.MapID)
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, e.Name()), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids[e.Name()], _ = info.ID()
	}
	return ids
}

func pinForeign(t *testing.T, path string) {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(path); err != nil {
		t.Fatal(err)
	}
}

// An Open that fails after it has pinned maps unpins them again, and
// leaves alone the pins it found.
func TestFailedOpenUnpinsWhatItPinned(t *testing.T) {
	t.Run("fresh", func(t *testing.T) {
		dir := testutil.BPFFS(t)
		t.Cleanup(func() { datapath.Remove(dir) })
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		// The map Open reaches last is incompatible: every other one is
		// pinned by then.
		last := lastPinned(t)
		pinForeign(t, filepath.Join(dir, last))
		before := pinIDs(t, dir)
		_, err := datapath.Open(datapath.Options{Dir: dir})
		if !errors.Is(err, datapath.ErrIncompatible) {
			t.Fatalf("Open = %v, want ErrIncompatible", err)
		}
		if after := pinIDs(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("pins before the failed Open %v, after %v", before, after)
		}
	})
	t.Run("reused", func(t *testing.T) {
		dir := testutil.BPFFS(t)
		t.Cleanup(func() { datapath.Remove(dir) })
		open(t, datapath.Options{Dir: dir}).Close()
		last := lastPinned(t)
		if err := os.Remove(filepath.Join(dir, last)); err != nil {
			t.Fatal(err)
		}
		pinForeign(t, filepath.Join(dir, last))
		before := pinIDs(t, dir)
		_, err := datapath.Open(datapath.Options{Dir: dir})
		if !errors.Is(err, datapath.ErrIncompatible) {
			t.Fatalf("Open = %v, want ErrIncompatible", err)
		}
		if after := pinIDs(t, dir); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("pins before the failed Open %v, after %v", before, after)
		}
	})
}
