package datapath_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
)

func open(t *testing.T, opts datapath.Options) *datapath.Datapath {
	t.Helper()
	dp, err := datapath.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	return dp
}

func TestOpenReusesPinnedMaps(t *testing.T) {
	dir := testutil.BPFFS(t)
	t.Cleanup(func() { datapath.Remove(dir) })
	dp := open(t, datapath.Options{Dir: dir, Limits: datapath.Limits{MaxServices: 1000, ConntrackSize: 4096}})

	key := bpf.XdplaneSvcKey{Addr: netip.MustParseAddr("::ffff:10.96.0.10").As16(), Port: 80, Proto: 6}
	val := bpf.XdplaneSvcValue{Id: 7, Count: 3}
	if err := kernel.Of(dp).Maps.Services.Put(key, val); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"services", "backends", "backend_slots", "revnat", "maglev", "conntrack", "stats", "backend_stats", "affinity", "source_ranges", "vips"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("map %s not pinned: %v", name, err)
		}
	}
	if err := dp.Close(); err != nil {
		t.Fatal(err)
	}

	// Zero limits adopt what is pinned.
	dp2 := open(t, datapath.Options{Dir: dir})
	if got := dp2.Limits(); got.MaxServices != 1000 || got.ConntrackSize != 4096 || got.MaxBackends != datapath.DefaultMaxBackends {
		t.Fatalf("Limits() = %+v", got)
	}
	var got bpf.XdplaneSvcValue
	if err := kernel.Of(dp2).Maps.Services.Lookup(key, &got); err != nil || got != val {
		t.Fatalf("after reopen: %+v, %v; want %+v", got, err, val)
	}

	// A different explicit size is a different layout.
	_, err := datapath.Open(datapath.Options{Dir: dir, Limits: datapath.Limits{MaxServices: 2000}})
	if !errors.Is(err, datapath.ErrIncompatible) {
		t.Fatalf("Open with another size = %v, want ErrIncompatible", err)
	}
}

func TestOpenRefusesIncompatiblePin(t *testing.T) {
	dir := testutil.BPFFS(t)
	t.Cleanup(func() { datapath.Remove(dir) })
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "services", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 65536})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(dir, "services")); err != nil {
		t.Fatal(err)
	}
	_, err = datapath.Open(datapath.Options{Dir: dir})
	if !errors.Is(err, datapath.ErrIncompatible) {
		t.Fatalf("Open over a foreign map = %v, want ErrIncompatible", err)
	}
	// Nothing of the pinned map was replaced.
	m2, err := ebpf.LoadPinnedMap(filepath.Join(dir, "services"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if m2.KeySize() != 4 {
		t.Fatalf("foreign map replaced: key size %d", m2.KeySize())
	}
}

func TestOpenRefusesAbsurdLimits(t *testing.T) {
	dir := testutil.BPFFS(t)
	_, err := datapath.Open(datapath.Options{Dir: dir, Limits: datapath.Limits{MaxBackends: 0xffffffff}})
	if !errors.Is(err, datapath.ErrInvalid) || !strings.Contains(err.Error(), "MaxBackends 4294967295") {
		t.Fatalf("Open with MaxBackends 2^32-1 = %v, want ErrInvalid naming the field and value", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "services")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("refused Open pinned maps anyway")
	}
}

func TestOpenPinned(t *testing.T) {
	dir := testutil.BPFFS(t)
	if _, err := datapath.OpenPinned(dir); !errors.Is(err, datapath.ErrNotPinned) {
		t.Fatalf("OpenPinned(empty) = %v, want ErrNotPinned", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenPinned created %s", dir)
	}
	dp := open(t, datapath.Options{Dir: dir, Limits: datapath.Limits{MaxBackends: 99}})
	t.Cleanup(func() { datapath.Remove(dir) })
	ro, err := datapath.OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if ro.Limits() != dp.Limits() {
		t.Fatalf("OpenPinned limits %+v, want %+v", ro.Limits(), dp.Limits())
	}
	if kernel.Of(ro).Programs != nil {
		t.Fatal("OpenPinned loaded programs")
	}
	if err := ro.Attach("lo", datapath.AttachOptions{}); !errors.Is(err, datapath.ErrNoPrograms) {
		t.Fatalf("Attach on OpenPinned = %v, want ErrNoPrograms", err)
	}
	if err := ro.Upgrade(); !errors.Is(err, datapath.ErrNoPrograms) {
		t.Fatalf("Upgrade on OpenPinned = %v, want ErrNoPrograms", err)
	}
}

func TestOpenMountsBPFFS(t *testing.T) {
	testutil.RequireRoot(t)
	base := t.TempDir()
	dir := filepath.Join(base, "pins")
	// Should the test fail before Remove, the mount must not outlive it
	// (TempDir's own cleanup cannot remove a mount point).
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	dp := open(t, datapath.Options{Dir: dir})
	dp.Close()
	if _, err := os.Stat(filepath.Join(dir, "services")); err != nil {
		t.Fatalf("no pin after mounting: %v", err)
	}
	// Mode 0700: on a bpffs mounted without a mode (1777) any user could
	// make directories.
	if fi, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm() != 0o700 {
		t.Fatalf("the bpffs Open mounted has mode %v, want 0700", fi.Mode())
	}
	if err := datapath.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Remove left %s (still mounted?): %v", dir, err)
	}
}

// vethNS makes a namespace with a veth pair a/b, both up.
func vethNS(t *testing.T) *testutil.NS {
	g := testutil.NewGroup(t)
	ns := g.NS("dp")
	testutil.Veth(t, ns, "a", ns, "b")
	ns.AddAddr("a", netip.MustParsePrefix("192.168.77.1/24"))
	ns.AddAddr("b", netip.MustParsePrefix("192.168.78.1/24"))
	return ns
}

func attachments(t *testing.T, ns *testutil.NS, dp *datapath.Datapath) []datapath.Attachment {
	t.Helper()
	var out []datapath.Attachment
	ns.MustDo(func() (err error) {
		out, err = dp.Attachments()
		return err
	})
	return out
}

func TestAttachModes(t *testing.T) {
	for _, tc := range []struct {
		opts   datapath.AttachOptions
		points []string
		mode   datapath.Mode
	}{
		{datapath.AttachOptions{}, []string{"tc-ingress", "tc-egress"}, datapath.ModeTCX},
		{datapath.AttachOptions{Hook: datapath.HookTC, Mode: datapath.ModeTCLegacy}, []string{"tc-ingress", "tc-egress"}, datapath.ModeTCLegacy},
		{datapath.AttachOptions{Hook: datapath.HookXDP}, []string{"xdp"}, datapath.ModeXDPNative},
		{datapath.AttachOptions{Hook: datapath.HookXDP, Mode: datapath.ModeXDPGeneric}, []string{"xdp"}, datapath.ModeXDPGeneric},
	} {
		t.Run(tc.opts.Hook.String()+"-"+tc.mode.String(), func(t *testing.T) {
			ns := vethNS(t)
			dir := testutil.BPFFS(t)
			dp := open(t, datapath.Options{Dir: dir})
			ns.MustDo(func() error { return dp.Attach("a", tc.opts) })

			got := attachments(t, ns, dp)
			if len(got) != len(tc.points) {
				t.Fatalf("attachments %+v, want points %v", got, tc.points)
			}
			for i, a := range got {
				if a.Interface != "a" || a.Point.String() != tc.points[i] || a.Mode != tc.mode || a.ProgramID == 0 {
					t.Fatalf("attachment %+v, want %s on a in mode %s", a, tc.points[i], tc.mode)
				}
			}
			if tc.mode == datapath.ModeTCLegacy {
				link, _ := ns.Netlink().LinkByName("a")
				filters, err := ns.Netlink().FilterList(link, netlink.HANDLE_MIN_INGRESS)
				if err != nil || len(filters) != 1 {
					t.Fatalf("ingress filters %v, %v; want xdplane's", filters, err)
				}
			}

			// Close leaves it running; Remove takes it all away.
			dp.Close()
			ro, err := datapath.OpenPinned(dir)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(attachments(t, ns, ro)); n != len(tc.points) {
				t.Fatalf("after Close: %d attachments, want %d", n, len(tc.points))
			}
			ro.Close()
			for _, a := range got {
				if tc.mode != datapath.ModeTCLegacy && !linkUsing(t, a.ProgramID) {
					t.Fatalf("no kernel link runs program %d before Remove", a.ProgramID)
				}
			}
			ns.MustDo(func() error { return datapath.Remove(dir) })
			link, _ := ns.Netlink().LinkByName("a")
			if x := link.Attrs().Xdp; x != nil && x.Attached {
				t.Fatal("XDP still attached after Remove")
			}
			for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
				if f, _ := ns.Netlink().FilterList(link, parent); len(f) != 0 {
					t.Fatalf("filters left after Remove: %v", f)
				}
			}
			for _, a := range got {
				if linkUsing(t, a.ProgramID) {
					t.Fatalf("a kernel link still runs program %d after Remove", a.ProgramID)
				}
			}
		})
	}
}

// A bridge has no native XDP (its driver has no ndo_bpf), and it is an
// Ethernet device, so Attach accepts it, unlike loopback (this kernel has
// no dummy devices). ModeAuto must fall back to generic XDP there, and
// ModeXDPNative must refuse.
func TestAttachXDPFallsBackToGeneric(t *testing.T) {
	ns := testutil.NewGroup(t).NS("dp")
	if err := ns.Netlink().LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		t.Fatal(err)
	}
	ns.AddAddr("br0", netip.MustParsePrefix("192.168.79.1/24"))
	dir := testutil.BPFFS(t)
	t.Cleanup(func() { ns.Do(func() error { return datapath.Remove(dir) }) })
	dp := open(t, datapath.Options{Dir: dir})

	err := ns.Do(func() error {
		return dp.Attach("br0", datapath.AttachOptions{Hook: datapath.HookXDP, Mode: datapath.ModeXDPNative})
	})
	if !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("Attach with ModeXDPNative to a bridge = %v, want EOPNOTSUPP (no native XDP)", err)
	}
	if got := attachments(t, ns, dp); len(got) != 0 {
		t.Fatalf("refused native Attach left attachments: %+v", got)
	}

	ns.MustDo(func() error { return dp.Attach("br0", datapath.AttachOptions{Hook: datapath.HookXDP}) })
	got := attachments(t, ns, dp)
	if len(got) != 1 || got[0].Interface != "br0" || got[0].Point != datapath.PointXDP || got[0].Mode != datapath.ModeXDPGeneric || got[0].ProgramID == 0 {
		t.Fatalf("attachments %+v, want one xdp on br0 in mode %s", got, datapath.ModeXDPGeneric)
	}
	const xdpAttachedSKB = 2 // XDP_ATTACHED_SKB, linux/if_link.h
	l, err := ns.Netlink().LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x == nil || !x.Attached || x.AttachMode != xdpAttachedSKB || x.ProgId != uint32(got[0].ProgramID) {
		t.Fatalf("netlink shows XDP %+v on br0, want program %d in SKB (generic) mode", x, got[0].ProgramID)
	}
	if !linkUsing(t, got[0].ProgramID) {
		t.Fatalf("no kernel link runs program %d", got[0].ProgramID)
	}

	ns.MustDo(func() error { return dp.Detach("br0") })
	if got := attachments(t, ns, dp); len(got) != 0 {
		t.Fatalf("after Detach: %+v", got)
	}
	l, err = ns.Netlink().LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		t.Fatalf("XDP still attached to br0 after Detach: %+v", x)
	}
	if linkUsing(t, got[0].ProgramID) {
		t.Fatalf("a kernel link still runs program %d after Detach", got[0].ProgramID)
	}
}

// linkUsing reports whether any bpf_link in the kernel runs program id.
func linkUsing(t *testing.T, id ebpf.ProgramID) bool {
	t.Helper()
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		l := it.Take()
		info, err := l.Info()
		l.Close()
		if err == nil && info.Program == id {
			return true
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return false
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

func pinnedLinkID(t *testing.T, path string) link.ID {
	t.Helper()
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info.ID
}

func TestUpgradeReplacesProgramsInPlace(t *testing.T) {
	for _, hook := range []datapath.Hook{datapath.HookTC, datapath.HookXDP} {
		t.Run(hook.String(), func(t *testing.T) {
			ns := vethNS(t)
			dir := testutil.BPFFS(t)
			t.Cleanup(func() { ns.Do(func() error { return datapath.Remove(dir) }) })
			dp1 := open(t, datapath.Options{Dir: dir})
			ns.MustDo(func() error { return dp1.Attach("a", datapath.AttachOptions{Hook: hook}) })
			before := attachments(t, ns, dp1)
			var linkIDs []link.ID
			for _, a := range before {
				linkIDs = append(linkIDs, pinnedLinkID(t, filepath.Join(dir, "links", pinName(a))))
			}
			dp1.Close()

			// A new process loads its own programs; the old ones keep
			// running until it upgrades.
			dp2 := open(t, datapath.Options{Dir: dir})
			if got := attachments(t, ns, dp2); got[0].ProgramID != before[0].ProgramID {
				t.Fatalf("Open alone changed the attached program: %d -> %d", before[0].ProgramID, got[0].ProgramID)
			}
			if err := dp2.Upgrade(); err != nil {
				t.Fatal(err)
			}
			after := attachments(t, ns, dp2)
			want := map[string]ebpf.ProgramID{
				"tc-ingress": progID(t, kernel.Of(dp2).Programs.XdplaneTcIngress),
				"tc-egress":  progID(t, kernel.Of(dp2).Programs.XdplaneTcEgress),
				"xdp":        progID(t, kernel.Of(dp2).Programs.XdplaneXdp),
			}
			for i, a := range after {
				if a.ProgramID != want[a.Point.String()] {
					t.Fatalf("%s runs program %d, want the upgraded %d", a.Point, a.ProgramID, want[a.Point.String()])
				}
				if id := pinnedLinkID(t, filepath.Join(dir, "links", pinName(a))); id != linkIDs[i] {
					t.Fatalf("%s: link %d replaced by %d; want the program swapped inside the same link", a.Point, linkIDs[i], id)
				}
			}

			// Attach of an attached interface is the same in-place swap.
			dp3 := open(t, datapath.Options{Dir: dir})
			ns.MustDo(func() error { return dp3.Attach("a", datapath.AttachOptions{Hook: hook}) })
			if got := attachments(t, ns, dp3); got[0].ProgramID == after[0].ProgramID || len(got) != len(after) {
				t.Fatalf("re-Attach did not swap programs: %+v", got)
			}
		})
	}
}

func pinName(a datapath.Attachment) string {
	name := map[string]string{"tc-ingress": "tc_ingress", "tc-egress": "tc_egress", "xdp": "xdp"}[a.Point.String()]
	return strconv.FormatUint(a.NetNS, 10) + "_" + strconv.Itoa(a.Ifindex) + "_" + name
}

func TestAttachSwitchesHookAndDetaches(t *testing.T) {
	ns := vethNS(t)
	dir := testutil.BPFFS(t)
	t.Cleanup(func() { ns.Do(func() error { return datapath.Remove(dir) }) })
	dp := open(t, datapath.Options{Dir: dir})
	ns.MustDo(func() error {
		if err := dp.Attach("a", datapath.AttachOptions{}); err != nil {
			return err
		}
		return dp.Attach("b", datapath.AttachOptions{})
	})
	ns.MustDo(func() error { return dp.Attach("a", datapath.AttachOptions{Hook: datapath.HookXDP}) })
	got := attachments(t, ns, dp)
	points := map[string][]string{}
	for _, a := range got {
		points[a.Interface] = append(points[a.Interface], a.Point.String())
	}
	if len(points["a"]) != 1 || points["a"][0] != "xdp" || len(points["b"]) != 2 {
		t.Fatalf("after switching a to xdp: %v", points)
	}
	ns.MustDo(func() error { return dp.Detach("a") })
	got = attachments(t, ns, dp)
	if len(got) != 2 || got[0].Interface != "b" {
		t.Fatalf("after Detach(a): %+v", got)
	}
}

func TestAttachInvalid(t *testing.T) {
	ns := vethNS(t)
	dir := testutil.BPFFS(t)
	t.Cleanup(func() { ns.Do(func() error { return datapath.Remove(dir) }) })
	dp := open(t, datapath.Options{Dir: dir})
	for name, tc := range map[string]struct {
		ifname string
		opts   datapath.AttachOptions
	}{
		"no such interface": {"nope0", datapath.AttachOptions{}},
		"not ethernet":      {"lo", datapath.AttachOptions{}},
		"xdp mode on tc":    {"a", datapath.AttachOptions{Hook: datapath.HookTC, Mode: datapath.ModeXDPNative}},
		"tc mode on xdp":    {"a", datapath.AttachOptions{Hook: datapath.HookXDP, Mode: datapath.ModeTCX}},
		"unknown hook":      {"a", datapath.AttachOptions{Hook: 9}},
	} {
		err := ns.Do(func() error { return dp.Attach(tc.ifname, tc.opts) })
		if !errors.Is(err, datapath.ErrInvalid) {
			t.Errorf("%s: Attach = %v, want ErrInvalid", name, err)
		}
	}
	if got := attachments(t, ns, dp); len(got) != 0 {
		t.Fatalf("failed Attach left attachments: %+v", got)
	}
	if _, err := datapath.ParseHook("ebpf"); !errors.Is(err, datapath.ErrInvalid) {
		t.Fatalf("ParseHook(ebpf) = %v", err)
	}
}

func filterCount(t *testing.T, ns *testutil.NS, ifname string) int {
	t.Helper()
	l, err := ns.Netlink().LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		f, err := ns.Netlink().FilterList(l, parent)
		if err != nil {
			t.Fatal(err)
		}
		n += len(f)
	}
	return n
}

// cls_bpf filters have no link; their pinned records must stay one per
// interface and point through attaching more interfaces, re-attaching and
// upgrading, so that Remove finds every filter.
func TestLegacyOnSeveralInterfaces(t *testing.T) {
	ns := vethNS(t)
	dir := testutil.BPFFS(t)
	t.Cleanup(func() { ns.Do(func() error { return datapath.Remove(dir) }) })
	dp := open(t, datapath.Options{Dir: dir})
	legacy := datapath.AttachOptions{Hook: datapath.HookTC, Mode: datapath.ModeTCLegacy}
	ns.MustDo(func() error {
		for _, ifname := range []string{"a", "b", "b", "a"} {
			if err := dp.Attach(ifname, legacy); err != nil {
				return err
			}
		}
		return dp.Upgrade()
	})
	if got := attachments(t, ns, dp); len(got) != 4 {
		t.Fatalf("after attaching a, b, b, a and upgrading: %d attachments, want 4: %+v", len(got), got)
	}
	for _, ifname := range []string{"a", "b"} {
		if n := filterCount(t, ns, ifname); n != 2 {
			t.Fatalf("%s has %d filters, want 2", ifname, n)
		}
	}
	ns.MustDo(func() error { return datapath.Remove(dir) })
	for _, ifname := range []string{"a", "b"} {
		if n := filterCount(t, ns, ifname); n != 0 {
			t.Fatalf("Remove left %d filters on %s", n, ifname)
		}
	}
}

// Interface indexes repeat across namespaces; one pin directory used from
// two of them must keep their attachments apart.
func TestPinsKeepNamespacesApart(t *testing.T) {
	ns1, ns2 := vethNS(t), vethNS(t)
	dir := testutil.BPFFS(t)
	t.Cleanup(func() {
		ns1.Do(func() error { return datapath.Remove(dir) })
	})
	dp := open(t, datapath.Options{Dir: dir})
	ns1.MustDo(func() error { return dp.Attach("a", datapath.AttachOptions{}) })
	ns2.MustDo(func() error { return dp.Attach("a", datapath.AttachOptions{}) })
	if got := attachments(t, ns1, dp); len(got) != 4 {
		t.Fatalf("attachments over two namespaces: %+v", got)
	}
	tcx := func(ns *testutil.NS) int {
		var n int
		ns.MustDo(func() error {
			l, err := netlink.LinkByName("a")
			if err != nil {
				return err
			}
			for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
				r, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
				if err != nil {
					return err
				}
				n += len(r.Programs)
			}
			return nil
		})
		return n
	}
	if tcx(ns1) != 2 || tcx(ns2) != 2 {
		t.Fatalf("TCX programs: %d in the first namespace, %d in the second; want 2 and 2", tcx(ns1), tcx(ns2))
	}
	ns2.MustDo(func() error { return dp.Detach("a") })
	if tcx(ns1) != 2 || tcx(ns2) != 0 {
		t.Fatalf("after Detach in the second namespace: %d and %d, want 2 and 0", tcx(ns1), tcx(ns2))
	}
}

// A deleted interface leaves a severed link behind: Upgrade prunes it and
// a new interface that reuses the index can be attached.
func TestSeveredLinks(t *testing.T) {
	ns := vethNS(t)
	dir := testutil.BPFFS(t)
	t.Cleanup(func() { ns.Do(func() error { return datapath.Remove(dir) }) })
	dp := open(t, datapath.Options{Dir: dir})
	ns.MustDo(func() error { return dp.Attach("a", datapath.AttachOptions{}) })
	l, _ := ns.Netlink().LinkByName("a")
	idx := l.Attrs().Index
	if err := ns.Netlink().LinkDel(l); err != nil {
		t.Fatal(err)
	}
	if err := dp.Upgrade(); err != nil {
		t.Fatalf("Upgrade with a severed link: %v", err)
	}
	if got := attachments(t, ns, dp); len(got) != 0 {
		t.Fatalf("severed links not pruned: %+v", got)
	}

	// Deleting a took its peer b along. Give the old index to a new
	// interface and attach it.
	if err := ns.Netlink().LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "d0", Index: idx}, PeerName: "d1"}); err != nil {
		t.Fatal(err)
	}
	ns.MustDo(func() error { return dp.Attach("d0", datapath.AttachOptions{}) })
	got := attachments(t, ns, dp)
	if len(got) != 2 || got[0].Interface != "d0" || got[0].Ifindex != idx {
		t.Fatalf("attach to the reused index: %+v", got)
	}
}

// An explicit mode re-attaches an interface attached with another one.
func TestAttachSwitchesMode(t *testing.T) {
	ns := vethNS(t)
	dir := testutil.BPFFS(t)
	t.Cleanup(func() { ns.Do(func() error { return datapath.Remove(dir) }) })
	dp := open(t, datapath.Options{Dir: dir})
	for _, step := range []struct {
		opts datapath.AttachOptions
		want datapath.Mode
	}{
		{datapath.AttachOptions{Hook: datapath.HookXDP, Mode: datapath.ModeXDPGeneric}, datapath.ModeXDPGeneric},
		{datapath.AttachOptions{Hook: datapath.HookXDP, Mode: datapath.ModeXDPNative}, datapath.ModeXDPNative},
		{datapath.AttachOptions{Hook: datapath.HookXDP}, datapath.ModeXDPNative}, // auto keeps what is there
		{datapath.AttachOptions{Hook: datapath.HookTC, Mode: datapath.ModeTCLegacy}, datapath.ModeTCLegacy},
		{datapath.AttachOptions{Hook: datapath.HookTC, Mode: datapath.ModeTCX}, datapath.ModeTCX},
	} {
		ns.MustDo(func() error { return dp.Attach("a", step.opts) })
		got := attachments(t, ns, dp)
		for _, a := range got {
			if a.Mode != step.want {
				t.Fatalf("after Attach(%+v): %+v, want mode %s", step.opts, got, step.want)
			}
		}
	}
	if n := filterCount(t, ns, "a"); n != 0 {
		t.Fatalf("switching to TCX left %d cls_bpf filters", n)
	}
}

// Remove deletes the locks the writers took beside the pins.
func TestRemoveDeletesLocks(t *testing.T) {
	dir := testutil.BPFFS(t)
	dp := open(t, datapath.Options{Dir: dir})
	release, err := kernel.Lock(dir, "policy", false)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if _, err := os.Stat(filepath.Join(dir, "locks", "policy")); err != nil {
		t.Fatalf("the lock is not where Remove looks: %v", err)
	}
	dp.Close()
	if err := datapath.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "locks")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("locks left after Remove: %v", err)
	}
}
