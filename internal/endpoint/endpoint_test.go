package endpoint_test

import (
	"errors"
	"net"
	"testing"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/dptest"
	"github.com/xdplane/xdplane/internal/endpoint"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
)

// setup is a datapath whose endpoints map holds one entry, and a
// namespace with the interfaces a0 and b0.
func setup(t *testing.T) (*testutil.NS, *datapath.Datapath, map[string]uint32) {
	t.Helper()
	testutil.RequireRoot(t)
	ns := testutil.NewGroup(t).NS("ep")
	testutil.Veth(t, ns, "a0", ns, "a1")
	testutil.Veth(t, ns, "b0", ns, "b1")
	dp := dptest.Open(t, ns, datapath.Options{Limits: datapath.Limits{MaxEndpoints: 1}})
	idx := map[string]uint32{}
	ns.MustDo(func() error {
		for _, name := range []string{"a0", "b0"} {
			ifc, err := net.InterfaceByName(name)
			if err != nil {
				return err
			}
			idx[name] = uint32(ifc.Index)
		}
		return nil
	})
	return ns, dp, idx
}

func attached(t *testing.T, ns *testutil.NS, dp *datapath.Datapath, ifname string) bool {
	t.Helper()
	var on bool
	ns.MustDo(func() (err error) { _, on, err = dp.AttachedHook(ifname); return err })
	return on
}

// A Manager's undo of its attachment leaves the programs where another
// Manager has made the interface an endpoint in the meantime, and
// detaches them where none has.
func TestAttachUndo(t *testing.T) {
	ns, dp, idx := setup(t)
	k := kernel.Of(dp)
	var undoA, undoB func() error
	ns.MustDo(func() (err error) {
		if undoA, err = endpoint.Attach(k, dp, "a0", idx["a0"], "bandwidth"); err != nil {
			return err
		}
		undoB, err = endpoint.Attach(k, dp, "b0", idx["b0"], "bandwidth")
		return err
	})
	// Another Manager's endpoint on a0, written after the attachment.
	if err := endpoint.Update(k, idx["a0"], func(e *bpf.XdplaneEndpoint) { e.Id = 1 }); err != nil {
		t.Fatal(err)
	}
	ns.MustDo(func() error { return errors.Join(undoA(), undoB()) })
	if !attached(t, ns, dp, "a0") {
		t.Error("undo detached a0, which another Manager's endpoint uses")
	}
	if attached(t, ns, dp, "b0") {
		t.Error("undo left b0 attached, which nothing uses")
	}
}

// Join attaches and writes in one step; when the entry cannot be written
// (the endpoints map is full), it detaches again and says the map is
// full, wrapping ErrCapacity.
func TestJoinFull(t *testing.T) {
	ns, dp, idx := setup(t)
	k := kernel.Of(dp)
	ns.MustDo(func() error {
		return endpoint.Join(k, dp, "a0", idx["a0"], "policy", func(e *bpf.XdplaneEndpoint) { e.Id = 1 })
	})
	var err error
	ns.MustDo(func() error {
		err = endpoint.Join(k, dp, "b0", idx["b0"], "policy", func(e *bpf.XdplaneEndpoint) { e.Id = 2 })
		return nil
	})
	if !errors.Is(err, datapath.ErrCapacity) {
		t.Errorf("Join with the endpoints map full = %v, want ErrCapacity", err)
	}
	if attached(t, ns, dp, "b0") {
		t.Error("a failed Join left b0 attached")
	}
	if !attached(t, ns, dp, "a0") {
		t.Error("Join did not attach a0")
	}
	var e bpf.XdplaneEndpoint
	if err := k.Maps.Endpoints.Lookup(idx["a0"], &e); err != nil || e.Id != 1 {
		t.Errorf("a0's entry %+v, %v; want id 1", e, err)
	}
}
