package lb

import (
	"fmt"
	"net/netip"
	"testing"
)

func maglevBackends(n int, weight func(i int) uint16) []Backend {
	bs := make([]Backend, n)
	for i := range bs {
		bs[i] = Backend{
			Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 8080),
			Weight:  weight(i),
		}
	}
	return Service{Backends: bs}.normalized().Backends
}

func one(int) uint16 { return 1 }

func TestMaglevTableSizeFor(t *testing.T) {
	for n, want := range map[int]uint32{0: 16381, 1: 16381, 32: 16381, 33: 32749, 65: 32749, 66: 65521, 131: 65521, 132: 131071, 5000: 131071} {
		if got := maglevTableSizeFor(n); got != want {
			t.Errorf("maglevTableSizeFor(%d) = %d, want %d", n, got, want)
		}
	}
	for _, m := range maglevSizes {
		if why := validMaglevTableSize(m); why != "" {
			t.Errorf("listed size %d: %s", m, why)
		}
	}
}

func TestMaglevTableSizes(t *testing.T) {
	for m, want := range map[uint32]bool{
		DefaultMaglevTableSize: true, MinMaglevTableSize: true, MaxMaglevTableSize: true,
		16383: false, 250: false, 131073: false, 4093: true,
	} {
		if got := validMaglevTableSize(m) == ""; got != want {
			t.Errorf("size %d valid = %v, want %v (%s)", m, got, want, validMaglevTableSize(m))
		}
	}
}

func TestMaglevFillsEveryEntry(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 100, 1000} {
		table := maglevTable(maglevBackends(n, one), MinMaglevTableSize)
		for i, e := range table {
			if e < 0 || int(e) >= n {
				t.Fatalf("%d backends: entry %d = %d", n, i, e)
			}
		}
	}
	for _, e := range maglevTable(nil, MinMaglevTableSize) {
		if e != -1 {
			t.Fatal("a table without backends names one")
		}
	}
}

// Every backend's share of entries is its weight's share, within 1% of the
// table (equal weights give the classic Maglev's near-equal shares).
func TestMaglevShares(t *testing.T) {
	for _, tc := range []struct {
		n      int
		weight func(int) uint16
	}{
		{3, one},
		{10, one},
		{100, one},
		{3, func(i int) uint16 { return uint16(i + 1) }},               // 1:2:3
		{5, func(i int) uint16 { return []uint16{1, 1, 1, 1, 10}[i] }}, // one heavy
		{20, func(i int) uint16 { return uint16(1 + i%4) }},
	} {
		bs := maglevBackends(tc.n, tc.weight)
		m := uint32(DefaultMaglevTableSize)
		table := maglevTable(bs, m)
		count := make([]int, len(bs))
		for _, e := range table {
			count[e]++
		}
		total := 0
		for _, b := range bs {
			total += int(b.Weight)
		}
		for i, b := range bs {
			want := float64(m) * float64(b.Weight) / float64(total)
			if d := float64(count[i]) - want; d > 0.01*float64(m) || d < -0.01*float64(m) {
				t.Errorf("%d backends: %s (weight %d) holds %d entries, want %.0f ± 1%% of %d",
					tc.n, b.Address, b.Weight, count[i], want, m)
			}
		}
	}
}

// Removing one of N backends moves at most 1/N of the flows plus 1%: the
// removed backend's entries, and a few more. Checked for the worst of ten
// removals, at the size a service gets by default and at the largest.
func TestMaglevMinimalDisruption(t *testing.T) {
	for _, n := range []int{2, 3, 5, 10, 32, 50, 100, 200, 262, 400} {
		for _, m := range []uint32{maglevTableSizeFor(n), MaxMaglevTableSize} {
			bs := maglevBackends(n, one)
			before := maglevTable(bs, m)
			for gone := 0; gone < n; gone += max(1, n/10) {
				rest := append(append([]Backend{}, bs[:gone]...), bs[gone+1:]...)
				after := maglevTable(rest, m)
				moved := 0
				for i := range before {
					if bs[before[i]].Address != rest[after[i]].Address {
						moved++
					}
				}
				limit := float64(m)/float64(n) + 0.01*float64(m)
				if float64(moved) > limit {
					t.Errorf("%d backends, table %d: removing backend %d moved %d entries, want at most %.0f",
						n, m, gone, moved, limit)
				}
			}
		}
	}
}

// The table depends only on the set of backends, not on anything else:
// every node, and every restart, builds the same one.
func TestMaglevDeterministic(t *testing.T) {
	bs := maglevBackends(7, func(i int) uint16 { return uint16(1 + i%3) })
	a := maglevTable(bs, DefaultMaglevTableSize)
	b := maglevTable(Service{Backends: append([]Backend{bs[3]}, append(bs[:3:3], bs[4:]...)...)}.normalized().Backends, DefaultMaglevTableSize)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("the same backends in another order gave another table")
	}
	// Pinned values: a change here reshuffles every table, so that the
	// nodes of a cluster running two versions would disagree. Change them
	// only on purpose.
	h1, h2 := maglevHashes(netip.MustParseAddr("10.0.0.1").As16(), 80)
	if h1 != 0x88cda8db78ef9f1e || h2 != 0xe721276fae1d42bc {
		t.Fatalf("backend hashes changed: %#x %#x", h1, h2)
	}
	if got := fmt.Sprint(maglevTable(maglevBackends(3, one), MinMaglevTableSize)[:12]); got != "[0 2 1 2 2 1 2 2 0 2 1 1]" {
		t.Fatalf("table of 3 backends over %d entries starts %s", MinMaglevTableSize, got)
	}
}
