package lb

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// maglevTableSlow is maglevTable as first written: every candidate entry
// computed afresh as (offset + k*skip) mod m. It is the reference the
// faster maglevTable must match entry for entry, since a table that
// changed would move flows between nodes running two versions.
func maglevTableSlow(backends []Backend, m uint32) []int32 {
	table := make([]int32, m)
	for i := range table {
		table[i] = -1
	}
	n := len(backends)
	if n == 0 {
		return table
	}
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	credit := make([]int, n)
	share := 0
	for i, b := range backends {
		h1, h2 := maglevHashes(b.Address.Addr().As16(), b.Address.Port())
		offset[i] = h1 % uint64(m)
		skip[i] = h2%uint64(m-1) + 1
		share = max(share, int(b.weight()))
	}
	for filled := uint32(0); filled < m; {
		for i, b := range backends {
			credit[i] += int(b.weight())
			for credit[i] >= share && filled < m {
				credit[i] -= share
				c := (offset[i] + next[i]*skip[i]) % uint64(m)
				for table[c] >= 0 {
					next[i]++
					c = (offset[i] + next[i]*skip[i]) % uint64(m)
				}
				table[c] = int32(i)
				next[i]++
				filled++
			}
		}
	}
	return table
}

// randomBackends is n normalized backends at random addresses (IPv4 or
// IPv6) and ports, with weights up to maxWeight.
func randomBackends(r *rand.Rand, n int, maxWeight uint16) []Backend {
	bs := make([]Backend, n)
	for i := range bs {
		var a netip.Addr
		if r.IntN(2) == 0 {
			a = netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
		} else {
			var b [16]byte
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			a = netip.AddrFrom16(b)
		}
		bs[i] = Backend{Address: netip.AddrPortFrom(a, uint16(r.Uint32())), Weight: uint16(1 + r.IntN(int(maxWeight)))}
	}
	return Service{Backends: bs}.normalized().Backends
}

// The fast table is the reference table, at every size a service can
// have, for equal and unequal weights, few and many backends.
func TestMaglevTableMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	sizes := append([]uint32{MinMaglevTableSize, 1021, 4093}, maglevSizes...)
	for _, m := range sizes {
		for _, n := range []int{0, 1, 2, 3, 7, 64, 300} {
			for _, w := range []uint16{1, 5, 1000} {
				if testing.Short() && m > DefaultMaglevTableSize && n > 7 {
					continue
				}
				bs := randomBackends(r, n, w)
				if got, want := maglevTable(bs, m), maglevTableSlow(bs, m); !slices.Equal(got, want) {
					t.Fatalf("%d backends (weights up to %d), size %d: the table differs from the reference", n, w, m)
				}
			}
		}
	}
}

func FuzzMaglevTable(f *testing.F) {
	f.Add(uint64(1), uint8(3), uint16(1), uint8(0))
	f.Add(uint64(7), uint8(40), uint16(9), uint8(2))
	f.Fuzz(func(t *testing.T, seed uint64, n uint8, maxWeight uint16, size uint8) {
		sizes := []uint32{MinMaglevTableSize, 1021, 4093, DefaultMaglevTableSize}
		m := sizes[int(size)%len(sizes)]
		bs := randomBackends(rand.New(rand.NewPCG(seed, 0)), int(n%100), max(maxWeight%2000, 1))
		if !slices.Equal(maglevTable(bs, m), maglevTableSlow(bs, m)) {
			t.Fatalf("%d backends, size %d: the table differs from the reference", len(bs), m)
		}
	})
}

// BenchmarkMaglevTable measures the Go computation of one table against
// the reference, alternating the two in the same loop so that a change in
// the machine's load falls on both: microseconds per table for each, and
// the reference's time as a multiple of maglevTable's. ns/op is both.
func BenchmarkMaglevTable(b *testing.B) {
	for _, tc := range []struct {
		n int
		m uint32
	}{{3, MinMaglevTableSize}, {3, DefaultMaglevTableSize}, {30, DefaultMaglevTableSize}, {200, MaxMaglevTableSize}} {
		b.Run(fmt.Sprintf("backends=%d/table=%d", tc.n, tc.m), func(b *testing.B) {
			bs := randomBackends(rand.New(rand.NewPCG(1, 2)), tc.n, 1)
			var fast, slow time.Duration
			runs := 0
			for b.Loop() {
				start := time.Now()
				maglevTable(bs, tc.m)
				mid := time.Now()
				maglevTableSlow(bs, tc.m)
				fast, slow = fast+mid.Sub(start), slow+time.Since(mid)
				runs++
			}
			b.ReportMetric(fast.Seconds()*1e6/float64(runs), "us/table")
			b.ReportMetric(slow.Seconds()*1e6/float64(runs), "reference-us/table")
			b.ReportMetric(float64(slow)/float64(fast), "x-faster")
		})
	}
}
