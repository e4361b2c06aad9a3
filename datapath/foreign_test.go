package datapath_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/testutil"
	"github.com/xdplane/xdplane/lb"
)

// The names the programs have in the kernel are the ones Attach and
// ForeignAttachments look for: a datapath's own programs are not
// foreign to it, and are to another datapath, exactly one at XDP and two
// at tc.
func TestProgramNames(t *testing.T) {
	dir, other := testutil.BPFFS(t), testutil.BPFFS(t)
	t.Cleanup(func() { datapath.Remove(dir); datapath.Remove(other) })
	ns := vethNS(t)
	dp, dp2 := open(t, datapath.Options{Dir: dir}), open(t, datapath.Options{Dir: other})
	for _, c := range []struct {
		opts datapath.AttachOptions
		n    int
	}{{datapath.AttachOptions{Hook: datapath.HookXDP}, 1}, {datapath.AttachOptions{Hook: datapath.HookTC}, 2}} {
		ns.MustDo(func() error { return dp.Attach("a", c.opts) })
		ns.MustDo(func() error {
			foreign, err := dp.ForeignAttachments()
			if err != nil || len(foreign) != 0 {
				t.Errorf("%s: the datapath's own programs reported as foreign: %+v, %v", c.opts.Hook, foreign, err)
			}
			foreign, err = dp2.ForeignAttachments()
			if err != nil || len(foreign) != c.n {
				t.Errorf("%s: another datapath sees %+v (%v), want the first's %d programs", c.opts.Hook, foreign, err, c.n)
			}
			return nil
		})
	}
}

// datapathFor opens a datapath on a bpffs of its own, with one service,
// vip to backend be of tp, attached to every node interface with opts.
func datapathFor(t *testing.T, tp *testutil.LBTopology, vip netip.AddrPort, be int, opts datapath.AttachOptions) *datapath.Datapath {
	t.Helper()
	dir := testutil.BPFFS(t)
	t.Cleanup(func() { tp.Node.Do(func() error { return datapath.Remove(dir) }) })
	dp := open(t, datapath.Options{Dir: dir})
	m, err := lb.NewManager(dp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	svc := lb.Service{Frontend: lb.Frontend{Address: vip, Protocol: lb.TCP},
		Backends: []lb.Backend{{Address: netip.AddrPortFrom(tp.BackendAddrs[be], 8080)}}}
	if _, err := m.Sync([]lb.Service{svc}); err != nil {
		t.Fatal(err)
	}
	attachAll(t, tp, dp, opts)
	return dp
}

func attachAll(t *testing.T, tp *testutil.LBTopology, dp *datapath.Datapath, opts datapath.AttachOptions) {
	t.Helper()
	tp.Node.MustDo(func() error {
		for _, ifname := range tp.NodeInterfaces {
			if err := dp.Attach(ifname, opts); err != nil {
				return err
			}
		}
		return nil
	})
}

// reachOnly makes n new connections to vip and fails unless each reaches
// the backend named want.
func reachOnly(t *testing.T, tp *testutil.LBTopology, vip netip.AddrPort, want string, n int) {
	t.Helper()
	seen := map[string]int{}
	for range n {
		name, err := testutil.AskTCP(tp.Client, vip, 2*time.Second)
		if err != nil {
			name = "error: " + err.Error()
		}
		seen[name]++
	}
	if seen[want] != n {
		t.Fatalf("%d new connections to %s reached %v, want all %s", n, vip, seen, want)
	}
}

// Two datapaths on two bpffs, attached to the same interfaces, as after
// a bpffs was unmounted under a running datapath and another started:
// each sees the other's programs as foreign, and the second's Attach
// takes the interfaces over, so that new connections follow its
// services, not the first's.
func TestAttachTakesOverForeignPrograms(t *testing.T) {
	tc := datapath.AttachOptions{Hook: datapath.HookTC}
	legacy := datapath.AttachOptions{Hook: datapath.HookTC, Mode: datapath.ModeTCLegacy}
	xdp := datapath.AttachOptions{Hook: datapath.HookXDP}
	for _, v := range []struct {
		name         string
		first, later datapath.AttachOptions
		foreign      int // programs the first has on each interface
	}{
		{"tcx-tcx", tc, tc, 2},
		{"legacy-tcx", legacy, tc, 2},
		{"tcx-legacy", tc, legacy, 2},
		{"xdp-xdp", xdp, xdp, 1},
		{"xdp-tcx", xdp, tc, 1},
		{"tcx-xdp", tc, xdp, 2},
	} {
		t.Run(v.name, func(t *testing.T) {
			tp := testutil.NewLBTopology(t, 2)
			// XDP on veth needs complete checksums (DESIGN.md).
			tp.DisableChecksumOffload()
			for i, be := range tp.Backends {
				testutil.ServeTCP(t, be, netip.AddrPortFrom(tp.BackendAddrs[i], 8080), fmt.Sprintf("backend%d", i))
			}
			vip := netip.MustParseAddrPort("10.96.0.10:80")

			first := datapathFor(t, tp, vip, 0, v.first)
			reachOnly(t, tp, vip, "backend0", 10)

			// The second datapath's service sends the same frontend to
			// backend 1. Before it attaches, it sees the first's programs.
			dir := testutil.BPFFS(t)
			t.Cleanup(func() { tp.Node.Do(func() error { return datapath.Remove(dir) }) })
			second := open(t, datapath.Options{Dir: dir})
			m, err := lb.NewManager(second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Close() })
			svc := lb.Service{Frontend: lb.Frontend{Address: vip, Protocol: lb.TCP},
				Backends: []lb.Backend{{Address: netip.AddrPortFrom(tp.BackendAddrs[1], 8080)}}}
			if _, err := m.Sync([]lb.Service{svc}); err != nil {
				t.Fatal(err)
			}
			var foreign []datapath.Attachment
			tp.Node.MustDo(func() (err error) { foreign, err = second.ForeignAttachments(); return err })
			if want := v.foreign * len(tp.NodeInterfaces); len(foreign) != want {
				t.Fatalf("before the second attaches, it sees %d foreign programs, want %d: %+v", len(foreign), want, foreign)
			}
			owned := attachments(t, tp.Node, first)
			for i, f := range foreign {
				if f.Interface == "" || f.Mode != owned[i].Mode || f.ProgramID != owned[i].ProgramID || f.Point != owned[i].Point {
					t.Errorf("foreign program %+v, want the first datapath's %+v", f, owned[i])
				}
			}

			attachAll(t, tp, second, v.later)
			reachOnly(t, tp, vip, "backend1", 30)

			tp.Node.MustDo(func() (err error) { foreign, err = second.ForeignAttachments(); return err })
			if len(foreign) != 0 {
				t.Errorf("after the second attached, foreign programs are left: %+v", foreign)
			}
			if got := attachments(t, tp.Node, first); len(got) != 0 {
				t.Errorf("the first datapath still lists attachments: %+v", got)
			}
			tp.Node.MustDo(func() (err error) { foreign, err = first.ForeignAttachments(); return err })
			if got := attachments(t, tp.Node, second); len(foreign) != len(got) || len(got) == 0 {
				t.Errorf("the first sees %d foreign programs, want the second's %d", len(foreign), len(got))
			}
		})
	}
}
