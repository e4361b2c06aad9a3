package kernel_test

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xdplane/xdplane/internal/kernel"
	"github.com/xdplane/xdplane/internal/testutil"
)

func newMap(t *testing.T, typ ebpf.MapType, keySize uint32, max uint32) *ebpf.Map {
	t.Helper()
	testutil.RequireRoot(t)
	spec := &ebpf.MapSpec{Type: typ, KeySize: keySize, ValueSize: 4, MaxEntries: max}
	if typ == ebpf.LPMTrie {
		spec.Flags = 1 // BPF_F_NO_PREALLOC, required of a trie
	}
	m, err := ebpf.NewMap(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func contents(t *testing.T, m *ebpf.Map) map[uint64]uint32 {
	t.Helper()
	out := map[uint64]uint32{}
	if err := kernel.Scan(m, func(k uint64, v uint32) error { out[k] = v; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// lpmKey is an LPM trie key: the prefix length, then 4 bytes of address.
func lpmKey(a uint32) uint64 { return 32 | uint64(a)<<32 }

// PutAll writes all or nothing, in a hash (batches) and in an LPM trie
// (no batches: one update each).
func TestPutAll(t *testing.T) {
	for _, c := range []struct {
		name string
		typ  ebpf.MapType
		key  func(i uint32) uint64
	}{
		{"hash", ebpf.Hash, func(i uint32) uint64 { return uint64(i) }},
		{"lpm", ebpf.LPMTrie, lpmKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newMap(t, c.typ, 8, 4)
			keys := []uint64{c.key(1), c.key(2), c.key(3)}
			if err := kernel.PutAll(m, keys, []uint32{10, 20, 30}); err != nil {
				t.Fatal(err)
			}
			if got := contents(t, m); len(got) != 3 || got[c.key(2)] != 20 {
				t.Fatalf("after PutAll: %v", got)
			}
			// Three more do not fit beside the three: none stays.
			err := kernel.PutAll(m, []uint64{c.key(4), c.key(5), c.key(6)}, []uint32{1, 2, 3})
			if err == nil {
				t.Fatal("PutAll past the map's size: nil error")
			}
			if got := contents(t, m); len(got) != 3 || got[c.key(4)] != 0 {
				t.Errorf("after a refused PutAll: %v, want the three before", got)
			}
			// DeleteAll ignores keys already gone, and deletes those after them.
			if err := kernel.DeleteAll(m, []uint64{c.key(1), c.key(9), c.key(3)}); err != nil {
				t.Fatal(err)
			}
			if got := contents(t, m); len(got) != 1 || got[c.key(2)] != 20 {
				t.Errorf("after DeleteAll: %v, want only key 2", got)
			}
		})
	}
}

// A rolled-back Txn leaves the map as it was: overwritten values back,
// new keys gone, deleted keys back.
func TestTxnRollback(t *testing.T) {
	m := newMap(t, ebpf.Hash, 8, 16)
	if err := kernel.PutAll(m, []uint64{1, 2}, []uint32{10, 20}); err != nil {
		t.Fatal(err)
	}
	before := contents(t, m)
	var tx kernel.Txn
	steps := []error{
		tx.Put(m, uint64(1), uint32(11)),
		tx.Put(m, uint64(3), uint32(30)),
		tx.Delete(m, uint64(2)),
		tx.Delete(m, uint64(7)), // missing: no error, nothing to undo
		kernel.PutNew(&tx, m, []uint64{4, 5}, []uint32{40, 50}),
	}
	if err := errors.Join(steps...); err != nil {
		t.Fatal(err)
	}
	if got := contents(t, m); len(got) != 4 || got[1] != 11 {
		t.Fatalf("in the transaction: %v", got)
	}
	cause := errors.New("cause")
	err, clean := tx.Rollback(cause)
	if !clean || !errors.Is(err, cause) {
		t.Errorf("Rollback = %v, %v; want the cause, clean", err, clean)
	}
	got := contents(t, m)
	if len(got) != len(before) || got[1] != 10 || got[2] != 20 {
		t.Errorf("after Rollback: %v, want %v", got, before)
	}
}
