package lb

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
)

// maglevService is a Maglev service numbered i with n backends, its table
// of size entries.
func maglevService(i, n int, size uint32) Service {
	s := Service{
		Frontend:        Frontend{Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}), 80), Protocol: TCP},
		Algorithm:       Maglev,
		MaglevTableSize: size,
	}
	for j := range n {
		s.Backends = append(s.Backends, Backend{Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(1 + j), byte(i >> 8), byte(i)}), 8080)})
	}
	return s
}

// tableID is the id of the inner map that holds service id's table.
func tableID(t *testing.T, dp *datapath.Datapath, id uint32) ebpf.MapID {
	t.Helper()
	var inner uint32 // read as a number, the inner map's id
	if err := kernel.Of(dp).Maps.Maglev.Lookup(id, &inner); err != nil {
		t.Fatalf("no Maglev table for service %d: %v", id, err)
	}
	return ebpf.MapID(inner)
}

// A change that leaves a Maglev table as it is does not write it, and one
// that changes it rewrites the table in place, when its size stays: the
// same inner map. The table is frozen (no writes from user space) to
// prove the first, and a write into it then fails, which must roll the
// change back whole.
func TestMaglevTableInPlace(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	s := maglevService(1, 3, MinMaglevTableSize)
	if err := m.Upsert(s); err != nil {
		t.Fatal(err)
	}
	id := m.services[s.Frontend].id
	first := tableID(t, dp, id)
	var inner *ebpf.Map
	if err := kernel.Of(dp).Maps.Maglev.Lookup(id, &inner); err != nil {
		t.Fatal(err)
	}
	if err := inner.Freeze(); err != nil {
		t.Fatal(err)
	}
	inner.Close()

	// Affinity, and a backend in maintenance: the table stays.
	s.SessionAffinity = 30e9
	s.Backends = append(s.Backends, Backend{Address: netip.MustParseAddrPort("10.9.0.1:8080"), State: Maintenance})
	if err := m.Upsert(s); err != nil {
		t.Fatalf("a change that leaves the table alone wrote it: %v", err)
	}
	if got := tableID(t, dp, id); got != first {
		t.Fatalf("the table moved to inner map %d from %d", got, first)
	}
	checkConsistent(t, dp)

	// A backend fewer changes the table: the frozen map refuses, and the
	// change is rolled back.
	before, list := dump(t, dp), m.List()
	less := s
	less.Backends = s.Backends[1:]
	err := m.Upsert(less)
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("Upsert into a frozen table: %v, want EPERM", err)
	}
	if !sameDump(before, dump(t, dp)) || fmt.Sprint(m.List()) != fmt.Sprint(list) {
		t.Fatal("the failed Upsert left the maps or the Manager's view changed")
	}

	// A new size needs a new map; then changes go into it in place.
	s.MaglevTableSize = 1021
	if err := m.Upsert(s); err != nil {
		t.Fatal(err)
	}
	second := tableID(t, dp, id)
	if second == first {
		t.Fatal("a new size kept the old inner map")
	}
	checkConsistent(t, dp)
	less.MaglevTableSize = 1021
	if err := m.Upsert(less); err != nil {
		t.Fatal(err)
	}
	if got := tableID(t, dp, id); got != second {
		t.Fatalf("the table moved to inner map %d from %d", got, second)
	}
	checkConsistent(t, dp)
}

// Many Maglev services go in (several batches), change, and go; every
// table is the one its backends make, and none is left.
func TestMaglevSyncMany(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	const n = 2*maglevBatch + 50
	var set []Service
	for i := range n {
		size := uint32(MinMaglevTableSize)
		if i%100 == 0 {
			size = 0 // the default
		}
		set = append(set, maglevService(i, 1+i%4, size))
	}
	if res, err := m.Sync(set); err != nil || len(res.Added) != n {
		t.Fatalf("Sync: %d added, %v", len(res.Added), err)
	}
	checkConsistent(t, dp)
	// Remove every third, change every fifth (a backend more), one to
	// Random.
	var next []Service
	for i, s := range set {
		switch {
		case i%3 == 0:
			continue
		case i%5 == 0:
			s.Backends = append(s.Backends, Backend{Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 20, byte(i >> 8), byte(i)}), 8080)})
		case i == 7:
			s.Algorithm, s.MaglevTableSize = Random, 0
		}
		next = append(next, s)
	}
	if _, err := m.Sync(next); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, dp)
	if _, err := m.Sync(nil); err != nil {
		t.Fatal(err)
	}
	for name, entries := range dump(t, dp) {
		if len(entries) != 0 {
			t.Errorf("%s holds %d entries after an empty Sync", name, len(entries))
		}
	}
}

// A Sync that removes and adds Maglev services and then meets a full
// services map puts every table back as it was: the removed ones built
// again, the added ones gone.
func TestMaglevSyncRollback(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{MaxServices: 4})
	m := newManager(t, dp)
	kept, gone := maglevService(1, 2, MinMaglevTableSize), maglevService(2, 3, MinMaglevTableSize)
	if _, err := m.Sync([]Service{kept, gone}); err != nil {
		t.Fatal(err)
	}
	// Two entries written behind the Manager's back fill the map.
	for i := range 2 {
		f, _ := ParseFrontend(fmt.Sprintf("192.0.2.%d:80/tcp", i+1))
		if err := kernel.Of(dp).Maps.Services.Put(svcKey(f), bpf.XdplaneSvcValue{Id: 100 + uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	before, list := dump(t, dp), m.List()
	if len(before["maglev"]) != 2 {
		t.Fatalf("%d tables, want 2", len(before["maglev"]))
	}
	_, err := m.Sync([]Service{kept, maglevService(3, 2, MinMaglevTableSize), maglevService(4, 2, 0)})
	if err == nil {
		t.Fatal("Sync succeeded with the services map full")
	}
	if errors.Is(err, ErrCapacity) {
		t.Fatalf("refused by accounting, not by the kernel, so no rollback ran: %v", err)
	}
	if !sameDump(before, dump(t, dp)) {
		t.Error("failed Sync left the maps changed")
	}
	if fmt.Sprint(m.List()) != fmt.Sprint(list) {
		t.Errorf("failed Sync changed the Manager's view: %v", m.List())
	}
}

// Under a low RLIMIT_NOFILE, in a process of its own (the limit is the
// whole process's): Sync installs far more Maglev tables than the limit
// allows open at once, since it closes each table's descriptor once the
// table is in; and when not one more file can be opened, the error says
// so (EMFILE, RLIMIT_NOFILE) and the maps are as before.
func TestMaglevOpenFileLimit(t *testing.T) {
	if os.Getenv("XDPLANE_NOFILE_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMaglevOpenFileLimit$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "XDPLANE_NOFILE_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestMaglevOpenFileLimit") {
			t.Fatalf("the test in its own process: %v\n%s", err, out)
		}
		return
	}

	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	// setLimit lets the process open at most extra more files: the limit
	// bounds descriptor numbers, and a new one takes the lowest free.
	setLimit := func(extra int) {
		t.Helper()
		var lim unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		lim.Cur = uint64(fd + extra)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}

	setLimit(40)
	var set []Service
	for i := range 2000 {
		set = append(set, maglevService(i, 2, MinMaglevTableSize))
	}
	if _, err := m.Sync(set); err != nil {
		t.Fatalf("Sync of %d Maglev services with 40 descriptors to spare: %v", len(set), err)
	}
	checkConsistent(t, dp)

	before, list := dump(t, dp), m.List()
	setLimit(0)
	for name, change := range map[string]func() error{
		"Upsert": func() error { return m.Upsert(maglevService(3000, 2, MinMaglevTableSize)) },
		"Sync":   func() error { _, err := m.Sync(append(set[1:], maglevService(3001, 2, 0))); return err },
	} {
		err := change()
		if !errors.Is(err, unix.EMFILE) || !strings.Contains(err.Error(), "RLIMIT_NOFILE") || errors.Is(err, ebpf.ErrNotSupported) {
			t.Errorf("%s with no descriptor to spare: %v; want EMFILE, naming RLIMIT_NOFILE", name, err)
		}
		t.Logf("%s: %v", name, err)
		setLimit(10) // dump opens each table
		if !sameDump(before, dump(t, dp)) || fmt.Sprint(m.List()) != fmt.Sprint(list) {
			t.Errorf("the failed %s left the maps or the Manager's view changed", name)
		}
		setLimit(0)
	}
	setLimit(10) // for the cleanup
}

// A Sync that removes a Maglev service and gives its id to a new one
// (ids cycle, so only a full range reuses one): the new table replaces
// the old, is not deleted with the removed service's, and a rollback
// brings the old one back.
func TestMaglevSyncReusedID(t *testing.T) {
	for _, fail := range []bool{true, false} {
		t.Run(fmt.Sprintf("fail=%v", fail), func(t *testing.T) {
			dp, _ := openDatapath(t, datapath.Limits{MaxServices: 3})
			m := newManager(t, dp)
			a, b := maglevService(1, 2, MinMaglevTableSize), maglevService(2, 3, MinMaglevTableSize)
			if _, err := m.Sync([]Service{a, b}); err != nil {
				t.Fatal(err)
			}
			idA := m.services[a.Frontend].id
			if fail {
				// An entry behind the Manager's back fills the map.
				f, _ := ParseFrontend("192.0.2.1:80/tcp")
				if err := kernel.Of(dp).Maps.Services.Put(svcKey(f), bpf.XdplaneSvcValue{Id: 100}); err != nil {
					t.Fatal(err)
				}
			}
			before, list := dump(t, dp), m.List()
			c, d := maglevService(3, 2, MinMaglevTableSize), maglevService(4, 4, MinMaglevTableSize)
			_, err := m.Sync([]Service{b, c, d})
			if !fail {
				if err != nil {
					t.Fatal(err)
				}
				if m.services[d.Frontend].id != idA && m.services[c.Frontend].id != idA {
					t.Fatalf("no new service took id %d: the test tests nothing", idA)
				}
				checkConsistent(t, dp)
				return
			}
			if err == nil || errors.Is(err, ErrCapacity) {
				t.Fatalf("Sync: %v, want the kernel's refusal", err)
			}
			if !sameDump(before, dump(t, dp)) || fmt.Sprint(m.List()) != fmt.Sprint(list) {
				t.Fatal("failed Sync left the maps or the Manager's view changed")
			}
		})
	}
}

// A Maglev service found without its table (a rollback that could not
// rebuild it, out of descriptors) is damaged: the next Sync of the same
// service writes the table.
func TestMaglevMissingTableRepaired(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	s := maglevService(1, 3, MinMaglevTableSize)
	if err := m.Upsert(s); err != nil {
		t.Fatal(err)
	}
	id := m.services[s.Frontend].id
	m.Close()
	if err := kernel.Of(dp).Maps.Maglev.Delete(id); err != nil {
		t.Fatal(err)
	}
	m2 := newManager(t, dp)
	if res, err := m2.Sync([]Service{s}); err != nil || len(res.Changed) != 1 {
		t.Fatalf("Sync of a service without its table: %+v, %v", res, err)
	}
	checkConsistent(t, dp)
}

// Services with the same backends (a Kubernetes Service's cluster IP,
// node port and load balancer IP; here also one backend set behind more
// frontends than buildTables gives a worker at once) have tables of the
// same layout, computed once per run of them: each still gets its own
// table, naming its own backend ids. Backends that differ only in weight
// or state make different layouts.
func TestMaglevSharedLayouts(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	backends := func(set int) []Backend {
		var bs []Backend
		for j := range 3 {
			b := Backend{Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(1 + j), 0, byte(set)}), 8080)}
			switch {
			case set == 1 && j == 0:
				b.Weight = 3
			case set == 2 && j == 0:
				b.State = Terminating
			}
			bs = append(bs, b)
		}
		return bs
	}
	var set []Service
	for i := range 3*maglevRun + 30 {
		s := maglevService(i, 0, MinMaglevTableSize)
		switch {
		case i < 3*maglevRun:
			s.Backends = backends(0) // one set behind many frontends
		case i%3 == 0:
			s.Backends = backends(1 + i%4)
		default:
			s.Backends = backends(1 + (i+1)%4)
		}
		set = append(set, s)
	}
	if _, err := m.Sync(set); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, dp)
	seen := map[ebpf.MapID]bool{}
	for _, s := range set {
		id := tableID(t, dp, m.services[s.Frontend].id)
		if seen[id] {
			t.Fatalf("two services hold inner map %d", id)
		}
		seen[id] = true
	}
}

// A maglev map pinned by an earlier version, whose table template is
// not mmapable, takes only tables that are not either: the Manager finds
// out, and fills its tables by batch update; services are added, changed
// and removed as on a map of this version's.
func TestMaglevTablesOnAnOlderTemplate(t *testing.T) {
	dir := testutil.BPFFS(t)
	spec, err := bpf.LoadXdplane()
	if err != nil {
		t.Fatal(err)
	}
	ms := spec.Maps[bpf.XdplaneMapMaglev].Copy()
	ms.InnerMap.Flags &^= unix.BPF_F_MMAPABLE
	ms.MaxEntries = datapath.DefaultMaxServices
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMapWithOptions(ms, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	old.Close()
	dp, err := datapath.Open(datapath.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close(); datapath.Remove(dir) })
	m := newManager(t, dp)
	if m.mmapable {
		t.Fatal("the Manager takes an older template for one of mmapable tables")
	}
	set := []Service{maglevService(1, 3, 0), maglevService(2, 2, MinMaglevTableSize)}
	if _, err := m.Sync(set); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, dp)
	set[0].Backends = set[0].Backends[:2]
	if _, err := m.Sync(set); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, dp)
	if _, err := m.Sync(nil); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, dp)

	// This version's own map takes mmapable tables.
	dp2, _ := openDatapath(t, datapath.Limits{})
	if !newManager(t, dp2).mmapable {
		t.Fatal("the Manager does not take this version's template for one of mmapable tables")
	}
}
