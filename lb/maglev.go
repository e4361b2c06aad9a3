package lb

import (
	"encoding/binary"
	"fmt"
	"math/big"
	"net/netip"

	"github.com/xdplane/xdplane/internal/kernel"
)

// Maglev table sizes. A table's size must be prime; the larger it is, the
// closer each backend's share comes to its weight and the fewer flows move
// when the backend set changes, at 4 bytes of kernel memory per entry.
const (
	DefaultMaglevTableSize = 16381
	MinMaglevTableSize     = 251
	MaxMaglevTableSize     = 131071
)

// maglevSizes are the table sizes chosen when a service names none.
var maglevSizes = []uint32{DefaultMaglevTableSize, 32749, 65521, MaxMaglevTableSize}

// maglevTableSizeFor is the size used when a service names none: the
// default, or, for a service so large that the default would hold fewer
// than 500 entries per backend, the smallest listed prime that holds 500,
// up to the maximum. Measured (lb/maglev_test.go): at 500 entries per
// backend, removing one backend moves at most 0.8% of flows beyond its own
// 1/N; at 100 per backend, up to 1.8%.
func maglevTableSizeFor(backends int) uint32 {
	for _, m := range maglevSizes {
		if uint64(m) >= maglevEntriesPerBackend*uint64(backends) {
			return m
		}
	}
	return MaxMaglevTableSize
}

const maglevEntriesPerBackend = 500

// validMaglevTableSize reports why m cannot be a table size, or "".
func validMaglevTableSize(m uint32) string {
	switch {
	case m < MinMaglevTableSize || m > MaxMaglevTableSize:
		return fmt.Sprintf("want a prime from %d to %d", MinMaglevTableSize, MaxMaglevTableSize)
	case !big.NewInt(int64(m)).ProbablyPrime(0):
		return "not a prime"
	}
	return ""
}

// maglevTable builds the lookup table of Maglev hashing (Eisenbud et al.,
// NSDI 2016) for backends over m entries, m prime: entry i names the index
// (in backends) of the backend that flows hashing to i go to, or -1 when
// there is no backend.
//
// Each backend walks its own permutation of the entries, from an offset
// with a step both derived from its address, and takes the next free entry
// on its turn. Turns are handed out in proportion to weight: a backend
// gains its weight in credit every round and takes a turn for each full
// share (the largest weight) of credit. With equal weights that is the
// original algorithm, one turn each per round. Because a backend's
// permutation depends only on its own address, removing one backend moves
// little more than the entries it held: the property that keeps
// connections on their backends across changes, and identical tables on
// every node that has the same backends.
//
// backends must be normalized (sorted, weights filled in): the order breaks
// ties, so it must not depend on the caller.
func maglevTable(backends []Backend, m uint32) []int32 {
	table := make([]int32, m)
	for i := range table {
		table[i] = -1
	}
	n := len(backends)
	if n == 0 {
		return table
	}
	// A backend's next candidate is (offset + k*skip) mod m, k counting
	// its steps; it is kept as pos and moved by one skip at a time, which
	// gives the same entries without a division per step.
	type walker struct {
		pos, skip uint32
		weight    int
		credit    int
	}
	ws := make([]walker, n)
	share := 0
	for i, b := range backends {
		h1, h2 := maglevHashes(b.Address.Addr().As16(), b.Address.Port())
		ws[i] = walker{pos: uint32(h1 % uint64(m)), skip: uint32(h2%uint64(m-1) + 1), weight: int(b.weight())}
		share = max(share, ws[i].weight)
	}

	for filled := uint32(0); filled < m; {
		for i := range ws {
			w := &ws[i]
			w.credit += w.weight
			for w.credit >= share && filled < m {
				w.credit -= share
				c := w.pos
				for table[c] >= 0 {
					if c += w.skip; c >= m {
						c -= m
					}
				}
				table[c] = int32(i)
				if c += w.skip; c >= m {
					c -= m
				}
				w.pos = c
				filled++
			}
		}
	}
	return table
}

// maglevHashes derives a backend's offset and step seeds from its address
// and port: FNV-1a over the 18 bytes, then a SplitMix64 finaliser for the
// second, independent value. Fixed functions, so every process and every
// node builds the same table.
func maglevHashes(addr [16]byte, port uint16) (uint64, uint64) {
	var key [18]byte
	copy(key[:], addr[:])
	binary.BigEndian.PutUint16(key[16:], port)
	h := uint64(14695981039346656037)
	for _, b := range key {
		h ^= uint64(b)
		h *= 1099511628211
	}
	return h, splitmix64(h)
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// flowHash is the hash the datapath's Maglev lookup uses (flow_hash in
// bpf/include/select.h): over the source address (16 bytes, IPv4 v4-mapped), the
// source and destination ports and the protocol, each 32-bit word taken as
// a little-endian CPU reads network-order bytes.
func flowHash(src netip.Addr, sport, dport uint16, proto Protocol) uint32 {
	a := src.As16()
	h := uint32(0x9747b28c)
	for i := 0; i < 16; i += 4 {
		h = mix32(h ^ binary.LittleEndian.Uint32(a[i:]))
	}
	// The ports as they sit in memory: big-endian bytes, read little-endian.
	ports := uint32(kernel.Htons(sport)) | uint32(kernel.Htons(dport))<<16
	h = mix32(h ^ ports)
	return mix32(h ^ uint32(proto))
}

// mix32 is MurmurHash3's 32-bit finaliser.
func mix32(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
