package benchrand

import (
	"bytes"
	"fmt"
	"testing"
)

// reset forgets the run's seed, as a new process would, and captures what
// Seed prints.
func reset(t *testing.T, flagValue uint64) *bytes.Buffer {
	oldFlag, oldOut := *seedFlag, out
	t.Cleanup(func() { *seedFlag, seed, out = oldFlag, 0, oldOut })
	var buf bytes.Buffer
	*seedFlag, seed, out = flagValue, 0, &buf
	return &buf
}

func TestSeedFlagRepeatsDraws(t *testing.T) {
	printed := reset(t, 42)
	if s := Seed(t); s != 42 {
		t.Fatalf("Seed with -xdplane.bench-seed=42 = %d", s)
	}
	first, other := New(t, "keys").Uint64(), New(t, "flows").Uint64()
	if again := New(t, "keys").Uint64(); again != first {
		t.Fatalf("one purpose drew %d, then %d, in one run", first, again)
	}
	if other == first {
		t.Fatalf("purposes keys and flows both drew %d first", first)
	}
	if got, want := printed.String(), "xdplane.bench-seed: 42\n"; got != want {
		t.Fatalf("printed %q, want %q once", got, want)
	}
	reset(t, 42)
	if again := New(t, "keys").Uint64(); again != first {
		t.Fatalf("a second run with seed 42 drew %d, the first %d", again, first)
	}
}

func TestSeedFreshEachRun(t *testing.T) {
	printed := reset(t, 0)
	s1, k1 := Seed(t), New(t, "keys").Uint64()
	if got, want := printed.String(), fmt.Sprintf("xdplane.bench-seed: %d\n", s1); got != want {
		t.Fatalf("printed %q, want %q once", got, want)
	}
	reset(t, 0)
	s2, k2 := Seed(t), New(t, "keys").Uint64()
	if s1 == 0 || s2 == 0 || s1 == s2 || k1 == k2 {
		t.Fatalf("two runs without -xdplane.bench-seed: seeds %d and %d, first keys %d and %d; want fresh, nonzero seeds", s1, s2, k1, k2)
	}
}
