package lb

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
)

func openDatapath(t testing.TB, limits datapath.Limits) (*datapath.Datapath, string) {
	t.Helper()
	return openDatapathWith(t, datapath.Options{Limits: limits})
}

// openDatapathWith opens a datapath with opts on a bpffs of its own.
func openDatapathWith(t testing.TB, opts datapath.Options) (*datapath.Datapath, string) {
	t.Helper()
	dir := testutil.BPFFS(t)
	opts.Dir = dir
	dp, err := datapath.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dp.Close()
		if err := datapath.Remove(dir); err != nil {
			t.Error(err)
		}
	})
	return dp, dir
}

func newManager(t *testing.T, dp *datapath.Datapath) *Manager {
	t.Helper()
	m, err := NewManager(dp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func svc(fe string, backends ...string) Service {
	f, err := ParseFrontend(fe)
	if err != nil {
		panic(err)
	}
	s := Service{Frontend: f}
	for _, b := range backends {
		s.Backends = append(s.Backends, Backend{Address: netip.MustParseAddrPort(b)})
	}
	return s
}

// dump reads every service-related map into comparable form: what the
// kernel holds, byte for byte.
func dump(t *testing.T, dp *datapath.Datapath) map[string]map[string]string {
	t.Helper()
	m := kernel.Of(dp).Maps
	out := map[string]map[string]string{}
	for name, mp := range map[string]*ebpf.Map{
		"services": m.Services, "slots": m.BackendSlots, "backends": m.Backends, "revnat": m.Revnat,
	} {
		out[name] = map[string]string{}
		var k, v []byte
		it := mp.Iterate()
		for it.Next(&k, &v) {
			out[name][string(k)] = string(v)
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
	}
	// A Maglev table by its contents: a rollback may rebuild a table in
	// a new inner map.
	out["maglev"] = map[string]string{}
	var id uint32
	var inner *ebpf.Map
	it := m.Maglev.Iterate()
	for it.Next(&id, &inner) {
		table, err := readTable(inner)
		inner.Close()
		if err != nil {
			t.Fatal(err)
		}
		out["maglev"][fmt.Sprint(id)] = fmt.Sprint(table)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameDump(a, b map[string]map[string]string) bool {
	for name := range a {
		if !maps.Equal(a[name], b[name]) {
			return false
		}
	}
	return len(a) == len(b)
}

// checkConsistent verifies the invariants packets rely on: every service
// has slots 1..count naming backends of that service, and nothing else
// exists.
func checkConsistent(t *testing.T, dp *datapath.Datapath) {
	t.Helper()
	services, orph, err := loadState(kernel.Of(dp).Maps)
	if err != nil {
		t.Fatalf("inconsistent maps: %v", err)
	}
	if len(orph.slots)+len(orph.backends)+len(orph.revnat)+len(orph.maglev) != 0 {
		t.Fatalf("orphans left: %+v", orph)
	}
	for f, e := range services {
		var rn bpf.XdplaneRevnatValue
		if err := kernel.Of(dp).Maps.Revnat.Lookup(e.id, &rn); err != nil {
			t.Fatalf("service %s has no revnat entry: %v", f, err)
		}
		if addrPortOf(rn.Addr, rn.Port) != f.Address {
			t.Fatalf("revnat of %s is %s", f, addrPortOf(rn.Addr, rn.Port))
		}
		if e.svc.Algorithm == Maglev {
			in, err := (&Manager{maps: kernel.Of(dp).Maps}).openTable(e.id, e.svc.MaglevTableSize)
			if in == nil || err != nil {
				t.Fatalf("service %s has no Maglev table of %d entries: %v", f, e.svc.MaglevTableSize, err)
			}
			got, err := readTable(in)
			in.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, maglevIDs(e)) {
				t.Fatalf("the Maglev table of %s is not the one its backends make", f)
			}
		}
	}
}

func TestManagerUpsertListDelete(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)

	a := svc("10.96.0.10:80/tcp", "10.0.1.2:8080", "10.0.2.2:8080")
	b := svc("10.96.0.10:53/udp", "10.0.1.2:5353")
	for _, s := range []Service{a, b} {
		if err := m.Upsert(s); err != nil {
			t.Fatal(err)
		}
	}
	checkConsistent(t, dp)
	got := m.List()
	if len(got) != 2 || !got[0].equal(b.normalized()) || !got[1].equal(a.normalized()) {
		t.Fatalf("List() = %+v", got)
	}
	if s, ok := m.Get(a.Frontend); !ok || !s.equal(a.normalized()) {
		t.Fatalf("Get(%s) = %+v, %v", a.Frontend, s, ok)
	}

	// Shrink, grow, reweight.
	for _, s := range []Service{
		svc("10.96.0.10:80/tcp", "10.0.2.2:8080"),
		svc("10.96.0.10:80/tcp", "10.0.1.2:8080", "10.0.2.2:8080", "10.0.3.2:8080"),
		{Frontend: a.Frontend, Backends: []Backend{{Address: netip.MustParseAddrPort("10.0.3.2:8080"), Weight: 3}}},
		{Frontend: a.Frontend},
	} {
		if err := m.Upsert(s); err != nil {
			t.Fatal(err)
		}
		checkConsistent(t, dp)
		var v bpf.XdplaneSvcValue
		if err := kernel.Of(dp).Maps.Services.Lookup(svcKey(a.Frontend), &v); err != nil {
			t.Fatal(err)
		}
		want := 0
		for _, b := range s.normalized().Backends {
			want += int(b.Weight)
		}
		if int(v.Count) != want {
			t.Fatalf("slot count %d, want %d", v.Count, want)
		}
	}

	if err := m.Delete(a.Frontend); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(a.Frontend); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	checkConsistent(t, dp)
	if got := m.List(); len(got) != 1 || got[0].Frontend != b.Frontend {
		t.Fatalf("after delete List() = %+v", got)
	}
}

func TestManagerKeepsBackendIDs(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	s := svc("10.96.0.10:80/tcp", "10.0.1.2:8080", "10.0.2.2:8080")
	if err := m.Upsert(s); err != nil {
		t.Fatal(err)
	}
	id := m.services[s.Frontend].backendIDs[netip.MustParseAddrPort("10.0.2.2:8080")]
	if err := m.Upsert(svc("10.96.0.10:80/tcp", "10.0.2.2:8080", "10.0.3.2:8080")); err != nil {
		t.Fatal(err)
	}
	// Conntrack entries name backends by id: a kept backend must keep it.
	if got := m.services[s.Frontend].backendIDs[netip.MustParseAddrPort("10.0.2.2:8080")]; got != id {
		t.Fatalf("kept backend changed id from %d to %d", id, got)
	}
}

func TestManagerSync(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	a := svc("10.96.0.10:80/tcp", "10.0.1.2:8080")
	b := svc("10.96.0.11:80/tcp", "10.0.1.2:8080")
	c := svc("10.96.0.12:80/tcp", "10.0.1.2:8080")

	res, err := m.Sync([]Service{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Added, []Frontend{a.Frontend, b.Frontend}) || res.Changed != nil || res.Removed != nil {
		t.Fatalf("first Sync = %+v", res)
	}
	res, err = m.Sync([]Service{a, b})
	if err != nil || res.Added != nil || res.Changed != nil || res.Removed != nil {
		t.Fatalf("repeated Sync = %+v, %v; want no change", res, err)
	}
	b2 := svc("10.96.0.11:80/tcp", "10.0.1.2:8080", "10.0.2.2:8080")
	res, err = m.Sync([]Service{b2, c})
	if err != nil {
		t.Fatal(err)
	}
	want := SyncResult{Added: []Frontend{c.Frontend}, Changed: []Frontend{b.Frontend}, Removed: []Frontend{a.Frontend}}
	if fmt.Sprint(res) != fmt.Sprint(want) {
		t.Fatalf("Sync = %+v, want %+v", res, want)
	}
	checkConsistent(t, dp)

	// Backend order and a default weight written as 1 are no change.
	b3 := b2
	b3.Backends = []Backend{b2.Backends[1], {Address: b2.Backends[0].Address, Weight: 1}}
	if res, err := m.Sync([]Service{b3, c}); err != nil || res.Changed != nil {
		t.Fatalf("reordered Sync = %+v, %v; want no change", res, err)
	}
}

func TestManagerSyncInvalidLeavesStateAlone(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	if _, err := m.Sync([]Service{svc("10.96.0.10:80/tcp", "10.0.1.2:8080")}); err != nil {
		t.Fatal(err)
	}
	before := dump(t, dp)
	for name, set := range map[string][]Service{
		"bad backend":        {svc("10.96.0.11:80/tcp", "10.0.1.2:8080"), svc("10.96.0.12:80/tcp", "10.0.1.2:0")},
		"duplicate frontend": {svc("10.96.0.11:80/tcp", "10.0.1.2:8080"), svc("10.96.0.11:80/tcp", "10.0.1.3:8080")},
	} {
		_, err := m.Sync(set)
		var ve *ValidationError
		if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: Sync = %v, want a ValidationError", name, err)
		}
		if !sameDump(before, dump(t, dp)) {
			t.Fatalf("%s: failed Sync changed the maps", name)
		}
	}
}

func TestManagerCapacity(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{MaxServices: 2, MaxBackends: 3, MaxBackendSlots: 4})
	m := newManager(t, dp)
	if err := m.Upsert(svc("10.96.0.10:80/tcp", "10.0.1.2:8080", "10.0.1.3:8080")); err != nil {
		t.Fatal(err)
	}
	before := dump(t, dp)
	for name, s := range map[string]Service{
		"backends": svc("10.96.0.11:80/tcp", "10.0.1.2:8080", "10.0.1.3:8080"),
		"slots": {Frontend: Frontend{netip.MustParseAddrPort("10.96.0.11:80"), TCP},
			Backends: []Backend{{Address: netip.MustParseAddrPort("10.0.1.2:8080"), Weight: 3}}},
		// Replacing both backends needs four at once: old and new
		// coexist until the switch.
		"transient": svc("10.96.0.10:80/tcp", "10.0.2.2:8080", "10.0.2.3:8080"),
	} {
		err := m.Upsert(s)
		var ve *ValidationError
		if !errors.Is(err, ErrCapacity) || !errors.As(err, &ve) {
			t.Fatalf("%s: Upsert = %v, want ErrCapacity", name, err)
		}
		if !sameDump(before, dump(t, dp)) {
			t.Fatalf("%s: refused Upsert changed the maps", name)
		}
	}
	if _, err := m.Sync([]Service{
		svc("10.96.0.10:80/tcp"), svc("10.96.0.11:80/tcp"), svc("10.96.0.12:80/tcp"),
	}); !errors.Is(err, ErrCapacity) {
		t.Fatalf("three services with room for two: %v", err)
	}
	// Sync counts removals first: swapping the one service for another fits.
	// (The replay of Sync's order is checked in TestManagerCapacityReplay.)
	if _, err := m.Sync([]Service{svc("10.96.0.11:80/tcp", "10.0.3.2:8080", "10.0.3.3:8080", "10.0.3.4:8080")}); err != nil {
		t.Fatalf("swap within capacity: %v", err)
	}
	checkConsistent(t, dp)
}

// Capacity is checked against the peak of each step, in Sync's order: a
// change that frees backends makes room for the next one.
func TestManagerCapacityReplay(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{MaxBackends: 6})
	m := newManager(t, dp)
	if _, err := m.Sync([]Service{
		svc("10.96.0.10:80/tcp", "10.0.1.2:8080", "10.0.1.3:8080"),
		svc("10.96.0.11:80/tcp", "10.0.1.2:8080", "10.0.1.3:8080"),
	}); err != nil {
		t.Fatal(err)
	}
	// Four in use; each change adds two (peak six) and then frees two.
	if _, err := m.Sync([]Service{
		svc("10.96.0.10:80/tcp", "10.0.2.2:8080", "10.0.2.3:8080"),
		svc("10.96.0.11:80/tcp", "10.0.3.2:8080", "10.0.3.3:8080"),
	}); err != nil {
		t.Fatalf("replacing both backend sets, peak 6 of 6: %v", err)
	}
	checkConsistent(t, dp)
	// Three new backends on top of four: peak seven.
	_, err := m.Sync([]Service{
		svc("10.96.0.10:80/tcp", "10.0.4.2:8080", "10.0.4.3:8080", "10.0.4.4:8080"),
		svc("10.96.0.11:80/tcp", "10.0.3.2:8080", "10.0.3.3:8080"),
	})
	var ve *ValidationError
	if !errors.As(err, &ve) || !errors.Is(err, ErrCapacity) || ve.Frontend.Address.String() != "10.96.0.10:80" {
		t.Fatalf("peak of 7 with room for 6: %v, want ErrCapacity naming 10.96.0.10:80", err)
	}
}

// A kernel refusal half-way through must roll everything back. Fill the
// backends map behind the Manager's back so that its accounting says yes
// and the kernel says no.
func TestManagerRollback(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{MaxBackends: 4})
	m := newManager(t, dp)
	if _, err := m.Sync([]Service{
		svc("10.96.0.10:80/tcp", "10.0.1.2:8080"),
		svc("10.96.0.11:80/tcp", "10.0.1.2:8080"),
	}); err != nil {
		t.Fatal(err)
	}
	for id := uint32(100); id < 102; id++ {
		if err := kernel.Of(dp).Maps.Backends.Put(id, bpf.XdplaneBackend{SvcId: 999}); err != nil {
			t.Fatal(err)
		}
	}
	before := dump(t, dp)
	listBefore := m.List()
	// Counters of the ids the failed Sync will reuse must survive it too.
	stats := func() string {
		var out []string
		for id := uint32(0); id <= 4; id++ {
			var per []bpf.XdplaneCounter
			if err := kernel.Of(dp).Maps.BackendStats.Lookup(id, &per); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(per))
		}
		return fmt.Sprint(out)
	}
	for id := uint32(0); id <= 4; id++ {
		per := make([]bpf.XdplaneCounter, ebpf.MustPossibleCPU())
		per[0] = bpf.XdplaneCounter{Packets: uint64(id) + 5, Bytes: 500}
		if err := kernel.Of(dp).Maps.BackendStats.Put(id, per); err != nil {
			t.Fatal(err)
		}
	}
	statsBefore := stats()
	_, err := m.Sync([]Service{
		svc("10.96.0.10:80/tcp", "10.0.1.2:8080", "10.0.1.3:8080"),
		svc("10.96.0.12:80/tcp", "10.0.1.2:8080"),
	})
	if err == nil {
		t.Fatal("Sync succeeded with the backends map full")
	}
	if errors.Is(err, ErrCapacity) {
		t.Fatalf("refused by accounting, not by the kernel, so no rollback ran: %v", err)
	}
	if !sameDump(before, dump(t, dp)) {
		t.Fatal("failed Sync left the maps changed")
	}
	if fmt.Sprint(m.List()) != fmt.Sprint(listBefore) {
		t.Fatalf("failed Sync changed the Manager's view: %v", m.List())
	}
	if got := stats(); got != statsBefore {
		t.Fatalf("failed Sync changed backend counters:\n got  %s\n want %s", got, statsBefore)
	}
}

// A writer that died half-way leaves a service whose count covers a
// missing slot. Reading it back must not fail, and the next Sync must
// repair it.
func TestManagerRepairsHalfWrittenService(t *testing.T) {
	dp, dir := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	set := []Service{svc("10.96.0.10:80/tcp", "10.0.1.2:8080", "10.0.2.2:8080", "10.0.3.2:8080")}
	if _, err := m.Sync(set); err != nil {
		t.Fatal(err)
	}
	id := m.services[set[0].Frontend].id
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := kernel.Of(dp).Maps.BackendSlots.Delete(bpf.XdplaneSlotKey{SvcId: id, Slot: 2}); err != nil {
		t.Fatal(err)
	}

	ro, err := datapath.OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if st, err := ReadStatus(ro); err != nil || len(st) != 1 {
		t.Fatalf("ReadStatus of a half-written service = %+v, %v", st, err)
	}
	m2 := newManager(t, dp)
	res, err := m2.Sync(set)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 1 {
		t.Fatalf("Sync over a half-written service = %+v, want it changed (repaired)", res)
	}
	checkConsistent(t, dp)
	if got := m2.List(); fmt.Sprint(got) != fmt.Sprint([]Service{set[0].normalized()}) {
		t.Fatalf("after repair: %v", got)
	}
	for slot := uint32(1); slot <= 3; slot++ {
		var be uint32
		if err := kernel.Of(dp).Maps.BackendSlots.Lookup(bpf.XdplaneSlotKey{SvcId: id, Slot: slot}, &be); err != nil {
			t.Fatalf("slot %d after repair: %v", slot, err)
		}
	}
}

func TestManagerRecovers(t *testing.T) {
	dp, dir := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	set := []Service{
		svc("10.96.0.10:80/tcp", "10.0.1.2:8080", "10.0.2.2:8080"),
		{Frontend: Frontend{netip.MustParseAddrPort("10.96.0.10:53"), UDP},
			Backends: []Backend{{Address: netip.MustParseAddrPort("10.0.1.2:5353"), Weight: 4}}},
	}
	if _, err := m.Sync(set); err != nil {
		t.Fatal(err)
	}
	// Leftovers of a writer that died mid-update.
	maps := kernel.Of(dp).Maps
	if err := maps.BackendSlots.Put(bpf.XdplaneSlotKey{SvcId: 4242, Slot: 1}, uint32(7)); err != nil {
		t.Fatal(err)
	}
	if err := maps.Backends.Put(uint32(4243), bpf.XdplaneBackend{SvcId: 4242}); err != nil {
		t.Fatal(err)
	}

	// A new process: a new handle on the same pins. While the first
	// Manager holds the datapath, a second one is refused.
	dp2, err := datapath.Open(datapath.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	if _, err := NewManager(dp2); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Manager on a held datapath: %v, want ErrBusy", err)
	}
	listBefore := m.List()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Upsert(svc("10.96.0.30:80/tcp")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Upsert after Close = %v, want ErrClosed", err)
	}
	m2 := newManager(t, dp2)
	if fmt.Sprint(m2.List()) != fmt.Sprint(listBefore) {
		t.Fatalf("recovered %v, want %v", m2.List(), listBefore)
	}
	checkConsistent(t, dp2)
	if res, err := m2.Sync(set); err != nil || res.Added != nil || res.Changed != nil || res.Removed != nil {
		t.Fatalf("Sync of the same set after restart = %+v, %v; want no change", res, err)
	}
	// New ids must not collide with recovered ones.
	if err := m2.Upsert(svc("10.96.0.20:80/tcp", "10.0.3.2:8080")); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, dp2)
}

func TestReadStatus(t *testing.T) {
	dp, dir := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	if err := m.Upsert(svc("10.96.0.10:80/tcp", "10.0.1.2:8080", "10.0.2.2:8080")); err != nil {
		t.Fatal(err)
	}
	ro, err := datapath.OpenPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	st, err := ReadStatus(ro)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || len(st[0].Backends) != 2 || st[0].Backends[0].Packets != 0 {
		t.Fatalf("ReadStatus = %+v", st)
	}
}

func TestManagerIPv6AndIPv4Side(t *testing.T) {
	dp, dir := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	set := []Service{
		svc("[fd00::10]:80/tcp", "[fd00:1::2]:8080", "[fd00:2::2]:8080"),
		svc("10.96.0.10:80/tcp", "10.0.1.2:8080"),
		// Same port and protocol as the IPv4 service, another family.
		svc("[::ffff:a60:a]:80/tcp"),
	}
	if _, err := m.Sync(set); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a v4-mapped frontend: %v, want ErrInvalid", err)
	}
	set = set[:2]
	if _, err := m.Sync(set); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, dp)
	m.Close()
	dp2, err := datapath.Open(datapath.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	m2 := newManager(t, dp2)
	got := m2.List()
	if len(got) != 2 || got[0].Frontend.Address.String() != "10.96.0.10:80" || got[1].Frontend.Address.String() != "[fd00::10]:80" ||
		got[1].Backends[0].Address.String() != "[fd00:1::2]:8080" {
		t.Fatalf("recovered %v", got)
	}
}

// vipCounts reads the vips map: how many services each virtual IP has.
func vipCounts(t *testing.T, dp *datapath.Datapath) map[netip.Addr]uint32 {
	t.Helper()
	out := map[netip.Addr]uint32{}
	var k bpf.XdplaneVipKey
	var v uint32
	it := kernel.Of(dp).Maps.Vips.Iterate()
	for it.Next(&k, &v) {
		out[netip.AddrFrom16(k.Addr).Unmap()] = v
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Sync writes the services it adds with one batch per map (applyNew);
// services that change, and new ones with a Maglev table or source
// ranges, go one by one. Both ways must leave the same maps: consistent,
// the virtual IPs counted, read back whole by a new Manager, and emptied
// by an empty Sync.
func TestManagerSyncNewServicesInBatches(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	vip := func(s Service) Service { s.VirtualIP = true; return s }
	a := vip(svc("10.96.0.10:80/tcp", "10.0.1.2:8080"))
	if err := m.Upsert(a); err != nil {
		t.Fatal(err)
	}
	a.Backends = append(a.Backends, Backend{Address: netip.MustParseAddrPort("10.0.1.3:8080"), Weight: 3})
	maglev := vip(svc("10.96.0.13:80/tcp", "10.0.3.2:8080", "10.0.3.3:8080"))
	maglev.Algorithm = Maglev
	ranged := svc("10.96.0.14:80/tcp", "10.0.4.2:8080")
	ranged.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	weighted := vip(svc("10.96.0.11:53/udp", "10.0.2.2:53", "10.0.2.3:53"))
	weighted.Backends[1].Weight = 4
	terminating := svc("10.96.0.12:80/tcp", "10.0.5.2:8080", "10.0.5.3:8080")
	terminating.Backends[0].State = Terminating
	set := []Service{
		a, // changed
		vip(svc("10.96.0.10:443/tcp", "10.0.1.2:8443")), // new, on a's virtual IP
		weighted,
		vip(svc("10.96.0.11:53/tcp", "10.0.2.2:53")), // a second service on a new virtual IP
		terminating,
		vip(svc("10.96.0.15:80/tcp")), // no backends: rejects
		maglev,
		ranged,
		svc("[fd00::10]:80/tcp", "[fd00:1::2]:8080"),
	}
	res, err := m.Sync(set)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Added) != len(set)-1 || len(res.Changed) != 1 {
		t.Fatalf("Sync: %+v", res)
	}
	checkConsistent(t, dp)
	want := map[netip.Addr]uint32{
		netip.MustParseAddr("10.96.0.10"): 2,
		netip.MustParseAddr("10.96.0.11"): 2,
		netip.MustParseAddr("10.96.0.13"): 1,
		netip.MustParseAddr("10.96.0.15"): 1,
	}
	if got := vipCounts(t, dp); !maps.Equal(got, want) {
		t.Fatalf("vips map %v, want %v", got, want)
	}
	if !maps.Equal(m.vips, want) {
		t.Fatalf("Manager's vips %v, want %v", m.vips, want)
	}
	// Slots: a has 1+3, weighted 1+4, terminating only its active one.
	for fe, slots := range map[string]int{"10.96.0.10:80/tcp": 4, "10.96.0.11:53/udp": 5, "10.96.0.12:80/tcp": 1, "10.96.0.15:80/tcp": 0} {
		f, _ := ParseFrontend(fe)
		var v bpf.XdplaneSvcValue
		if err := kernel.Of(dp).Maps.Services.Lookup(svcKey(f), &v); err != nil {
			t.Fatalf("%s: %v", fe, err)
		}
		if int(v.Count) != slots || len(m.services[f].slots) != slots {
			t.Errorf("%s: %d slots in the map, %d in the Manager, want %d", fe, v.Count, len(m.services[f].slots), slots)
		}
	}
	listed := m.List()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2 := newManager(t, dp)
	if got := m2.List(); fmt.Sprint(got) != fmt.Sprint(listed) {
		t.Fatalf("read back:\n got  %v\n want %v", got, listed)
	}
	if _, err := m2.Sync(nil); err != nil {
		t.Fatal(err)
	}
	for name, entries := range dump(t, dp) {
		if len(entries) != 0 {
			t.Errorf("%s holds %d entries after an empty Sync", name, len(entries))
		}
	}
	if got := vipCounts(t, dp); len(got) != 0 {
		t.Errorf("vips map holds %v after an empty Sync", got)
	}
}

// When the kernel refuses a batch after others went in (here the services
// map, full of entries the Manager does not know), everything the Sync
// wrote is undone: the maps, the virtual IPs, the counters of the backend
// ids it took, and the Manager's view are as before.
func TestManagerSyncBatchRollback(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{MaxServices: 4})
	m := newManager(t, dp)
	kept := svc("10.96.0.9:80/tcp", "10.0.9.2:8080")
	kept.VirtualIP = true
	if err := m.Upsert(kept); err != nil {
		t.Fatal(err)
	}
	// Two entries written behind the Manager's back fill the map.
	for i := range 2 {
		f, _ := ParseFrontend(fmt.Sprintf("192.0.2.%d:80/tcp", i+1))
		if err := kernel.Of(dp).Maps.Services.Put(svcKey(f), bpf.XdplaneSvcValue{Id: 100 + uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for id := uint32(0); id <= 6; id++ {
		per := make([]bpf.XdplaneCounter, ebpf.MustPossibleCPU())
		per[0] = bpf.XdplaneCounter{Packets: uint64(id) + 7, Bytes: 700}
		if err := kernel.Of(dp).Maps.BackendStats.Put(id, per); err != nil {
			t.Fatal(err)
		}
	}
	stats := func() string {
		var out []string
		for id := uint32(0); id <= 6; id++ {
			var per []bpf.XdplaneCounter
			if err := kernel.Of(dp).Maps.BackendStats.Lookup(id, &per); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(per))
		}
		return fmt.Sprint(out)
	}
	before, vipsBefore, statsBefore, listBefore := dump(t, dp), vipCounts(t, dp), stats(), m.List()

	set := []Service{kept}
	for i := range 2 {
		s := svc(fmt.Sprintf("10.96.0.%d:80/tcp", 20+i), fmt.Sprintf("10.0.%d.2:8080", 20+i), fmt.Sprintf("10.0.%d.3:8080", 20+i))
		s.VirtualIP = true
		set = append(set, s)
	}
	_, err := m.Sync(set)
	if err == nil {
		t.Fatal("Sync succeeded with the services map full")
	}
	if !strings.Contains(err.Error(), "services") {
		t.Fatalf("Sync failed before it reached the services map: %v", err)
	}
	if errors.Is(err, ErrCapacity) {
		t.Fatalf("refused by accounting, not by the kernel, so no rollback ran: %v", err)
	}
	if !sameDump(before, dump(t, dp)) {
		t.Error("failed Sync left the maps changed")
	}
	if got := vipCounts(t, dp); !maps.Equal(got, vipsBefore) {
		t.Errorf("failed Sync left the vips map %v, want %v", got, vipsBefore)
	}
	if got := stats(); got != statsBefore {
		t.Errorf("failed Sync changed backend counters:\n got  %s\n want %s", got, statsBefore)
	}
	if fmt.Sprint(m.List()) != fmt.Sprint(listBefore) || !maps.Equal(m.vips, vipsBefore) {
		t.Errorf("failed Sync changed the Manager's view: %v, vips %v", m.List(), m.vips)
	}
}
