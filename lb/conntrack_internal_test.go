package lb

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// An entry the datapath refreshes between the collector's read and its
// removal is kept, and so is the reply entry that would have followed it;
// an entry left alone goes, with its reply.
func TestCollectorKeepsWhatWasRefreshed(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	fe := netip.MustParseAddrPort("10.96.0.10:80")
	be := netip.MustParseAddrPort("10.0.1.2:8080")
	if err := m.Upsert(Service{Frontend: Frontend{Address: fe, Protocol: TCP}, Backends: []Backend{{Address: be}}}); err != nil {
		t.Fatal(err)
	}
	e := m.services[Frontend{Address: fe, Protocol: TCP}]
	k := kernel.Of(dp)
	now := monotonicNow()
	old := now - uint64(time.Hour) // past TCPOpening, on a machine up an hour
	if now < uint64(2*time.Hour) {
		old = 1
	}
	put := func(client netip.AddrPort) (fwd, rep bpf.XdplaneCtKey) {
		v := bpf.XdplaneCtValue{BackendId: e.backendIDs[be], SvcId: e.id, BackendCookie: e.cookies[be], LastSeen: old}
		fwd = ctKey(client, fe, TCP, 0)
		rep = ctKey(be, client, TCP, 1)
		for _, key := range []bpf.XdplaneCtKey{fwd, rep} {
			if err := k.Maps.Conntrack.Put(key, v); err != nil {
				t.Fatal(err)
			}
		}
		return fwd, rep
	}
	liveF, liveR := put(netip.MustParseAddrPort("10.0.0.1:40000"))
	deadF, deadR := put(netip.MustParseAddrPort("10.0.0.1:40001"))

	c := collector{maps: k.Maps, timeouts: k.Timeouts}
	if err := c.read(); err != nil {
		t.Fatal(err)
	}
	c.judge(monotonicNow())
	if len(c.doomed) != 4 {
		t.Fatalf("judged %d entries removable, want all 4", len(c.doomed))
	}
	// The datapath's refresh of the live flow, after the read.
	var v bpf.XdplaneCtValue
	if err := k.Maps.Conntrack.Lookup(liveF, &v); err != nil {
		t.Fatal(err)
	}
	v.LastSeen = monotonicNow()
	if err := k.Maps.Conntrack.Update(liveF, v, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	res, err := c.remove()
	if err != nil {
		t.Fatal(err)
	}
	if res.Expired != 2 || res.Stale != 0 {
		t.Fatalf("removed %+v, want the dead flow's 2 entries as expired", res)
	}
	for key, want := range map[bpf.XdplaneCtKey]bool{liveF: true, liveR: true, deadF: false, deadR: false} {
		err := k.Maps.Conntrack.Lookup(key, &v)
		if got := err == nil; got != want {
			t.Errorf("entry %+v present %v, want %v (%v)", key, got, want, err)
		}
	}
}
