package lb

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/bpf"
	"github.com/xdplane/xdplane/internal/kernel"
)

// A new Manager deletes what a writer that died mid-update left in every
// map (a slot, a backend, a reverse NAT entry, a Maglev table and a source
// range of a service that does not exist; a virtual IP count no service
// accounts for), and leaves the services alone.
func TestRecoveryDeletesOrphans(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	mag := svc("10.96.0.10:80/tcp", "10.0.1.2:8080")
	mag.Algorithm = Maglev
	mag.VirtualIP = true
	ranged := svc("10.96.0.11:80/tcp", "10.0.1.3:8080")
	ranged.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	if _, err := m.Sync([]Service{mag, ranged}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	want := dump(t, dp)

	maps := kernel.Of(dp).Maps
	const ghost = 4242 // a service id nobody has
	inner, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 7, Flags: unix.BPF_F_INNER_MAP | unix.BPF_F_MMAPABLE})
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	strayVIP := bpf.XdplaneVipKey{Addr: netip.MustParseAddr("10.96.0.99").As16()}
	for _, err := range []error{
		maps.BackendSlots.Put(slotKey(ghost, 0), uint32(7)),
		maps.Backends.Put(uint32(4243), bpf.XdplaneBackend{SvcId: ghost}),
		maps.Revnat.Put(uint32(ghost), bpf.XdplaneRevnatValue{}),
		maps.Maglev.Put(uint32(ghost), inner),
		maps.SourceRanges.Put(rangeKey(ghost, netip.MustParsePrefix("10.2.0.0/16")), uint8(1)),
		maps.Vips.Put(strayVIP, uint32(1)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	orphans := func() map[string]error {
		return map[string]error{
			"maglev table": maps.Maglev.Lookup(uint32(ghost), new(uint32)),
			"source range": maps.SourceRanges.Lookup(rangeKey(ghost, netip.MustParsePrefix("10.2.0.0/16")), new(uint8)),
			"virtual IP":   maps.Vips.Lookup(strayVIP, new(uint32)),
			"revnat":       maps.Revnat.Lookup(uint32(ghost), new(bpf.XdplaneRevnatValue)),
			"backend":      maps.Backends.Lookup(uint32(4243), new(bpf.XdplaneBackend)),
			"backend slot": maps.BackendSlots.Lookup(slotKey(ghost, 0), new(uint32)),
		}
	}
	for name, err := range orphans() {
		if err != nil {
			t.Fatalf("the orphaned %s cannot be read back: %v", name, err)
		}
	}

	m2 := newManager(t, dp)
	if got := dump(t, dp); !sameDump(got, want) {
		t.Errorf("after recovery the service maps hold\n%v\nwant\n%v", got, want)
	}
	checkConsistent(t, dp)
	for name, err := range orphans() {
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Errorf("the orphaned %s: %v, want it deleted", name, err)
		}
	}
	var n uint32
	if err := maps.Vips.Lookup(bpf.XdplaneVipKey{Addr: mag.Frontend.Address.Addr().As16()}, &n); err != nil || n != 1 {
		t.Errorf("virtual IP of %s: %d, %v; want 1", mag.Frontend, n, err)
	}
	if got := m2.List(); len(got) != 2 {
		t.Errorf("recovered %v, want the two services", got)
	}
}
