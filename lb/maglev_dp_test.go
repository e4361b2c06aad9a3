package lb

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/datapath"
	"github.com/xdplane/xdplane/internal/kernel"
)

// maglevEntries reads the table the datapath holds for service id.
func maglevEntries(t *testing.T, dp *datapath.Datapath, id uint32) []uint32 {
	t.Helper()
	var inner *ebpf.Map
	if err := kernel.Of(dp).Maps.Maglev.Lookup(id, &inner); err != nil {
		t.Fatalf("no Maglev table for service %d: %v", id, err)
	}
	defer inner.Close()
	out := make([]uint32, inner.MaxEntries())
	for i := range out {
		if err := inner.Lookup(uint32(i), &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestManagerMaglevTable(t *testing.T) {
	dp, dir := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	s := svc("10.96.0.10:80/tcp", "10.0.1.2:8080", "10.0.2.2:8080", "10.0.3.2:8080")
	s.Algorithm = Maglev
	s.MaglevTableSize = MinMaglevTableSize
	s.Backends[2].Weight = 2
	if err := m.Upsert(s); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, dp)
	e := m.services[s.Frontend]
	n := s.normalized()
	want := maglevTable(n.Backends, MinMaglevTableSize)
	got := maglevEntries(t, dp, e.id)
	for i := range want {
		if got[i] != e.backendIDs[n.Backends[want[i]].Address] {
			t.Fatalf("entry %d names backend id %d, want %s (id %d)", i, got[i], n.Backends[want[i]].Address, e.backendIDs[n.Backends[want[i]].Address])
		}
	}

	// The default size; then back to random: the table goes.
	s.MaglevTableSize = 0
	if err := m.Upsert(s); err != nil {
		t.Fatal(err)
	}
	if got := len(maglevEntries(t, dp, e.id)); got != DefaultMaglevTableSize {
		t.Fatalf("default table has %d entries", got)
	}
	m.Close()
	dp2, err := datapath.Open(datapath.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	m2 := newManager(t, dp2)
	if res, err := m2.Sync([]Service{s}); err != nil || len(res.Changed)+len(res.Added) != 0 {
		t.Fatalf("Sync of the same Maglev service after restart = %+v, %v", res, err)
	}
	s.Algorithm = Random
	if err := m2.Upsert(s); err != nil {
		t.Fatal(err)
	}
	var inner *ebpf.Map
	if err := kernel.Of(dp2).Maps.Maglev.Lookup(e.id, &inner); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("random service kept a Maglev table: %v", err)
	}
	s.Algorithm = Maglev
	if err := m2.Upsert(s); err != nil {
		t.Fatal(err)
	}
	if err := m2.Delete(s.Frontend); err != nil {
		t.Fatal(err)
	}
	if err := kernel.Of(dp2).Maps.Maglev.Lookup(e.id, &inner); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("deleted service kept a Maglev table: %v", err)
	}
	checkConsistent(t, dp2)

	bad := svc("10.96.0.11:80/tcp", "10.0.1.2:8080")
	bad.MaglevTableSize = MinMaglevTableSize
	if err := m2.Upsert(bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("table size on a random service: %v", err)
	}
	bad.Algorithm, bad.MaglevTableSize = Maglev, 1000
	if err := m2.Upsert(bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("table size 1000: %v", err)
	}
}

// The program and the Go reference agree on every flow: the BPF flow hash
// is flowHash, and the table the Manager wrote is maglevTable's.
func TestMaglevDatapathMatchesReference(t *testing.T) {
	dp, _ := openDatapath(t, datapath.Limits{})
	m := newManager(t, dp)
	for _, tc := range []struct {
		fe       string
		backends []string
		client   string
	}{
		{"10.96.0.10:80/tcp", []string{"10.0.1.2:8080", "10.0.2.2:8080", "10.0.3.2:8080", "10.0.4.2:8080"}, "10.0.0.2"},
		{"10.96.0.10:53/udp", []string{"10.0.1.2:5353", "10.0.2.2:5353", "10.0.3.2:5353"}, "10.0.0.2"},
		{"[fd00::10]:80/tcp", []string{"[fd00:1::2]:8080", "[fd00:2::2]:8080", "[fd00:3::2]:8080"}, "fd00:9::2"},
	} {
		t.Run(tc.fe, func(t *testing.T) {
			s := svc(tc.fe, tc.backends...)
			s.Algorithm = Maglev
			s.Backends[0].Weight = 3
			if err := m.Upsert(s); err != nil {
				t.Fatal(err)
			}
			n := s.normalized()
			table := maglevTable(n.Backends, n.MaglevTableSize)
			rng := rand.New(rand.NewPCG(7, 8))
			seen := map[netip.AddrPort]int{}
			for range 2000 {
				client := netip.MustParseAddr(tc.client)
				if rng.IntN(2) == 0 { // vary the address too
					b := client.As16()
					b[15] = byte(rng.IntN(250) + 2)
					client = netip.AddrFrom16(b).Unmap()
				}
				src := netip.AddrPortFrom(client, uint16(1024+rng.IntN(60000)))
				frame := maglevFrame(t, s.Frontend.Protocol, src, s.Frontend.Address)
				out := make([]byte, len(frame)+64)
				opts := ebpf.RunOptions{Data: frame, DataOut: out}
				if ret, err := kernel.Of(dp).Programs.XdplaneXdp.Run(&opts); err != nil || ret != 2 {
					t.Fatalf("run: %d, %v", ret, err)
				}
				got := maglevDst(t, opts.DataOut)
				want := n.Backends[table[flowHash(src.Addr(), src.Port(), s.Frontend.Address.Port(), s.Frontend.Protocol)%n.MaglevTableSize]].Address
				if got != want {
					t.Fatalf("flow from %s went to %s; the reference says %s", src, got, want)
				}
				seen[got]++
			}
			if len(seen) != len(tc.backends) {
				t.Fatalf("2000 flows reached only %v", seen)
			}
		})
	}
}

// maglevFrame is a flow's first packet (simFrame, failing t on error).
func maglevFrame(t *testing.T, proto Protocol, src, dst netip.AddrPort) []byte {
	t.Helper()
	b, err := simFrame(src, dst, proto)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// maglevDst reads the destination of a frame the program sent on.
func maglevDst(t *testing.T, frame []byte) netip.AddrPort {
	t.Helper()
	dst, err := simDestination(frame)
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
